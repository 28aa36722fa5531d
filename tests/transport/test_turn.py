"""Links through a real TURN server (coturn on loopback), relay candidates only."""

import asyncio
from collections.abc import Iterator

import pytest

from meshnode.identity import Identity
from meshnode.transport.ice import IceServer, IceSettings, install_host_addresses
from meshnode.transport.link import LinkSettings, LocalHello, PeerLink
from tests.turn import PASSWORD, USER, TurnServer, turn_server


@pytest.fixture
def turn() -> Iterator[TurnServer]:
    with turn_server() as server:
        yield server


async def test_link_through_turn_with_relay_candidates_only(turn: TurnServer) -> None:
    ice = IceSettings(servers=(IceServer((turn.url,), USER, PASSWORD),),
                      host_addresses=("127.0.0.1",), relay_only=True)
    install_host_addresses(ice.host_addresses)
    a = PeerLink(Identity.generate(), LinkSettings(ice=ice), LocalHello("node", ()))
    b = PeerLink(Identity.generate(), LinkSettings(ice=ice), LocalHello("node", ()))
    try:
        offer = await a.create_offer()
        candidates = [ln for ln in offer.splitlines() if ln.startswith("a=candidate")]
        assert candidates and all(" typ relay " in ln for ln in candidates), candidates
        await a.accept_answer(await b.accept_offer(offer))
        await asyncio.wait_for(asyncio.gather(a.established(), b.established()), 30)
        got: list[bytes] = []
        b.on_message = lambda channel, data: got.append(data)
        for i in range(20):
            assert a.send("sync", b"\x92\x01\x44" + bytes([i]))
        deadline = asyncio.get_running_loop().time() + 10
        while len(got) < 20 and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.02)
        assert len(got) == 20
        assert turn.allocations() >= 2
    finally:
        await a.close("done")
        await b.close("done")


async def test_wrong_turn_credentials_give_no_candidates(turn: TurnServer) -> None:
    ice = IceSettings(servers=(IceServer((turn.url,), USER, "wrong"),),
                      host_addresses=("127.0.0.1",), relay_only=True)
    a = PeerLink(Identity.generate(), LinkSettings(ice=ice), LocalHello("node", ()))
    try:
        offer = await a.create_offer()
        assert not [ln for ln in offer.splitlines() if " typ relay " in ln]
    finally:
        await a.close("done")
