"""How ``LinkManager`` splits what arrives on a link: room frames (by room ID, read without
decoding) and link messages (types >= 64), which must never be taken for frames."""

import asyncio
import random
import time
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshnode.identity import Identity
from meshnode.metrics import NodeMetrics
from meshnode.runtime.links import Established, LinkManager, LinkService, room_of_frame
from meshnode.transport.link import LinkSettings, LocalHello
from protocol import frames
from protocol.frames import decode_frame, encode_frame, make_presence
from protocol.link import (
    FIRST_LINK_TYPE,
    Ack,
    Bundle,
    Hello,
    LinkMessage,
    Ping,
    Rooms,
    Signal,
    decode_link,
    encode_link,
    make_hello,
    peek_type,
)

ME = Identity.generate()
PEER = Identity.generate()
ROOM = bytes(range(32))
OTHER_ROOM = b"\xff" * 32
H1, H2 = b"\x01" * 32, b"\x02" * 32
KEY = PEER.public_key


def every_frame(room: bytes = ROOM) -> list[frames.Message]:
    return [
        frames.Changes(room, (b"change-1", b"change-2"), True),
        frames.Changes(room, (), False),
        frames.Heads(room, (H1, H2), ((KEY, 3),), b"\x00" * 16, True),
        frames.Heads(room, ()),
        frames.Snapshot(room, b"snapshot bytes"),
        frames.IHave(room, (H1,)),
        frames.Graft(room, (H1, H2)),
        frames.Prune(room, (KEY,)),
        frames.Want(room, ()),
        make_presence(room, KEY, 7, {"pose": [0.0, 1.5, 2.0], "name": "ana"}, PEER.sign),
        frames.ForwardJoin(room, PEER.public_id, 3),
        frames.Shuffle(room, PEER.public_id, 2, (PEER.public_id, ME.public_id)),
        frames.ShuffleReply(room, (ME.public_id,)),
        frames.Disconnect(room, ()),
    ]


def every_link_message() -> list[Any]:
    hello = make_hello(PEER.public_key, "node", "sha-256 AB:CD", "sha-256 EF:01", [ROOM],
                       "http://127.0.0.1:8470", int(time.time() * 1000), PEER.sign, [b"inv"])
    return [
        hello,
        Signal(PEER.public_id, ME.public_id, 4, b"\x07" * 16, "offer", "v=0"),
        Signal(ME.public_id, PEER.public_id, 0, b"\x07" * 16, "error", ""),
        Ack(ROOM, (H1, H2)),
        Ack(ROOM, ()),
        Rooms((ROOM, OTHER_ROOM)),
        Rooms(()),
        Ping(),
    ]


# ------------------------------------------------------------------ room_of_frame


def test_every_frame_type_is_covered() -> None:
    types = {type(m) for m in every_frame()}
    assert {m.TYPE for m in every_frame()} == set(range(1, 13))
    assert len(types) == 12


@pytest.mark.parametrize("msg", every_frame(), ids=lambda m: type(m).__name__)
def test_room_of_every_frame(msg: frames.Message) -> None:
    data = encode_frame(msg)
    assert decode_frame(data) == msg  # a real, valid frame
    assert room_of_frame(data) == ROOM
    assert peek_type(data) == msg.TYPE < FIRST_LINK_TYPE


@pytest.mark.parametrize("room", [OTHER_ROOM, b"\x00" * 32, bytes(range(100, 132))])
def test_room_of_frame_reads_the_room(room: bytes) -> None:
    for msg in every_frame(room):
        assert room_of_frame(encode_frame(msg)) == room


@pytest.mark.parametrize("msg", every_link_message(), ids=lambda m: type(m).__name__)
def test_link_messages_are_not_frames(msg: Any) -> None:
    data = encode_link(msg)
    assert decode_link(data) == msg
    mtype = peek_type(data)
    assert mtype is not None and mtype >= FIRST_LINK_TYPE and mtype == msg.TYPE
    # An Ack starts with a room ID too: room_of_frame looks at the type first.
    assert room_of_frame(data) is None


@pytest.mark.parametrize("data", [
    b"", b"\x95", b"\x95\x01\x01\xc4\x20", b"\x95\x01\x01\xc4\x20" + b"\x00" * 31,
    b"\x95\x01\x01\xc4\x1f" + b"\x00" * 40, b"\x95\x01\x01\xc5\x00\x20" + b"\x00" * 40,
    b"\x95\x01\x01\xa0" + b"\x00" * 40,
])
def test_room_of_frame_refuses_what_does_not_start_like_a_frame(data: bytes) -> None:
    assert room_of_frame(data) is None


def test_room_of_frame_does_not_decode_the_rest() -> None:
    data = encode_frame(frames.Want(ROOM, (H1,)))
    assert room_of_frame(data[:37]) == ROOM
    assert room_of_frame(data[:36]) is None


@settings(max_examples=500)
@given(st.binary(max_size=80))
def test_random_bytes_never_raise(data: bytes) -> None:
    room = room_of_frame(data)
    assert room is None or (len(room) == 32 and room == data[5:37])
    mtype = peek_type(data)
    assert mtype is None or 0 <= mtype < 128


@settings(max_examples=200)
@given(st.binary(min_size=32, max_size=32), st.sampled_from(range(14)), st.binary(max_size=60))
def test_room_of_any_frame(room: bytes, which: int, blob: bytes) -> None:
    msg = every_frame(room)[which]
    if isinstance(msg, frames.Snapshot):
        msg = frames.Snapshot(room, blob)
    data = encode_frame(msg)
    assert room_of_frame(data) == room
    assert peek_type(data) == msg.TYPE


# ------------------------------------------------------------------ LinkManager's split


@dataclass
class Recorder(LinkService):
    link_messages = (Ack,)
    frames: list[tuple[str, bytes, bytes]] = field(default_factory=list)
    acks: list[Ack] = field(default_factory=list)
    rooms: list[set[bytes]] = field(default_factory=list)

    def frame(self, est: Established, channel: str, data: bytes, room_id: bytes) -> None:
        self.frames.append((channel, data, room_id))

    def link_message(self, est: Established, msg: LinkMessage) -> None:
        assert isinstance(msg, Ack)
        self.acks.append(msg)

    def rooms_changed(self, est: Established, rooms: set[bytes]) -> None:
        self.rooms.append(rooms)


def _no_hello(kind_hint: str) -> LocalHello:
    raise AssertionError("these tests open no link")


def _manager() -> tuple[LinkManager, Recorder, Established]:
    owner = Recorder()
    mgr = LinkManager(ME, LinkSettings(), _no_hello, NodeMetrics(), clock=lambda: 1000.0)
    mgr.register(owner)
    mgr.relay.rng = random.Random(0)
    hello = every_link_message()[0]
    assert isinstance(hello, Hello)
    est = Established(link=None, peer=PEER.public_id, hello=hello,  # type: ignore[arg-type]
                      offered_by_us=False, rooms={ROOM}, signal_at=1000.0)
    return mgr, owner, est


def test_frames_of_a_shared_room_go_to_the_owner() -> None:
    mgr, owner, est = _manager()
    for msg in every_frame():
        mgr._on_message(est, "sync", encode_frame(msg))
    assert [r for _, _, r in owner.frames] == [ROOM] * 14
    assert est.garbage == 0 and not owner.acks


def test_every_service_hears_frames_and_links_in_registration_order() -> None:
    mgr, first, est = _manager()
    calls: list[str] = []

    class Second(LinkService):
        def frame(self, est: Established, channel: str, data: bytes, room_id: bytes) -> None:
            calls.append("frame")

        def rooms_changed(self, est: Established, rooms: set[bytes]) -> None:
            calls.append("rooms")

    mgr.register(Second())
    mgr._on_message(est, "sync", encode_frame(frames.Want(ROOM, (H1,))))
    mgr._on_message(est, "sync", encode_link(Rooms((ROOM,))))
    mgr._on_message(est, "sync", encode_link(Ack(ROOM, (H1,))))
    assert len(first.frames) == 1 and first.rooms == [{ROOM}]
    assert calls == ["frame", "rooms"]  # the Ack went to its one owner only
    assert first.acks == [Ack(ROOM, (H1,))]


def test_a_link_message_type_has_one_service() -> None:
    mgr, _first, _est = _manager()

    class AlsoAcks(LinkService):
        link_messages = (Ack,)

    class Pings(LinkService):
        link_messages = (Ping,)

    with pytest.raises(ValueError, match="already handled by Recorder"):
        mgr.register(AlsoAcks())
    with pytest.raises(ValueError, match="link protocol's own message"):
        mgr.register(Pings())
    assert len(mgr.services) == 1


def test_frames_of_an_unshared_room_are_garbage() -> None:
    mgr, owner, est = _manager()
    mgr._on_message(est, "sync", encode_frame(frames.Want(OTHER_ROOM, (H1,))))
    assert owner.frames == [] and est.garbage == 1


def test_link_messages_are_never_given_as_frames() -> None:
    mgr, owner, est = _manager()
    mgr._on_message(est, "sync", encode_link(Ack(ROOM, (H1,))))
    mgr._on_message(est, "sync", encode_link(Rooms((ROOM, OTHER_ROOM))))
    # a signal for someone else, and nobody to forward it to: the relay drops it quietly
    mgr._on_message(est, "sync", encode_link(
        Signal(PEER.public_id, Identity.generate().public_id, 3, b"\x01" * 16, "answer", "")))
    assert owner.frames == []
    assert owner.acks == [Ack(ROOM, (H1,))]
    assert owner.rooms == [{ROOM, OTHER_ROOM}] and est.rooms == {ROOM, OTHER_ROOM}
    assert est.garbage == 0


def test_garbage_and_bad_link_messages_are_counted() -> None:
    mgr, owner, est = _manager()
    mgr._on_message(est, "sync", b"\x00garbage")
    mgr._on_message(est, "sync", b"\x93\x01\x42")  # looks like a link message, is not one
    mgr._on_message(est, "sync", encode_link(every_link_message()[0]))  # a second hello
    assert owner.frames == [] and est.garbage == 3


@settings(max_examples=300)
@given(st.binary(max_size=80))
def test_random_bytes_on_a_link_never_raise(data: bytes) -> None:
    mgr, owner, est = _manager()
    mgr._on_message(est, "sync", data)
    for _, got, room in owner.frames:
        assert got == data and room == ROOM


class FakeLink:
    """Records what a LinkManager hands to the transport."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes]] = []

    def send(self, channel: str, data: bytes) -> bool:
        self.sent.append((channel, data))
        return True


def test_a_bundle_is_routed_frame_by_frame() -> None:
    mgr, owner, est = _manager()
    inner = [encode_frame(m) for m in every_frame()[:5]]
    mgr._on_message(est, "sync", encode_link(Bundle(tuple(inner))))
    assert [d for _, d, _ in owner.frames] == inner
    mgr._on_message(est, "sync", encode_link(Bundle((b"\x93\x01\x04nonsense",))))
    assert est.garbage == 1  # a bad frame inside a bundle counts like one outside


async def test_frames_queued_in_one_turn_leave_as_one_bundle() -> None:
    mgr, _owner, est = _manager()
    link = FakeLink()
    est.link = link  # type: ignore[assignment]
    mgr.links[est.peer] = est
    sync = [encode_frame(m) for m in every_frame()[:6]]
    for data in sync:
        assert mgr.send(est.peer, "sync", data)
    assert mgr.send(est.peer, "presence", sync[0])
    assert link.sent == []  # nothing before the end of this turn of the loop
    await asyncio.sleep(0)
    assert len(link.sent) == 2
    channel, data = link.sent[0]
    assert channel == "sync" and decode_link(data) == Bundle(tuple(sync))
    assert link.sent[1] == ("presence", sync[0])  # a lone frame goes as itself
    # A link message goes after the frames queued before it.
    link.sent.clear()
    assert mgr.send(est.peer, "sync", sync[1])
    assert mgr.send_link(est.peer, Ping())
    assert [d for _, d in link.sent] == [sync[1], encode_link(Ping())]


async def test_bundles_stay_under_the_target_size() -> None:
    mgr, _owner, est = _manager()
    link = FakeLink()
    est.link = link  # type: ignore[assignment]
    mgr.links[est.peer] = est
    big = encode_frame(frames.Changes(ROOM, (b"c" * 5_000,)))
    for _ in range(10):
        mgr.send(est.peer, "sync", big)
    await asyncio.sleep(0)
    assert len(link.sent) == 4  # 3 + 3 + 3 + 1 frames of ~5 KB within ~16 KB
    assert all(len(d) <= 16 * 1024 + 64 for _, d in link.sent)
