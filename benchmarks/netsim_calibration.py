"""Where netsim's per-hop processing and link set-up parameters come from.

Measures, with the real code on this machine (``docs/netsim.md``, "How far to trust netsim"):

1. ``core``: what a relaying node's core does for one Changes frame of one edit: decode the
   frame, check the change's signature, apply it to the replica, and produce the frames to
   forward (``RoomOverlay.receive`` + ``frames_to_send``). No shared verify cache (a real node
   checks every signature itself). Median over ``--frames`` frames.
2. ``transport``: one message over a real aiortc link on loopback (DTLS, SCTP, data channel,
   the ``PeerLink`` wrapper, the event loop), one way: half the median ping-pong round trip
   of a message the size of that Changes frame. Both ends run in this process, so this is the
   CPU cost of sending plus receiving one message (loopback adds ~0.05 ms).
3. ``setup``: a link's set-up on loopback, from ``create_offer`` to both hellos verified
   (ICE, DTLS, SCTP, data channels, hello), median over ``--links`` links: the CPU and
   pacing part of a link set-up, without the round trips of a real path.

Prints one JSON object. Not a test; run it on a quiet machine:
``.venv/bin/python benchmarks/netsim_calibration.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._env import environment
from meshnode.crdt import ROOT, SceneReplica
from meshnode.identity import Identity
from meshnode.overlay import SYNC, RoomOverlay
from meshnode.runtime.room import LIVE_OVERLAY
from meshnode.transport.ice import IceSettings
from meshnode.transport.link import LinkSettings, LocalHello, PeerLink


def _line_of_three(seed: int) -> tuple[list[RoomOverlay], list[Identity]]:
    rng = random.Random(seed)
    ids = [Identity.from_private_bytes(rng.randbytes(32)) for _ in range(3)]
    owner = SceneReplica.create(ids[0], now=0.0, name="calib", nonce=rng.randbytes(16))
    for i in (1, 2):
        owner.grant(ids[i].public_id, "editor")
    setup = owner.commit(0.0)
    reps = [owner]
    for i in (1, 2):
        rep = SceneReplica.from_genesis(owner.genesis, ids[i])
        if setup:
            rep.apply(setup, 0.0)
        reps.append(rep)
    ovs = [RoomOverlay(r, ids[i], LIVE_OVERLAY, rng=random.Random(i), wall_clock=lambda: 0.0)
           for i, r in enumerate(reps)]
    return ovs, ids


def measure_core(frames: int, seed: int) -> tuple[float, int]:
    """Median seconds the middle node of a line spends per relayed Changes frame, and the
    frame's size in bytes."""
    ovs, ids = _line_of_three(seed)
    a, b, c = ovs
    now = 1.0
    a.connect(ids[1].public_id, now)
    b.connect(ids[0].public_id, now)
    b.connect(ids[2].public_id, now)
    c.connect(ids[1].public_id, now)
    for ov in ovs:
        ov.frames_to_send()
    rep = a.replica
    entity = rep.create_entity(ROOT, {"transform": {"position": [0.0, 0.0, 0.0]}})
    rng = random.Random(seed)
    costs: list[float] = []
    sizes: list[int] = []
    for k in range(frames):
        now += 0.05
        if k == 0:
            data = rep.commit(now)
        else:
            rep.set_field(entity, "transform", "position",
                          [round(rng.uniform(-10, 10), 3) for _ in range(3)])
            data = rep.commit(now)
        assert data is not None
        a.submit_change(data, now)
        out = [f for f in a.frames_to_send() if f[0] == ids[1].public_id and f[1] == SYNC]
        for _, channel, frame in out:
            sizes.append(len(frame))
            t0 = time.perf_counter()
            b.receive(ids[0].public_id, channel, frame, now)
            forwarded = b.frames_to_send()
            costs.append(time.perf_counter() - t0)
            for peer, ch, f in forwarded:
                if peer == ids[2].public_id:
                    c.receive(ids[1].public_id, ch, f, now)
            c.frames_to_send()
            while b.next_event() is not None:
                pass
            while c.next_event() is not None:
                pass
        # Let timers run (IHAVE batches etc.) as a node would, untimed.
        for ov in ovs:
            ov.handle_timer(now + 0.01)
            ov.frames_to_send()
    return statistics.median(costs), int(statistics.median(sizes))


async def _pair(settings: LinkSettings) -> tuple[PeerLink, PeerLink, float]:
    a = PeerLink(Identity.generate(), settings, LocalHello("node", ()))
    b = PeerLink(Identity.generate(), settings, LocalHello("node", ()))
    t0 = time.perf_counter()
    offer = await a.create_offer()
    answer = await b.accept_offer(offer)
    await a.accept_answer(answer)
    await asyncio.wait_for(asyncio.gather(a.established(), b.established()), 30)
    return a, b, time.perf_counter() - t0


async def measure_transport(messages: int, size: int, links: int) -> tuple[float, float]:
    """Median one-way message time on loopback, and median link set-up time."""
    settings = LinkSettings(ice=IceSettings(host_addresses=("127.0.0.1",)))
    setups: list[float] = []
    made: list[PeerLink] = []
    a = b = None
    for _ in range(links):
        a, b, dt = await _pair(settings)
        setups.append(dt)
        made += [a, b]
    assert a is not None and b is not None
    payload = bytes(size)
    got: asyncio.Queue[float] = asyncio.Queue()
    b.on_message = lambda ch, data: b.send(ch, data)
    a.on_message = lambda ch, data: got.put_nowait(time.perf_counter())
    rtts: list[float] = []
    for k in range(messages + 20):
        t0 = time.perf_counter()
        a.send(SYNC, payload)
        t1 = await asyncio.wait_for(got.get(), 10)
        if k >= 20:  # warm-up: slow start, first RTT samples
            rtts.append(t1 - t0)
        await asyncio.sleep(0.002)
    for link in made:
        await link.close("done")
    return statistics.median(rtts) / 2, statistics.median(setups)


def main() -> int:
    """Run the three measurements and print them as JSON."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--frames", type=int, default=400)
    parser.add_argument("--messages", type=int, default=300)
    parser.add_argument("--links", type=int, default=5)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    core_s, size = measure_core(args.frames, args.seed)
    one_way_s, setup_s = asyncio.run(measure_transport(args.messages, size, args.links))
    out: dict[str, Any] = {
        "core_ms_per_frame": round(core_s * 1000, 3),
        "frame_bytes": size,
        "transport_ms_one_way": round(one_way_s * 1000, 3),
        "per_hop_ms": round((core_s + one_way_s) * 1000, 3),
        "link_setup_loopback_s": round(setup_s, 3),
        "environment": environment(),
    }
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
