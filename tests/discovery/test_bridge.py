"""trio guest mode on the node's uvloop loop, and real in-process libp2p hosts on it: provide
and find a room, and a forged room card that no honest node stores or returns."""

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import uvloop

from meshnode.discovery.bridge import BridgeClosed, TrioBridge
from meshnode.discovery.card import CardReason, CardValidator, RoomCard, make_card
from meshnode.discovery.keys import rendezvous, rendezvous_cid
from meshnode.identity import Identity

trio = pytest.importorskip("trio")


def run(main: Callable[[], Awaitable[None]]) -> None:
    uvloop.run(main())


def test_calls_results_errors_cancellation_and_close_cross_the_bridge() -> None:
    cancelled: list[bool] = []

    async def add(a: int, b: int) -> int:
        await trio.sleep(0)
        return a + b

    async def boom() -> None:
        raise KeyError("from trio")

    async def forever() -> None:
        try:
            await trio.sleep_forever()
        finally:
            cancelled.append(True)

    async def main() -> None:
        bridge = TrioBridge()
        await bridge.start()
        assert await bridge.call(add, 2, 3) == 5
        with pytest.raises(KeyError, match="from trio"):
            await bridge.call(boom)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(bridge.call(forever), 0.05)
        for _ in range(20):  # the trio task notices its cancellation on the next turns
            if cancelled:
                break
            await asyncio.sleep(0.01)
        assert cancelled == [True]
        pending = asyncio.ensure_future(bridge.call(forever))
        await asyncio.sleep(0.01)
        await bridge.aclose()
        with pytest.raises(asyncio.CancelledError):
            await pending
        with pytest.raises(BridgeClosed):
            await bridge.call(add, 1, 1)

    run(main)


class AcceptAnything:
    """A validator that stores whatever it is given: the attacker's node."""

    namespace = "meshroom"

    def validate(self, key: str, value: bytes) -> None:
        pass

    def select(self, key: str, values: list[bytes]) -> int:
        return 0


def test_hosts_find_a_provider_and_refuse_a_forged_card() -> None:
    from meshnode.discovery.libp2p_host import Libp2pHost

    rejected: list[str] = []

    async def main() -> None:
        bridge = TrioBridge()
        await bridge.start()
        honest = CardValidator(lambda: int(time.time() * 1000),
                               lambda reason, _d: rejected.append(reason))
        ids = [Identity.generate() for _ in range(3)]
        hosts = [Libp2pHost(ids[0], bridge, honest), Libp2pHost(ids[1], bridge, honest),
                 Libp2pHost(ids[2], bridge, AcceptAnything())]  # type: ignore[arg-type]
        try:
            for h in hosts:
                await h.start()
            assert hosts[0].peer_id == ids[0].public_id  # our identity, our PeerID
            for h in hosts[1:]:
                assert await h.connect(hosts[0].peer_id, hosts[0].addrs(), 10)
            room = os.urandom(32)
            assert await hosts[1].provide(rendezvous_cid(room))
            found = await hosts[2].find_providers(rendezvous_cid(room), 20, 10)
            assert hosts[1].peer_id in {p for p, _ in found}
            genuine = make_card(rendezvous(room), ids[1].public_key, ids[1].sign,
                                ["http://b:1"], hosts[1].addrs(), int(time.time() * 1000),
                                600_000)
            assert await hosts[1].put_value(genuine.key, genuine.encode())
            # The attacker rewrites host 1's card to point at itself, signs it itself.
            forged = RoomCard(genuine.rendezvous, genuine.public_key, ("http://evil:1",),
                              genuine.addrs, genuine.issued_ms + 1, genuine.expires_ms,
                              ids[2].sign(genuine.body()))
            await hosts[2].put_value(genuine.key, forged.encode())
            got: Any = await hosts[0].get_value(genuine.key, 10)
            assert got == genuine.encode()
            assert CardReason.FORGED in rejected
        finally:
            for h in hosts:
                await h.aclose()
            await bridge.aclose()

    run(main)
