"""The ``PresenceInterest`` frame (type 13): valid values round-trip, anything else is a typed
``DecodeError`` (``bad_presence_interest`` for a bad number), never a crash."""

import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.errors import BadPresenceInterest, DecodeError
from protocol.frames import (
    PresenceInterest,
    check_presence_interest,
    decode_frame,
    encode_frame,
)
from protocol.msgpack_io import pack

ROOM = b"r" * 32
MSGS = st.one_of(st.just(0.0), st.floats(1.0, 10_000.0))
BYTES = st.one_of(st.just(0.0), st.floats(1_024.0, 100_000_000.0))
RADIUS = st.one_of(st.just(0.0), st.floats(0.01, 1_000_000.0))
INT = st.integers(-(2**63), 2**64 - 1)
ANY = st.one_of(st.none(), st.booleans(), INT, st.floats(), st.text(max_size=5),
                st.binary(max_size=5), st.lists(INT, max_size=2))


@given(MSGS, BYTES, RADIUS)
def test_roundtrip(msgs: float, size: float, radius: float) -> None:
    msg = PresenceInterest(ROOM, msgs, size, radius)
    assert decode_frame(encode_frame(msg)) == msg


@settings(max_examples=300)
@given(st.lists(ANY, min_size=0, max_size=5))
def test_any_fields_decode_or_raise_typed(fields: list[Any]) -> None:
    data = pack([1, PresenceInterest.TYPE, ROOM, *fields])
    try:
        msg = decode_frame(data)
    except DecodeError:
        return
    assert isinstance(msg, PresenceInterest)
    check_presence_interest(msg.msgs_per_s, msg.bytes_per_s, msg.view_radius)


@pytest.mark.parametrize("fields", [
    [-1.0, 0.0, 0.0], [0.5, 0.0, 0.0], [20_000.0, 0.0, 0.0], [math.nan, 0.0, 0.0],
    [0.0, 100.0, 0.0], [0.0, math.inf, 0.0], [0.0, 0.0, -3.0], [0.0, 0.0, 0.001],
    [True, 0.0, 0.0], ["10", 0.0, 0.0], [None, 0.0, 0.0],
])
def test_bad_values_are_refused_with_a_reason(fields: list[Any]) -> None:
    with pytest.raises(BadPresenceInterest) as err:
        decode_frame(pack([1, PresenceInterest.TYPE, ROOM, *fields]))
    assert err.value.reason == "bad_presence_interest"


@given(st.binary(max_size=60), st.integers(0, 59))
def test_mutations_raise_only_decode_errors(noise: bytes, at: int) -> None:
    data = bytearray(encode_frame(PresenceInterest(ROOM, 100.0, 65_536.0, 25.0)))
    data[at % len(data):at % len(data) + len(noise)] = noise
    try:
        msg = decode_frame(bytes(data))
    except DecodeError as err:
        assert err.reason  # a typed refusal, with its stable label
        return
    if isinstance(msg, PresenceInterest):  # still valid: within range
        check_presence_interest(msg.msgs_per_s, msg.bytes_per_s, msg.view_radius)
