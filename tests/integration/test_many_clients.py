"""A node serves more clients than its overlay has neighbours: clients are leaves, outside the
room's partial view (active_view_size is 6)."""

from pathlib import Path

from meshnode.client import RoomClient, connect
from meshnode.crdt import ROOT
from meshnode.identity import Identity
from tests.integration.nodeproc import NodeProcess
from tests.integration.test_line import ICE, until


async def test_ten_clients_on_one_node_all_see_each_edit_and_presence(tmp_path: Path) -> None:
    node = NodeProcess(tmp_path / "n").start()
    clients: list[RoomClient] = []
    try:
        room = node.default_room
        assert room is not None
        for _ in range(10):
            c = connect(node.url, room, Identity.generate(), ice=ICE)
            await c.open()
            clients.append(c)
        first, last = clients[0], clients[-1]
        ent = last.create_entity(ROOT, {"name": {"value": "seen by all"}})
        await last.flush()
        await until(lambda: all(str(ent) in c.state() for c in clients), "every client")
        first.set_presence({"position": [0.0, 1.0, 2.0]})
        await until(lambda: all(first.peer_id in c.presence() for c in clients[1:]),
                    "presence at every client")
        assert len(node.get("/api/peers")) == 10
    finally:
        for c in clients:
            await c.close()
        node.kill()
