"""A real node prunes a long history (issue 18): ``[store] history_days`` of one hour on a
room whose history was made two days ago.

The history is written into the node's store while it is stopped, signed by identities the
test holds (the node's own, the room's owner; and an editor), stamped two days back: that is
what makes a long, old history cheap to build in a test. Then, on real processes:

* while a client edits, the node prunes (its log says so): the pruned rows are gone from the
  database file (its used pages shrink; SQLite keeps the freed ones for later changes);
* the scene is unchanged: a fresh client joins through the signed snapshot and sees exactly
  the scene a client saw before the pruning;
* a second node that joins the room afterwards syncs from the pruned node and converges;
* the node restarts from its snapshot (the log no longer holds the pruned history), and so
  does the second node;
* a client that was away with a replica from before the pruning (its node's frontier passed
  it) rejoins from the snapshot by itself and converges.

The catch-up syncs here (12,000 old changes to the first client) read old history off the
node's event loop (``HistoryReader``).
"""

from __future__ import annotations

import random
import sqlite3
import time
from pathlib import Path
from typing import Any

from meshnode.client import FailoverSettings, RoomClient, connect
from meshnode.crdt import ROOT, SceneReplica
from meshnode.identity import Identity
from meshnode.store import ChangeStore
from tests.integration.nodeproc import LOOPBACK_CONFIG, NodeProcess, start_host
from tests.integration.test_line import ICE, until

OLD = time.time() - 2 * 86_400.0  # the history's time: two days back
SEED = 200  # changes of the first part of the history (the owner's)
LATER = 12_000  # changes the editor made (also two days back), written while the node is down
CONFIG = LOOPBACK_CONFIG + """
[store]
history_days = 0.0417
snapshot_every = 5
"""


def _seed(data_dir: Path, owner: Identity, away: Identity, editor: Identity) -> SceneReplica:
    """A store holding an open room founded two days ago: ``away`` and ``editor`` are
    editors, the owner made SEED changes. Returns the owner's replica."""
    data_dir.mkdir(parents=True)
    owner.save(data_dir / "identity.key")
    replica = SceneReplica.create(owner, OLD, name="lobby", nonce=b"prune-test-room!")
    replica.grant(away.public_id, "editor")
    replica.grant(editor.public_id, "editor")
    made = [replica.commit(OLD + 1)]
    ents = [replica.create_entity(ROOT, {"p": {"x": 0.0}}) for _ in range(20)]
    rng = random.Random(1)
    for i in range(SEED):
        if i:
            replica.set_field(rng.choice(ents), "p", "x", float(i))
        made.append(replica.commit(OLD + 2 + i))
    with ChangeStore.open(data_dir / "meshnode.db") as store:
        store.add_room(replica.room_id, replica.genesis, "lobby",
                       {"admit": "open", "default": True})
        store.append_changes(replica.room_id, [(c, d) for c, d in _ids(made)])
    return replica


def _ids(datas: list[bytes | None]) -> list[tuple[bytes, bytes]]:
    from protocol.change import change_id

    out = []
    for d in datas:
        assert d is not None
        out.append((change_id(d), d))
    return out


def _later_history(data_dir: Path, owner_replica: SceneReplica, editor: Identity) -> None:
    """The editor's LATER changes, stamped two days back, built on the owner's history only
    (so the client that was away lacks every one of them), appended to the stopped node's
    log."""
    mine = SceneReplica.from_genesis(owner_replica.genesis, editor)
    results = mine.apply_many(owner_replica.changes_since([owner_replica.room_id]),
                              OLD + SEED + 10)
    assert all(r.status == "applied" for r in results)
    ent = mine.create_entity(ROOT, {"p": {"x": -1.0}})
    made = [mine.commit(OLD + SEED + 10)]
    for i in range(LATER - 1):
        mine.set_field(ent, "p", "x", float(i))
        made.append(mine.commit(OLD + SEED + 11 + i * 0.5))
    with ChangeStore.open(data_dir / "meshnode.db") as store:
        store.append_changes(owner_replica.room_id, _ids(made))


def _db(data_dir: Path, room: bytes) -> tuple[int, int]:
    """(rows in the room's change log, pages in use) of a running node's database, read
    through a read-only connection (WAL: the node goes on writing)."""
    uri = (data_dir / "meshnode.db").absolute().as_uri() + "?mode=ro"
    conn = sqlite3.connect(uri, uri=True)
    try:
        rows = conn.execute("SELECT count(*) FROM changes WHERE room_id = ?",
                            (room,)).fetchone()[0]
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        free = conn.execute("PRAGMA freelist_count").fetchone()[0]
    finally:
        conn.close()
    return int(rows), int(pages) - int(free)


def _heads(node: NodeProcess, room: str) -> dict[str, Any]:
    heads: dict[str, Any] = node.get(f"/api/rooms/{room}/heads")
    return heads


async def test_a_node_prunes_and_everyone_converges(tmp_path: Path) -> None:
    owner, away_id, editor = Identity.generate(), Identity.generate(), Identity.generate()
    a_dir = tmp_path / "a"
    owner_replica = _seed(a_dir, owner, away_id, editor)
    room = owner_replica.room_id.hex()
    rid = owner_replica.room_id
    a = NodeProcess(a_dir, config=CONFIG).start()
    nodes = [a]
    away: RoomClient | None = None
    try:
        port = a.url.rsplit(":", 1)[1]
        # A client with a replica of the first part of the history, which then goes away
        # (it keeps retrying this node's URL: it comes back when the node returns there).
        away = connect(a.url, room, away_id, ice=ICE,
                       failover=FailoverSettings(learn_hosts=False, backoff_max_s=1.0))
        await away.__aenter__()
        await until(lambda: away is not None and away.replica.change_count() == SEED + 2,
                    "the first client to sync the first part of the history")
        mark = away.create_entity(ROOT, {"p": {"x": 7.0}})
        assert await away.flush(15.0) is not None
        assert a.terminate() == 0

        _later_history(a_dir, owner_replica, editor)
        rows_before, pages_before = _db(a_dir, rid)
        assert rows_before >= SEED + LATER
        # The node comes back on another port (the away client cannot find it there).
        a.start()
        async with connect(a.url, room, Identity.generate(), ice=ICE) as first:
            await until(lambda: first.replica.change_count() >= SEED + LATER,
                        "a client to sync the old history", 120.0)
            ent = first.create_entity(ROOT, {"p": {"x": 0.0}})
            for i in range(6):  # a few stored changes: a snapshot, and with it the pruning
                first.set_field(ent, "p", "x", float(i))
                assert await first.flush(15.0) is not None
            a.wait_for(lambda: "changes pruned below the retention frontier" in a.log(),
                       "the node to prune")
            before = first.state()
        rows_after, pages_after = _db(a_dir, rid)
        assert rows_after < rows_before - LATER + 100, (rows_before, rows_after)
        assert pages_after < pages_before, (pages_before, pages_after)
        heads = _heads(a, room)
        assert heads["frontier"].get(editor.public_key.hex(), 0) >= LATER - 1

        # The scene is unchanged: a fresh client joins through the signed snapshot.
        async with connect(a.url, room, Identity.generate(), ice=ICE) as fresh:
            assert fresh.joined_from_snapshot
            await until(lambda: fresh.state() == before, "the fresh client to converge")
            assert fresh.replica.get_field(mark, "p", "x") == 7.0

        # A second node joins the room after the pruning and syncs from the pruned node.
        b = start_host(tmp_path / "b", a, room, bootstrap=a, config=CONFIG)
        nodes.append(b)
        assert "joined from the pruned history's snapshot" in b.log()
        b.wait_for(lambda: _heads(b, room)["vv"] == _heads(a, room)["vv"],
                   "the second node to sync from the pruned one", 120.0)
        token = b.post(f"/api/rooms/{room}/invites", {"role": "viewer"})["token"]
        async with connect(b.url, room, Identity.generate(), ice=ICE, invite=token) as at_b:
            await until(lambda: at_b.state() == before, "a client of the second node")

        # Restart after pruning: from the snapshot, with the same scene.
        assert a.terminate() == 0
        a.start(extra=["--listen", f"127.0.0.1:{port}"])  # where the away client looks
        a.wait_for(lambda: "loaded from a snapshot" in a.log(), "a start from the snapshot")
        assert _heads(a, room)["vv"] == _heads(b, room)["vv"]
        # So does the second node, which never held the pruned history.
        assert b.terminate() == 0
        b.start()
        b.wait_for(lambda: "loaded from a snapshot" in b.log(), "the second node's restart")
        assert _heads(b, room)["vv"] == _heads(a, room)["vv"]

        # The away client comes back: the frontier passed its replica, so it rejoins from
        # the snapshot by itself, and converges.
        await until(lambda: away is not None and away.rejoins == 1,
                    "the away client to rejoin from the snapshot", 90.0)
        await until(lambda: away is not None and away.state() == before,
                    "the away client to converge")
    finally:
        if away is not None:
            await away.__aexit__(None, None, None)
        for n in nodes:
            n.kill()
