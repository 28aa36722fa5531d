"""Longevity benchmark (issue 18, issue 17 compaction): rooms that live for months.

Run ``python benchmarks/longevity_bench.py [--quick] [--mode all|memory|restart|join|nodes]``.
It prints ONE JSON object. Parts:

* **memory** (in-process, no network): one node's replica takes changes from a stream of
  new identities (each granted a role, then editing); reports heap bytes (tracemalloc) per
  change and per identity as linear fits, at up to ``--changes`` changes and ``--identities``
  identities (1M and 10k reach in minutes without ``--quick``... on a free core).
* **restart** (compaction): one room grown in a real SQLite store through 1k/10k/100k (/1M
  with ``--big``) changes, pruned by the node's rule (``--no-prune``: kept whole); at each
  size a restart in a fresh process from the latest snapshot plus the log after it (without
  pruning also by full replay, up to ``--replay-max``): wall and CPU seconds, peak RSS, the
  database size, and a joiner's start from the node's frontier snapshot.
* **join**: a joiner's start from a signed snapshot of a room of 1,000 entities with 1k, 10k
  and 100k changes of history (decode, verify, import), against replaying that history.
* **nodes** (real processes): ``--nodes`` ``meshnode up`` processes hosting one open room and
  ``--clients`` Python clients always connected, one replaced by a new identity every
  ``--churn-s`` seconds, each editing at 2/s with flush and sending presence at 5 Hz, for
  ``--minutes``; RSS at start, every ``--sample-s`` seconds and at idle, KB per client
  session and per change (linear fits), fds and sockets at idle.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import gc
import hashlib
import json
import os
import random
import sqlite3
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks._env import environment  # noqa: E402
from meshnode.crdt import ROOT as SCENE_ROOT  # noqa: E402
from meshnode.crdt import SceneReplica  # noqa: E402
from meshnode.crdt.clock import hlc_from_seconds  # noqa: E402
from meshnode.identity import Identity  # noqa: E402
from meshnode.rooms.loading import (  # noqa: E402
    compact_room,
    load_replica,
    worth_compacting,
)
from meshnode.store import ChangeStore  # noqa: E402
from protocol.change import OP_CREATE, OP_SET, encode_change  # noqa: E402


def _ident(tag: str, i: int) -> Identity:
    return Identity.from_private_bytes(hashlib.sha256(f"longevity/{tag}/{i}".encode()).digest())


def fit(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of ys over xs (0 with fewer than two distinct xs)."""
    n = len(xs)
    if n < 2:
        return 0.0
    mx, my = sum(xs) / n, sum(ys) / n
    var = sum((x - mx) ** 2 for x in xs)
    return 0.0 if var == 0 else sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / var


def fit2(xs: list[float], zs: list[float], ys: list[float]) -> tuple[float, float]:
    """Least-squares ``y = a x + b z + c``: the slopes (a, b); (slope of y over x, 0) if x
    and z are (nearly) proportional."""
    n = len(xs)
    if n < 3:
        return fit(xs, ys), 0.0
    mx, mz, my = sum(xs) / n, sum(zs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    szz = sum((z - mz) ** 2 for z in zs)
    sxz = sum((x - mx) * (z - mz) for x, z in zip(xs, zs, strict=True))
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
    szy = sum((z - mz) * (y - my) for z, y in zip(zs, ys, strict=True))
    det = sxx * szz - sxz * sxz
    if det <= 1e-9 * sxx * szz:
        return fit(xs, ys), 0.0
    return (sxy * szz - szy * sxz) / det, (szy * sxx - sxy * sxz) / det


@contextlib.contextmanager
def _own_signatures_trusted() -> Any:
    """While growing the history, the node does not check again the signatures this process
    just made (it was half of the seeding time at a million changes; memory is the same
    either way). Every figure is measured with checks: a restart runs in a fresh process,
    a join decodes and verifies the snapshot."""
    # Changes are checked in replica_apply (the genesis in replica, where joining reads it).
    import meshnode.crdt.replica_apply as replica_module
    saved = replica_module.verify_signature
    replica_module.verify_signature = lambda *_: True
    try:
        yield
    finally:
        replica_module.verify_signature = saved


class History:
    """Grows one room's history as a node would see it: the owner grants each new identity
    editor, the identity creates one entity and then sets a field over and over; every
    change is signed and applied (verified) at the node's replica."""

    def __init__(self, entities: int = 0) -> None:
        self.owner = _ident("owner", 0)
        self.t = 1_000_000.0
        self.node = SceneReplica.create(self.owner, self.t, nonce=b"longevity",
                                        max_clock_skew_s=1e12)
        self.made = 0
        self.ids = 0
        ents = []
        for _ in range(entities):  # the room's size (owned by the owner)
            ents.append(self.node.create_entity(SCENE_ROOT, {"p": {"x": 0.0}}))
            if len(ents) % 50 == 0:
                self._commit_owner()
        self._commit_owner()
        self.entities = ents

    def _commit_owner(self) -> bytes | None:
        self.t += 0.001
        data = self.node.commit(self.t)
        self.made += data is not None
        return data

    def identity(self, edits: int) -> None:
        """A new identity: granted, creates an entity, then ``edits`` sets of it."""
        self.ids += 1
        me = _ident("member", self.ids)
        self.node.grant(me.public_id, "editor")
        self._commit_owner()
        for seq in range(1, edits + 2):
            ops: list[list[Any]] = ([[OP_CREATE, 1, None]] if seq == 1
                                    else [[OP_SET, 1, 0, 1, float(seq)]])
            self.t += 0.001
            data = encode_change(author=me.public_key, seq=seq, deps=self.node.heads(),
                                 hlc=(int(self.t * 1000) << 16), actors=[],
                                 names=[] if seq == 1 else ["p", "x"], ops=ops,
                                 room_id=self.node.room_id, sign=me.sign)
            with _own_signatures_trusted():
                res = self.node.apply(data, self.t)
            assert res.status == "applied", res
            self.made += 1


def bench_memory(changes: int, identities: int, store_path: Path | None = None,
                 compact_every: int = 0, keep: int = 2_000) -> dict[str, Any]:
    """Heap per change and per identity (tracemalloc, linear fits). With ``store_path`` the
    node keeps change bytes in a SQLite store (``use_history``); with ``compact_every`` it
    checks every that many changes and prunes by the node's rule (``worth_compacting``),
    keeping about the last ``keep`` (1 ms of clock each)."""
    per_id = max(1, changes // identities - 2)
    hist = History()
    samples: list[tuple[int, int, int]] = []
    rss: list[int] = []
    store = None
    if store_path is not None:
        store = ChangeStore.open(store_path, synchronous="normal")
        room = hist.node.room_id
        store.add_room(room, hist.node.genesis, "bench", {})
        hist.node.use_history(functools.partial(store.change_bytes, room))
    tracemalloc.start()
    started = time.perf_counter()
    step = max(1, identities // 40)
    last_compaction = 0
    while hist.ids < identities:
        before = hist.node.change_count()
        # Blocks of identities that write much (1.8x) and little (0.2x) alternate, so that
        # changes and identities are not proportional and the fit can tell them apart.
        hist.identity(max(0, round(per_id * (1.8 if (hist.ids // step) % 2 == 0 else 0.2))))
        if store is not None:
            fresh = hist.node.recent_changes(hist.node.change_count() - before)
            store.append_changes(room, [(c, hist.node.change_bytes(c) or b"") for c in fresh])
            if compact_every and hist.node.change_count() - last_compaction >= compact_every:
                last_compaction = hist.node.change_count()
                frontier = hlc_from_seconds(hist.t - keep / 1000)
                if worth_compacting(hist.node, frontier):  # the node's rule
                    compact_room(hist.node, frontier, functools.partial(store.compact, room))
        if hist.ids % step == 0:
            gc.collect()
            samples.append((hist.node.change_count(), hist.ids, tracemalloc.get_traced_memory()[0]))
            # RSS without tracemalloc's own bookkeeping (a node does not trace).
            rss.append(_rss_kb() * 1024 - tracemalloc.get_tracemalloc_memory())
            print(json.dumps({"changes": samples[-1][0], "identities": hist.ids,
                              "heap_mb": round(samples[-1][2] / 2**20, 1),
                              "rss_mb": round(rss[-1] / 2**20, 1),
                              "s": round(time.perf_counter() - started)}),
                  file=sys.stderr, flush=True)  # progress
    elapsed = time.perf_counter() - started
    tracemalloc.stop()
    xs = [float(c) for c, _, _ in samples]
    ys = [float(m) for _, _, m in samples]
    per_change, per_identity = fit2(xs, [float(i) for _, i, _ in samples], ys)
    half = len(samples) // 2
    early = fit(xs[:half], ys[:half]) if half >= 2 else per_change
    late = fit(xs[half:], ys[half:]) if len(samples) - half >= 2 else per_change
    rss_per_change, rss_per_identity = fit2(xs, [float(i) for _, i, _ in samples],
                                            [float(r) for r in rss])
    return {
        "rss_mb": round(rss[-1] / 2**20, 1) if rss else 0.0,
        "rss_bytes_per_change": round(rss_per_change),
        "rss_bytes_per_identity_beyond_its_changes": round(rss_per_identity),
        "heap_mb_per_100k_changes": round(per_change * 100_000 / 2**20, 1),
        "load_average_1m": round(os.getloadavg()[0], 2),
        "changes": hist.node.change_count(), "identities": hist.ids,
        "heap_mb": round(samples[-1][2] / 2**20, 1) if samples else 0.0,
        "bytes_per_change": round(per_change), "bytes_per_change_first_half": round(early),
        "bytes_per_change_second_half": round(late),
        "bytes_per_identity_beyond_its_changes": round(per_identity),
        "seconds": round(elapsed, 1), "store": store is not None, "compact_every": compact_every,
        "db_mb": round(store_path.stat().st_size / 2**20, 1) if store_path else None,
    }


def _state_digest(state: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(state, sort_keys=True, default=repr).encode()).hexdigest()


def _rss_kb(field: str = "VmRSS") -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def restart_child(path: Path, room_hex: str, use_snapshot: bool) -> dict[str, Any]:
    """What a restarting node does with its store (run in a fresh process, so that its time
    and peak RSS are the restart's alone): open the store (with its ``quick_check``), read
    the room, rebuild the replica from the latest snapshot plus the log after it (or, without
    ``use_snapshot``, by replaying the whole log), change bytes left in the store."""
    room = bytes.fromhex(room_hex)
    owner = _ident("owner", 0)
    rss0 = _rss_kb()
    t0 = time.perf_counter()
    c0 = time.process_time()
    with ChangeStore.open(path) as store:
        t_open = time.perf_counter() - t0
        genesis = next(r.genesis for r in store.rooms() if r.room_id == room)
        latest = store.latest_snapshot(room) if use_snapshot else None
        loaded = load_replica(genesis, owner, functools.partial(store.changes, room),
                              latest[0] if latest else None,
                              functools.partial(store.change_bytes, room))
        took = time.perf_counter() - t0
        cpu = time.process_time() - c0
    assert loaded.from_snapshot == use_snapshot, loaded.snapshot_problem
    # CPU seconds beside wall seconds: on a shared machine the wall clock measures the load.
    return {"seconds": round(took, 2), "cpu_s": round(cpu, 2), "open_s": round(t_open, 2),
            "changes": loaded.replica.change_count(),
            "rss_before_mb": round(rss0 / 1024, 1), "rss_after_mb": round(_rss_kb() / 1024, 1),
            "peak_rss_mb": round(_rss_kb("VmHWM") / 1024, 1),
            "state": _state_digest(loaded.replica.state())}


def _restart_in_child(path: Path, room: bytes, use_snapshot: bool) -> dict[str, Any]:
    import subprocess
    out = subprocess.run(
        [sys.executable, __file__, "--restart-child", str(path), room.hex(),
         "snapshot" if use_snapshot else "replay"],
        check=True, capture_output=True, text=True)
    result: dict[str, Any] = json.loads(out.stdout)
    return result


class _Log:
    """The room's change log in a real SQLite store, appended in bulk (one transaction per
    ``batch`` changes: seeding a million changes one identity at a time spent its time in
    commits)."""

    def __init__(self, store: ChangeStore, hist: History, batch: int = 5_000) -> None:
        self.store, self.hist, self.batch = store, hist, batch
        self.room = hist.node.room_id
        self.pending: list[tuple[bytes, bytes]] = []
        self.logged = hist.node.change_count()

    def take(self) -> None:
        """Queue the changes applied since the last call (their bytes are still in memory:
        the replica keeps its last 4,096)."""
        node = self.hist.node
        if node.change_count() == self.logged:
            return  # (recent_changes(0) would list everything)
        fresh = node.recent_changes(node.change_count() - self.logged)
        self.logged = node.change_count()
        self.pending += [(c, node.change_bytes(c) or b"") for c in fresh]
        if len(self.pending) >= self.batch:
            self.flush()

    def flush(self) -> None:
        self.store.append_changes(self.room, self.pending)
        self.pending = []


def bench_restart(sizes: list[int], keep: int = 2_000, compact_every: int = 1_000,
                  prune: bool = True, replay_max: int = 100_000, join: bool = True,
                  ) -> list[dict[str, Any]]:
    """Restart time, peak RSS and database size of a node whose room has ``sizes`` changes
    of history (one room growing through every size). With ``prune`` the node, every
    ``compact_every`` changes (its ``snapshot_every``), prunes below a frontier that keeps
    about the last ``keep`` changes (the clock advances 1 ms per change, so "the last
    ``keep`` ms") if the node's rule says it is worth it (``worth_compacting``: at least
    10,000 changes and a tenth of those held below the frontier), and restarts from its
    frontier snapshot plus the log after it; without, it keeps everything
    (``history_days = 0``) and restarts from a snapshot listing every change plus the whole
    log, and (up to ``replay_max`` changes) by
    replaying the whole log. Each restart runs in a fresh process. With ``join``, also a
    joiner's start from the node's frontier snapshot at each size."""
    out = []
    hist = History(entities=1_000)
    room = hist.node.room_id
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "meshnode.db"
        with ChangeStore.open(path, synchronous="normal") as store:
            store.add_room(room, hist.node.genesis, "bench", {})
            hist.node.use_history(functools.partial(store.change_bytes, room))
            log = _Log(store, hist)
            log.pending = [(c, hist.node.change_bytes(c) or b"")
                           for c in hist.node.recent_changes(10**9)]
            last = 0
            snap = b""
            seeding = 0.0
            for n in sorted(sizes):
                t0 = time.perf_counter()
                while hist.node.change_count() < n:
                    hist.identity(48)
                    log.take()
                    if prune and hist.node.change_count() - last >= compact_every:
                        last = hist.node.change_count()
                        frontier = hlc_from_seconds(hist.t - keep / 1000)
                        if worth_compacting(hist.node, frontier):  # the node's rule
                            log.flush()
                            snap, dropped = hist.node.compact(frontier)
                            store.compact(room, snap, hist.node.change_count(), dropped)
                # The node stops: it prunes if that is worth it, else saves a snapshot.
                log.flush()
                frontier = hlc_from_seconds(hist.t - keep / 1000)
                if prune and worth_compacting(hist.node, frontier):
                    snap, dropped = hist.node.compact(frontier)
                    store.compact(room, snap, hist.node.change_count(), dropped)
                else:
                    snap = hist.node.snapshot()
                    store.save_snapshot(room, snap, hist.node.change_count())
                # A tail after that snapshot, as a node that stopped between two has.
                hist.identity(98)
                log.take()
                log.flush()
                seeding += time.perf_counter() - t0
                logged = store.change_count(room)
                digest = _state_digest(hist.node.state())
                # As on disk after a clean stop (the WAL folded into the file).
                with contextlib.closing(sqlite3.connect(path)) as conn:
                    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                size = path.stat().st_size + sum(p.stat().st_size
                                                 for p in Path(tmp).glob("*-wal"))
                row: dict[str, Any] = {
                    "changes": hist.node.change_count(), "members": hist.ids + 1,
                    "entities": len(hist.node.entities()), "pruned": prune,
                    "db_mb": round(size / 2**20, 1), "log_changes": logged,
                    "snapshot_mb": round(len(snap) / 2**20, 2),
                    "seeding_s": round(seeding), "load_average_1m": round(os.getloadavg()[0], 2)}
                fast = _restart_in_child(path, room, True)
                assert fast.pop("state") == digest and fast["changes"] == row["changes"]
                row["restart_from_snapshot"] = fast
                if not prune and n <= replay_max:
                    full = _restart_in_child(path, room, False)
                    assert full.pop("state") == digest
                    row["restart_full_replay"] = full
                if join:
                    row.update(_join_once(hist, keep))
                print(json.dumps(row), file=sys.stderr, flush=True)  # progress
                out.append(row)
    return out


def _join_once(hist: History, keep: int) -> dict[str, Any]:
    """A joiner's start from the node's frontier snapshot (the changes of about the last
    ``keep`` ms listed): decode, verify, import."""
    snap = hist.node.snapshot(keep_after_hlc=hlc_from_seconds(hist.t - keep / 1000))
    joiner = _ident("joiner", hist.node.change_count())
    # A joiner is another process: keep the node's history (in this one) out of the
    # collector's passes, as it would be.
    gc.collect()
    gc.freeze()
    t0 = time.perf_counter()
    c0 = time.process_time()
    rep = SceneReplica.from_snapshot(snap, joiner)
    took = time.perf_counter() - t0
    cpu = time.process_time() - c0
    gc.unfreeze()
    assert rep.state() == hist.node.state()
    return {"join_snapshot_mb": round(len(snap) / 2**20, 2),
            "join_from_snapshot_s": round(took, 3), "join_cpu_s": round(cpu, 3)}


def bench_join(sizes: list[int], keep: int = 2_000, replay_max: int = 100_000,
               ) -> list[dict[str, Any]]:
    """A joiner's start from a frontier snapshot of a room of 1,000+ entities (the changes
    of about the last ``keep`` ms listed), against a full replay (up to ``replay_max``
    changes); one room growing through every size."""
    out = []
    hist = History(entities=1_000)
    for n in sorted(sizes):
        while hist.node.change_count() < n:
            hist.identity(48)
        every = hist.node.snapshot()  # every change listed (version 2's size)
        snap = hist.node.snapshot(keep_after_hlc=hlc_from_seconds(hist.t - keep / 1000))
        joiner = _ident("joiner", n)
        # A joiner is another process: keep the node's history (in this one) out of the
        # collector's passes, as it would be.
        gc.collect()
        gc.freeze()
        t0 = time.perf_counter()
        rep = SceneReplica.from_snapshot(snap, joiner)
        t_snap = time.perf_counter() - t0
        gc.unfreeze()
        t_full = None
        if n <= replay_max:
            history = hist.node.changes_since([])
            t0 = time.perf_counter()
            full = SceneReplica.from_genesis(hist.node.genesis, joiner, max_clock_skew_s=1e12)
            full.apply_many(history, hist.t)
            t_full = round(time.perf_counter() - t0, 2)
            assert rep.state() == full.state()
            del full, history
        assert rep.state() == hist.node.state()
        row = {"changes": rep.change_count(), "entities": len(rep.entities()),
               "members": hist.ids + 1,
               "snapshot_mb": round(len(snap) / 2**20, 2),
               "snapshot_every_change_mb": round(len(every) / 2**20, 2),
               "join_from_snapshot_s": round(t_snap, 3),
               "join_full_replay_s": t_full, "load_average_1m": round(os.getloadavg()[0], 2)}
        print(json.dumps(row), file=sys.stderr, flush=True)  # progress
        out.append(row)
        del rep, every, snap
    return out


# ------------------------------------------------------------------ real processes


def _proc_stats(pid: int) -> dict[str, int]:
    rss = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1])
    fds = sockets = 0
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        fds += 1
        with contextlib.suppress(OSError):  # closed meanwhile
            sockets += os.readlink(fd).startswith("socket:")
    return {"rss_kb": rss, "fds": fds, "sockets": sockets}


def _open_room(node: Any, room: str) -> Any:
    """A node that joined by invite hosts the room as ``admit = "invite"`` (and there is no
    API to change it): stop it, open the room in its store, start it again, so that clients
    can join the room at every node."""
    from meshnode.store import DB_FILENAME

    node.terminate()
    rid = bytes.fromhex(room)
    with ChangeStore.open(node.data_dir / DB_FILENAME) as store:
        record = next(r for r in store.rooms() if r.room_id == rid)
        store.update_room_settings(rid, {**record.settings, "admit": "open"})
    node.start()
    node.wait_for(lambda: any(r["id"] == room and r["admit"] == "open"
                              for r in node.get("/api/rooms")), "room open")
    return node


async def bench_nodes(nodes: int, clients: int, minutes: float, churn_s: float,
                      sample_s: float) -> dict[str, Any]:
    """Real nodes under scripted churn; RSS, fits, fds and sockets at idle."""
    from meshnode.client import RoomClient, connect
    from meshnode.transport.ice import IceSettings
    from tests.integration.nodeproc import NodeProcess, start_host

    ice = IceSettings(host_addresses=("127.0.0.1",))
    tmp = Path(tempfile.mkdtemp(prefix="longevity-"))
    first = NodeProcess(tmp / "n0").start()
    procs = [first]
    room = first.default_room
    assert room is not None
    try:
        for i in range(1, nodes):
            procs.append(_open_room(start_host(tmp / f"n{i}", first, room, first), room))
        await asyncio.sleep(2.0)
        assert all(p.proc is not None for p in procs)
        pids = [p.proc.pid for p in procs if p.proc is not None]
        start = [_proc_stats(pid) for pid in pids]
        stop = time.monotonic() + minutes * 60
        sessions = 0
        changes = 0
        join_s: list[float] = []
        samples: list[dict[str, Any]] = []
        rng = random.Random(7)

        async def session(k: int, until: float) -> None:
            nonlocal changes
            node = procs[k % len(procs)]
            t0 = time.monotonic()
            async with connect(node.url, room, Identity.generate(), ice=ice) as c:
                join_s.append(time.monotonic() - t0)
                ent = c.create_entity(SCENE_ROOT, {"p": {"x": 0.0}})
                n = 0
                while time.monotonic() < until:
                    for _ in range(2):  # presence at 5 Hz, two edits a second
                        c.set_presence({"position": [rng.random(), 0.0, 0.0]})
                        await asyncio.sleep(0.2)
                    n += 1
                    c.set_field(ent, "p", "x", float(n))
                    await c.flush(10.0)
                    changes += 1
                    c.set_presence({"position": [rng.random(), 1.0, 0.0]})
                    await asyncio.sleep(0.1)

        async def churn(slot: int) -> None:
            nonlocal sessions
            while time.monotonic() < stop:
                life = churn_s * clients * (0.5 + rng.random())
                sessions += 1
                try:
                    await session(sessions, min(stop, time.monotonic() + life))
                except Exception as err:  # a failed session is counted, not fatal
                    print(f"session failed: {err}", file=sys.stderr)

        async def sampler() -> None:
            t0 = time.monotonic()
            while time.monotonic() < stop:
                await asyncio.sleep(sample_s)
                samples.append({"min": round((time.monotonic() - t0) / 60, 1),
                                "sessions": sessions, "changes": changes,
                                "rss_mb": [round(_proc_stats(p)["rss_kb"] / 1024, 1)
                                           for p in pids]})

        await asyncio.gather(sampler(), *(churn(i) for i in range(clients)))
        await asyncio.sleep(max(10.0, sample_s / 10))  # idle: presence expires, links close
        idle = [_proc_stats(pid) for pid in pids]
        xs_s = [float(s["sessions"]) for s in samples]
        xs_c = [float(s["changes"]) for s in samples]
        ys = [sum(s["rss_mb"]) / len(pids) * 1024 for s in samples]
        join_s.sort()
        return {
            "nodes": nodes, "clients": clients, "minutes": minutes, "sessions": sessions,
            "changes": changes, "start": start, "samples": samples, "idle": idle,
            "kb_per_session": round(fit(xs_s, ys), 2), "kb_per_change": round(fit(xs_c, ys), 3),
            "join_p50_s": round(join_s[len(join_s) // 2], 3) if join_s else None,
        }
    finally:
        for p in procs:
            p.kill()
        _ = RoomClient  # imported for the type of connect()'s result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes, a few minutes at most")
    ap.add_argument("--mode", default="all", choices=["all", "memory", "restart", "join", "nodes"])
    ap.add_argument("--changes", type=int, default=1_000_000)
    ap.add_argument("--identities", type=int, default=10_000)
    ap.add_argument("--big", action="store_true", help="restart and join at 1M changes too")
    ap.add_argument("--nodes", type=int, default=3)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--minutes", type=float, default=20.0)
    ap.add_argument("--churn-s", type=float, default=10.0)
    ap.add_argument("--sample-s", type=float, default=300.0)
    ap.add_argument("--store", action="store_true",
                    help="memory mode: change bytes in a SQLite store (history off the heap)")
    ap.add_argument("--compact-every", type=int, default=0,
                    help="memory mode (with --store): every N changes, prune if the "
                         "node's rule (worth_compacting) says so")
    ap.add_argument("--keep", type=int, default=2_000,
                    help="changes kept after the frontier (restart, join, compaction)")
    ap.add_argument("--no-replay", action="store_true",
                    help="join and restart: skip every full replay")
    ap.add_argument("--replay-max", type=int, default=100_000,
                    help="join and restart: full replays only up to this many changes")
    ap.add_argument("--no-prune", action="store_true",
                    help="restart: the node keeps every change (history_days = 0)")
    ap.add_argument("--restart-child", nargs=3, metavar=("DB", "ROOM", "HOW"),
                    help=argparse.SUPPRESS)  # restart mode's fresh process
    args = ap.parse_args()
    if args.restart_child:
        db, room, how = args.restart_child
        print(json.dumps(restart_child(Path(db), room, how == "snapshot")))
        return 0
    replay_max = 0 if args.no_replay else args.replay_max
    out: dict[str, Any] = {"env": environment()}
    if args.quick:
        args.changes, args.identities = min(args.changes, 20_000), min(args.identities, 400)
        args.nodes, args.clients, args.minutes = 1, 3, min(args.minutes, 1.0)
        args.sample_s = min(args.sample_s, 10.0)
    sizes = [1_000, 10_000] if args.quick else [1_000, 10_000, 100_000]
    if args.mode in ("all", "memory"):
        with tempfile.TemporaryDirectory() as tmp:
            out["memory"] = bench_memory(
                args.changes, args.identities,
                Path(tmp) / "memory.db" if args.store else None, args.compact_every, args.keep)
    if args.mode in ("all", "restart"):
        out["restart"] = bench_restart(sizes + ([1_000_000] if args.big else []), args.keep,
                                       prune=not args.no_prune, replay_max=replay_max)
    if args.mode in ("all", "join"):
        out["join"] = bench_join(sizes + ([1_000_000] if args.big else []), args.keep,
                                 replay_max)
    if args.mode in ("all", "nodes"):
        out["nodes"] = asyncio.run(bench_nodes(args.nodes, args.clients, args.minutes,
                                               args.churn_s, args.sample_s))
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
