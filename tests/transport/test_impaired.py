"""Real aiortc links through a lossy, slow UDP path (a user-space impairment relay): the
signed hello and the reliable channel survive loss; the unreliable one loses, as it should."""

import asyncio

import pytest

from meshnode.identity import Identity
from meshnode.transport.ice import IceSettings, install_host_addresses
from meshnode.transport.link import LinkSettings, LocalHello, PeerLink

from .impair import (
    Impairment,
    UdpImpairmentRelay,
    host_candidate,
    point_candidates_at,
)

ICE = IceSettings(host_addresses=("127.0.0.1",))


async def impaired_pair(imp: Impairment) -> tuple[PeerLink, PeerLink, UdpImpairmentRelay]:
    """Two established links whose every datagram crosses the relay."""
    install_host_addresses(ICE.host_addresses)
    a = PeerLink(Identity.generate(), LinkSettings(ice=ICE, hello_timeout_s=60),
                 LocalHello("node", ()))
    b = PeerLink(Identity.generate(), LinkSettings(ice=ICE, hello_timeout_s=60),
                 LocalHello("node", ()))
    offer = await a.create_offer()
    relay = UdpImpairmentRelay(imp)
    front, back = await relay.start()
    # Each side is told the other lives at the relay: every datagram crosses it.
    answer = await b.accept_offer(point_candidates_at(offer, back))
    relay.target = host_candidate(answer)
    await a.accept_answer(point_candidates_at(answer, front))
    await asyncio.wait_for(asyncio.gather(a.established(), b.established()), 90)
    return a, b, relay


@pytest.mark.parametrize("loss", [0.05, 0.15])
async def test_reliable_channel_survives_loss_and_delay(loss: float) -> None:
    a, b, relay = await impaired_pair(Impairment(loss=loss, delay_s=0.02, jitter_s=0.01,
                                                 seed=int(loss * 100)))
    try:
        got: list[bytes] = []
        presence: list[bytes] = []
        b.on_message = lambda ch, data: (got if ch == "sync" else presence).append(data)
        sent = [b"\x93\x01\x02" + i.to_bytes(4, "big") + b"x" * 1000 for i in range(200)]
        for data in sent:
            assert a.send("sync", data)
        for i in range(200):
            a.send("presence", b"\x93\x01\x08" + i.to_bytes(4, "big"))
            if i % 20 == 0:
                await asyncio.sleep(0.01)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 120
        while len(got) < len(sent) and loop.time() < deadline:
            await asyncio.sleep(0.05)
        assert got == sent  # all of it, in order, despite the loss
        assert relay.dropped > 0 and relay.forwarded > 0
        # Unreliable and unordered: some updates are lost, none is resent.
        assert len(presence) < 200
    finally:
        relay.close()
        await a.close("done")
        await b.close("done")
