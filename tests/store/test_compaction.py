"""Compaction on a real SQLite store: the frontier snapshot is stored and the changes below
it deleted in one transaction, and a restart after pruning loses nothing: same state, heads,
version vector, members and change count, the history after the frontier still served, new
changes still accepted; the log shrinks to the changes after the frontier."""

from __future__ import annotations

import functools
import random
from pathlib import Path

import pytest

from meshnode.crdt import ROOT, SceneReplica
from meshnode.crdt.clock import hlc_from_seconds
from meshnode.identity import Identity
from meshnode.rooms.loading import compact_room, load_replica, worth_compacting
from meshnode.store import ChangeStore

NOW = 1_700_000_000.0
NODE, EDITOR = Identity.generate(), Identity.generate()


def _edit(node: SceneReplica, editor: SceneReplica, store: ChangeStore, n: int, t: float,
          rng: random.Random) -> float:
    ents = [e for e in editor.entities() if e.creator == EDITOR.public_key]
    for i in range(n):
        t += 60.0  # one change a minute
        if len(ents) < 20 or rng.random() < 0.05:
            ents.append(editor.create_entity(ROOT, {"p": {"x": i}}))
        else:
            editor.set_field(rng.choice(ents), "p", "x", i)
        data = editor.commit(t)
        assert data is not None
        assert node.apply(data, t).status == "applied"
        store.append_changes(node.room_id, [(node.recent_changes(1)[0], data)])
    return t


def _same(a: SceneReplica, b: SceneReplica) -> None:
    assert a.state() == b.state()
    assert a.heads() == b.heads()
    assert a.version_vector() == b.version_vector()
    assert a.members() == b.members()
    assert a.change_count() == b.change_count()


def _restart(store: ChangeStore, genesis: bytes) -> SceneReplica:
    room_id = SceneReplica.from_genesis(genesis, NODE).room_id
    snap = store.latest_snapshot(room_id)
    loaded = load_replica(genesis, NODE, functools.partial(store.changes, room_id),
                          None if snap is None else snap[0],
                          functools.partial(store.change_bytes, room_id))
    assert loaded.snapshot_problem is None and not loaded.report.rejected
    assert not loaded.report.missing_history
    return loaded.replica


def test_restart_after_pruning_loses_nothing(tmp_path: Path) -> None:
    rng = random.Random(3)
    node = SceneReplica.create(NODE, NOW, name="compact", nonce=b"c" * 16)
    node.grant(EDITOR.public_id, "editor")
    first = node.commit(NOW)
    assert first is not None
    editor = SceneReplica.from_genesis(node.genesis, EDITOR)
    editor.apply_many([first], NOW)
    store = ChangeStore.open(tmp_path / "node.db")
    store.add_room(node.room_id, node.genesis, "compact", {})
    store.append_changes(node.room_id, [(node.recent_changes(1)[0], first)])
    t = _edit(node, editor, store, 600, NOW, rng)  # ten hours
    logged = store.change_count(node.room_id)
    # The host prunes only when enough went below the frontier to be worth a re-import.
    assert node.prunable(hlc_from_seconds(t - 7_200)) > 400
    assert node.prunable(hlc_from_seconds(NOW - 1)) == 0
    assert not worth_compacting(node, hlc_from_seconds(t - 7_200))  # < COMPACT_MIN
    # Keep the last two hours.
    pruned = compact_room(node, hlc_from_seconds(t - 7_200),
                          functools.partial(store.compact, node.room_id))
    assert pruned > 400
    assert store.change_count(node.room_id) == logged - pruned
    restarted = _restart(store, node.genesis)
    _same(restarted, node)
    # The history after the frontier is still served, from the store.
    assert restarted.changes_since(node.heads()) == []
    assert len(restarted.changes_since([], {})) == len(node.changes_since([], {}))
    assert all(restarted.change_bytes(c) is not None for c in node.recent_changes(100))
    # Edits go on (the editor's next change builds on its heads, after the frontier).
    t = _edit(restarted, editor, store, 50, t, rng)
    t = _edit(node, editor, store, 0, t, rng)
    node.apply_many(editor.changes_since(node.heads()), t)
    _same(restarted, node)
    # A second compaction and restart.
    compact_room(restarted, hlc_from_seconds(t - 3_600),
                 functools.partial(store.compact, node.room_id))
    again = _restart(store, node.genesis)
    _same(again, node)
    assert store.change_count(node.room_id) <= 61
    store.close()


def test_compaction_is_one_transaction(tmp_path: Path) -> None:
    """The snapshot replaces the old one and the changes go in the same transaction: an
    unknown room changes nothing."""
    store = ChangeStore.open(tmp_path / "node.db")
    store.add_room(b"r" * 32, b"genesis", "r", {})
    store.append_changes(b"r" * 32, [(b"a" * 32, b"A"), (b"b" * 32, b"B")])
    assert store.compact(b"r" * 32, b"snap", 2, [b"a" * 32, b"z" * 32]) == 1
    assert list(store.changes(b"r" * 32)) == [b"B"]
    assert store.latest_snapshot(b"r" * 32) == (b"snap", 2)
    assert store.change_bytes(b"r" * 32, [b"a" * 32, b"b" * 32]) == {b"b" * 32: b"B"}
    try:
        store.compact(b"x" * 32, b"snap", 2, [b"b" * 32])
    except Exception as exc:  # UnknownRoom
        assert "unknown room" in str(exc)
    else:
        raise AssertionError("compacting an unknown room must fail")
    assert list(store.changes(b"r" * 32)) == [b"B"]
    store.close()


def test_prune_threshold_follows_the_held_window_not_the_history(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """After a prune, the next one waits for a tenth of the changes *held*: against the whole
    history, an old room would hold ever more changes between prunes (memory and restart
    growing with its age)."""
    import meshnode.rooms.loading as loading

    monkeypatch.setattr(loading, "COMPACT_MIN", 10)
    rng = random.Random(5)
    node = SceneReplica.create(NODE, NOW, name="threshold", nonce=b"t" * 16)
    node.grant(EDITOR.public_id, "editor")
    first = node.commit(NOW)
    assert first is not None
    editor = SceneReplica.from_genesis(node.genesis, EDITOR)
    editor.apply_many([first], NOW)
    store = ChangeStore.open(tmp_path / "node.db")
    store.add_room(node.room_id, node.genesis, "threshold", {})
    t = _edit(node, editor, store, 300, NOW, rng)
    compact_room(node, hlc_from_seconds(t - 600), functools.partial(store.compact, node.room_id))
    assert node.held_count() < 20 < 300 < node.change_count()
    t = _edit(node, editor, store, 15, t, rng)  # the ten before the frontier are prunable
    frontier = hlc_from_seconds(t - 300)
    assert 10 <= node.prunable(frontier) < node.change_count() // 10
    assert worth_compacting(node, frontier)
