"""``PeerLink`` over real aiortc on loopback: hello, channels, backpressure, closing.

Two links in one event loop (and one test with the answerer in another process). A
``RawPeer`` is a bare aiortc answerer that sends exactly what a test tells it to: a forged,
replayed or missing hello, garbage, text, oversized messages.

Waits are bounded by generous timeouts; no test asserts a duration.
"""

import asyncio
import gc
import json
import os
import sys
import time
import weakref
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aioice.ice
import pytest
from aiortc import RTCDataChannel, RTCPeerConnection, RTCSessionDescription

import meshnode.transport.ice as ice_module
from meshnode.identity import Identity
from meshnode.transport.hello import HelloRejected, local_fingerprint_of
from meshnode.transport.ice import IceSettings, install_host_addresses
from meshnode.transport.link import (
    PRESENCE,
    SYNC,
    LinkClosed,
    LinkSettings,
    LocalHello,
    PeerLink,
)
from protocol.frames import Changes, encode_frame
from protocol.link import Hello, Signal, encode_link, make_hello
from protocol.msgpack_io import pack

ICE = IceSettings(host_addresses=("127.0.0.1",))
LOOPBACK = LinkSettings(ice=ICE)
A = Identity.from_private_bytes(b"\x0a" * 32)
B = Identity.from_private_bytes(b"\x0b" * 32)
C = Identity.from_private_bytes(b"\x0c" * 32)
ROOM_1 = b"\x01" * 32
ROOM_2 = b"\x02" * 32
WAIT_S = 20.0
REPO = Path(__file__).resolve().parents[2]

NewLink = Callable[..., PeerLink]


@pytest.fixture(autouse=True, scope="module")
def _restore_host_addresses() -> Iterator[None]:
    """These tests make aioice offer only 127.0.0.1 (process-wide); undo it afterwards."""
    saved = aioice.ice.get_host_addresses, ice_module._host_addresses
    yield
    aioice.ice.get_host_addresses, ice_module._host_addresses = saved


async def until(condition: Callable[[], bool], what: str, timeout: float = WAIT_S) -> None:
    """Wait until ``condition()`` holds (polling); fail after a generous ``timeout``."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


@pytest.fixture
async def new_link() -> AsyncIterator[NewLink]:
    made: list[PeerLink] = []

    def make(identity: Identity, *, settings: LinkSettings = LOOPBACK,
             local: LocalHello | None = None, expected_peer: str | None = None) -> PeerLink:
        link = PeerLink(identity, settings, local or LocalHello("node", (ROOM_1,)),
                        expected_peer=expected_peer)
        made.append(link)
        return link

    yield make
    for link in made:
        await link.close("test_over")


async def connect(offerer: PeerLink, answerer: PeerLink) -> None:
    offer = await offerer.create_offer()
    answer = await answerer.accept_offer(offer)
    await offerer.accept_answer(answer)


async def established(a: PeerLink, b: PeerLink) -> tuple[Hello, Hello]:
    await connect(a, b)
    ha, hb = await asyncio.wait_for(asyncio.gather(a.established(), b.established()), WAIT_S)
    return ha, hb


class Inbox:
    """Collects what a link delivers."""

    def __init__(self, link: PeerLink | None = None) -> None:
        self.messages: list[tuple[str, bytes]] = []
        if link is not None:
            link.on_message = self

    def __call__(self, channel: str, data: bytes) -> None:
        self.messages.append((channel, data))

    def on(self, channel: str) -> list[bytes]:
        return [d for c, d in self.messages if c == channel]


class RawPeer:
    """A bare aiortc answerer: it speaks no hello unless told, and sends what it is told."""

    def __init__(self, identity: Identity = B) -> None:
        install_host_addresses(ICE.host_addresses)
        self.identity = identity
        self.pc = RTCPeerConnection(ICE.rtc_configuration())
        self.channels: dict[str, RTCDataChannel] = {}
        self.received: list[tuple[str, bytes | str]] = []
        self.fingerprint = ""
        self.offer_fingerprint = ""
        self.pc.on("datachannel", self._on_datachannel)

    def _on_datachannel(self, channel: RTCDataChannel) -> None:
        self.channels[channel.label] = channel
        label = channel.label
        channel.on("message", lambda data: self.received.append((label, data)))

    async def answer(self, offer: str) -> str:
        self.offer_fingerprint = local_fingerprint_of(offer)
        # Ignore the link's advertised limit (aiortc then assumes 64 KiB), to test refusals.
        offer = "\r\n".join(ln for ln in offer.splitlines() if "max-message-size" not in ln)
        await self.pc.setRemoteDescription(RTCSessionDescription(offer, "offer"))
        await self.pc.setLocalDescription(await self.pc.createAnswer())
        sdp: str = self.pc.localDescription.sdp
        self.fingerprint = local_fingerprint_of(sdp)
        return sdp

    async def connect(self, link: PeerLink) -> None:
        await link.accept_answer(await self.answer(await link.create_offer()))
        await until(lambda: len(self.channels) == 2, "the raw peer's channels")

    def hello(self, **kw: Any) -> bytes:
        """A correct hello from this peer, with ``kw`` overriding ``make_hello``'s args."""
        args: dict[str, Any] = {
            "public_key": self.identity.public_key, "kind": "node",
            "fingerprint": self.fingerprint, "peer_fingerprint": self.offer_fingerprint,
            "rooms": [ROOM_2], "url": "", "time_ms": int(time.time() * 1000),
            "sign": self.identity.sign,
        }
        args.update(kw)
        return encode_link(make_hello(**args))

    def send(self, channel: str, data: bytes | str) -> None:
        self.channels[channel].send(data)

    async def close(self) -> None:
        await self.pc.close()


@pytest.fixture
async def raw_peer() -> AsyncIterator[Callable[..., RawPeer]]:
    made: list[RawPeer] = []

    def make(identity: Identity = B) -> RawPeer:
        peer = RawPeer(identity)
        made.append(peer)
        return peer

    yield make
    for peer in made:
        await peer.close()


async def closed_with(link: PeerLink) -> str:
    """The reason ``established()`` gives for a link that fails."""
    with pytest.raises((LinkClosed, HelloRejected)) as info:
        await asyncio.wait_for(link.established(), WAIT_S)
    error = info.value
    assert isinstance(error, LinkClosed | HelloRejected)
    assert link.closed
    assert link.close_reason == error.reason
    return error.reason


# ---------------------------------------------------------------- hello and data


async def test_connect_exchanges_verified_hellos(new_link: NewLink) -> None:
    a = new_link(A, local=LocalHello("node", (ROOM_1, ROOM_2), url="https://a.example"),
                 expected_peer=B.public_id)
    b = new_link(B, local=LocalHello("client", (ROOM_2,), invites=(b"token",)))
    assert a.state == b.state == "new"
    hello_of_b, hello_of_a = await established(a, b)
    assert a.state == b.state == "established"
    assert a.peer_id == B.public_id and b.peer_id == A.public_id
    assert hello_of_a.rooms == (ROOM_1, ROOM_2) and hello_of_a.url == "https://a.example"
    assert hello_of_a.kind == "node"
    assert hello_of_b.rooms == (ROOM_2,) and hello_of_b.kind == "client"
    assert hello_of_b.invites == (b"token",)
    assert a.remote_hello == hello_of_b and b.remote_hello == hello_of_a
    # the hello is the first message on sync each way
    assert a.stats.sync.messages_out == 1 and b.stats.sync.messages_in == 1
    assert await a.established() == hello_of_b  # asking again gives the same answer


async def test_messages_both_ways_on_both_channels(new_link: NewLink) -> None:
    a, b = new_link(A), new_link(B)
    await established(a, b)
    at_a, at_b = Inbox(a), Inbox(b)
    frame = encode_frame(Changes(ROOM_1, (b"change-1",)))
    assert a.send(SYNC, frame)
    assert a.send(PRESENCE, b"pose from a")
    assert b.send(SYNC, b"sync from b")
    assert b.send(PRESENCE, b"pose from b")
    assert a.send(SYNC, b"")  # empty messages are messages too
    await until(lambda: len(at_a.messages) == 2 and len(at_b.messages) == 3, "messages")
    assert at_b.on(SYNC) == [frame, b""] and at_b.on(PRESENCE) == [b"pose from a"]
    assert at_a.on(SYNC) == [b"sync from b"] and at_a.on(PRESENCE) == [b"pose from b"]
    assert a.stats.presence.messages_out == 1 and b.stats.presence.messages_in == 1
    assert a.stats.sync.bytes_out == b.stats.sync.bytes_in


async def test_500_messages_of_10_kb_arrive_in_order(new_link: NewLink) -> None:
    a, b = new_link(A), new_link(B)
    await established(a, b)
    inbox = Inbox(b)
    payload = os.urandom(10_000)
    for i in range(500):
        assert a.send(SYNC, i.to_bytes(4, "big") + payload)
    # more was accepted than one channel buffer holds: the link's own queue took the rest
    assert a.stats.queue_peak_bytes > 0
    assert a.buffered_bytes() > LOOPBACK.high_water_bytes
    await until(lambda: len(inbox.messages) == 500, "500 messages")
    assert [int.from_bytes(d[:4], "big") for d in inbox.on(SYNC)] == list(range(500))
    assert all(d[4:] == payload for d in inbox.on(SYNC))
    assert a.stats.sync.dropped == {}
    await until(lambda: a.buffered_bytes() == 0, "the queue to drain")


async def test_a_full_queue_refuses_instead_of_growing(new_link: NewLink) -> None:
    small = LinkSettings(ice=ICE, high_water_bytes=64_000, max_queue_bytes=256_000)
    a, b = new_link(A, settings=small), new_link(B, settings=small)
    await established(a, b)
    inbox = Inbox(b)
    accepted = 0
    while a.send(SYNC, accepted.to_bytes(4, "big") + bytes(10_000)):
        accepted += 1
        assert accepted < 1_000, "the queue never filled"
    assert not a.send(SYNC, bytes(10_004))  # still full: refused, not queued
    assert a.stats.sync.dropped["queue_full"] == 2
    assert 0 < a.buffered_bytes() <= 64_000 + 256_000 + 10_004
    assert a.stats.queue_peak_bytes <= 256_000
    # what was accepted is delivered, in order, and the link takes data again once drained
    await until(lambda: len(inbox.messages) == accepted, "the accepted messages")
    assert [int.from_bytes(d[:4], "big") for d in inbox.on(SYNC)] == list(range(accepted))
    await until(lambda: a.buffered_bytes() == 0, "the queue to drain")
    assert a.send(SYNC, b"after")
    await until(lambda: len(inbox.messages) == accepted + 1, "the message after")


async def test_presence_is_dropped_above_high_water_never_queued(new_link: NewLink) -> None:
    small = LinkSettings(ice=ICE, high_water_bytes=64_000)
    a, b = new_link(A, settings=small), new_link(B, settings=small)
    await established(a, b)
    results = [a.send(PRESENCE, bytes(10_000)) for _ in range(20)]
    assert results[0] and not results[-1]
    assert results.index(False) == sum(results)  # accepted until full, then refused
    assert a.stats.presence.dropped["high_water"] == results.count(False)
    assert a.stats.queue_peak_bytes == 0
    assert a.buffered_bytes() <= 64_000 + 10_000


async def test_oversized_messages_are_refused_by_the_sender(new_link: NewLink) -> None:
    a = new_link(A, settings=LinkSettings(ice=ICE, max_message_bytes=100_000))
    b = new_link(B, settings=LinkSettings(ice=ICE, max_message_bytes=5_000))
    await established(a, b)
    inbox = Inbox(b)
    assert not a.send(SYNC, bytes(5_001))  # over b's advertised limit
    assert not a.send(PRESENCE, bytes(5_001))
    assert not b.send(SYNC, bytes(5_001))  # over b's own limit
    assert a.stats.sync.dropped == {"too_large": 1} and b.stats.sync.dropped == {"too_large": 1}
    assert a.send(SYNC, bytes(5_000))
    await until(lambda: len(inbox.messages) == 1, "the largest allowed message")
    assert not a.closed and not b.closed


async def test_an_oversized_message_closes_the_link_unseen(
    new_link: NewLink, raw_peer: Callable[..., RawPeer],
) -> None:
    a = new_link(A, settings=LinkSettings(ice=ICE, max_message_bytes=5_000))
    peer = raw_peer()
    await peer.connect(a)
    peer.send(SYNC, peer.hello())
    await asyncio.wait_for(a.established(), WAIT_S)
    inbox = Inbox(a)
    peer.send(SYNC, b"fine")
    peer.send(SYNC, bytes(5_001))  # a raw peer ignores the advertised max-message-size
    await until(lambda: a.closed, "the link to close")
    assert a.close_reason == "too_large"
    assert inbox.messages == [(SYNC, b"fine")]


async def test_messages_before_on_message_is_set_wait_for_it(new_link: NewLink) -> None:
    a, b = new_link(A), new_link(B)
    await established(a, b)
    for i in range(5):
        assert a.send(SYNC, bytes([i]))
    await until(lambda: b.stats.sync.messages_in == 6, "the messages")
    inbox = Inbox(b)  # sets on_message: the waiting messages follow, in order
    await until(lambda: len(inbox.messages) == 5, "the waiting messages")
    assert inbox.on(SYNC) == [bytes([i]) for i in range(5)]


async def test_a_failing_on_message_handler_does_not_break_the_link(new_link: NewLink) -> None:
    a, b = new_link(A), new_link(B)
    await established(a, b)
    got: list[bytes] = []

    def handler(channel: str, data: bytes) -> None:
        got.append(data)
        if data == b"boom":
            raise RuntimeError("owner bug")

    b.on_message = handler
    a.send(SYNC, b"boom")
    a.send(SYNC, b"after")
    await until(lambda: len(got) == 2, "both messages")
    assert not b.closed


# ---------------------------------------------------------------- refused hellos


async def test_a_hello_signed_by_another_key_than_expected_is_rejected(
    new_link: NewLink,
) -> None:
    a = new_link(A, expected_peer=C.public_id)  # we dial C; B answers
    b = new_link(B)
    await connect(a, b)
    with pytest.raises(HelloRejected) as info:
        await asyncio.wait_for(a.established(), WAIT_S)
    assert info.value.reason == "wrong_peer"
    assert a.closed and a.close_reason == "wrong_peer" and a.peer_id is None
    await until(lambda: b.closed, "the other side to close")


async def test_a_hello_made_for_another_connection_is_rejected(
    new_link: NewLink, raw_peer: Callable[..., RawPeer],
) -> None:
    # A relay or a replay: correctly signed, but naming a certificate that is not ours.
    a = new_link(A, expected_peer=B.public_id)
    peer = raw_peer()
    await peer.connect(a)
    peer.send(SYNC, peer.hello(peer_fingerprint="sha-256 " + ":".join(["00"] * 32)))
    assert await closed_with(a) == "not_for_us"


async def test_a_replayed_hello_is_rejected(
    new_link: NewLink, raw_peer: Callable[..., RawPeer],
) -> None:
    a1, b1 = new_link(A), new_link(B)
    hello_of_b, _ = await established(a1, b1)
    # Someone who recorded B's hello replays it to A on a connection of their own.
    a2 = new_link(A, expected_peer=B.public_id)
    peer = raw_peer(C)
    await peer.connect(a2)
    peer.send(SYNC, encode_link(hello_of_b))
    assert await closed_with(a2) == "fingerprint_mismatch"


async def test_a_stale_hello_is_rejected(
    new_link: NewLink, raw_peer: Callable[..., RawPeer],
) -> None:
    a = new_link(A)
    peer = raw_peer()
    await peer.connect(a)
    peer.send(SYNC, peer.hello(time_ms=int(time.time() * 1000) - 3_600_000))
    assert await closed_with(a) == "stale"


FIRST_MESSAGES: list[tuple[str, bytes | str, str]] = [
    ("garbage", b"\xc1 not msgpack", "malformed_msgpack"),
    ("a room frame", encode_frame(Changes(ROOM_1, (b"x",))), "hello_expected"),
    ("another link message", encode_link(Signal(A.public_id, B.public_id, 1, bytes(16),
                                                "offer", "v=0")), "hello_expected"),
    ("a broken hello", pack([1, Hello.TYPE, b"\x90", bytes(64)]), "schema"),
    ("an unknown version", pack([9, Hello.TYPE, b"", bytes(64)]), "unknown_version"),
    ("text", "hello?", "text_message"),
]


@pytest.mark.parametrize(("first", "reason"), [(m, r) for _, m, r in FIRST_MESSAGES],
                         ids=[name for name, _, _ in FIRST_MESSAGES])
async def test_anything_but_a_hello_first_closes_the_link(
    new_link: NewLink, raw_peer: Callable[..., RawPeer], first: bytes | str, reason: str,
) -> None:
    a = new_link(A)
    closes: list[str] = []
    a.on_close = closes.append
    peer = raw_peer()
    await peer.connect(a)
    peer.send(SYNC, first)
    assert await closed_with(a) == reason
    assert closes == [reason]


async def test_a_second_hello_or_text_after_the_hello_closes_the_link(
    new_link: NewLink, raw_peer: Callable[..., RawPeer],
) -> None:
    for second, reason in ((None, "unexpected_hello"), ("text", "text_message")):
        a = new_link(A)
        inbox = Inbox(a)
        peer = raw_peer()
        await peer.connect(a)
        hello = peer.hello()
        peer.send(SYNC, hello)
        await asyncio.wait_for(a.established(), WAIT_S)
        peer.send(SYNC, hello if second is None else second)
        await until(lambda a=a: a.closed, "the link to close")  # type: ignore[misc]
        assert a.close_reason == reason
        assert inbox.messages == []


async def test_presence_before_the_hello_is_dropped(
    new_link: NewLink, raw_peer: Callable[..., RawPeer],
) -> None:
    # Presence travels on its own unordered stream and may overtake the hello.
    a = new_link(A)
    peer = raw_peer()
    await peer.connect(a)
    await until(lambda: all(ch.readyState == "open" for ch in peer.channels.values()), "open")
    peer.send(PRESENCE, b"early pose")
    await until(lambda: a.stats.presence.messages_in == 1, "the early pose")
    peer.send(SYNC, peer.hello())
    await asyncio.wait_for(a.established(), WAIT_S)
    assert a.stats.presence.dropped == {"before_hello": 1}


async def test_no_hello_in_time_closes_the_link(
    new_link: NewLink, raw_peer: Callable[..., RawPeer],
) -> None:
    a = new_link(A, settings=LinkSettings(ice=ICE, hello_timeout_s=0.5))
    peer = raw_peer()
    await peer.connect(a)
    assert await closed_with(a) == "hello_timeout"
    # our own hello did go out, first, on sync
    assert peer.received and peer.received[0][0] == SYNC


# ---------------------------------------------------------------- closing


async def test_closing_one_side_closes_the_other(new_link: NewLink) -> None:
    a, b = new_link(A), new_link(B)
    await established(a, b)
    closes_a: list[str] = []
    closes_b: list[str] = []
    a.on_close, b.on_close = closes_a.append, closes_b.append
    await a.close("bye")
    await a.close("again")  # idempotent
    assert a.closed and a.state == "closed" and closes_a == ["bye"]
    await until(lambda: b.closed, "the other side to close")
    assert closes_b == [b.close_reason]
    await b.close("later")
    assert closes_b == [b.close_reason]  # exactly once
    # a closed link never raises on send
    assert not a.send(SYNC, b"x") and not a.send(PRESENCE, b"x")
    assert a.stats.sync.dropped == {"closed": 1}
    with pytest.raises(LinkClosed) as info:
        await a.established()
    assert info.value.reason == "bye"
    with pytest.raises(LinkClosed):
        await a.create_offer()


async def test_on_close_set_after_the_link_closed_is_still_called(new_link: NewLink) -> None:
    a = new_link(A)
    await a.close("early")
    closes: list[str] = []
    a.on_close = closes.append
    await until(lambda: closes == ["early"], "on_close")
    a.on_close = closes.append
    await asyncio.sleep(0.05)
    assert closes == ["early"]


async def test_closing_drops_what_was_queued(new_link: NewLink) -> None:
    a, b = new_link(A), new_link(B)
    await established(a, b)
    while a.stats.queue_peak_bytes == 0:
        assert a.send(SYNC, bytes(50_000))
    await a.close("bye")
    assert a.stats.sync.dropped["closed"] >= 1
    assert a.buffered_bytes() == 0


async def test_closing_while_waiting_for_the_hello(new_link: NewLink) -> None:
    a, b = new_link(A), new_link(B)
    await connect(a, b)
    waiter = asyncio.ensure_future(a.established())
    await a.close("changed_my_mind")
    with pytest.raises(LinkClosed) as info:
        await waiter
    assert info.value.reason == "changed_my_mind"


async def test_closing_while_gathering_the_offer(new_link: NewLink) -> None:
    link = new_link(A)
    offering = asyncio.ensure_future(link.create_offer())
    await asyncio.sleep(0)
    await link.close("never_mind")
    with pytest.raises(LinkClosed) as info:
        await offering
    assert info.value.reason == "never_mind"


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else 0


async def test_open_close_cycles_leave_no_tasks_sockets_or_links(new_link: NewLink) -> None:
    gc.collect()
    baseline, fds = len(asyncio.all_tasks()), open_fds()
    refs: list[weakref.ref[PeerLink]] = []
    # closed halfway through gathering candidates (offer, then answer)
    a = PeerLink(A, LOOPBACK, LocalHello("node", ()))
    offering = asyncio.ensure_future(a.create_offer())
    await asyncio.sleep(0)
    await a.close("cycle")
    b = PeerLink(B, LOOPBACK, LocalHello("node", ()))
    c = PeerLink(C, LOOPBACK, LocalHello("node", ()))
    answering = asyncio.ensure_future(b.accept_offer(await c.create_offer()))
    await asyncio.sleep(0)
    await b.close("cycle")
    await c.close("cycle")
    for task in (offering, answering):
        with pytest.raises(LinkClosed):
            await task
    refs += [weakref.ref(a), weakref.ref(b), weakref.ref(c)]
    del a, b, c, offering, answering, task
    for i in range(8):
        a = PeerLink(A, LOOPBACK, LocalHello("node", ()))
        b = PeerLink(B, LOOPBACK, LocalHello("node", ()))
        await established(a, b)
        a.on_message = b.on_message = lambda channel, data: None
        assert a.send(SYNC, b"x" * 1000)
        first, second = (a, b) if i % 2 else (b, a)
        await first.close("cycle")
        await until(lambda s=second: s.closed, "the other side")  # type: ignore[misc]
        await second.close("cycle")
        refs += [weakref.ref(a), weakref.ref(b)]
        del a, b, first, second
    await until(lambda: len(asyncio.all_tasks()) <= baseline, "tasks to end")
    gc.collect()
    assert [r for r in refs if r() is not None] == []
    assert open_fds() <= fds


# ---------------------------------------------------------------- misuse and bad input


async def test_an_unusable_offer_closes_the_link(new_link: NewLink) -> None:
    link = new_link(B)
    closes: list[str] = []
    link.on_close = closes.append
    with pytest.raises(LinkClosed) as info:
        await link.accept_offer("v=0\r\nthis is not an offer\r\n")
    assert info.value.reason == "bad_sdp" and link.closed and closes == ["bad_sdp"]


async def test_an_offer_without_a_certificate_fingerprint_is_refused(new_link: NewLink) -> None:
    offer = await new_link(A).create_offer()
    stripped = "\r\n".join(ln for ln in offer.splitlines() if "fingerprint" not in ln)
    with pytest.raises(LinkClosed, match="bad_sdp"):
        await new_link(B).accept_offer(stripped)


@pytest.mark.parametrize(("channels", "reason"), [
    ([("sync", {}), ("presence", {})], "bad_channel"),  # presence must be unreliable
    ([("sync", {"ordered": False}), ("presence", {"ordered": False, "maxRetransmits": 0})],
     "bad_channel"),
    ([("sync", {}), ("video", {})], "unexpected_channel"),
    ([("sync", {}), ("sync", {})], "unexpected_channel"),
])
async def test_channels_other_than_ours_close_the_link(
    new_link: NewLink, channels: list[tuple[str, dict[str, Any]]], reason: str,
) -> None:
    install_host_addresses(ICE.host_addresses)
    offerer = RTCPeerConnection(ICE.rtc_configuration())
    try:
        for label, options in channels:
            offerer.createDataChannel(label, **options)
        await offerer.setLocalDescription(await offerer.createOffer())
        link = new_link(B)
        answer = await link.accept_offer(offerer.localDescription.sdp)
        await offerer.setRemoteDescription(RTCSessionDescription(answer, "answer"))
        assert await closed_with(link) == reason
    finally:
        await offerer.close()


async def test_calls_out_of_order_say_what_is_wrong(new_link: NewLink) -> None:
    link = new_link(A)
    with pytest.raises(RuntimeError, match="accept_answer"):
        await link.accept_answer("v=0")
    assert not link.send(SYNC, b"too early")
    assert link.stats.sync.dropped == {"not_established": 1}
    with pytest.raises(ValueError, match="no channel"):
        link.send("video", b"x")
    await link.create_offer()
    with pytest.raises(RuntimeError, match="create_offer"):
        await link.create_offer()
    with pytest.raises(RuntimeError, match="accept_offer"):
        await link.accept_offer("v=0")
    assert not link.closed


def test_settings_and_local_hello_are_checked() -> None:
    with pytest.raises(ValueError, match="high_water_bytes"):
        LinkSettings(high_water_bytes=0)
    with pytest.raises(ValueError, match="kind"):
        LocalHello("relay", ())
    with pytest.raises(ValueError, match="32 bytes"):
        LocalHello("node", (b"short",))
    with pytest.raises(ValueError, match="duplicate"):
        LocalHello("node", (ROOM_1, ROOM_1))
    with pytest.raises(ValueError, match="url"):
        LocalHello("node", (), url="u" * 257)


# ---------------------------------------------------------------- across processes


async def test_a_link_to_another_process(new_link: NewLink) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.transport._peer_process", cwd=REPO,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
    )
    assert proc.stdin is not None and proc.stdout is not None

    async def read() -> dict[str, Any]:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), WAIT_S)
        assert line, "the peer process ended early"
        result: dict[str, Any] = json.loads(line)
        return result

    try:
        peer_id = (await read())["peer_id"]
        link = new_link(A, expected_peer=peer_id)
        proc.stdin.write(json.dumps({"offer": await link.create_offer(),
                                     "expected_peer": A.public_id}).encode() + b"\n")
        await proc.stdin.drain()
        await link.accept_answer((await read())["answer"])
        hello = await asyncio.wait_for(link.established(), WAIT_S)
        assert link.peer_id == peer_id and hello.rooms == (b"\x07" * 32,)
        assert (await read()) == {"established": A.public_id, "rooms": [ROOM_1.hex()]}
        inbox = Inbox(link)
        sent = [i.to_bytes(4, "big") + os.urandom(2_000) for i in range(200)]
        for data in sent:
            assert link.send(SYNC, data)
        assert link.send(PRESENCE, b"pose")
        await until(lambda: len(inbox.on(SYNC)) == len(sent), "the echoes")
        assert inbox.on(SYNC) == sent
        await until(lambda: len(inbox.on(PRESENCE)) == 1, "the presence echo")
        await link.close("done")
        assert (await read())["closed"] in {"channel_closed", "connection_closed"}
        assert await asyncio.wait_for(proc.wait(), WAIT_S) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
