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
from protocol.snapshot_offer import MAX_PART_BYTES, PartAssembler, SnapshotPart, snapshot_parts
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


def _parts(data: bytes, size: int = 7) -> list[SnapshotPart]:
    return snapshot_parts(ROOM, data, hashlib.sha256(data).digest(), size)


def test_the_assembler_gives_the_whole_snapshot_and_refuses_the_rest() -> None:
    data = bytes(range(50))
    asm = PartAssembler(max_bytes=1000)
    out = [asm.feed(p) for p in _parts(data)]
    assert out[:-1] == [None] * (len(out) - 1) and out[-1] == data and asm.pending() == 0
    parts = _parts(data)
    assert asm.feed(parts[0]) is None
    assert asm.feed(parts[2]) == "bad_part" and asm.pending() == 0  # a gap
    assert asm.feed(parts[1]) == "bad_part"  # nothing under way any more
    lying = [SnapshotPart(ROOM, DIGEST, p.total, p.offset, p.chunk) for p in parts]
    assert [asm.feed(p) for p in lying][-1] == "bad_digest"
    assert PartAssembler(max_bytes=49).feed(parts[0]) == "oversized"
    # A new offset 0 restarts the room's snapshot (the reader wrote a newer one).
    other = bytes(range(100, 130))
    assert asm.feed(parts[0]) is None
    assert [asm.feed(p) for p in _parts(other)][-1] == other


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(min_size=1, max_size=60), st.binary(min_size=1, max_size=60),
       st.randoms(use_true_random=False), st.integers(0, 3))
def test_any_interleaving_gives_a_whole_snapshot_a_label_or_nothing(
        one: bytes, two: bytes, rnd: Any, drops: int) -> None:
    stream = _parts(one, 5) + _parts(two, 5)
    rnd.shuffle(stream)
    for _ in range(drops):
        if stream:
            stream.pop(rnd.randrange(len(stream)))
    asm = PartAssembler(max_bytes=1000)
    for part in stream:
        got = asm.feed(part)
        assert got is None or got in ("bad_part", "bad_digest") or got in (one, two)
    assert asm.pending() <= 1
