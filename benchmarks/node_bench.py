"""Node benchmark: real ``meshnode up`` processes on loopback, real aiortc links.

Run ``python benchmarks/node_bench.py [--quick]``. It prints ONE JSON object and exits 0 if
every measured edit arrived (1 otherwise). Figures, all end to end through real processes:

* **baseline**: two bare ``PeerLink``s (aiortc data channels, the signed hello, nothing
  else) in one process: one-way latency of a 200-byte message and messages/s. Node figures
  are also given as ratios to it, so a slower machine moves both.
* **edit latency**: three nodes in a line A-B-C (bootstrapped so, though the overlay may add
  links), a Python client at A commits one small edit every 20 ms and a client at C records
  when each is applied (one clock: same machine); p50/p99.
* **sustained edits/s**: the client at A keeps ``--window`` edits in flight (each flush
  waits for A's durable acknowledgement); edits/s counted when applied at C. With
  ``--only-throughput`` the figure is compared like with like with the bare link instead
  (``stream``): one-edit changes of 200 bytes streamed one way, 100 per loop turn, at most
  ``--stream-window`` unacknowledged, counted when applied at C, as changes/s over the link's
  messages/s; ``--closed-loop`` gives the closed loop there too. ``--edits-per-change N``
  makes each streamed change move N entities (a client flushing once per frame: the issue's
  unit, edits, at the 3.5-4 per change its first figure had) and adds edits/s over the link's
  messages/s.
* **presence capacity**: clients join node B in steps, each sending 10 presence updates/s;
  an observer at C measures each update's delay. The figure is the largest step whose p99
  stays under 100 ms.
* **memory per peer**: node A's RSS growth per connected client (``/proc/<pid>/status``).
* **presence interest** (issue 15): ``benchmarks/presence_bench.py`` (its docstring says
  how): ``--interest-clients`` (50) light clients on one node, each at a fixed spot of a 2 m
  grid, each sending ``--interest-hz`` (20) presence updates/s; the p99 delay of updates from
  each client's nearest 10, with interest management and, in the same run, against a node
  with ``[presence] filter = false`` (the baseline), with the bytes each client receives, the
  node's and the clients' CPU and the ratios. ``--only-interest`` runs just this part.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import deque
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks._env import environment  # noqa: E402
from benchmarks._stats import pct  # noqa: E402
from benchmarks.presence_bench import presence_interest  # noqa: E402
from meshnode.client import RoomClient, connect  # noqa: E402
from meshnode.crdt import ROOT as SCENE_ROOT  # noqa: E402
from meshnode.identity import Identity  # noqa: E402
from meshnode.transport.ice import IceSettings, install_host_addresses  # noqa: E402
from meshnode.transport.link import LinkSettings, LocalHello, PeerLink  # noqa: E402
from tests.integration.nodeproc import NodeProcess, start_host  # noqa: E402

ICE = IceSettings(host_addresses=("127.0.0.1",))


async def baseline(messages: int) -> dict[str, Any]:
    """Bare aiortc links: one-way latency and throughput of 200-byte messages."""
    install_host_addresses(("127.0.0.1",))
    a = PeerLink(Identity.generate(), LinkSettings(ice=ICE), LocalHello("node", ()))
    b = PeerLink(Identity.generate(), LinkSettings(ice=ICE), LocalHello("node", ()))
    await a.accept_answer(await b.accept_offer(await a.create_offer()))
    await asyncio.gather(a.established(), b.established())
    delays: list[float] = []
    got = asyncio.Event()
    count = 0

    def on_message(channel: str, data: bytes) -> None:
        nonlocal count
        count += 1
        delays.append(time.perf_counter() - float(data[:20].decode()))
        got.set()

    b.on_message = on_message
    for _ in range(200):
        got.clear()
        a.send("sync", f"{time.perf_counter():<20.6f}".encode() + b"x" * 180)
        await asyncio.wait_for(got.wait(), 5)
        await asyncio.sleep(0.005)
    latency = list(delays)
    count = 0
    start = time.perf_counter()
    for i in range(messages):
        a.send("sync", f"{time.perf_counter():<20.6f}".encode() + b"x" * 180)
        if i % 100 == 99:
            await asyncio.sleep(0)
    while count < messages and time.perf_counter() - start < 60:
        await asyncio.sleep(0.01)
    elapsed = time.perf_counter() - start
    await a.close("done")
    await b.close("done")
    return {"latency_p50_ms": pct(latency, 0.5), "latency_p99_ms": pct(latency, 0.99),
            "messages_per_s": round(count / elapsed, 1)}


def rss_kib(pid: int) -> int:
    """Resident set size of ``pid`` in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def wait_until(predicate: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True


async def edit_latency(writer: RoomClient, reader: RoomClient, edits: int) -> dict[str, Any]:
    sent: dict[str, float] = {}
    delays: list[float] = []

    def on_change(cid: bytes, peer: str | None) -> None:
        now = time.perf_counter()
        for key in list(sent):
            if reader.replica.exists(_parse(key)):
                delays.append(now - sent.pop(key))

    reader.on_change(on_change)
    for i in range(edits):
        ent = writer.create_entity(SCENE_ROOT, {"name": {"value": f"l{i}"}})
        sent[str(ent)] = time.perf_counter()
        await writer.flush()
        await asyncio.sleep(0.02)
    await wait_until(lambda: not sent, 30)
    return {"edits": edits, "arrived": len(delays), "p50_ms": pct(delays, 0.5),
            "p99_ms": pct(delays, 0.99), "max_ms": pct(delays, 1.0)}


def _parse(text: str) -> Any:
    from meshnode.crdt import EntityId

    return EntityId.parse(text)


async def sustained(writer: RoomClient, reader: RoomClient, seconds: float,
                    window: int) -> dict[str, Any]:
    """``window`` tasks each set a field and flush, over and over; a flush commits whatever
    the batch holds (one or more edits) as one change and waits for A's durable ack."""
    ent = writer.create_entity(SCENE_ROOT, {"name": {"value": "mover"}})
    await writer.flush()
    await wait_until(lambda: reader.replica.exists(ent), 10)
    edits = 0
    changes: list[bytes] = []
    stop = time.perf_counter() + seconds

    async def pump() -> None:
        nonlocal edits
        i = 0
        while time.perf_counter() < stop:
            writer.set_field(ent, "transform", "position", [float(i), 0.0, 0.0])
            i += 1
            edits += 1
            cid = await writer.flush()
            if cid is not None:
                changes.append(cid)

    start = time.perf_counter()
    await asyncio.gather(*(pump() for _ in range(window)))
    acked = time.perf_counter() - start
    arrived = await wait_until(lambda: all(reader.replica.has_change(c) for c in changes), 60)
    elapsed = time.perf_counter() - start
    return {"seconds_to_all_applied_at_c": round(elapsed, 2),
            "seconds_to_all_acked_at_a": round(acked, 2), "edits": edits,
            "changes": len(changes), "all_arrived": arrived,
            "edits_per_s": round(edits / elapsed, 1),
            "changes_per_s": round(len(changes) / elapsed, 1), "window": window}


async def stream(writer: RoomClient, reader: RoomClient, seconds: float, window: int,
                 burst: int = 100, edits_per_change: int = 1) -> dict[str, Any]:
    """Sustained edits compared like with like with the bare link's stream: one-way, each
    change one edit (a ``set_field``, signed on its own: one ~200-byte frame, as the link's
    messages are 200 bytes), up to ``burst`` committed per loop turn (the link is given 100
    messages per turn) and none waited for one by one. Flow control instead of a closed
    loop: at most ``window`` changes unacknowledged by A (its durable ack) at once. Counted
    when applied by the client at C; the rate is changes over the time until the last one
    was applied there (as the link's is messages until the last one arrived).

    ``edits_per_change`` > 1 is the issue's own unit, not like with like: each change then
    moves that many entities at once (a client flushing once per frame), so a change is
    larger than the link's messages and one signature covers several edits."""
    ents = [writer.create_entity(SCENE_ROOT, {"name": {"value": f"streamer {k}"}})
            for k in range(edits_per_change)]
    await writer.flush()
    await wait_until(lambda: all(reader.replica.exists(e) for e in ents), 10)
    runtime = writer.runtime
    unacked: deque[asyncio.Future[bytes]] = deque()
    changes: list[bytes] = []
    size = 0
    i = 0
    start = time.perf_counter()
    stop = start + seconds
    while time.perf_counter() < stop:
        for _ in range(min(burst, window - len(unacked))):
            for ent in ents:
                writer.set_field(ent, "transform", "position", [float(i), 0.0, 0.0])
            i += 1
            fut = runtime.publish_soon()
            assert fut is not None
            unacked.append(fut)
        if len(unacked) >= window:
            await asyncio.wait([unacked[0]])
        else:
            await asyncio.sleep(0)
        while unacked and unacked[0].done():
            cid = unacked.popleft().result()
            if len(changes) < 100:
                size += len(writer.replica.change_bytes(cid) or b"")
            changes.append(cid)
    for fut in unacked:
        changes.append(await fut)
    acked = time.perf_counter() - start
    seen = 0

    def all_applied() -> bool:
        nonlocal seen
        while seen < len(changes) and reader.replica.has_change(changes[seen]):
            seen += 1
        return seen == len(changes)

    arrived = await wait_until(all_applied, 60)
    elapsed = time.perf_counter() - start
    return {"seconds_to_all_applied_at_c": round(elapsed, 2),
            "seconds_to_all_acked_at_a": round(acked, 2), "changes": len(changes),
            "edits_per_change": edits_per_change,
            "change_bytes_mean": round(size / min(100, max(1, len(changes)))),
            "all_arrived": arrived, "changes_per_s": round(len(changes) / elapsed, 1),
            "edits_per_s": round(len(changes) * edits_per_change / elapsed, 1),
            "window": window, "burst": burst}


async def presence_capacity(node_b: NodeProcess, observer: RoomClient, room: str,
                            invite: str, steps: list[int], hold_s: float) -> dict[str, Any]:
    clients: list[RoomClient] = []
    delays: list[float] = []
    results = []

    def on_presence(participant: str, fields: dict[str, Any] | None) -> None:
        t = fields.get("t") if fields else None
        if isinstance(t, float):
            delays.append(time.time() - t)

    observer.on_presence(on_presence)
    best = 0
    try:
        for target in steps:
            while len(clients) < target:
                c = connect(node_b.url, room, Identity.generate(), ice=ICE, invite=invite)
                await c.open()
                clients.append(c)
            delays.clear()
            stop = time.perf_counter() + hold_s

            async def send(c: RoomClient, idx: int, stop: float = stop) -> None:
                while time.perf_counter() < stop:
                    c.set_presence({"who": idx, "t": time.time(), "position": [idx, 0, 0]})
                    await asyncio.sleep(0.1)

            await asyncio.gather(*(send(c, i) for i, c in enumerate(clients)))
            await asyncio.sleep(0.5)
            p99 = pct(delays, 0.99)
            results.append({"clients": target, "updates": len(delays),
                            "p50_ms": pct(delays, 0.5), "p99_ms": p99})
            if p99 > 100 or not delays:
                break
            best = target
    finally:
        for c in clients:
            await c.close()
    return {"max_clients_p99_under_100ms": best, "steps": results}


async def memory_per_peer(node: NodeProcess, room: str, n: int) -> dict[str, Any]:
    assert node.proc is not None
    before = rss_kib(node.proc.pid)
    clients = []
    try:
        for _ in range(n):
            c = connect(node.url, room, Identity.generate(), ice=ICE)
            await c.open()
            clients.append(c)
        await asyncio.sleep(1.0)
        after = rss_kib(node.proc.pid)
    finally:
        for c in clients:
            await c.close()
    return {"clients": n, "rss_before_kib": before, "rss_after_kib": after,
            "kib_per_peer": round((after - before) / n, 1)}


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    quick = args.quick
    out: dict[str, Any] = {"benchmark": "node", "environment": environment(),
                           "quick": quick}
    quiet = "[network]\nhost_addresses = [\"127.0.0.1\"]\n[log]\nlevel = \"warning\"\n"
    if args.only_interest:
        with tempfile.TemporaryDirectory() as tmp:
            out["presence_interest"] = await presence_interest(
                Path(tmp), quiet, args.interest_clients, args.interest_hz,
                args.interest_hold, args.interest_workers)
        out["environment_after"] = environment()
        return out
    out["baseline_aiortc"] = await baseline(500 if quick else 5_000)
    if args.only_throughput:
        return await throughput_only(args, quiet, out)
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        a = NodeProcess(base / "a", config=quiet).start()
        nodes = [a]
        try:
            room = a.default_room
            assert room is not None
            nodes.append(start_host(base / "b", a, room, bootstrap=a, config=quiet))
            nodes.append(start_host(base / "c", a, room, bootstrap=nodes[1], config=quiet))
            b, c = nodes[1], nodes[2]
            editor = a.post(f"/api/rooms/{room}/invites", {"role": "editor"})["token"]
            async with connect(a.url, room, Identity.generate(), ice=ICE) as writer, \
                    connect(c.url, room, Identity.generate(), ice=ICE,
                            invite=editor) as reader:
                out["edit_latency"] = await edit_latency(writer, reader, 50 if quick else 300)
                out["sustained"] = await sustained(writer, reader, 2.0 if quick else 8.0,
                                                   args.window)
                steps = [1, 5] if quick else [5, 10, 20, 30, 40, 60]
                out["presence"] = await presence_capacity(b, reader, room, editor, steps,
                                                          1.5 if quick else 4.0)
            out["memory"] = await memory_per_peer(a, room, 5 if quick else 20)
            out["links"] = {n.data_dir.name: len(n.get("/api/peers")) for n in nodes}
        finally:
            for n in nodes:
                n.kill()
        out["presence_interest"] = await presence_interest(
            base, quiet, 10 if quick else args.interest_clients, args.interest_hz,
            2.0 if quick else args.interest_hold, args.interest_workers)
    base_lat = out["baseline_aiortc"]["latency_p50_ms"]
    out["ratios"] = {
        "edit_latency_p50_over_link_p50": round(out["edit_latency"]["p50_ms"] / base_lat, 1),
        "edits_per_s_over_link_messages_per_s": round(
            out["sustained"]["edits_per_s"] / out["baseline_aiortc"]["messages_per_s"], 3),
    }
    return out


async def throughput_only(args: argparse.Namespace, quiet: str,
                          out: dict[str, Any]) -> dict[str, Any]:
    """Just the bare link and the sustained edits (``--only-throughput``); with ``--profile
    DIR`` each node writes cProfile stats to DIR/node-<pid>.prof when it stops (SIGTERM)."""
    if args.profile:
        Path(args.profile).mkdir(parents=True, exist_ok=True)
        os.environ["MESHNODE_PROFILE"] = str(Path(args.profile) / "node-{pid}.prof")
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        a = NodeProcess(base / "a", config=quiet).start()
        nodes = [a]
        try:
            room = a.default_room
            assert room is not None
            nodes.append(start_host(base / "b", a, room, bootstrap=a, config=quiet))
            nodes.append(start_host(base / "c", a, room, bootstrap=nodes[1], config=quiet))
            editor = a.post(f"/api/rooms/{room}/invites", {"role": "editor"})["token"]
            async with connect(a.url, room, Identity.generate(), ice=ICE) as writer, \
                    connect(nodes[2].url, room, Identity.generate(), ice=ICE,
                            invite=editor) as reader:
                # What the nodes burn with nothing to carry (discovery's DHT in a node's
                # first minute, keepalives): measured just before, so it can be told apart.
                idle = {n.data_dir.name: _cpu_seconds(n) for n in nodes}
                idle_start = time.perf_counter()
                await asyncio.sleep(2.0)
                idle_s = time.perf_counter() - idle_start
                before = {n.data_dir.name: _cpu_seconds(n) for n in nodes}
                out["idle_cpu_s_per_s"] = {k: round((before[k] - idle[k]) / idle_s, 3)
                                           for k in idle}
                before["bench"] = _own_cpu_seconds()
                run_start = time.perf_counter()
                _signal_nodes(nodes, args.profile, signal.SIGUSR1)  # profile from here
                seconds = 2.0 if args.quick else 8.0
                spies = _spy(nodes, args.spy, seconds)
                if args.closed_loop:
                    out["sustained"] = await sustained(writer, reader, seconds, args.window)
                else:
                    out["stream"] = await stream(writer, reader, seconds, args.stream_window,
                                                 edits_per_change=args.edits_per_change)
                _signal_nodes(nodes, args.profile, signal.SIGUSR2)  # to here
                for spy in spies:
                    spy.wait()
                after = {n.data_dir.name: _cpu_seconds(n) for n in nodes}
                after["bench"] = _own_cpu_seconds()
                run_s = time.perf_counter() - run_start
            out["links"] = {n.data_dir.name: len(n.get("/api/peers")) for n in nodes}
            # Mean wait from a change applied at A to durable there (the client's ack waits
            # for it): the disk's share of the ack's round trip.
            m = a.metrics()
            out["a_store_wait_ms"] = round(1000 * m.get("meshnode_store_commit_seconds_sum", 0)
                                           / max(1, m.get("meshnode_store_commit_seconds_count",
                                                          0)), 2)
            # CPU seconds each process used during the sustained part ("bench": the two
            # clients and their links): which one is the bottleneck.
            out["sustained_cpu_s"] = {k: round(after[k] - before[k], 2) for k in after}
        finally:
            for n in nodes:
                n.kill()
    os.environ.pop("MESHNODE_PROFILE", None)
    link = out["baseline_aiortc"]["messages_per_s"]
    if args.closed_loop:
        out["ratios"] = {"edits_per_s_over_link_messages_per_s": round(
            out["sustained"]["edits_per_s"] / link, 3)}
    else:
        out["ratios"] = {"changes_per_s_over_link_messages_per_s": round(
            out["stream"]["changes_per_s"] / link, 3)}
        if args.edits_per_change > 1:
            out["ratios"]["edits_per_s_over_link_messages_per_s"] = round(
                out["stream"]["edits_per_s"] / link, 3)
    done = out["stream"]["changes"] if "stream" in out else out["sustained"]["changes"]
    out["cpu_ms_per_change"] = {k: round(1000 * v / max(1, done), 3)
                                for k, v in out["sustained_cpu_s"].items()}
    # The same less what each node burnt while idle just before (the steadiest figure).
    out["cpu_ms_per_change_net"] = {
        k: round(1000 * max(0.0, v - out["idle_cpu_s_per_s"].get(k, 0.0) * run_s)
                 / max(1, done), 3) for k, v in out["sustained_cpu_s"].items()}
    out["environment_after"] = environment()
    return out


def _signal_nodes(nodes: list[NodeProcess], profile: str | None, signum: int) -> None:
    """With ``--profile``: start (SIGUSR1) or stop and dump (SIGUSR2) the nodes' cProfile."""
    if profile:
        for n in nodes:
            assert n.proc is not None
            n.proc.send_signal(signum)
        time.sleep(0.2)  # the dump, before the CPU reading


def _spy(nodes: list[NodeProcess], spy_dir: str | None,
         seconds: float) -> list[subprocess.Popen[bytes]]:
    """With ``--spy DIR``: sample each node and this process (the clients) with py-spy for
    the sustained part (without pausing them: no native frames), as collapsed stacks in
    DIR/<name>.txt."""
    if not spy_dir:
        return []
    Path(spy_dir).mkdir(parents=True, exist_ok=True)
    spy = Path(sys.executable).with_name("py-spy")
    targets = {n.data_dir.name: n.proc.pid for n in nodes if n.proc is not None}
    targets["bench"] = os.getpid()
    return [subprocess.Popen([str(spy), "record", "--pid", str(pid), "--duration",
                              str(int(seconds)), "--rate", "200", "--nonblocking",
                              "--format", "raw", "-o", str(Path(spy_dir) / f"{name}.txt")],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for name, pid in targets.items()]


def _own_cpu_seconds() -> float:
    """User + system CPU seconds this process has used."""
    t = os.times()
    return t.user + t.system


def _cpu_seconds(node: NodeProcess) -> float:
    """User + system CPU seconds the node's process has used (``/proc/<pid>/stat``)."""
    assert node.proc is not None
    fields = Path(f"/proc/{node.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
    return round((int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"), 2)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run of ~20 s")
    parser.add_argument("--window", type=int, default=8, help="edits in flight (sustained)")
    parser.add_argument("--only-interest", action="store_true",
                        help="run only the presence interest part")
    parser.add_argument("--interest-clients", type=int, default=50)
    parser.add_argument("--interest-hz", type=float, default=20.0)
    parser.add_argument("--interest-hold", type=float, default=6.0, help="seconds sending")
    parser.add_argument("--interest-workers", type=int, default=2,
                        help="processes the clients run in")
    parser.add_argument("--only-throughput", action="store_true",
                        help="run only the bare link and the sustained edits")
    parser.add_argument("--closed-loop", action="store_true",
                        help="with --only-throughput: the closed loop of --window flushes "
                             "instead of the stream")
    parser.add_argument("--stream-window", type=int, default=1_000,
                        help="changes unacknowledged at once in the stream")
    parser.add_argument("--edits-per-change", type=int, default=1,
                        help="with --only-throughput: entities each change of the stream "
                             "moves (1, the default, is like with like with the link's "
                             "messages; more is a client flushing once per frame)")
    parser.add_argument("--profile", metavar="DIR",
                        help="with --only-throughput: cProfile each node into DIR")
    parser.add_argument("--spy", metavar="DIR",
                        help="with --only-throughput: py-spy each node and the clients into DIR")
    args = parser.parse_args()
    if not 1 <= args.edits_per_change <= 64:
        parser.error("--edits-per-change must be 1 to 64 (a change's ops are bounded)")
    if args.edits_per_change != 1 and (not args.only_throughput or args.closed_loop):
        parser.error("--edits-per-change shapes the stream: give it with --only-throughput "
                     "(and without --closed-loop)")
    try:
        import uvloop

        out = uvloop.run(main_async(args))
    except ImportError:
        out = asyncio.run(main_async(args))
    print(json.dumps(out, indent=2))
    if args.only_interest:
        return 0
    if args.only_throughput:
        part = out["sustained"] if args.closed_loop else out["stream"]
        return 0 if part["all_arrived"] else 1
    ok = (out["edit_latency"]["arrived"] == out["edit_latency"]["edits"]
          and out["sustained"]["all_arrived"])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
