"""Targeted tests of the codec: limits, schema checks and canonical values."""

import math
import struct
from typing import Any

import msgpack
import pytest

from protocol.change import (
    OP_CREATE,
    OP_DELETE,
    OP_GENESIS,
    OP_MOVE,
    OP_ROLE,
    OP_SET,
    decode_change,
    encode_change,
)
from protocol.errors import (
    DecodeError,
    FrameTooLarge,
    LimitExceeded,
    MalformedMsgpack,
    SchemaError,
    UnknownMessageType,
    UnknownVersion,
)
from protocol.frames import (
    Changes,
    Disconnect,
    ForwardJoin,
    Graft,
    Heads,
    IHave,
    Presence,
    Prune,
    Shuffle,
    ShuffleReply,
    Snapshot,
    Want,
    decode_frame,
    encode_frame,
    make_presence,
    presence_payload,
)
from protocol.limits import DEFAULT_LIMITS, Limits
from protocol.msgpack_io import pack
from protocol.values import InvalidValue, check_value, normalize_value

AUTHOR = b"\x01" * 32
OTHER = b"\x02" * 32
ROOM = b"\x07" * 32
DEP = b"\x09" * 32
SIG = b"\x00" * 64
HLC = 1_700_000_000_000 << 16


def body(
    *,
    author: Any = AUTHOR,
    seq: Any = 2,
    deps: Any = None,
    hlc: Any = HLC,
    actors: Any = None,
    names: Any = None,
    ops: Any = None,
) -> list[Any]:
    return [
        author,
        seq,
        [DEP] if deps is None else deps,
        hlc,
        [
            [] if actors is None else actors,
            ["c", "f"] if names is None else names,
            [[OP_CREATE, 1, None]] if ops is None else ops,
        ],
    ]


def change(**kw: Any) -> bytes:
    """Change bytes with a dummy signature: decoding never checks signatures."""
    return pack(body(**kw)) + SIG


def set_op(value: Any) -> list[Any]:
    return [[OP_SET, 1, 0, 1, value]]


def frame(*items: Any) -> bytes:
    return pack(list(items))


def _depth(obj: Any) -> int:
    """Levels of arrays and maps."""
    if isinstance(obj, list):
        return 1 + max((_depth(x) for x in obj), default=0)
    if isinstance(obj, dict):
        return 1 + max((_depth(x) for x in obj.values()), default=0)
    return 0


# --------------------------------------------------------------------------- sizes


def test_frame_too_large() -> None:
    data = encode_frame(Snapshot(ROOM, b"x" * 100))
    assert len(data) < DEFAULT_LIMITS.max_frame_bytes
    decode_frame(data)
    big = b"\x00" * (DEFAULT_LIMITS.max_frame_bytes + 1)
    with pytest.raises(FrameTooLarge) as info:
        decode_frame(big)
    assert info.value.reason == "too_large"
    with pytest.raises(FrameTooLarge):
        decode_frame(encode_frame(Snapshot(ROOM, b"x" * 100)), Limits(max_frame_bytes=64))


def test_frame_of_exactly_the_limit_is_parsed() -> None:
    n = DEFAULT_LIMITS.max_frame_bytes
    base = len(frame(1, 1, ROOM, [b"", b""], True))  # two empty bins: 2 bytes each
    half = (n - base - 6) // 2  # each bin32 header is 5 bytes, 3 more than an empty bin8
    rest = n - base - 6 - 2 * half
    data = frame(1, 1, ROOM, [b"x" * half, b"y" * (half + rest)], True)
    assert len(data) == n
    msg = decode_frame(data)
    assert isinstance(msg, Changes) and len(msg.changes) == 2
    with pytest.raises(FrameTooLarge):
        decode_frame(data + b"\x00")


def test_change_too_large() -> None:
    limit = DEFAULT_LIMITS.max_change_bytes
    with pytest.raises(FrameTooLarge):
        decode_change(b"\x00" * (limit + 1))
    # just under: a legitimately large change still decodes
    ops = [[OP_SET, 1, 0, 1, "x" * 60_000] for _ in range(3)] + [[OP_CREATE, 1, None]]
    data = change(ops=ops)
    assert len(data) < limit
    assert len(decode_change(data).ops) == 4


def test_change_too_short() -> None:
    for n in (0, 1, 63, 64):
        with pytest.raises(SchemaError):
            decode_change(b"\x90" * n)


def test_string_over_the_limit_is_refused_by_the_parser() -> None:
    n = DEFAULT_LIMITS.max_str_bytes
    decode_change(change(ops=set_op("x" * n)))
    with pytest.raises(MalformedMsgpack):
        decode_change(change(ops=set_op("x" * (n + 1))))


# --------------------------------------------------------------------------- counts


def test_too_many_ops() -> None:
    n = DEFAULT_LIMITS.max_ops_per_change
    ok = [[OP_DELETE, 1]] * n
    assert len(decode_change(change(ops=ok)).ops) == n
    with pytest.raises((LimitExceeded, MalformedMsgpack)):
        decode_change(change(ops=[*ok, [OP_DELETE, 1]]))
    with pytest.raises(LimitExceeded):
        decode_change(change(ops=[[OP_DELETE, 1]] * 11), Limits(max_ops_per_change=10))


def test_too_many_deps() -> None:
    n = DEFAULT_LIMITS.max_deps
    deps = sorted(i.to_bytes(32, "big") for i in range(1, n + 2))
    assert len(decode_change(change(deps=deps[:n])).deps) == n
    with pytest.raises(LimitExceeded):
        decode_change(change(deps=deps))


def test_too_many_actors_or_names() -> None:
    n = DEFAULT_LIMITS.max_actors_per_change
    actors = [(i + 100).to_bytes(32, "big") for i in range(n + 1)]
    decode_change(change(actors=actors[:n]))
    with pytest.raises(LimitExceeded):
        decode_change(change(actors=actors))
    names = [f"n{i}" for i in range(DEFAULT_LIMITS.max_names_per_change + 1)]
    decode_change(change(names=names[:-1]))
    with pytest.raises(LimitExceeded):
        decode_change(change(names=names))


def test_too_many_changes_or_heads_in_a_frame() -> None:
    n = DEFAULT_LIMITS.max_changes_per_frame
    decode_frame(frame(1, 1, ROOM, [b"c"] * n, True))
    with pytest.raises(LimitExceeded):
        decode_frame(frame(1, 1, ROOM, [b"c"] * (n + 1), True))
    heads = [i.to_bytes(32, "big") for i in range(DEFAULT_LIMITS.max_deps + 1)]
    decode_frame(frame(1, 2, ROOM, heads[:-1], [], b"", False))
    with pytest.raises(LimitExceeded):
        decode_frame(frame(1, 2, ROOM, heads, [], b"", False))
    ids = [i.to_bytes(32, "big") for i in range(11)]
    for mtype in (4, 5, 6, 7):
        decode_frame(frame(1, mtype, ROOM, ids), Limits(max_collection_items=11))
        with pytest.raises(LimitExceeded):
            decode_frame(frame(1, mtype, ROOM, ids), Limits(max_collection_items=10))
    peers = ["12D3KooW" + "a" * 44] * 65
    for mtype, fields in ((10, ["12D3KooWx", 1]), (11, []), (12, [])):
        decode_frame(frame(1, mtype, ROOM, *fields, peers[:64]))
        with pytest.raises(LimitExceeded):
            decode_frame(frame(1, mtype, ROOM, *fields, peers))


def test_genesis_name_and_nonce_limits() -> None:
    decode_change(change(deps=[], seq=1, ops=[[OP_GENESIS, "r" * 200, b"n" * 32]]))
    with pytest.raises(LimitExceeded):
        decode_change(change(deps=[], seq=1, ops=[[OP_GENESIS, "r" * 201, b""]]))
    with pytest.raises(LimitExceeded):
        decode_change(change(deps=[], seq=1, ops=[[OP_GENESIS, "r", b"n" * 33]]))


def test_name_length() -> None:
    decode_change(change(names=["é" * 64, "f"]))  # 64 code points, 128 bytes
    for bad in (["c" * 65, "f"], ["", "f"], ["c", "c"], ["c", 1], ["c", b"f"]):
        with pytest.raises(SchemaError):
            decode_change(change(names=bad))


# --------------------------------------------------------------------------- versions, types


@pytest.mark.parametrize("version", [0, 2, 3, 255, 2**32, 2**64 - 1, -1])
def test_unknown_version(version: int) -> None:
    with pytest.raises(UnknownVersion) as info:
        decode_frame(frame(version, 2, ROOM, []))
    assert info.value.reason == "unknown_version"
    with pytest.raises(UnknownVersion):  # the version is checked before the type and fields
        decode_frame(frame(version, 12345, "anything"))


@pytest.mark.parametrize("mtype", [0, 14, 99, 2**64 - 1, -1])
def test_unknown_message_type(mtype: int) -> None:
    with pytest.raises(UnknownMessageType) as info:
        decode_frame(frame(1, mtype, ROOM, []))
    assert info.value.reason == "unknown_type"


KEY = b"\x05" * 32
PEER = "12D3KooWCd3eX8r5ihRvzK7P1yPq5aakaBJhG5GNj18YTztPhoCa"


@pytest.mark.parametrize(
    "data",
    [
        frame(),
        frame(1),
        frame(1, 2),
        pack({"version": 1}),
        pack(1),
        frame(1.0, 2, ROOM, [], b"", False),
        frame("1", 2, ROOM, [], b"", False),
        frame(True, 2, ROOM, [], b"", False),
        frame(1, True, ROOM, [], b"", False),
        frame(1, 2.0, ROOM, [], b"", False),
        frame(1, 99, ROOM[:31]),  # the room ID is checked before the type is looked up
        # Changes
        frame(1, 1, ROOM, []),
        frame(1, 1, ROOM, [], 1),
        frame(1, 1, ROOM, [], None),
        frame(1, 1, ROOM, ["change"], True),
        frame(1, 1, ROOM, b"change", True),
        frame(1, 1, ROOM, [], True, True),
        # Heads
        frame(1, 2, ROOM, [], [], b""),
        frame(1, 2, ROOM, [], [], b"", False, 1),
        frame(1, 2, ROOM[:31], [], [], b"", False),
        frame(1, 2, "x" * 32, [], [], b"", False),
        frame(1, 2, ROOM, [b"\x00" * 31], [], b"", False),
        frame(1, 2, ROOM, [DEP, DEP], [], b"", False),
        frame(1, 2, ROOM, DEP, [], b"", False),
        frame(1, 2, ROOM, [], [], "bloom", False),
        frame(1, 2, ROOM, [], [], b"", 0),
        frame(1, 2, ROOM, [], {}, b"", False),
        frame(1, 2, ROOM, [], [[KEY]], b"", False),
        frame(1, 2, ROOM, [], [[KEY, 0]], b"", False),
        frame(1, 2, ROOM, [], [[KEY, True]], b"", False),
        frame(1, 2, ROOM, [], [[KEY[:31], 1]], b"", False),
        frame(1, 2, ROOM, [], [[KEY, 1], [KEY, 2]], b"", False),
        frame(1, 2, ROOM, [], [[b"\xff" * 32, 1], [b"\x00" * 32, 1]], b"", False),
        # Snapshot
        frame(1, 3, ROOM, "data"),
        frame(1, 3, ROOM, b"data", b"more"),
        # IHave, Graft, Want, Prune
        *[frame(1, t, ROOM, [DEP, DEP]) for t in (4, 5, 7)],
        *[frame(1, t, ROOM, [DEP[:31]]) for t in (4, 5, 6, 7)],
        *[frame(1, t, ROOM, DEP) for t in (4, 5, 6, 7)],
        *[frame(1, t, ROOM, [DEP], [DEP]) for t in (4, 5, 6, 7)],
        # Presence: [body, signature], body = msgpack([participant, seq, fields])
        frame(1, 8, ROOM, pack([KEY, 1, {}])),
        frame(1, 8, ROOM, [KEY, 1, {}], SIG),
        frame(1, 8, ROOM, pack([KEY, 1]), SIG),
        frame(1, 8, ROOM, pack([KEY[:31], 1, {}]), SIG),
        frame(1, 8, ROOM, pack([KEY, -1, {}]), SIG),
        frame(1, 8, ROOM, pack([KEY, True, {}]), SIG),
        frame(1, 8, ROOM, pack([KEY, 2**63, {}]), SIG),
        frame(1, 8, ROOM, pack([KEY, 1, []]), SIG),
        frame(1, 8, ROOM, pack([KEY, 1, {"x": math.inf}]), SIG),
        frame(1, 8, ROOM, pack([KEY, 1, {"x": b"bin"}]), SIG),
        frame(1, 8, ROOM, pack([KEY, 1, {b"x": 1}]), SIG),
        frame(1, 8, ROOM, pack([KEY, 1, {}]), SIG[:63]),
        # ForwardJoin, Shuffle, ShuffleReply, Disconnect
        frame(1, 9, ROOM, PEER),
        frame(1, 9, ROOM, PEER, 17),
        frame(1, 9, ROOM, PEER, -1),
        frame(1, 9, ROOM, PEER, True),
        frame(1, 9, ROOM, "", 1),
        frame(1, 9, ROOM, "0OIl", 1),
        frame(1, 9, ROOM, "1" * 65, 1),
        frame(1, 9, ROOM, KEY, 1),
        frame(1, 10, ROOM, PEER, 1, [PEER, "not base58!"]),
        frame(1, 10, ROOM, PEER, 1, PEER),
        frame(1, 11, ROOM, [1]),
        frame(1, 12, ROOM, [PEER], [PEER]),
    ],
)
def test_frame_schema_errors(data: bytes) -> None:
    with pytest.raises(SchemaError):
        decode_frame(data)


def test_frames_roundtrip() -> None:
    for msg in (
        Changes(ROOM, (b"a", b"bc"), True),
        Changes(ROOM, (), False),
        Heads(ROOM, (DEP, b"\x01" * 32), ((KEY, 3),), b"\x00" * 6, True),
        Heads(ROOM, (), (), b"", False),
        Snapshot(ROOM, b""),
        IHave(ROOM, (DEP,)),
        Graft(ROOM, ()),
        Want(ROOM, (DEP, ROOM)),
        Prune(ROOM, (KEY, KEY)),
        make_presence(ROOM, KEY, 0, {"m": {"k": None}, "p": [1.0, 2.0], "s": True}, lambda _: SIG),
        ForwardJoin(ROOM, PEER, 0),
        ForwardJoin(ROOM, PEER, 16),
        Shuffle(ROOM, PEER, 3, (PEER, "1")),
        ShuffleReply(ROOM, ()),
        Disconnect(ROOM, (PEER,)),
    ):
        data = encode_frame(msg)
        back = decode_frame(data)
        assert type(back) is type(msg)
        if isinstance(msg, Heads):
            assert back == Heads(ROOM, tuple(sorted(msg.heads)), msg.vv, msg.bloom, msg.reply)
        else:
            assert back == msg
        assert encode_frame(back) == data


def test_presence_signature_covers_the_bytes_sent() -> None:
    fields = {"a": [1, 2], "b": 1.0}
    msg = make_presence(ROOM, KEY, 5, fields, lambda _: SIG)
    assert msg.body == pack([KEY, 5, fields])
    assert presence_payload(ROOM, msg.body) == b"meshnode/presence/v1\x00" + ROOM + msg.body
    # A sender that encodes a float32 is still verifiable: the receiver checks the body it got,
    # not a re-encoding of the decoded fields.
    f64, f32 = b"\xcb" + struct.pack(">d", 1.0), b"\xca" + struct.pack(">f", 1.0)
    body32 = msg.body.replace(f64, f32)
    back = decode_frame(pack([1, 8, ROOM, body32, SIG]))
    assert isinstance(back, Presence) and back.fields == fields
    assert presence_payload(ROOM, back.body) == b"meshnode/presence/v1\x00" + ROOM + body32


def test_deepest_valid_frame_nests_9_levels() -> None:
    """docs/protocol.md: no valid presence body nests deeper than 9 levels."""
    value: Any = 1
    for _ in range(DEFAULT_LIMITS.max_value_depth - 1):
        value = [value]
    body = pack([KEY, 1, {"k": value}])
    decode_frame(frame(1, 8, ROOM, body, SIG))
    assert _depth(msgpack.unpackb(body)) == 9
    with pytest.raises(LimitExceeded):
        decode_frame(frame(1, 8, ROOM, pack([KEY, 1, {"k": [value]}]), SIG))


def test_frame_must_be_bytes_like() -> None:
    data = encode_frame(Heads(ROOM, (), (), b"", False))
    for ok in (bytearray(data), memoryview(data)):
        assert decode_frame(ok) == decode_frame(data)  # type: ignore[arg-type]
    for bad in (data.hex(), None, 5):
        with pytest.raises(DecodeError):
            decode_frame(bad)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- change schema


def test_valid_change_with_every_op_decodes() -> None:
    ops = [
        [OP_CREATE, 1, None],
        [OP_CREATE, 2, 1],
        [OP_CREATE, 3, [0, 5]],
        [OP_SET, 2, 0, 1, {"k": [1, 2.5, None, True, "s"]}],
        [OP_SET, [0, 5], 1, 0, 2**64 - 1],
        [OP_MOVE, 2, None],
        [OP_MOVE, [0, 5], 3],
        [OP_DELETE, 3],
        [OP_ROLE, 0, 0],
        [OP_ROLE, 0, 3],
    ]
    ch = decode_change(change(actors=[OTHER], ops=ops))
    assert ch.ops == ops and ch.actors == [OTHER] and ch.deps == [DEP]
    assert ch.signature == SIG and ch.body == pack(body(actors=[OTHER], ops=ops))


def test_deps_must_be_sorted_and_unique() -> None:
    lo, hi = b"\x01" * 32, b"\x02" * 32
    decode_change(change(deps=[lo, hi]))
    for deps in ([hi, lo], [lo, lo], [lo, hi, hi]):
        with pytest.raises(SchemaError):
            decode_change(change(deps=deps))


def test_encode_change_sorts_deps() -> None:
    lo, hi = b"\x01" * 32, b"\x02" * 32
    data = encode_change(
        author=AUTHOR, seq=2, deps=[hi, lo], hlc=HLC, actors=[], names=[],
        ops=[[OP_DELETE, 1]], room_id=ROOM, sign=lambda _: SIG,
    )
    assert decode_change(data).deps == [lo, hi]


@pytest.mark.parametrize(
    "kw",
    [
        {"seq": True},
        {"seq": False},
        {"seq": 0},
        {"seq": -1},
        {"seq": 1.0},
        {"hlc": True},
        {"hlc": -1},
        {"hlc": 2**63},
        {"hlc": 1.5},
        {"author": AUTHOR[:31]},
        {"author": "a" * 32},
        {"deps": DEP},
        {"deps": [DEP[:31]]},
        {"deps": ["x" * 32]},
        {"actors": [AUTHOR]},
        {"actors": [OTHER, OTHER]},
        {"actors": [OTHER[:31]]},
        {"names": "cf"},
        {"ops": []},
        {"ops": {}},
        {"ops": [[]]},
        {"ops": [1]},
        {"ops": [[True, 1, None]]},  # bool op code
        {"ops": [[6]]},
        {"ops": [[-1]]},
        {"ops": [[1.0, 1, None]]},
        {"ops": [[OP_CREATE, True, None]]},
        {"ops": [[OP_CREATE, 0, None]]},
        {"ops": [[OP_CREATE, 1]]},
        {"ops": [[OP_CREATE, 1, None, None]]},
        {"ops": [[OP_CREATE, 1, True]]},
        {"ops": [[OP_CREATE, 1, 0]]},
        {"ops": [[OP_CREATE, 1, [True, 1]]]},
        {"ops": [[OP_CREATE, 1, [0, True]]]},
        {"ops": [[OP_CREATE, 1, [0, 1]]]},  # no actors
        {"ops": [[OP_CREATE, 1, [0]]]},
        {"ops": [[OP_CREATE, 1, [0, 1, 2]]]},
        {"ops": [[OP_CREATE, 1, "root"]]},
        {"ops": [[OP_SET, 1, True, 1, 0]]},
        {"ops": [[OP_SET, 1, 0, False, 0]]},
        {"ops": [[OP_SET, 1, 0, 2, 0]]},
        {"ops": [[OP_SET, 1, 0, 1]]},
        {"ops": [[OP_MOVE, None, 1]]},
        {"ops": [[OP_MOVE, 1]]},
        {"ops": [[OP_DELETE, None]]},
        {"ops": [[OP_DELETE, True]]},
        {"ops": [[OP_ROLE, 0, 1]]},  # no actors
        {"ops": [[OP_ROLE, True, 1]], "actors": [OTHER]},
        {"ops": [[OP_ROLE, 0, True]], "actors": [OTHER]},
        {"ops": [[OP_ROLE, 0, 4]], "actors": [OTHER]},
        {"ops": [[OP_ROLE, 0, -1]], "actors": [OTHER]},
        {"ops": [[OP_GENESIS, "room"]]},
        {"ops": [[OP_GENESIS, b"room", b""]]},
        {"ops": [[OP_GENESIS, "room", "nonce"]]},
    ],
)
def test_change_schema_errors(kw: dict[str, Any]) -> None:
    with pytest.raises(SchemaError) as info:
        decode_change(change(**kw))
    assert info.value.reason == "schema"


def test_envelope_shape() -> None:
    for obj in ([AUTHOR, 1, [], HLC], [*body(), 1], {"a": 1}, 5, [*body()[:4], [[], [], []]]):
        with pytest.raises(SchemaError):
            decode_change(pack(obj) + SIG)
    with pytest.raises(SchemaError):
        decode_change(pack([*body()[:4], [[], []]]) + SIG)


def test_trailing_or_missing_bytes() -> None:
    good = change()
    decode_change(good)
    with pytest.raises(MalformedMsgpack):
        decode_change(good[:-64] + b"\xc0" + SIG)  # an extra object after the body
    with pytest.raises(DecodeError):
        decode_change(good[:-1])  # the signature eats the body's last byte


def test_change_accepts_bytearray_and_memoryview() -> None:
    data = change()
    ch = decode_change(bytearray(data))  # type: ignore[arg-type]
    assert ch.change_id == decode_change(data).change_id
    assert decode_change(memoryview(data)).body == data[:-64]  # type: ignore[arg-type]
    with pytest.raises(SchemaError):
        decode_change(data.hex())  # type: ignore[arg-type]


# --------------------------------------------------------------------------- values on the wire


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_floats_are_schema_errors(bad: float) -> None:
    for value in (bad, [bad], [0.0, bad, 1.0], {"k": bad}, [[bad]], [1, bad], {"a": [{"b": bad}]}):
        with pytest.raises(SchemaError):
            decode_change(change(ops=set_op(value)))


def test_value_depth() -> None:
    def nest(n: int) -> Any:
        v: Any = 1
        for i in range(n):
            v = [v] if i % 2 else {"k": v}
        return v

    decode_change(change(ops=set_op(nest(8))))
    with pytest.raises(LimitExceeded):
        decode_change(change(ops=set_op(nest(9))))
    with pytest.raises(LimitExceeded):  # the short-vector fast path checks depth too
        decode_change(change(ops=set_op([0.0, nest(8)])))
    decode_change(change(ops=set_op([0.0, nest(7)])))


def test_deepest_valid_change_nests_12_levels() -> None:
    """docs/protocol.md says no valid change nests deeper than 12 levels."""
    value: Any = 1
    for _ in range(DEFAULT_LIMITS.max_value_depth):
        value = [value]
    data = change(ops=set_op(value))
    decode_change(data)

    assert _depth(msgpack.unpackb(data[:-64])) == 12


def test_deep_nesting_is_refused_without_crashing() -> None:
    for n in (100, 1000, 5000, 100_000):
        nested = b"\x91" * n + b"\xc0"
        with pytest.raises(DecodeError):
            decode_change(change(ops=[[OP_SET, 1, 0, 1, 0]])[:-64 - 2] + nested + b"\x00" + SIG)
        with pytest.raises(DecodeError):
            decode_frame(b"\x94\x01\x01" + nested)
        with pytest.raises(DecodeError):
            decode_frame(nested)


@pytest.mark.parametrize("bad", [b"\x01", bytearray(b"x"), {"k": b"v"}, [b""], {b"k": 1}])
def test_bytes_are_not_values(bad: Any) -> None:
    with pytest.raises(SchemaError):
        decode_change(change(ops=set_op(bad)))


def test_integer_map_key_is_refused_by_the_parser() -> None:
    with pytest.raises(MalformedMsgpack):
        decode_change(change(ops=set_op({1: "x"})))


def test_invalid_utf8_is_malformed() -> None:
    good = change(ops=set_op("ab"))
    bad = good.replace(b"\xa2ab", b"\xa2\xff\xfe")
    assert bad != good
    with pytest.raises(MalformedMsgpack):
        decode_change(bad)


def test_float32_is_accepted_as_float() -> None:
    raw = pack(body(ops=set_op(0.0)))
    f64 = b"\xcb" + struct.pack(">d", 0.0)
    assert raw.count(f64) == 1
    as_f32 = raw.replace(f64, b"\xca" + struct.pack(">f", 1.5))
    value = decode_change(as_f32 + SIG).ops[0][4]
    assert type(value) is float and value == 1.5


def test_duplicate_map_key_last_wins() -> None:
    """docs/protocol.md: the last occurrence of a repeated key wins."""
    raw = pack(body(ops=set_op({"a": 1, "b": 2})))
    dup = raw.replace(b"\x82\xa1a\x01\xa1b\x02", b"\x82\xa1a\x01\xa1a\x02")
    assert dup != raw
    assert decode_change(dup + SIG).ops[0][4] == {"a": 2}


def test_ext_types_are_refused() -> None:
    ts = msgpack.packb(msgpack.Timestamp(1, 0))
    with pytest.raises(MalformedMsgpack):
        decode_frame(frame(1, 3, ROOM, b"")[:-2] + ts)
    with pytest.raises(MalformedMsgpack):
        decode_frame(frame(1, 8, ROOM, KEY, 1, {"t": "PLACEHOLDER"}, SIG).replace(
            pack("PLACEHOLDER"), ts))
    raw = pack(body(ops=set_op("PLACEHOLDER")))
    with pytest.raises(MalformedMsgpack):
        decode_change(raw.replace(pack("PLACEHOLDER"), ts) + SIG)


def test_check_value() -> None:
    good: Any
    for good in (None, True, 0, -(2**63), 2**64 - 1, 1.5, "", [], {}, {"a": [1, {"b": None}]}):
        check_value(good)
    for bad in (math.nan, b"x", (1,), {1: 2}, {"a": {b"k": 1}}, set(), object()):
        with pytest.raises(SchemaError):
            check_value(bad)
    with pytest.raises(LimitExceeded):
        check_value(list(range(11)), Limits(max_collection_items=10))
    with pytest.raises(LimitExceeded):
        check_value({str(i): i for i in range(11)}, Limits(max_collection_items=10))


# --------------------------------------------------------------------------- normalize_value


def test_normalize_sorts_keys_recursively() -> None:
    v = normalize_value({"b": 1, "a": {"z": [1, {"y": 2, "x": 3}], "c": None}})
    assert list(v) == ["a", "b"]
    assert list(v["a"]) == ["c", "z"]
    assert list(v["a"]["z"][1]) == ["x", "y"]
    assert pack(v) == pack({"a": {"c": None, "z": [1, {"x": 3, "y": 2}]}, "b": 1})
    # code point order (UTF-16 code unit order would put U+1F600 before U+FF61)
    keys = list(normalize_value({"\U0001f600": 3, "\uff61": 4, "é": 1, "z": 2}))
    assert keys == ["z", "é", "\uff61", "\U0001f600"]


def test_normalize_tuples_become_lists() -> None:
    v = normalize_value((1, (2.0, "x"), [(None,)]))
    assert v == [1, [2.0, "x"], [[None]]]
    assert type(v) is list and type(v[1]) is list and type(v[2][0]) is list


def test_normalize_keeps_scalars_and_types() -> None:
    for x in (None, True, False, 0, -1, 2**64 - 1, -(2**63), 0.0, -0.0, 1e308, "", "ü"):
        out = normalize_value(x)
        assert out == x and type(out) is type(x)
    assert normalize_value(1.0) == 1.0 and type(normalize_value(1.0)) is float

    class MyInt(int):
        pass

    class MyStr(str):
        pass

    assert type(normalize_value(MyInt(3))) is int
    assert normalize_value(MyStr("s")) == "s"


def test_normalize_output_passes_check_value() -> None:
    v = normalize_value({"t": (0.0, 1.0, 2.0), "m": {"b": [True, None], "a": "s"}})
    check_value(v)
    decode_change(change(ops=set_op(v)))


@pytest.mark.parametrize(
    "bad",
    [
        math.nan,
        math.inf,
        -math.inf,
        [1.0, math.nan],
        {"k": math.inf},
        b"bytes",
        bytearray(b"x"),
        {1: "int key"},
        {"ok": {b"k": 1}},
        {1, 2},
        object(),
        2**64,
        -(2**63) - 1,
        complex(1, 1),
    ],
)
def test_normalize_rejects(bad: Any) -> None:
    with pytest.raises(InvalidValue):
        normalize_value(bad)


def test_normalize_depth_and_size() -> None:
    v: Any = 0
    for _ in range(DEFAULT_LIMITS.max_value_depth):
        v = [v]
    normalize_value(v)
    with pytest.raises(InvalidValue):
        normalize_value([v])
    with pytest.raises(InvalidValue):
        normalize_value({"k": [v]})
    with pytest.raises(InvalidValue):
        normalize_value("x" * (DEFAULT_LIMITS.max_str_bytes + 1))
    with pytest.raises(InvalidValue):
        normalize_value([0] * 11, Limits(max_collection_items=10))
