"""Two clocks (issue 16, item 2): every ``now`` the overlay takes is monotonic (timer
deadlines, rate limits, scores), and wall time (the scene's clock) comes from the injected
``wall_clock``. A wall clock stepped back by ten minutes must not stall any timer: gossip,
announcements, presence and anti-entropy keep flowing.

Two levels: in-memory overlays on the harness' virtual clock, and a ``RoomRuntime`` on a real
asyncio loop (its timers armed on the monotonic clock) with an injected wall clock.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable

from meshnode.crdt import ROOT, SceneReplica
from meshnode.identity import Identity
from meshnode.overlay import OverlayConfig, PresenceUpdated, RoomOverlay
from meshnode.runtime.room import RoomRuntime

from .harness import Network, frame_kind, ring_edges

EPOCH = 1_700_000_000.0
STEP = -600.0  # ten minutes back


def test_a_wall_clock_stepped_back_does_not_stall_the_overlay() -> None:
    net = Network(seed=11, config=OverlayConfig(anti_entropy_interval_s=1.0), start=EPOCH)
    room = net.add_room(6)
    nodes = room.nodes
    for a, b in [*ring_edges(nodes), (nodes[0], nodes[3]), (nodes[1], nodes[4])]:
        net.link(a, b)
    stepped = nodes[0]
    for _ in range(20):  # some history, so that Plumtree has pruned some links to lazy ones
        net.edit(stepped, lambda r: r.create_entity(ROOT))
        net.run_for(0.1)
    net.run_for(2.0)
    net.assert_converged()

    node = net.nodes[stepped]
    node.wall_offset = STEP  # NTP steps its wall clock back while its timers are armed
    sent_before = dict(node.frames_sent)
    step_at = net.now
    made = []
    end = net.now + 10.0
    net.every(0.2, lambda n: made.append(n.edit(stepped, lambda r: r.create_entity(ROOT))),
              until=end)
    net.every(0.1, lambda n: n.presence(stepped, {"position": [n.now - EPOCH, 0.0, 0.0]}),
              until=end)
    net.every(0.1, lambda n: n.presence(nodes[3], {"position": [0.0, n.now - EPOCH, 0.0]}),
              until=end)
    net.run_for(12.0)

    # Gossip: every change it made after the step reached everyone.
    assert len(made) >= 40 and all(c is not None and net.delivered(c) for c in made)
    net.assert_converged()

    def sent_since(kind: str) -> int:
        return node.frames_sent.get(kind, 0) - sent_before.get(kind, 0)

    # Timer-driven work of the stepped node went on: presence flushes (its own updates and
    # those it relays) and anti-entropy rounds (about one a second). (Changes from others
    # are not in this test: a replica whose wall clock is ten minutes behind refuses their
    # stamps as future ones, by the HLC skew bound; that is the scene clock's business.)
    assert sent_since("Presence") >= 60
    assert sent_since("Heads") >= 6
    # Its presence reached everyone, and others' presence reached it, after the step.
    me = node.peer_id
    for j in nodes[1:]:
        assert any(e.participant == me for t, e in net.nodes[j].events
                   if isinstance(e, PresenceUpdated) and t > step_at)
    assert any(isinstance(e, PresenceUpdated) and t > step_at
               and e.participant == net.nodes[nodes[3]].peer_id for t, e in node.events)
    assert all(net.nodes[i].timer_stalls == 0 for i in nodes)


# ---------------------------------------------------------------------- RoomRuntime


class Wall:
    """A wall clock that can be stepped: ``time.time()`` plus an offset."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


async def until(predicate: Callable[[], bool]) -> None:
    """Wait (on the loop) until ``predicate()`` holds; the caller bounds the wait."""
    while not predicate():
        await asyncio.sleep(0.005)


async def test_room_runtime_timers_fire_with_the_wall_clock_stepped_back() -> None:
    loop = asyncio.get_running_loop()
    ida = Identity.from_private_bytes(bytes(range(32)))
    idb = Identity.from_private_bytes(bytes(range(1, 33)))
    owner = SceneReplica.create(ida, now=time.time(), name="clocks", nonce=b"\x01" * 16)
    owner.grant(idb.public_id, "editor")
    grant = owner.commit(time.time())
    assert grant is not None
    other = SceneReplica.from_genesis(owner.genesis, idb)
    assert other.apply(grant, time.time()).status == "applied"

    config = OverlayConfig(anti_entropy_interval_s=0.2, presence_interval_s=0.01)
    wall = Wall()
    runtimes: dict[str, RoomRuntime] = {}
    heads_from_a: list[float] = []

    def sender(src: str) -> Callable[[str, str, bytes], bool]:
        def send(peer: str, channel: str, frame: bytes) -> bool:
            if src == ida.public_id and frame_kind(frame) == "Heads":
                heads_from_a.append(time.monotonic())
            loop.call_soon(lambda: runtimes[peer].receive(src, channel, frame))
            return True
        return send

    a = RoomRuntime(RoomOverlay(owner, ida, config, rng=random.Random(1), wall_clock=wall),
                    send=sender(ida.public_id))
    b = RoomRuntime(RoomOverlay(other, idb, config, rng=random.Random(2),
                                wall_clock=time.time), send=sender(idb.public_id))
    runtimes.update({ida.public_id: a, idb.public_id: b})
    try:
        a.attach(idb.public_id)
        b.attach(ida.public_id)
        await asyncio.wait_for(until(lambda: len(heads_from_a) >= 2), 10.0)

        wall.offset = STEP  # stepped back while A's timers are armed
        seen = len(heads_from_a)
        assert a.set_presence({"position": [1.0, 2.0, 3.0]})
        count = other.change_count()
        edit = asyncio.ensure_future(a.edit(lambda r: r.create_entity(ROOT)))
        # Anti-entropy rounds keep coming, A's presence is flushed to B, and A's change,
        # committed with the stepped wall clock, is accepted by B (its HLC never goes back).
        await asyncio.wait_for(until(lambda: len(heads_from_a) >= seen + 5
                                     and ida.public_id in b.presence()
                                     and other.change_count() == count + 1), 10.0)
        a.mark_durable(owner.heads())  # a client's changes are durable once acknowledged
        await asyncio.wait_for(edit, 10.0)
        assert other.state() == owner.state()
    finally:
        a.close()
        b.close()
