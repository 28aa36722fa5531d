"""A hosted room's compaction keeps the event loop free: the snapshot is signed and the
state re-imported in a worker thread, the store's transaction runs in a thread too, and the
changes applied on the loop meanwhile (the tail) are kept; nothing is deleted that the stored
snapshot does not cover (a restart ends with the same state). Thread identity, not time, is
what the test checks: the worker waits until the loop has run a ticker and applied a change,
which could never happen if the work ran on the loop."""

from __future__ import annotations

import asyncio
import functools
import random
import threading
from pathlib import Path
from typing import Any

import pytest

from meshnode.crdt import ROOT, SceneReplica
from meshnode.crdt.clock import hlc_from_seconds
from meshnode.crdt.compaction import CompactionJob
from meshnode.identity import Identity
from meshnode.rooms.host import RoomHost
from meshnode.rooms.loading import load_replica
from meshnode.store import ChangeStore

NOW = 1_700_000_000.0
NODE, EDITOR, LATE = Identity.generate(), Identity.generate(), Identity.generate()


class _RecordingStore(ChangeStore):
    compact_threads: list[int]

    def compact(self, room_id: bytes, snapshot: bytes, change_count: int,
                drop: Any) -> int:
        self.compact_threads.append(threading.get_ident())
        return super().compact(room_id, snapshot, change_count, drop)


class _Host:
    """What ``RoomHost._compact`` uses of its host: the store."""

    def __init__(self, store: ChangeStore) -> None:
        self.store = store


def _room(tmp_path: Path) -> tuple[SceneReplica, SceneReplica, _RecordingStore, float]:
    node = SceneReplica.create(NODE, NOW, name="offloop", nonce=b"o" * 16)
    node.grant(EDITOR.public_id, "editor")
    node.grant(LATE.public_id, "editor")
    first = node.commit(NOW)
    assert first is not None
    editor = SceneReplica.from_genesis(node.genesis, EDITOR)
    editor.apply_many([first], NOW)
    store = _RecordingStore.open(tmp_path / "node.db")
    store.compact_threads = []
    store.add_room(node.room_id, node.genesis, "offloop", {})
    store.append_changes(node.room_id, [(node.recent_changes(1)[0], first)])
    rng = random.Random(5)
    ents = [editor.create_entity(ROOT, {"p": {"x": 0}}) for _ in range(10)]
    t = NOW
    for i in range(400):
        t += 60.0
        editor.set_field(rng.choice(ents), "p", "x", i)
        data = editor.commit(t)
        assert data is not None
        assert node.apply(data, t).status == "applied"
        store.append_changes(node.room_id, [(node.recent_changes(1)[0], data)])
    return node, editor, store, t


async def test_compaction_runs_off_the_loop(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    node, editor, store, t = _room(tmp_path)
    reference = SceneReplica.from_genesis(node.genesis, NODE)
    reference.replay(store.changes(node.room_id))
    loop_thread = threading.get_ident()
    ticked = threading.Event()
    build_threads: list[int] = []
    original = CompactionJob.build

    def build(job: CompactionJob) -> None:
        build_threads.append(threading.get_ident())
        # Only a free loop can tick and apply the tail change: blocking it would hang here.
        assert ticked.wait(timeout=30), "the event loop did not run during the build"
        original(job)

    monkeypatch.setattr(CompactionJob, "build", build)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while not ticked.is_set():
            await asyncio.sleep(0)
            ticks += 1
            if ticks == 3:
                # A change arrives on the loop while the worker builds: the tail.
                editor.set_field(editor.entities()[0], "p", "x", -1)
                data = editor.commit(t + 60.0)
                assert data is not None
                assert node.apply(data, t + 60.0).status == "applied"
                assert reference.apply(data, t + 60.0).status == "applied"
                store.append_changes(node.room_id, [(node.recent_changes(1)[0], data)])
                ticked.set()

    before = store.change_count(node.room_id)
    tick_task = asyncio.ensure_future(ticker())
    await RoomHost._compact(_Host(store), node, hlc_from_seconds(t - 3_600))  # type: ignore[arg-type]
    await tick_task
    assert build_threads and build_threads[0] != loop_thread
    assert store.compact_threads and store.compact_threads[0] != loop_thread
    # The tail change survived the compaction, and the state is the full history's.
    assert node.state() == reference.state()
    assert node.heads() == reference.heads()
    assert node.version_vector() == reference.version_vector()
    assert store.change_count(node.room_id) < before - 300
    # What the store kept is covered by what it stored: a restart loses nothing.
    snap = store.latest_snapshot(node.room_id)
    assert snap is not None
    loaded = load_replica(node.genesis, NODE, functools.partial(store.changes, node.room_id),
                          snap[0], functools.partial(store.change_bytes, node.room_id))
    assert loaded.from_snapshot and loaded.report.ok
    assert loaded.replica.state() == reference.state()
    assert loaded.replica.heads() == reference.heads()
    store.close()


def test_a_tail_below_the_frontier_abandons_the_compaction(tmp_path: Path) -> None:
    """A change applied meanwhile that builds on history the frontier drops cannot be
    re-applied on the pruned state: nothing changes and nothing is to be deleted."""
    node, _editor, store, t = _room(tmp_path)
    late = SceneReplica.from_genesis(node.genesis, LATE)  # a member long offline
    late.replay(list(store.changes(node.room_id))[:50])
    job = node.prepare_compaction(hlc_from_seconds(t - 3_600))
    job.build()
    late.create_entity(ROOT, {"p": {"x": 99}})
    data = late.commit(t + 60.0)
    assert data is not None
    assert node.apply(data, t + 60.0).status == "applied"  # deps it still holds
    state = node.state()
    held = node.change_count()
    assert node.finish_compaction(job) is None
    assert node.state() == state and node.change_count() == held
    store.close()


async def test_a_write_during_the_build_abandons_the_pruning_and_keeps_every_row(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The host's whole compaction (``RoomHost._compact``), with a change written on the
    loop while the worker builds, that builds on history the frontier drops (a member back
    from long offline): the compaction is abandoned, the store keeps every row and gets no
    snapshot, the replica keeps the new change, and a restart from the store ends equal."""
    node, _editor, store, t = _room(tmp_path)
    late = SceneReplica.from_genesis(node.genesis, LATE)
    late.replay(list(store.changes(node.room_id))[:50])
    reference = SceneReplica.from_genesis(node.genesis, NODE)
    reference.replay(store.changes(node.room_id))
    written = threading.Event()
    original = CompactionJob.build

    def build(job: CompactionJob) -> None:
        assert written.wait(timeout=30), "the event loop did not run during the build"
        original(job)

    monkeypatch.setattr(CompactionJob, "build", build)

    async def write() -> None:
        await asyncio.sleep(0)
        late.create_entity(ROOT, {"p": {"x": 99}})
        data = late.commit(t + 60.0)
        assert data is not None
        assert node.apply(data, t + 60.0).status == "applied"
        assert reference.apply(data, t + 60.0).status == "applied"
        store.append_changes(node.room_id, [(node.recent_changes(1)[0], data)])
        written.set()

    writer = asyncio.ensure_future(write())
    await RoomHost._compact(_Host(store), node, hlc_from_seconds(t - 3_600))  # type: ignore[arg-type]
    await writer
    assert store.compact_threads == []  # nothing deleted, no snapshot stored
    assert store.latest_snapshot(node.room_id) is None
    assert store.change_count(node.room_id) == reference.change_count() - 1  # genesis aside
    assert node.state() == reference.state() and node.heads() == reference.heads()
    loaded = load_replica(node.genesis, NODE, functools.partial(store.changes, node.room_id),
                          None, functools.partial(store.change_bytes, node.room_id))
    assert loaded.report.ok and loaded.replica.state() == reference.state()
    store.close()
