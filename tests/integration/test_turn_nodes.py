"""Two nodes and a client whose links all go through a TURN server (relay candidates only):
the configuration path an operator behind a strict NAT uses, end to end."""

from pathlib import Path

from meshnode.client import connect
from meshnode.crdt import ROOT
from meshnode.identity import Identity
from meshnode.transport.ice import IceServer, IceSettings
from tests.integration.nodeproc import NodeProcess, start_host
from tests.integration.test_line import until
from tests.turn import PASSWORD, USER, turn_server


def relay_config(turn_url: str) -> str:
    return f"""
[network]
host_addresses = ["127.0.0.1"]
relay_only = true

[[network.ice_servers]]
urls = ["{turn_url}"]
username = "{USER}"
credential = "{PASSWORD}"
"""


async def test_nodes_and_client_link_through_turn(tmp_path: Path) -> None:
    with turn_server() as turn:
        config = relay_config(turn.url)
        a = NodeProcess(tmp_path / "a", config=config).start()
        b = None
        try:
            room = a.default_room
            assert room is not None
            b = start_host(tmp_path / "b", a, room, bootstrap=a, config=config)
            ice = IceSettings(servers=(IceServer((turn.url,), USER, PASSWORD),),
                              host_addresses=("127.0.0.1",), relay_only=True)
            async with connect(b.url, room, Identity.generate(), ice=ice,
                               invite=a.post(f"/api/rooms/{room}/invites",
                                             {"role": "editor"})["token"]) as client:
                ent = client.create_entity(ROOT, {"name": {"value": "relayed"}})
                await client.flush()
                heads = client.replica.version_vector()
                await until(lambda: a.get(f"/api/rooms/{room}/heads")["vv"]
                            == {k.hex(): v for k, v in heads.items()}, "the edit at A")
                assert str(ent) in client.state()
            # Every link (A-B, client-B) allocated relays on the TURN server.
            assert turn.allocations() >= 4
        finally:
            a.kill()
            if b is not None:
                b.kill()
