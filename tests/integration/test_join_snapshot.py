"""Joining a room with a long, unpruned history through the node's join snapshot
(``meshnode.rooms.head_snapshots``), on a real node process.

The node keeps its whole history (no ``history_days``): its stored snapshot lists every
change it covers, which a joining node needs (``?history=kept``). A client instead gets a
snapshot whose frontier sits near the node's heads: it lists a handful of entries whatever
the history's length (here, the history is a burst of a few seconds' changes: the frontier
follows it and leaves at most ``MAX_LISTED`` of them listed). The client converges, edits,
an auditor that replays the full history agrees with it, and after a restart the node starts
from its own stored snapshot plus its log and serves a join snapshot again, holding the
client's edit.
"""

import time
import urllib.request
from pathlib import Path

from meshnode.client import connect
from meshnode.client.failover import redelivery_frames
from meshnode.crdt import ROOT, EntityId, SceneReplica
from meshnode.crdt.snapshot import decode_snapshot
from meshnode.identity import Identity
from meshnode.rooms.head_snapshots import MAX_LISTED
from protocol.change import change_id
from protocol.limits import DEFAULT_LIMITS
from tests.integration.nodeproc import NodeProcess, stopped_node_room
from tests.integration.test_line import ICE
from tests.integration.test_long_history import HISTORY, TAIL, _until, _write_history


def _snapshot(node: NodeProcess, room: str, query: str = "") -> tuple[int, int]:
    """(changes listed after the frontier, frontier entries) of the snapshot it serves."""
    req = urllib.request.Request(f"{node.url}/api/rooms/{room}/snapshot{query}",
                                 headers={"Authorization": f"Bearer {node.admin_token}"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        data = resp.read()
    content = decode_snapshot(data, DEFAULT_LIMITS, None).content
    entries = 0 if content.frontier is None else len(content.frontier.entries)
    return len(content.changes), entries


async def test_client_joins_an_unpruned_history_through_a_head_snapshot(tmp_path: Path) -> None:
    node = NodeProcess(tmp_path / "a").start()
    try:
        room = node.default_room
        assert room is not None
        assert node.terminate() == 0
        expected = _write_history(node.data_dir, room)  # a minute old: below the frontier
        node.start()
        node.wait_for(lambda: "loaded from a snapshot" in node.log(), "a start from the snapshot")
        # The stored snapshot lists the history it covers; the join snapshot does not.
        kept, _ = _snapshot(node, room, "?history=kept")
        assert kept >= HISTORY
        listed, entries = _snapshot(node, room)
        assert listed <= MAX_LISTED + 8 and entries < 50, (listed, entries)

        editor = Identity.generate()
        async with connect(node.url, room, editor, ice=ICE) as quick:
            assert quick.joined_from_snapshot
            assert quick.state() == expected
            # Never replayed: the history is summarised, a few recent changes held.
            assert quick.replica.held_count() <= MAX_LISTED + 8
            assert quick.replica.change_count() >= HISTORY + TAIL
            ent = quick.create_entity(ROOT, {"p": {"x": 42.0}})
            assert await quick.flush() is not None
            async with connect(node.url, room, Identity.generate(), ice=ICE,
                               full_history=True) as auditor:
                assert not auditor.joined_from_snapshot
                await _until(lambda: auditor.state() == quick.state())
                assert auditor.replica.get_field(ent, "p", "x") == 42.0
            after = quick.state()
        # The node itself still holds and serves its whole history (only the genesis is
        # ever below its own frontier).
        assert sum(node.get(f"/api/rooms/{room}/heads")["frontier"].values()) <= 1

        # Restart: from its own stored snapshot plus the log, then a join snapshot again.
        assert node.terminate() == 0
        node.start()
        node.wait_for(lambda: "loaded from a snapshot" in node.log(),
                      "a restart from the stored snapshot")
        listed, entries = _snapshot(node, room)
        assert listed <= MAX_LISTED + 8 and entries < 50, (listed, entries)
        async with connect(node.url, room, Identity.generate(), ice=ICE) as late:
            assert late.joined_from_snapshot
            assert late.state() == after
            assert late.replica.get_field(ent, "p", "x") == 42.0
            mine = late.create_entity(ROOT, {"p": {"x": 7.0}})
            assert await late.flush() is not None
        # A returning member, from a join snapshot again: its seqs go on where they were.
        async with connect(node.url, room, editor, ice=ICE) as back:
            await _until(lambda: back.replica.exists(mine))
            back.set_field(ent, "p", "x", 8.0)
            assert await back.flush() is not None
            async with connect(node.url, room, Identity.generate(), ice=ICE,
                               full_history=True) as auditor:
                await _until(lambda: auditor.state() == back.state())
                assert auditor.replica.equivocations == []
    finally:
        node.kill()


def _history_with_a_late_change(data_dir: Path, room_hex: str, editor: Identity,
                                 ) -> tuple[bytes, EntityId]:
    """HISTORY changes by the node (the room's owner), among them a grant to ``editor``;
    returns a change ``editor`` made early in that history (its stamp far below any join
    snapshot's frontier) that the node's store does not hold, and the entity it creates."""
    with stopped_node_room(data_dir, room_hex) as (store, owner, room_id):
        now = time.time() - 60.0
        owner.grant(editor.public_id, "editor")
        ent = owner.create_entity(ROOT, {"p": {"x": 0.0}})
        made = [owner.commit(now)]
        mine = SceneReplica.from_genesis(owner.genesis, editor)
        assert mine.replay(owner.changes_since([])).ok
        late_ent = mine.create_entity(ROOT, {"p": {"x": 5.0}})
        late = mine.commit(now)
        assert late is not None
        for i in range(HISTORY):
            owner.set_field(ent, "p", "x", float(i))
            now += 0.001
            made.append(owner.commit(now))
        store.append_changes(room_id, [(change_id(d), d) for d in made if d is not None])
        store.save_snapshot(room_id, owner.snapshot(), owner.change_count())
        return late, late_ent


async def test_a_client_restarts_from_a_fresh_snapshot_after_a_late_change(
        tmp_path: Path) -> None:
    """A change stamped long before the join snapshot's frontier reaches the node only after
    a client joined from that snapshot (its author was offline): the client refuses it as
    ``behind_frontier``, starts again from the node's fresh join snapshot by itself, and
    converges, with the late change, and edits on."""
    node = NodeProcess(tmp_path / "a").start()
    try:
        room = node.default_room
        assert room is not None
        assert node.terminate() == 0
        away = Identity.generate()
        late, late_ent = _history_with_a_late_change(node.data_dir, room, away)
        node.start()
        async with connect(node.url, room, Identity.generate(), ice=ICE) as joiner:
            assert joiner.joined_from_snapshot and joiner.rejoins == 0
            assert not joiner.replica.exists(late_ent)
            # The offline author comes back and hands its change to the node (as its
            # client's redelivery of unacknowledged changes would).
            async with connect(node.url, room, away, ice=ICE, full_history=True) as author:
                assert author.node_peer_id is not None
                for frame in redelivery_frames(author.room_id, [late]):
                    assert author._send(author.node_peer_id, "sync", frame)
                await _until(lambda: joiner.rejoins == 1)
                await _until(lambda: joiner.replica.exists(late_ent)
                             and joiner.state() == author.state())
            mine = joiner.create_entity(ROOT, {"p": {"x": 1.0}})
            assert await joiner.flush() is not None
            assert joiner.replica.get_field(mine, "p", "x") == 1.0
    finally:
        node.kill()
