"""Presence interest benchmark (issue 15): 50 clients on one ``meshnode up`` node.

Run ``python benchmarks/presence_bench.py`` (or ``node_bench.py --only-interest``, which
calls this). It prints ONE JSON object. ``--clients`` (50) clients, each at a fixed spot of a
10-wide grid 2 m apart, each send ``--hz`` (20) presence updates/s for ``--hold`` seconds; the
figure is the p99 delay of the updates each client receives from its nearest 10, with
interest management (the node's defaults) and, in the same run, against a node with
``[presence] filter = false`` (every update to every client: the baseline), with the bytes
each client receives and the ratios. ``--rounds`` alternates the two phases.

The benchmark measures the node, not the clients:

* **Light clients.** Each client joins with the Python client (so the node admits it
  as a member), then stops using it: it sends *pre-signed* presence frames (signed before
  the clock starts) straight on its data channel, and what arrives is only counted and
  timestamped (participant and seq read from the frame; no replica, no signature check).
  The send time of every update is recorded when it is sent, so a late sender does not count
  against the node. The clients run in ``--workers`` processes.
* **Separate cores.** With 2 or more usable cores the node is pinned to the first and the
  client workers to the others (``--no-pin``: no pinning), so the node does not share its
  core with the fifty peers it serves (other jobs on the machine still may).
* **What each side costs.** CPU seconds of the node and of the workers over the hold
  (``/proc``), the node's presence messages and bytes out (its metrics), each worker's event
  loop lag (a 5 ms ticker's oversleep: what the clients add to a delay), the load average
  before and after each phase.
* **The core alone** (``core_without_links``): the node's sans-I/O ``PresenceTable``
  driven directly (no links), 50 clients as leaves, each at ``--hz``, 10 ms flushes, each
  update encoded once as the node does: updates sent and CPU per second, filtered and not.

``--node-pythonpath DIR`` runs the node from another source tree (e.g. an export of an
older commit), to compare node code under the same clients.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import hashlib
import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import msgpack  # noqa: E402

from benchmarks._env import environment  # noqa: E402
from benchmarks._stats import pct  # noqa: E402
from meshnode.client import RoomClient, connect  # noqa: E402
from meshnode.identity import Identity  # noqa: E402
from meshnode.transport.ice import IceSettings  # noqa: E402
from protocol.frames import encode_frame, make_presence  # noqa: E402
from tests.integration.nodeproc import NodeProcess  # noqa: E402

ICE = IceSettings(host_addresses=("127.0.0.1",))
GRID_COLUMNS = 10
GRID_SPACING_M = 2.0
NEAREST = 10
TICK_S = 0.005  # the workers' lag probe


def grid_spot(i: int) -> list[float]:
    """Where client ``i`` stands: a 10-wide grid, 2 m apart."""
    return [(i % GRID_COLUMNS) * GRID_SPACING_M, 0.0, (i // GRID_COLUMNS) * GRID_SPACING_M]


def nearest(i: int, n: int) -> set[int]:
    """The ``NEAREST`` clients nearest to client ``i`` (ties: lower index first)."""
    me = grid_spot(i)
    others = sorted((sum((a - b) ** 2 for a, b in zip(me, grid_spot(j), strict=True)), j)
                    for j in range(n) if j != i)
    return {j for _, j in others[:NEAREST]}


def fields_of(i: int, k: int) -> dict[str, Any]:
    """Client ``i``'s ``k``-th update: on its spot, fidgeting (so positions change)."""
    base = grid_spot(i)
    return {"position": [base[0] + 0.05 * (k % 5), base[1], base[2]], "who": i}


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (``/proc/<pid>/stat``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def renice(pid: int, niceness: int) -> None:
    """Set the niceness of every thread of process ``pid``, and of its scheduling group:
    the node runs in a session of its own, and with Linux's autogroup scheduling a session
    gets an equal share of the CPU against every other busy session whatever its threads'
    niceness (below 0 needs privileges)."""
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(OSError):  # a thread that just ended
            os.setpriority(os.PRIO_PROCESS, int(tid), niceness)
    with contextlib.suppress(OSError):  # no autogroups here
        Path(f"/proc/{pid}/autogroup").write_text(f"{niceness}\n")


def pin(pid: int, cores: set[int]) -> None:
    """Pin every thread of process ``pid`` to ``cores``."""
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(OSError):  # a thread that just ended
            os.sched_setaffinity(int(tid), cores)


# ---------------------------------------------------------------- the client worker

async def worker(spec: dict[str, Any]) -> dict[str, Any]:
    """One worker process: clients ``spec["ids"]`` of ``spec["n"]``. Joins them, signs all
    their updates, says "ready", waits for "go", sends for ``hold_s`` and reports: per
    update sent, when (``sent[i][k]``); per update received, from whom, which, when
    (``got``); per client the presence bytes and messages; its lag and CPU."""
    ids: list[int] = spec["ids"]
    hz, hold = spec["hz"], spec["hold_s"]
    room = bytes.fromhex(spec["room"])
    count = int(hold * hz)
    clients: dict[int, RoomClient] = {}
    frames: dict[int, list[bytes]] = {}
    who_of: dict[bytes, int] = {}
    got: list[tuple[int, int, int, float]] = []  # (receiver, sender, seq, time)
    got_bytes = dict.fromkeys(ids, 0)
    got_msgs = dict.fromkeys(ids, 0)
    got_messages = dict.fromkeys(ids, 0)  # data-channel messages (a bundle is one)
    measuring = False
    for i in ids:
        ident = Identity.generate()
        c = connect(spec["url"], room.hex(), ident, ice=ICE)
        await c.open()
        clients[i] = c
        who_of[ident.public_key] = i
        # Signed now, before the clock starts: sending costs the client a send, no more.
        frames[i] = [encode_frame(make_presence(room, ident.public_key, k + 1, fields_of(i, k),
                                                ident.sign)) for k in range(count)]
        plain = c.frame

        def light(est: Any, channel: str, data: bytes, room_id: bytes, i: int = i,
                  plain: Any = plain) -> None:
            if channel != "presence":
                plain(est, channel, data, room_id)  # the scene: as the client would
                return
            if measuring:
                at = time.time()
                got_bytes[i] += len(data)
                got_msgs[i] += 1
                # [version, type, room, body, sig]; body = [participant, seq, fields]
                participant, seq = msgpack.unpackb(msgpack.unpackb(data)[3])[:2]
                got.append((i, who_of.get(participant, -1), seq, at))

        c.frame = light  # type: ignore[method-assign]
        links = c._links  # the client's link manager: count data-channel messages too
        assert links is not None
        on_message = links._on_message

        def counting(est: Any, channel: str, data: bytes, i: int = i,
                     on_message: Any = on_message) -> None:
            if measuring and channel == "presence":
                got_messages[i] += 1
            on_message(est, channel, data)

        links._on_message = counting  # type: ignore[method-assign]
    # Who the other workers' clients are: learned from the parent before "go".
    print("ready", json.dumps({i: c.identity.public_key.hex() for i, c in clients.items()}),
          flush=True)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    everyone: dict[str, int] = json.loads(await reader.readline())
    who_of.update({bytes.fromhex(k): v for k, v in everyone.items()})
    await reader.readline()  # "go"
    measuring = True
    sent: dict[int, list[float]] = {i: [] for i in ids}
    lags: list[float] = []
    start = time.perf_counter()
    cpu0 = os.times()

    async def send(i: int, c: RoomClient) -> None:
        await asyncio.sleep((i % 20) / (20 * hz))  # spread the senders over the period
        node = c.node_peer_id
        assert node is not None
        base = time.perf_counter()
        for k, frame in enumerate(frames[i]):
            sent[i].append(time.time())
            c._send(node, "presence", frame)  # the pre-signed frame, as is
            await asyncio.sleep(max(0.0, base + (k + 1) / hz - time.perf_counter()))

    async def probe() -> None:
        while time.perf_counter() - start < hold + 1.0:
            t = time.perf_counter()
            await asyncio.sleep(TICK_S)
            lags.append(time.perf_counter() - t - TICK_S)

    await asyncio.gather(probe(), *(send(i, c) for i, c in clients.items()))
    cpu1 = os.times()
    measuring = False
    for c in clients.values():
        await c.close()
    return {"sent": {str(i): v for i, v in sent.items()}, "got": got, "bytes": got_bytes,
            "msgs": got_msgs, "messages": got_messages, "lag_p50_ms": pct(lags, 0.5),
            "lag_p99_ms": pct(lags, 0.99),
            "cpu_s": round(cpu1.user + cpu1.system - cpu0.user - cpu0.system, 3),
            "wall_s": round(time.perf_counter() - start, 3)}


# ---------------------------------------------------------------- one phase

async def phase(url: str, room: str, node_pid: int, n: int, hz: float, hold_s: float,
                workers: int, client_cores: set[int] | None,
                metrics: Any, profile: bool = False, clients_nice: int = 0) -> dict[str, Any]:
    """Run ``n`` light clients against the node at ``url``; merge what they saw."""
    procs = []
    for w in range(workers):
        spec = {"url": url, "room": room, "n": n, "hz": hz, "hold_s": hold_s,
                "ids": list(range(w, n, workers))}
        procs.append(await asyncio.create_subprocess_exec(
            sys.executable, __file__, "--worker", json.dumps(spec),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            start_new_session=bool(clients_nice)))  # its own scheduling group to renice
        if clients_nice:
            renice(procs[-1].pid, clients_nice)
    keys: dict[str, int] = {}
    for p in procs:
        assert p.stdout is not None
        line = await asyncio.wait_for(p.stdout.readline(), 600)
        if not line.startswith(b"ready"):
            raise RuntimeError(f"a client worker failed to start: {line!r}")
        keys.update({v: int(k) for k, v in json.loads(line[5:]).items()})
        if client_cores:
            pin(p.pid, client_cores)
    for p in procs:
        assert p.stdin is not None
        p.stdin.write(json.dumps(keys).encode() + b"\n")
    await asyncio.sleep(0.5)  # joins settled
    load_before = round(os.getloadavg()[0], 2)
    m0, cpu0 = metrics(), cpu_seconds(node_pid)
    if profile:
        os.kill(node_pid, signal.SIGUSR1)
    t0 = time.perf_counter()
    for p in procs:
        assert p.stdin is not None
        p.stdin.write(b"go\n")
        await p.stdin.drain()
    # The node's share over the hold itself (the workers wait a second more for stragglers).
    await asyncio.sleep(hold_s)
    elapsed = time.perf_counter() - t0
    m1, cpu1 = metrics(), cpu_seconds(node_pid)
    if profile:
        os.kill(node_pid, signal.SIGUSR2)
    parts = []
    for p in procs:
        out, _ = await p.communicate()
        parts.append(json.loads(out.decode().strip().splitlines()[-1]))
    sent: dict[tuple[int, int], float] = {}
    for part in parts:
        for i, times in part["sent"].items():
            for k, t in enumerate(times):
                sent[(int(i), k + 1)] = t
    near_of = {i: nearest(i, n) for i in range(n)}
    near: list[float] = []
    far: list[float] = []
    heard: dict[int, set[int]] = {i: set() for i in range(n)}
    for part in parts:
        for receiver, sender, seq, at in part["got"]:
            t = sent.get((sender, seq))
            if t is None:
                continue
            (near if sender in near_of[receiver] else far).append(at - t)
            heard[receiver].add(sender)
    per_bytes = [v for part in parts for v in part["bytes"].values()]
    per_msgs = [v for part in parts for v in part["msgs"].values()]
    per_dc = [v for part in parts for v in part["messages"].values()]
    node_cpu = cpu1 - cpu0
    out_msgs = m1.get('meshnode_frames_out_total{channel="presence"}', 0.0) - m0.get(
        'meshnode_frames_out_total{channel="presence"}', 0.0)
    out_bytes = m1.get('meshnode_bytes_out_total{channel="presence"}', 0.0) - m0.get(
        'meshnode_bytes_out_total{channel="presence"}', 0.0)
    # Clients that fall behind take longer than the hold to send their updates: their
    # figures per second are over the time they actually sent.
    span = max(hold_s, max(sent.values()) - min(sent.values())) if sent else hold_s

    def delta(name: str) -> float:
        return float(m1.get(name, 0.0) - m0.get(name, 0.0))

    return {
        "nearest10": {"updates": len(near), "p50_ms": pct(near, 0.5), "p99_ms": pct(near, 0.99),
                      "per_client_per_s": round(len(near) / n / span, 1)},
        "others": {"updates": len(far), "p50_ms": pct(far, 0.5), "p99_ms": pct(far, 0.99),
                   "per_client_per_s": round(len(far) / n / span, 1)},
        "updates_sent_per_s": round(len(sent) / span, 1),
        "clients_sending_s": round(span, 2),
        "bytes_per_client_per_s": {
            "mean": round(sum(per_bytes) / len(per_bytes) / span, 1),
            "max": round(max(per_bytes) / span, 1)},
        "updates_per_client_per_s": round(sum(per_msgs) / len(per_msgs) / span, 1),
        "channel_messages_per_client_per_s": round(sum(per_dc) / len(per_dc) / span, 1),
        "participants_heard_per_client_min": min(len(h) for h in heard.values()),
        "node": {
            # Updates the node took in (new, signed by a member): fewer than were sent when
            # the node (or the path into it) loses them.
            "presence_updates_in_per_s": round(delta("meshnode_presence_updates_total")
                                               / elapsed, 1),
            "presence_bytes_in_per_s": round(delta('meshnode_bytes_in_total{channel="presence"}')
                                             / elapsed, 1),
            **_waits(m0, m1),
            "cpu_s_per_s": round(node_cpu / elapsed, 3),
            "cpu_ms_per_client_per_s": round(1000 * node_cpu / elapsed / n, 2),
            "presence_frames_out_per_s": round(out_msgs / elapsed, 1),
            "presence_bytes_out_per_s": round(out_bytes / elapsed, 1),
        },
        "clients": {
            "cpu_s_per_s": round(sum(p["cpu_s"] for p in parts)
                                 / max(p["wall_s"] for p in parts), 3),
            "loop_lag_p50_ms": max(p["lag_p50_ms"] for p in parts),
            "loop_lag_p99_ms": max(p["lag_p99_ms"] for p in parts),
        },
        "load_average_1m_before": load_before,
        "load_average_1m_after": round(os.getloadavg()[0], 2),
    }


def _waits(m0: dict[str, float], m1: dict[str, float]) -> dict[str, float | None]:
    """From the node's ``meshnode_presence_waited`` buckets over the hold: how long the
    updates it sent waited in it from arrival to send (mean; p50 and p99 as the bucket
    bound they fall under). The wait inside the node's presence core only: a backlog on
    the event loop before an update reaches the core is not in it (``kept_up`` and the CPU
    figures show that)."""
    bounds: list[tuple[float, float]] = []
    for key in m1:
        if key.startswith("meshnode_presence_waited{"):
            le = key.split('le="', 1)[1].split('"', 1)[0]
            bounds.append((float("inf") if le == "+Inf" else float(le),
                           m1[key] - m0.get(key, 0.0)))
    bounds.sort()
    total = bounds[-1][1] if bounds else 0.0
    if not total:
        return {}

    def under(q: float) -> float | None:
        bound = next(b for b, n in bounds if n >= q * total)
        return None if bound == float("inf") else bound * 1000  # None: over a second

    waited = m1.get("meshnode_presence_waited_seconds", 0.0) - m0.get(
        "meshnode_presence_waited_seconds", 0.0)
    return {"core_wait_mean_ms": round(1000 * waited / total, 2),
            "core_wait_p50_ms_at_most": under(0.5), "core_wait_p99_ms_at_most": under(0.99)}


def node_metrics(node: NodeProcess) -> Any:
    """A reader of the node's public metrics."""
    def read() -> dict[str, float]:
        return node.metrics()
    return read


# ---------------------------------------------------------------- the core alone

def presence_core(n: int, hz: float, seconds: float = 5.0,
                  interval_s: float | None = None) -> dict[str, Any]:
    """The node's presence path alone (no links): ``n`` clients as leaves on the grid, each
    publishing at ``hz``, flushes every ``interval_s`` (the node's default: 10 ms); each
    update encoded once (``frame_of``) and each recipient's frames of a flush packed into
    data-channel messages as the node's ``Outbox`` packs them. Updates and messages sent and
    CPU (``process_time``), filtered and not. The updates are made and signed before the
    clock starts (the node's signature check is not in this figure)."""
    from meshnode.overlay.presence import PresenceTable
    from meshnode.runtime.outbox import Outbox
    from meshnode.runtime.room import LIVE_OVERLAY

    config = LIVE_OVERLAY if interval_s is None else dataclasses.replace(
        LIVE_OVERLAY, presence_interval_s=interval_s)
    keys = [Identity.from_private_bytes(hashlib.sha256(b"%d" % i).digest()) for i in range(n)]
    peers = {f"c{i}" for i in range(n)}
    step = config.presence_interval_s
    # Publishing on a 10 ms clock whatever the flush interval (as clients do).
    tick_s = 0.01
    every = max(1, round(1.0 / hz / tick_s))
    ticks = round(seconds / tick_s)
    updates = {(tick, i): make_presence(b"R" * 32, keys[i].public_key, tick + 1,
                                        fields_of(i, tick), lambda _: b"\0" * 64)
               for tick in range(ticks) for i in range(n) if (tick + i) % every == 0}
    out: dict[str, Any] = {"flush_interval_s": step}
    for name, on in (("filtered", True), ("unfiltered", False)):
        table = PresenceTable(dataclasses.replace(config, presence_filter=on), b"N" * 32)
        for i in range(n):
            table.set_leaf(f"c{i}", keys[i].public_key)
        sent = size = messages = 0
        start = time.process_time()
        for tick in range(ticks):
            now = tick * tick_s
            for i in range(n):
                msg = updates.get((tick, i))
                if msg is not None and table.accept(msg, now, f"c{i}"):
                    table.enqueue(msg, lambda: peers, f"c{i}", now)
            flush_at = table.next_deadline()
            if flush_at is None or flush_at > now:
                continue
            boxes: dict[str, Outbox] = {}
            for peer, msg in table.flush(now):
                frame = table.frame_of(msg)
                box = boxes.get(peer)
                if box is None:
                    box = boxes[peer] = Outbox()
                box.add("presence", frame)
                size += len(frame)
                sent += 1
            for box in boxes.values():
                messages += len(box.drain())
            table.expire(now)
        out[name] = {"updates_sent_per_s": round(sent / seconds),
                     "per_client_per_s": round(sent / seconds / n, 1),
                     "bytes_per_client_per_s": round(size / seconds / n),
                     "channel_messages_per_client_per_s": round(messages / seconds / n, 1),
                     "cpu_s_per_s": round((time.process_time() - start) / seconds, 4)}
    out["updates_filtered_over_unfiltered"] = round(
        out["filtered"]["updates_sent_per_s"] / out["unfiltered"]["updates_sent_per_s"], 3)
    return out


# ---------------------------------------------------------------- the benchmark

async def presence_interest(base: Path, quiet: str, n: int, hz: float, hold_s: float,
                            workers: int, *, rounds: int = 1, pin_cores: bool = True,
                            node_pythonpath: str | None = None,
                            profile: str | None = None, interval_s: float | None = None,
                            baseline: bool = True, node_nice: int = 0,
                            clients_nice: int = 0) -> dict[str, Any]:
    """The filtered run, then the unfiltered baseline, each on a fresh node; ``rounds``
    times, alternating. The figures of each phase are those of its last round (all rounds
    are in ``rounds``)."""
    usable = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    pinned = pin_cores and len(usable) >= 2
    node_cores = {usable[0]} if pinned else None
    client_cores = set(usable[1:]) if pinned else None
    out: dict[str, Any] = {"clients": n, "updates_per_s_each": hz, "hold_s": hold_s,
                           "workers": workers, "pinned": pinned,
                           "node_pythonpath": node_pythonpath, "presence_interval_s": interval_s,
                           "node_nice": node_nice, "clients_nice": clients_nice,
                           "core_without_links": presence_core(n, hz, interval_s=interval_s),
                           "rounds": []}
    env = {"PYTHONPATH": node_pythonpath} if node_pythonpath else {}
    if profile:  # cProfile of the node over each hold: DIR/node-<pid>.prof
        Path(profile).mkdir(parents=True, exist_ok=True)
        env["MESHNODE_PROFILE"] = str(Path(profile).resolve() / "node-{pid}.prof")
    for r in range(rounds):
        done: dict[str, Any] = {}
        phases = [("filtered", "true"), ("baseline_unfiltered", "false")][:2 if baseline else 1]
        for name, on in phases:
            extra = f"[presence]\nfilter = {on}\n"
            if interval_s is not None:  # the same flush interval in both phases
                extra += f"interval_s = {interval_s}\n"
            # Fifty clients of one address dial within seconds: lift the per-address limit.
            http = "[http]\noffers_per_s = 1000\noffer_burst = 1000\n"
            node = NodeProcess(base / f"interest-{name}-{r}", config=quiet + http + extra)
            # ``python -m meshnode`` imports from its working directory first.
            here = os.getcwd()
            os.chdir(node_pythonpath or ROOT)
            try:
                node.start(env=env)
            finally:
                os.chdir(here)
            try:
                assert node.proc is not None and node.default_room is not None
                if node_cores:
                    pin(node.proc.pid, node_cores)
                if node_nice:
                    renice(node.proc.pid, node_nice)
                done[name] = await phase(node.url, node.default_room, node.proc.pid, n, hz,
                                         hold_s, workers, client_cores, node_metrics(node),
                                         profile is not None, clients_nice)
                done[name]["node"]["pid"] = node.proc.pid
            finally:
                node.kill()
        core = out["core_without_links"]
        for name, ran in done.items():
            # What the node sent against what its core sends when it keeps up (< 1: it fell
            # behind, and the latest-wins queues dropped the difference).
            expected = core["filtered" if name == "filtered" else "unfiltered"]
            ran["node"]["kept_up"] = round(ran["node"]["presence_frames_out_per_s"]
                                           / max(1.0, expected["updates_sent_per_s"]), 3)
        out["rounds"].append(done)
        out.update(done)
    if not baseline:
        return out
    f, b = out["filtered"], out["baseline_unfiltered"]
    out["ratios"] = {
        "bytes_per_client_filtered_over_baseline": round(
            f["bytes_per_client_per_s"]["mean"] / max(1.0, b["bytes_per_client_per_s"]["mean"]),
            3),
        "nearest10_p99_filtered_over_baseline": round(
            f["nearest10"]["p99_ms"] / max(0.001, b["nearest10"]["p99_ms"]), 3),
        "node_cpu_filtered_over_baseline": round(
            f["node"]["cpu_s_per_s"] / max(0.001, b["node"]["cpu_s_per_s"]), 3),
    }
    out["target_met"] = f["nearest10"]["p99_ms"] < 100.0
    return out


QUIET = "[network]\nhost_addresses = [\"127.0.0.1\"]\n[log]\nlevel = \"warning\"\n"


def add_arguments(parser: argparse.ArgumentParser, prefix: str = "") -> None:
    """The options of this benchmark (``prefix``: ``interest-`` inside node_bench)."""
    parser.add_argument(f"--{prefix}clients", type=int, default=50)
    parser.add_argument(f"--{prefix}hz", type=float, default=20.0)
    parser.add_argument(f"--{prefix}hold", type=float, default=6.0, help="seconds sending")
    parser.add_argument(f"--{prefix}workers", type=int, default=2,
                        help="processes the clients run in")
    parser.add_argument(f"--{prefix}rounds", type=int, default=1,
                        help="filtered/baseline pairs, alternating")
    parser.add_argument(f"--{prefix}no-pin", action="store_true",
                        help="do not pin the node and the clients to separate cores")
    parser.add_argument(f"--{prefix}node-pythonpath", metavar="DIR",
                        help="run the node from this source tree")
    parser.add_argument(f"--{prefix}interval", type=float, metavar="S",
                        help="the node's presence flush interval ([presence] interval_s)")
    parser.add_argument(f"--{prefix}node-nice", type=int, default=0, metavar="N",
                        help="run the node at this niceness (e.g. -10 on a machine busy "
                             "with other work: the node, not the machine, decides)")
    parser.add_argument(f"--{prefix}clients-nice", type=int, default=0, metavar="N",
                        help="the same for the client workers")
    parser.add_argument(f"--{prefix}no-baseline", action="store_true",
                        help="skip the unfiltered baseline (exploring only)")
    parser.add_argument(f"--{prefix}profile", metavar="DIR",
                        help="cProfile the node over each hold into DIR/node-<pid>.prof")


async def run(args: argparse.Namespace, prefix: str = "") -> dict[str, Any]:
    """The benchmark with the options of ``add_arguments``."""
    p = prefix.replace("-", "_")
    with tempfile.TemporaryDirectory() as tmp:
        return await presence_interest(
            Path(tmp), QUIET, getattr(args, f"{p}clients"), getattr(args, f"{p}hz"),
            getattr(args, f"{p}hold"), getattr(args, f"{p}workers"),
            rounds=getattr(args, f"{p}rounds"), pin_cores=not getattr(args, f"{p}no_pin"),
            node_pythonpath=getattr(args, f"{p}node_pythonpath"),
            profile=getattr(args, f"{p}profile"), interval_s=getattr(args, f"{p}interval"),
            baseline=not getattr(args, f"{p}no_baseline"),
            node_nice=getattr(args, f"{p}node_nice"),
            clients_nice=getattr(args, f"{p}clients_nice"))


def _run_loop(coro: Any) -> Any:
    try:
        import uvloop

        return uvloop.run(coro)
    except ImportError:
        return asyncio.run(coro)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(_run_loop(worker(json.loads(args.worker)))), flush=True)
        return 0
    out: dict[str, Any] = {"benchmark": "presence_interest", "environment": environment()}
    out["presence_interest"] = _run_loop(run(args))
    out["environment_after"] = environment()
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
