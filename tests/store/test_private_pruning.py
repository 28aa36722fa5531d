"""Pruning a private room (``[store] history_days``) with sealed snapshots: a reader node
compacts below a frontier (off the loop, ``RoomHost._compact``), stores a snapshot whose
scene is sealed, deletes the changes it covers, and restarts from it with the same scene,
sealed name and keys. A blind host never prunes (it could not seal the scene the frontier
would summarise), and its snapshot holds no scene."""

from __future__ import annotations

import functools
import random
from pathlib import Path

import pytest

from meshnode.crdt import ROOT, SceneReplica
from meshnode.crdt.clock import hlc_from_seconds
from meshnode.crdt.snapshot import decode_snapshot
from meshnode.identity import Identity
from meshnode.rooms.host import RoomHost
from meshnode.rooms.loading import load_replica
from meshnode.store import ChangeStore
from protocol.change import change_id
from protocol.limits import DEFAULT_LIMITS

NOW = 1_700_000_000.0
NODE, EDITOR, HOST = Identity.generate(), Identity.generate(), Identity.generate()
CANARY = "Osprey-pruned-canary"


class _Host:
    """What ``RoomHost._compact`` uses of its host: the store."""

    def __init__(self, store: ChangeStore) -> None:
        self.store = store


async def test_a_reader_prunes_a_private_room_and_restarts_from_the_sealed_snapshot(
        tmp_path: Path) -> None:
    node = SceneReplica.create(NODE, NOW, name=CANARY, nonce=b"p" * 16, private=True)
    node.grant(EDITOR.public_id, "editor")
    node.grant(HOST.public_id, "host")
    assert node.commit(NOW) is not None
    store = ChangeStore.open(tmp_path / "node.db")
    store.add_room(node.room_id, node.genesis, "", {"private": True})
    store.append_changes(node.room_id, [(change_id(d), d) for d in node.changes_since([])[1:]])
    editor = SceneReplica.from_genesis(node.genesis, EDITOR)
    blind = SceneReplica.from_genesis(node.genesis, HOST)
    for r in (editor, blind):
        r.apply_many(node.changes_since([]), NOW)
    assert editor.readable
    rng = random.Random(3)
    ents = [editor.create_entity(ROOT, {"p": {"x": CANARY}}) for _ in range(5)]
    t = NOW
    for i in range(150):
        t += 60.0
        editor.set_field(rng.choice(ents), "p", "x", f"{CANARY}-{i}")
        data = editor.commit(t)
        assert data is not None
        assert node.apply(data, t).status == "applied"
        blind.apply(data, t)
        store.append_changes(node.room_id, [(node.recent_changes(1)[0], data)])
    before = store.change_count(node.room_id)
    state = node.state()
    assert node.snapshot_sealed
    await RoomHost._compact(_Host(store), node, hlc_from_seconds(t - 3_600))  # type: ignore[arg-type]
    assert store.change_count(node.room_id) < before - 80  # the last hour is kept
    assert node.state() == state and node.readable and node.room_name == CANARY
    snap = store.latest_snapshot(node.room_id)
    assert snap is not None and CANARY.encode() not in snap[0]
    assert decode_snapshot(snap[0], DEFAULT_LIMITS, None).sealed is not None
    loaded = load_replica(node.genesis, NODE, functools.partial(store.changes, node.room_id),
                          snap[0])
    assert loaded.from_snapshot and loaded.report.ok
    rep = loaded.replica
    assert rep.state() == state and rep.room_name == CANARY and rep.readable
    assert rep.heads() == node.heads() and rep.epoch_book_view() == node.epoch_book_view()
    # ... and it carries on: a new sealed edit reads the same on both.
    editor.set_field(ents[0], "p", "x", "after")
    data = editor.commit(t + 60)
    assert data is not None
    assert rep.apply(data, t + 60).status == "applied"
    assert node.apply(data, t + 60).status == "applied"
    assert rep.state() == node.state()
    # The blind host: no sealed snapshot, so no pruning; its snapshot has no scene.
    assert not blind.snapshot_sealed
    with pytest.raises(RuntimeError, match="prunes a private room"):
        blind.prepare_compaction(hlc_from_seconds(t - 3_600))
    assert CANARY.encode() not in blind.snapshot()
    store.close()
