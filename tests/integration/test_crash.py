"""kill -9 a node in the middle of edits, restart it: no acknowledged edit is lost, and it
converges with its neighbour again. Also: SIGTERM stops a node cleanly."""

import asyncio
import contextlib
from pathlib import Path

from meshnode.client import connect
from meshnode.crdt import ROOT, EntityId
from meshnode.identity import Identity
from tests.integration.nodeproc import NodeProcess, start_host
from tests.integration.test_line import ICE, until


async def test_kill_9_loses_no_acknowledged_edit(tmp_path: Path) -> None:
    a = NodeProcess(tmp_path / "a").start()
    b: NodeProcess | None = None
    try:
        room = a.default_room
        assert room is not None
        b = start_host(tmp_path / "b", a, room, bootstrap=a)
        editor = Identity.generate()
        acked: list[EntityId] = []
        port = a.url.rsplit(":", 1)[1]

        async with connect(a.url, room, editor, ice=ICE) as client:

            async def edit_forever() -> None:
                i = 0
                while True:
                    ent = client.create_entity(ROOT, {"name": {"value": f"e{i}"}})
                    client.set_field(ent, "transform", "position", [float(i), 0.0, 0.0])
                    await client.flush(timeout_s=3)
                    acked.append(ent)  # only after the node said it is durable
                    i += 1

            task = asyncio.create_task(edit_forever())
            await until(lambda: len(acked) >= 30, "30 acknowledged edits")
            a.kill()  # SIGKILL in the middle of the edit stream
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(task, 5)
            task.cancel()
        assert len(acked) >= 30

        # Restart on the same port and data directory: it reloads its store and resyncs.
        a.start(extra=["--listen", f"127.0.0.1:{port}"])
        heads = a.get(f"/api/rooms/{room}/heads")
        async with connect(a.url, room, Identity.generate(), ice=ICE) as check:
            state = check.state()
            lost = [str(e) for e in acked if str(e) not in state]
            assert not lost, f"{len(lost)} acknowledged edits lost: {lost[:5]}"
        assert heads["changes"] >= len(acked)
        b.wait_for(lambda: b.get(f"/api/rooms/{room}/heads")["vv"]
                   == a.get(f"/api/rooms/{room}/heads")["vv"], "A and B to converge")
    finally:
        a.kill()
        if b is not None:
            b.kill()


def test_sigterm_stops_cleanly_and_keeps_the_room(tmp_path: Path) -> None:
    a = NodeProcess(tmp_path / "a").start()
    try:
        room = a.default_room
        assert a.terminate() == 0
        assert "stopping" in a.log()
        a.start()
        assert a.default_room == room  # the same room, reopened from the store
        peer = a.peer_id
        assert a.terminate() == 0
        a.start()
        assert a.peer_id == peer  # the same identity
    finally:
        a.kill()


async def test_client_reconnects_after_its_node_crashes_and_delivers_its_edit(
        tmp_path: Path) -> None:
    a = NodeProcess(tmp_path / "a").start()
    try:
        room = a.default_room
        assert room is not None
        port = a.url.rsplit(":", 1)[1]
        async with connect(a.url, room, Identity.generate(), ice=ICE) as client:
            a.kill()
            # Edited while the node is down: the flush waits for the node to come back.
            ent = client.create_entity(ROOT, {"name": {"value": "made during the outage"}})
            pending = asyncio.create_task(client.flush(timeout_s=90))
            await asyncio.sleep(1.0)
            a.start(extra=["--listen", f"127.0.0.1:{port}"])
            # The dead link is noticed by keepalive (seconds, not ICE consent's ~30 s), the
            # client relinks, and anti-entropy hands the node the unacknowledged change.
            assert await pending is not None
            assert client.reconnects >= 1
        async with connect(a.url, room, Identity.generate(), ice=ICE) as check:
            assert str(ent) in check.state()
    finally:
        a.kill()
