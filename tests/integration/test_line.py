"""Three ``meshnode up`` processes bootstrapped in a line A-B-C, and Python clients at A and C.

Real processes, real aiortc links on loopback, real SQLite stores.
"""

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from meshnode.client import connect
from meshnode.crdt import ROOT
from meshnode.identity import Identity
from meshnode.transport.ice import IceSettings
from tests.integration.nodeproc import NodeProcess, start_host

ICE = IceSettings(host_addresses=("127.0.0.1",))


async def until(predicate: Callable[[], Any], what: str, timeout: float = 60.0) -> None:
    """Poll without blocking the event loop (the clients run on it)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


@pytest.fixture
def line(tmp_path: Path) -> Iterator[tuple[NodeProcess, NodeProcess, NodeProcess, str]]:
    a = NodeProcess(tmp_path / "a").start()
    nodes = [a]
    try:
        room = a.default_room
        assert room is not None
        nodes.append(start_host(tmp_path / "b", a, room, bootstrap=a))
        nodes.append(start_host(tmp_path / "c", a, room, bootstrap=nodes[1]))
        b, c = nodes[1], nodes[2]
        yield a, b, c, room
    finally:
        for node in nodes:
            node.kill()


async def test_edit_at_a_reaches_c_with_presence_and_metrics(
        line: tuple[NodeProcess, NodeProcess, NodeProcess, str]) -> None:
    a, b, c, room = line
    editor = a.post(f"/api/rooms/{room}/invites", {"role": "editor"})["token"]
    alice, carol = Identity.generate(), Identity.generate()
    async with connect(a.url, room, alice, ice=ICE) as at_a, \
            connect(c.url, room, carol, ice=ICE, invite=editor) as at_c:
        assert at_a.role() == "editor" and at_c.role() == "editor"
        seen: list[bytes] = []
        at_c.on_change(lambda cid, peer: seen.append(cid))
        cube = at_a.create_entity(ROOT, {"name": {"value": "cube"},
                                         "transform": {"position": [1.0, 2.0, 3.0]}})
        cid = await at_a.flush()
        assert cid is not None
        await until(lambda: str(cube) in at_c.state(), "the edit at A to reach C's client")
        assert at_c.state()[str(cube)] == at_a.state()[str(cube)]
        assert cid in seen
        # ...and the reverse, from C's client.
        sphere = at_c.create_entity(ROOT, {"name": {"value": "sphere"}})
        await at_c.flush()
        await until(lambda: str(sphere) in at_a.state(), "the edit at C to reach A's client")

        at_a.set_presence({"position": [0.5, 0.0, 0.0], "name": "alice"})
        await until(lambda: alice.public_id in at_c.presence(), "presence from A at C")
        assert at_c.presence()[alice.public_id]["name"] == "alice"

    for node in (a, b, c):
        node.wait_for(lambda n=node: n.get(f"/api/rooms/{room}/heads")["changes"]
                      == a.get(f"/api/rooms/{room}/heads")["changes"], "convergence")
    ma, mc = a.metrics(), c.metrics()
    assert ma["meshnode_changes_stored_total"] >= 2
    assert mc["meshnode_changes_in_total"] >= 2
    assert mc["meshnode_presence_updates_total"] >= 1
    assert mc['meshnode_presence_waited{le="+Inf"}'] >= 1  # C sent it on to its client
    assert ma['meshnode_peers{kind="node"}'] >= 1
    assert any(k.startswith("meshnode_bytes_out_total") and v > 0 for k, v in ma.items())
    assert ma["meshnode_changes_out"] >= 2
    assert mc["meshnode_change_age_seconds_count"] >= 2  # a latency histogram
    assert ma["meshnode_store_commit_seconds_count"] >= 2
    per_room = c.metrics("/api/metrics")  # per-room series are the operator's only
    assert per_room['meshnode_room_participants{room="' + room[:16] + '"}'] >= 0
    status = c.get("/api/status")
    assert status["peer_id"] == c.peer_id
    assert a.get("/healthz")["ok"] is True
