"""``SnapshotPart`` (``protocol.snapshot_offer``, type 76): round trips, each schema rule, the
cutting into parts, and fuzzing: whatever the bytes, ``decode_link`` returns a message or
raises a ``DecodeError`` subclass with a reason."""

import hashlib
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol.errors import DecodeError, LimitExceeded, SchemaError
from protocol.frames import PROTOCOL_VERSION
from protocol.link import decode_link, encode_link
from protocol.msgpack_io import pack
from protocol.snapshot_offer import MAX_PART_BYTES, SnapshotPart, snapshot_parts
from tests.protocol.test_link_messages import _decode_or_decode_error

ROOM = bytes(range(32))
DIGEST = bytes(32)


def test_round_trip_and_parts_rebuild_the_snapshot() -> None:
    data = bytes(range(256)) * 2000  # 512,000 bytes: three parts
    digest = hashlib.sha256(data).digest()
    parts = snapshot_parts(ROOM, data, digest)
    assert len(parts) == 3 and all(len(p.chunk) <= MAX_PART_BYTES for p in parts)
    rebuilt = b""
    for p in parts:
        wire = encode_link(p)
        assert len(wire) < 262_144  # one link message each
        back = decode_link(wire)
        assert back == p and isinstance(back, SnapshotPart)
        assert back.offset == len(rebuilt)
        rebuilt += back.chunk
    assert rebuilt == data and hashlib.sha256(rebuilt).digest() == digest


def _raw(*fields: Any) -> bytes:
    return pack([PROTOCOL_VERSION, SnapshotPart.TYPE, *fields])


@pytest.mark.parametrize(("fields", "error"), [
    ((ROOM, DIGEST, 10, 0), SchemaError),  # arity
    ((ROOM[:31], DIGEST, 10, 0, b"x"), SchemaError),
    ((ROOM, DIGEST[:31], 10, 0, b"x"), SchemaError),
    ((ROOM, DIGEST, "10", 0, b"x"), SchemaError),
    ((ROOM, DIGEST, 10, 0, "x"), SchemaError),
    ((ROOM, DIGEST, 0, 0, b"x"), LimitExceeded),
    ((ROOM, DIGEST, 2**40, 0, b"x"), LimitExceeded),
    ((ROOM, DIGEST, 10, 0, b""), SchemaError),
    ((ROOM, DIGEST, 10, -1, b"x"), SchemaError),
    ((ROOM, DIGEST, 10, 9, b"xy"), SchemaError),  # past the end
    ((ROOM, DIGEST, 10**6, 0, b"x" * (MAX_PART_BYTES + 1)), LimitExceeded),
])
def test_each_rule_is_a_typed_error(fields: tuple[Any, ...], error: type[DecodeError]) -> None:
    with pytest.raises(error) as exc:
        decode_link(_raw(*fields))
    assert exc.value.reason


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(st.binary(max_size=40), st.integers(-5, 2**33), st.text(max_size=5),
                          st.none()), max_size=6))
def test_fuzzed_fields_decode_or_raise_a_decode_error(fields: list[Any]) -> None:
    _decode_or_decode_error(_raw(*fields))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300), st.integers(0, 80))
def test_fuzzed_bytes_decode_or_raise_a_decode_error(blob: bytes, at: int) -> None:
    wire = bytearray(encode_link(SnapshotPart(ROOM, DIGEST, 100, 0, b"y" * 50)))
    wire[at % len(wire)] ^= 0xFF
    _decode_or_decode_error(bytes(wire))
    _decode_or_decode_error(blob)
