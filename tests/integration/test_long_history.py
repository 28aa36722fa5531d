"""A room with a long history, on a real node process: the node restarts from its snapshot
plus the log after it, a client joins through the node's signed snapshot (not by replaying
the history) and converges, and a client that asks for the full history gets the same scene.

The history is written into the node's SQLite store while the node is stopped, signed by the
node's own identity (the room's owner), as if the node had taken those edits itself: that is
what makes a long history cheap to build in a test.
"""

import time
from pathlib import Path

from meshnode.client import connect
from meshnode.crdt import ROOT
from meshnode.identity import Identity
from tests.integration.nodeproc import NodeProcess, stopped_node_room
from tests.integration.test_line import ICE

HISTORY = 3_000  # changes written before the snapshot
TAIL = 300  # changes written after it


def _write_history(data_dir: Path, room_hex: str) -> dict[str, object]:
    """Append HISTORY changes, save a snapshot, append TAIL more; return the final scene."""
    with stopped_node_room(data_dir, room_hex) as (store, replica, room_id):
        now = time.time() - 60.0
        ents = [replica.create_entity(ROOT, {"p": {"x": 0.0}}) for _ in range(20)]
        batch: list[tuple[bytes, bytes]] = []

        def commit() -> None:
            nonlocal now
            now += 0.001
            data = replica.commit(now)
            assert data is not None
            batch.append((replica.recent_changes(1)[0], data))

        commit()
        for i in range(HISTORY + TAIL):
            replica.set_field(ents[i % len(ents)], "p", "x", float(i))
            commit()
            if i == HISTORY:
                store.append_changes(room_id, batch)
                batch.clear()
                store.save_snapshot(room_id, replica.snapshot(), replica.change_count())
        store.append_changes(room_id, batch)
        return replica.state()


async def test_client_joins_a_long_history_through_a_snapshot(tmp_path: Path) -> None:
    node = NodeProcess(tmp_path / "a").start()
    try:
        room = node.default_room
        assert room is not None
        assert node.terminate() == 0
        expected = _write_history(node.data_dir, room)
        node.start()
        node.wait_for(lambda: "loaded from a snapshot" in node.log(), "a start from the snapshot")
        assert node.get(f"/api/rooms/{room}/heads")["changes"] >= HISTORY + TAIL

        async with connect(node.url, room, Identity.generate(), ice=ICE) as quick:
            assert quick.joined_from_snapshot
            assert quick.state() == expected
            # The joiner holds the history only as a summary: it never replayed it.
            assert quick.replica.change_count() - quick.replica.held_count() > HISTORY
            ent = quick.create_entity(ROOT, {"p": {"x": 42.0}})
            assert await quick.flush() is not None
            async with connect(node.url, room, Identity.generate(), ice=ICE,
                               full_history=True) as auditor:
                assert not auditor.joined_from_snapshot
                assert auditor.replica.unserved_count() == 0  # every change replayed
                await _until(lambda: auditor.state() == quick.state())
                assert auditor.replica.get_field(ent, "p", "x") == 42.0
    finally:
        node.kill()


async def _until(predicate: object, timeout: float = 30.0) -> None:
    import asyncio

    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out waiting for the clients to converge"
        await asyncio.sleep(0.05)
