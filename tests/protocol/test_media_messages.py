"""Media link messages (``protocol.media``, types 72..75): round trips, each schema rule, and
fuzzing (hypothesis): whatever the bytes, ``decode_link`` returns a message or raises a
``DecodeError`` subclass with a reason."""

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meshnode.identity import Identity
from protocol.errors import DecodeError, LimitExceeded, SchemaError
from protocol.frames import PROTOCOL_VERSION
from protocol.link import LinkMessage, decode_link, encode_link, peek_type
from protocol.media import (
    MAX_HOPS,
    MAX_MEDIA_SOURCES,
    MediaPrefs,
    MediaRefused,
    MediaSignal,
    MediaSource,
    MediaSources,
    make_source_id,
)
from protocol.msgpack_io import pack
from tests.protocol.test_link_messages import _decode_or_decode_error

ROOM = bytes(range(32))
PUB = Identity.from_private_bytes(bytes(range(32))).public_id
OTHER = Identity.from_private_bytes(bytes(range(1, 33))).public_id
CAM = f"{PUB}/cam"
MIC = f"{PUB}/mic"

MESSAGES: list[LinkMessage] = [
    MediaSignal(0, "offer", "v=0\r\n", (("0", CAM), ("1", MIC))),
    MediaSignal(7, "answer", "v=0\r\n"),
    MediaSignal(2**32 - 1, "request", ""),
    MediaSources(ROOM, ()),
    MediaSources(ROOM, (MediaSource(CAM, PUB, "video", "3", 0),
                        MediaSource(MIC, PUB, "audio", "", MAX_HOPS))),
    MediaPrefs(ROOM),
    MediaPrefs(ROOM, True, 64, (CAM, f"{OTHER}/x")),
    MediaPrefs(ROOM, False, 0, ()),
    MediaRefused(ROOM, "too_many_publications", "at most 2 per peer", CAM),
    MediaRefused(ROOM, "removed", ""),
]


@pytest.mark.parametrize("msg", MESSAGES)
def test_media_messages_round_trip(msg: LinkMessage) -> None:
    data = encode_link(msg)
    assert decode_link(data) == msg
    assert peek_type(data) == msg.TYPE and 72 <= msg.TYPE <= 75


def test_source_ids_name_their_publisher() -> None:
    assert make_source_id(PUB, "cam") == CAM
    for label in ("", "a b", "x" * 33, "é"):
        with pytest.raises(ValueError):
            make_source_id(PUB, label)
    with pytest.raises(ValueError):
        make_source_id("not a peer!", "cam")


def raw(mtype: int, *fields: Any) -> bytes:
    return pack([PROTOCOL_VERSION, mtype, *fields])


REJECTED: list[tuple[str, bytes, type[DecodeError]]] = [
    ("signal arity", raw(72, 0, "offer", "v=0"), SchemaError),
    ("signal generation", raw(72, -1, "offer", "v=0", []), SchemaError),
    ("signal generation type", raw(72, 1.0, "offer", "v=0", []), SchemaError),
    ("signal kind", raw(72, 0, "hello", "v=0", []), SchemaError),
    ("signal request with sdp", raw(72, 0, "request", "v=0", []), SchemaError),
    ("signal offer without sdp", raw(72, 0, "offer", "", []), SchemaError),
    ("signal sdp too long", raw(72, 0, "offer", "s" * 60_001, []), LimitExceeded),
    ("signal mids on answer", raw(72, 0, "answer", "v=0", [["0", CAM]]), SchemaError),
    ("signal mid with space", raw(72, 0, "offer", "v=0", [["a b", CAM]]), SchemaError),
    ("signal duplicate mid", raw(72, 0, "offer", "v=0", [["0", CAM], ["0", MIC]]),
     SchemaError),
    ("signal bad source", raw(72, 0, "offer", "v=0", [["0", "cam"]]), SchemaError),
    ("signal line shape", raw(72, 0, "offer", "v=0", [["0"]]), SchemaError),
    ("sources arity", raw(73, ROOM), SchemaError),
    ("sources room", raw(73, ROOM[:31], []), SchemaError),
    ("sources kind", raw(73, ROOM, [[CAM, PUB, "smell", "", 0]]), SchemaError),
    ("sources foreign publisher", raw(73, ROOM, [[CAM, OTHER, "video", "", 0]]), SchemaError),
    ("sources hops", raw(73, ROOM, [[CAM, PUB, "video", "", MAX_HOPS + 1]]), SchemaError),
    ("sources duplicate", raw(73, ROOM, [[CAM, PUB, "video", "", 0]] * 2), SchemaError),
    ("sources too many", raw(73, ROOM, [[f"{PUB}/{i}", PUB, "audio", "", 0]
                                        for i in range(MAX_MEDIA_SOURCES + 1)]),
     LimitExceeded),
    ("prefs arity", raw(74, ROOM, True, 0), SchemaError),
    ("prefs audio_only type", raw(74, ROOM, 1, 0, None), SchemaError),
    ("prefs kbps", raw(74, ROOM, False, -5, None), SchemaError),
    ("prefs wanted type", raw(74, ROOM, False, 0, CAM), SchemaError),
    ("prefs wanted duplicate", raw(74, ROOM, False, 0, [CAM, CAM]), SchemaError),
    ("refused arity", raw(75, ROOM, "removed", ""), SchemaError),
    ("refused reason", raw(75, ROOM, "Removed!", "", ""), SchemaError),
    ("refused source", raw(75, ROOM, "removed", "", "cam"), SchemaError),
    ("refused detail", raw(75, ROOM, "removed", "d" * 257, ""), LimitExceeded),
]


@pytest.mark.parametrize(("data", "error"), [(d, e) for _, d, e in REJECTED],
                         ids=[name for name, _, _ in REJECTED])
def test_each_rule_rejects(data: bytes, error: type[DecodeError]) -> None:
    with pytest.raises(error) as info:
        decode_link(data)
    assert info.value.reason == error.reason


_scalars = (
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats()
    | st.text(max_size=20) | st.binary(max_size=40)
    | st.sampled_from([ROOM, CAM, MIC, PUB, "audio", "video", "offer", "answer", "request",
                       "0", "", "removed", "v=0\r\n"])
)
_values = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=6), max_leaves=24)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(72, 75), st.lists(_values, max_size=6))
def test_fuzz_structured_media_messages(mtype: int, fields: list[Any]) -> None:
    _decode_or_decode_error(raw(mtype, *fields))


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(encode_link(draw(st.sampled_from(MESSAGES))))
    for _ in range(draw(st.integers(1, 4))):
        pos = draw(st.integers(0, max(len(data) - 1, 0)))
        op = draw(st.sampled_from(["flip", "cut", "insert"]))
        if op == "flip" and data:
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "cut":
            del data[pos:]
        else:
            data[pos:pos] = draw(st.binary(min_size=1, max_size=6))
    return bytes(data)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_fuzz_mutated_media_messages(data: bytes) -> None:
    _decode_or_decode_error(data)


def test_core_link_types_are_reserved_against_extensions() -> None:
    from protocol.link import Ack, Bundle, Hello, Nack, Ping, Refused, Rooms, Signal
    from protocol.link_fields import CORE_LINK_TYPES, register_link_type
    from protocol.media import MediaSignal

    core = {m.TYPE for m in (Hello, Signal, Ack, Nack, Rooms, Ping, Bundle, Refused)}
    assert core == set(CORE_LINK_TYPES)
    with pytest.raises(ValueError, match="taken"):
        register_link_type(MediaSignal)  # already registered by importing protocol.link
