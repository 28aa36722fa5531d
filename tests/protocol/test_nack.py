"""The ``Nack`` link message: round trips, each schema rule, and fuzzing (hypothesis; the
mutation fuzz of every link message, ``Nack`` among them, is in ``test_link_messages``)."""

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol.errors import DecodeError, LimitExceeded, SchemaError
from protocol.frames import PROTOCOL_VERSION
from protocol.link import (
    MAX_ACK_IDS,
    MAX_REASON_CHARS,
    Nack,
    decode_link,
    encode_link,
    peek_type,
)
from protocol.msgpack_io import pack
from tests.protocol.test_link_messages import _decode_or_decode_error

ROOM = bytes(range(32))
HASH = b"\x11" * 32


@pytest.mark.parametrize("msg", [
    Nack(ROOM, (HASH,), "disk_full"),
    Nack(ROOM, tuple(i.to_bytes(32, "big") for i in range(MAX_ACK_IDS)), "io_error"),
    Nack(ROOM, (HASH,), "a" * MAX_REASON_CHARS),
    Nack(ROOM, (HASH,), "some_future_reason_2"),  # unknown labels are accepted
])
def test_nack_round_trips(msg: Nack) -> None:
    data = encode_link(msg)
    assert decode_link(data) == msg
    assert peek_type(data) == Nack.TYPE == 70
    assert data == pack([PROTOCOL_VERSION, 70, msg.room_id, list(msg.ids), msg.reason])


def nack(room: Any = ROOM, ids: Any = (HASH,), reason: Any = "disk_full") -> bytes:
    return pack([PROTOCOL_VERSION, Nack.TYPE, room, list(ids) if isinstance(ids, tuple)
                 else ids, reason])


@pytest.mark.parametrize(("case", "data", "error"), [
    ("arity", pack([PROTOCOL_VERSION, Nack.TYPE, ROOM, [HASH]]), SchemaError),
    ("arity long", pack([PROTOCOL_VERSION, Nack.TYPE, ROOM, [HASH], "disk_full", 1]),
     SchemaError),
    ("room size", nack(room=ROOM[:31]), SchemaError),
    ("room type", nack(room="r" * 32), SchemaError),
    ("ids type", nack(ids=HASH), SchemaError),
    ("no ids", nack(ids=()), SchemaError),
    ("id size", nack(ids=(b"h" * 31,)), SchemaError),
    ("duplicate id", nack(ids=(HASH, HASH)), SchemaError),
    ("too many ids", nack(ids=tuple(i.to_bytes(32, "big") for i in range(MAX_ACK_IDS + 1))),
     LimitExceeded),
    ("reason type", nack(reason=b"disk_full"), SchemaError),
    ("empty reason", nack(reason=""), SchemaError),
    ("reason charset", nack(reason="Disk Full"), SchemaError),
    ("reason control", nack(reason="disk_full\n"), SchemaError),
    ("reason length", nack(reason="a" * (MAX_REASON_CHARS + 1)), LimitExceeded),
])
def test_each_nack_rule_rejects(case: str, data: bytes, error: type[DecodeError]) -> None:
    with pytest.raises(error) as info:
        decode_link(data)
    assert info.value.reason


_field = (
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.text(max_size=40)
    | st.binary(max_size=40) | st.sampled_from([ROOM, HASH, "disk_full", "io_error"])
    | st.lists(st.sampled_from([HASH, ROOM, b"x", "s", 1]), max_size=4)
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_field, max_size=5))
def test_fuzz_structured_nacks(fields: list[Any]) -> None:
    _decode_or_decode_error(pack([PROTOCOL_VERSION, Nack.TYPE, *fields]))
