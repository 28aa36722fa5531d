"""``LinkManager``'s inbox: what arrives on links is handled in arrival order, in slices of
the loop's time, so a burst never keeps the node's other tasks (the disk's group commit,
acknowledgements, the outbox) waiting for all of it; past its byte bound it is handled at
once; messages of a link that closed meanwhile are not handled."""

import asyncio
import random
import time
from dataclasses import dataclass, field

import pytest

from meshnode.identity import Identity
from meshnode.metrics import NodeMetrics
from meshnode.runtime import link_intake
from meshnode.runtime.links import Established, LinkManager, LinkService
from meshnode.transport.link import LinkSettings, LocalHello
from protocol import frames
from protocol.frames import encode_frame
from protocol.link import Bundle, Hello, encode_link, make_hello

ME = Identity.generate()
PEERS = [Identity.generate() for _ in range(2)]
ROOM = bytes(range(32))


@dataclass
class Slow(LinkService):
    """Takes ``cost_s`` of CPU per frame, and records which frames it saw."""

    cost_s: float = 0.0
    seen: list[tuple[str, int]] = field(default_factory=list)
    fail_on: int | None = None

    def frame(self, est: Established, channel: str, data: bytes, room_id: bytes) -> None:
        n = int.from_bytes(frames.decode_frame(data).heads[0][:4], "big")  # type: ignore[union-attr]
        if n == self.fail_on:
            raise RuntimeError("a bug in a service")
        end = time.perf_counter() + self.cost_s
        while time.perf_counter() < end:
            pass
        self.seen.append((est.peer, n))


class FakeLink:
    def __init__(self) -> None:
        self.closed: list[str] = []

    async def close(self, reason: str) -> None:
        self.closed.append(reason)


def _no_hello(kind_hint: str) -> LocalHello:
    raise AssertionError("these tests open no link")


def _frame(n: int) -> bytes:
    return encode_frame(frames.Heads(ROOM, (n.to_bytes(4, "big") + b"\x00" * 28,)))


def _setup(cost_s: float = 0.0) -> tuple[LinkManager, Slow, list[Established]]:
    service = Slow(cost_s)
    mgr = LinkManager(ME, LinkSettings(), _no_hello, NodeMetrics(), clock=lambda: 1000.0)
    mgr.register(service)
    mgr.relay.rng = random.Random(0)
    ests = []
    for peer in PEERS:
        hello = make_hello(peer.public_key, "node", "sha-256 AB:CD", "sha-256 EF:01", [ROOM],
                           "", int(time.time() * 1000), peer.sign, [])
        assert isinstance(hello, Hello)
        est = Established(link=FakeLink(), peer=peer.public_id,  # type: ignore[arg-type]
                          hello=hello, offered_by_us=False, rooms={ROOM})
        mgr.links[peer.public_id] = est
        ests.append(est)
    return mgr, service, ests


async def _settle(mgr: LinkManager) -> None:
    for _ in range(10_000):
        if not mgr._inbox and not mgr._inbox_scheduled:
            return
        await asyncio.sleep(0)
    raise AssertionError("the inbox never emptied")


async def test_a_burst_is_handled_in_order_with_other_callbacks_in_between() -> None:
    mgr, service, (a, b) = _setup(cost_s=0.001)
    turns: list[int] = []
    loop = asyncio.get_running_loop()

    def other_task() -> None:  # stands for the disk's writer, acks, the outbox
        turns.append(len(service.seen))
        if len(turns) < 100 and len(service.seen) < 40:
            loop.call_soon(other_task)

    for n in range(40):  # all arrive in one turn, as aiortc delivers a queued burst
        mgr._receive(a if n % 2 else b, "sync", _frame(n))
    loop.call_soon(other_task)
    assert service.seen == []  # nothing handled inside the receive path itself
    await _settle(mgr)
    assert [n for _, n in service.seen] == list(range(40))
    assert service.seen[0] == (b.peer, 0) and service.seen[1] == (a.peer, 1)
    # The other task ran while the burst was being handled, not only after all of it.
    assert any(0 < t < 40 for t in turns), turns


async def test_a_bundle_is_unpacked_in_order() -> None:
    mgr, service, (a, _) = _setup()
    mgr._receive(a, "sync", encode_link(Bundle(tuple(_frame(n) for n in range(5)))))
    mgr._receive(a, "sync", _frame(5))
    await _settle(mgr)
    assert [n for _, n in service.seen] == list(range(6))


async def test_past_the_byte_bound_everything_waiting_is_handled_at_once(
        monkeypatch: pytest.MonkeyPatch) -> None:
    mgr, service, (a, _) = _setup()
    size = len(_frame(0))
    monkeypatch.setattr(link_intake, "INBOX_MAX_BYTES", 3 * size)
    for n in range(3):
        mgr._receive(a, "sync", _frame(n))
    assert service.seen == []
    mgr._receive(a, "sync", _frame(3))  # over the bound: handled now, the oldest first
    assert [n for _, n in service.seen] == [0, 1, 2, 3]
    assert mgr._inbox_bytes == 0
    await _settle(mgr)
    assert len(service.seen) == 4


async def test_messages_of_a_closed_link_are_not_handled() -> None:
    mgr, service, (a, b) = _setup()
    mgr._receive(a, "sync", _frame(0))
    mgr._receive(b, "sync", _frame(1))
    del mgr.links[a.peer]  # closed after its message arrived
    await _settle(mgr)
    assert service.seen == [(b.peer, 1)]
    assert mgr._inbox_bytes == 0


async def test_an_error_closes_that_link_only() -> None:
    mgr, service, (a, b) = _setup()
    service.fail_on = 1
    for n in range(4):
        mgr._receive(a if n == 1 else b, "sync", _frame(n))
    await _settle(mgr)
    await asyncio.sleep(0)
    assert [n for _, n in service.seen] == [0, 2, 3]
    assert a.link.closed == ["internal_error"]  # type: ignore[attr-defined]
    assert b.link.closed == []  # type: ignore[attr-defined]
