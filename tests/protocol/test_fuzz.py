"""Property tests: the decoders and ``SceneReplica.apply`` survive any input.

Whatever the bytes (random, random msgpack, mutated valid encodings, deep nesting, huge
declared lengths), ``decode_frame`` and ``decode_change`` raise only
``protocol.errors.DecodeError`` subclasses, ``SceneReplica.apply`` returns a result instead of
raising, and all of them answer quickly. Valid encodings round-trip.
"""

import struct
import time
from collections.abc import Callable
from typing import Any

import msgpack
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meshnode.crdt import SceneReplica
from meshnode.identity import Identity
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
from protocol.errors import DecodeError
from protocol.frames import (
    Changes,
    Disconnect,
    ForwardJoin,
    Graft,
    Heads,
    IHave,
    Prune,
    Shuffle,
    ShuffleReply,
    Snapshot,
    Want,
    decode_frame,
    encode_frame,
    make_presence,
)
from protocol.limits import DEFAULT_LIMITS
from protocol.msgpack_io import pack
from protocol.values import normalize_value
from protocol.vectors import NOW_APPLY, SEED_A, SEED_B, SEED_C, build_vectors, public_key

V = build_vectors()
GENESIS = bytes.fromhex(V["changes"]["change/genesis"]["hex"])
CHANGE_1 = bytes.fromhex(V["changes"]["change/1"]["hex"])
CHANGE_2 = bytes.fromhex(V["changes"]["change/2"]["hex"])
ROOM_ID = bytes.fromhex(V["room"]["room_id"])
HEAD = bytes.fromhex(V["room"]["heads"][0])
VALID_CHANGES = [GENESIS, CHANGE_1, CHANGE_2] + [
    bytes.fromhex(r["hex"]) for r in V["rejected"].values()
]
VALID_FRAMES = [bytes.fromhex(f["hex"]) for f in V["frames"].values()]
ALL_VALID = VALID_CHANGES + VALID_FRAMES
SLOW = 0.5  # CPU seconds (not wall time, so a loaded machine does not fail the test); the
# worst inputs here take about 25 ms

FEW = settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
FUZZ = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _base_replica() -> SceneReplica:
    r = SceneReplica.from_genesis(GENESIS, Identity.from_private_bytes(SEED_C))
    assert all(res.status == "applied" for res in r.apply_many([CHANGE_1, CHANGE_2], NOW_APPLY))
    return r


REPLICA = _base_replica()  # never applies what it is offered here (checked), so never changes


def timed(fn: Callable[[], Any]) -> Any:
    start = time.process_time()
    try:
        return fn()
    finally:
        elapsed = time.process_time() - start
        assert elapsed < SLOW, f"took {elapsed:.3f} s"


def check_decoders(data: bytes) -> None:
    """Both decoders either succeed or raise a DecodeError, quickly."""
    for decoder in (decode_frame, decode_change):
        start = time.process_time()
        try:
            decoder(data)
        except DecodeError as err:
            assert isinstance(err.reason, str) and err.reason
        elapsed = time.process_time() - start
        assert elapsed < SLOW, f"{decoder.__name__} took {elapsed:.3f} s"


def check_apply(data: bytes, replica: SceneReplica = REPLICA) -> str:
    """``apply`` returns an ApplyResult; bytes that are not a change are rejected."""
    count = replica.change_count()
    res = timed(lambda: replica.apply(data, NOW_APPLY))
    assert res.status in ("applied", "buffered", "duplicate", "rejected")
    if res.status == "rejected":
        assert isinstance(res.reason, str) and res.reason
    try:
        decode_change(data)
    except DecodeError as err:
        assert (res.status, res.reason) == ("rejected", err.reason)
    if replica is REPLICA:
        # mutations of valid changes break their signature; an unmutated vector may be a
        # duplicate, or buffered (`reject/depends-on-rejected` alone)
        assert res.status in ("rejected", "duplicate", "buffered"), res
        assert replica.change_count() == count
    return str(res.status)


# --------------------------------------------------------------------------- strategies

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
    | st.binary(max_size=40)
)
msgpack_objects = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=6)
    | st.dictionaries(st.text(max_size=8) | st.binary(max_size=8), children, max_size=6),
    max_leaves=40,
)
values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: st.lists(children, max_size=5)
    | st.dictionaries(st.text(max_size=8), children, max_size=5),
    max_leaves=20,
)


def _depth(v: Any) -> int:
    if isinstance(v, list):
        return 1 + max((_depth(x) for x in v), default=0)
    if isinstance(v, dict):
        return 1 + max((_depth(x) for x in v.values()), default=0)
    return 0


# --------------------------------------------------------------------------- random input


@FUZZ
@given(st.binary(max_size=2048))
def test_random_bytes(data: bytes) -> None:
    check_decoders(data)
    check_apply(data)


@FUZZ
@given(msgpack_objects)
def test_random_msgpack(obj: Any) -> None:
    data = msgpack.packb(obj, use_bin_type=True)
    check_decoders(data)
    check_decoders(data + bytes(64))  # with room for a "signature"
    check_apply(data + bytes(64))


@FEW
@given(st.integers(1, 255), st.integers(0, 20), st.lists(msgpack_objects, max_size=5))
def test_random_frame_shaped_msgpack(version: int, mtype: int, fields: list[Any]) -> None:
    check_decoders(pack([version, mtype, ROOM_ID, *fields]))
    check_decoders(pack([1, mtype, ROOM_ID, *fields]))


@FEW
@given(
    msgpack_objects, msgpack_objects, msgpack_objects, msgpack_objects, msgpack_objects,
    st.binary(min_size=64, max_size=64),
)
def test_random_change_shaped_msgpack(
    author: Any, seq: Any, deps: Any, hlc: Any, block: Any, sig: bytes
) -> None:
    for body in (
        [author, seq, deps, hlc, block],
        [public_key(SEED_A), seq, deps, hlc, block],
        [public_key(SEED_A), 3, [HEAD], 1 << 60, [[], ["a", "b"], block]],
        [public_key(SEED_A), 3, [HEAD], 1 << 60, [[], ["a", "b"], [block]]],
        [public_key(SEED_A), 3, [HEAD], 1 << 60, [[], ["a", "b"], [[OP_SET, 1, 0, 1, block]]]],
    ):
        data = pack(body) + sig
        check_decoders(data)
        check_apply(data)


# --------------------------------------------------------------------------- mutations


def _flip(data: bytes, bit: int) -> bytes:
    i = bit // 8 % len(data)
    return data[:i] + bytes([data[i] ^ (1 << (bit % 8))]) + data[i + 1 :]


@FUZZ
@given(st.sampled_from(ALL_VALID), st.lists(st.integers(0, 2**20), min_size=1, max_size=4))
def test_bit_flips(data: bytes, bits: list[int]) -> None:
    for bit in bits:
        data = _flip(data, bit)
    check_decoders(data)
    check_apply(data)


@FUZZ
@given(st.sampled_from(ALL_VALID), st.integers(0, 2000))
def test_truncation(data: bytes, cut: int) -> None:
    short = data[: cut % len(data)]
    check_decoders(short)
    check_apply(short)
    check_decoders(data[cut % len(data) :])


@FUZZ
@given(st.sampled_from(ALL_VALID), st.binary(min_size=1, max_size=300), st.booleans())
def test_extension(data: bytes, extra: bytes, before: bool) -> None:
    longer = extra + data if before else data + extra
    check_decoders(longer)
    check_apply(longer)
    check_decoders(data[:-64] + extra + data[-64:])


@FUZZ
@given(st.sampled_from(ALL_VALID), st.sampled_from(ALL_VALID), st.integers(0, 2000),
       st.integers(0, 2000))
def test_splicing(a: bytes, b: bytes, i: int, j: int) -> None:
    spliced = a[: i % len(a)] + b[j % len(b) :]
    check_decoders(spliced)
    check_apply(spliced)


def _paths(obj: Any, prefix: tuple[int, ...] = ()) -> list[tuple[int, ...]]:
    out = [prefix]
    if isinstance(obj, list):
        for i, x in enumerate(obj):
            out.extend(_paths(x, (*prefix, i)))
    return out


def _replace(obj: Any, path: tuple[int, ...], new: Any) -> Any:
    if not path:
        return new
    copy = list(obj)
    copy[path[0]] = _replace(copy[path[0]], path[1:], new)
    return copy


def _body_obj(data: bytes, is_change: bool) -> Any:
    return msgpack.unpackb(data[:-64] if is_change else data, raw=False)


@FUZZ
@given(st.sampled_from(ALL_VALID), st.data(), msgpack_objects)
def test_field_replaced_by_another_type(data: bytes, draw: st.DataObject, new: Any) -> None:
    is_change = data in VALID_CHANGES
    obj = _body_obj(data, is_change)
    path = draw.draw(st.sampled_from(_paths(obj)))
    packed = pack(_replace(obj, path, new))
    mutated = packed + data[-64:] if is_change else packed
    check_decoders(mutated)
    check_apply(mutated)


@FUZZ
@given(st.sampled_from(ALL_VALID), st.data(), st.sampled_from(["array", "map"]))
def test_deep_nesting_1000_levels(data: bytes, draw: st.DataObject, kind: str) -> None:
    is_change = data in VALID_CHANGES
    obj = _body_obj(data, is_change)
    path = draw.draw(st.sampled_from(_paths(obj)))
    # wrap a field in 1000 levels of arrays or maps (built as bytes: msgpack.packb itself
    # refuses to nest that deep)
    marker = "\x00MARK\x00"
    packed = pack(_replace(obj, path, marker))
    head = b"\x91" if kind == "array" else b"\x81\xa1k"
    nested = head * 1000 + pack(0)
    packed = packed.replace(pack(marker), nested)
    mutated = packed + data[-64:] if is_change else packed
    check_decoders(mutated)
    check_apply(mutated)


HUGE_HEADERS = [
    b"\xdd\xff\xff\xff\xff",  # array32
    b"\xdf\xff\xff\xff\xff",  # map32
    b"\xdb\xff\xff\xff\xff",  # str32
    b"\xc6\xff\xff\xff\xff",  # bin32
    b"\xc9\xff\xff\xff\xff\x01",  # ext32
    b"\xdc\xff\xff",  # array16
    b"\xde\xff\xff",  # map16
    b"\xda\xff\xff",  # str16
    b"\xc5\xff\xff",  # bin16
    b"\xc6\x00\x03\xc0\x01",  # bin32 of 245,761: one byte over the bin limit
    b"\xdd\x00\x00\x10\x01",  # array32 of 4,097: one over the array limit
]


@FUZZ
@given(st.sampled_from(ALL_VALID), st.sampled_from(HUGE_HEADERS), st.integers(0, 2000),
       st.booleans())
def test_huge_declared_lengths(data: bytes, header: bytes, at: int, overwrite: bool) -> None:
    i = at % len(data)
    mutated = data[:i] + header + data[i + (len(header) if overwrite else 0) :]
    check_decoders(mutated)
    check_apply(mutated)
    check_decoders(header)
    check_decoders(header + bytes(100))


def test_worst_case_inputs_are_fast() -> None:
    cases = [
        b"\x91" * 100_000 + b"\xc0",
        b"\x81\xa1k" * 50_000 + b"\xc0",
        b"\x94\x01\x01" + b"\xc4\x20" + ROOM_ID + b"\xdd\x00\x00\x10\x00" + b"\xc0" * 4096,
        pack([1, 1, ROOM_ID, [b"\x00" * 200] * 1024, True]),
        pack([1, 2, ROOM_ID, [i.to_bytes(32, "big") for i in range(256)], b"", False]),
        pack([public_key(SEED_A), 3, [HEAD], 1 << 60,
              [[], ["a", "b"], [[OP_SET, 1, 0, 1, [1.0] * 16]] * 4096]]) + bytes(64),
        pack([public_key(SEED_A), 3, [HEAD], 1 << 60,
              [[], ["a", "b"], [[OP_SET, 1, 0, 1, {str(i): [[[i]]] for i in range(4096)}]]]])
        + bytes(64),
        b"\x00" * DEFAULT_LIMITS.max_frame_bytes,
        b"\xc0" * (DEFAULT_LIMITS.max_frame_bytes + 1),
    ]
    for data in cases:
        check_decoders(data)
        check_apply(data)


# --------------------------------------------------------------------------- signed nonsense

foreign_refs = st.tuples(st.integers(0, 1), st.integers(1, 5)).map(list)
good_refs = st.one_of(st.none(), *[st.integers(1, 5)] * 3, *[foreign_refs] * 2)
wild_refs = st.integers(-1, 0) | st.lists(st.integers(-1, 3), max_size=3) | st.booleans()


@st.composite
def refs(draw: st.DrawFn) -> Any:
    """Mostly well-formed entity references, sometimes not."""
    return draw(wild_refs if draw(st.integers(0, 19)) == 7 else good_refs)


@st.composite
def ops(draw: st.DrawFn) -> list[Any]:
    """Mostly well-formed ops of every kind (valid or not for the replica), a few wild ones."""
    k = draw(st.integers(0, 19))
    if k < 5:
        return [OP_SET, draw(refs()), draw(st.integers(0, 2)), draw(st.integers(0, 2)),
                draw(values)]
    if k < 9:
        return [OP_CREATE, draw(st.integers(1, 6)), draw(refs())]
    if k < 13:
        return [OP_MOVE, draw(refs()), draw(refs())]
    if k < 16:
        return [OP_DELETE, draw(refs())]
    if k < 18:
        return [OP_ROLE, draw(st.integers(0, 1)), draw(st.integers(0, 3))]
    if k < 19:
        return [OP_GENESIS, draw(st.text(max_size=5)), draw(st.binary(max_size=4))]
    return draw(st.lists(msgpack_objects, max_size=4))


ACTORS = [public_key(s) for s in (SEED_A, SEED_B, SEED_C)]
SIGN = {s: Identity.from_private_bytes(s).sign for s in (SEED_A, SEED_B, SEED_C)}
NEXT_SEQ = {SEED_A: 3, SEED_B: 2, SEED_C: 1}
ID_1 = bytes.fromhex(V["changes"]["change/1"]["decoded"]["change_id"])


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from([SEED_A, SEED_A, SEED_B, SEED_B, SEED_C]),
    st.integers(0, 19).map(lambda k: {7: -1, 8: 1, 9: -3}.get(k, 0)),
    st.sampled_from([[HEAD], [HEAD], [HEAD], [ID_1], [ROOM_ID], [ID_1, HEAD], [],
                     [b"\x01" * 32]]),
    st.sampled_from([1, 1, 1, 1, 0, -1000, 100_000]),
    st.lists(ops(), min_size=1, max_size=6),
    st.sampled_from([True, True, True, True, False]),
)
def test_signed_changes_with_arbitrary_ops(
    seed: bytes, seq_delta: int, deps: list[bytes], seconds: int, op_list: list[Any],
    right_room: bool,
) -> None:
    """Correctly signed changes with arbitrary ops reach the replica's integration step:
    it must return a verdict, never raise, and a rejected change must leave no trace."""
    author = public_key(seed)
    actors = [a for a in ACTORS if a != author]
    hlc = max(0, int((NOW_APPLY + seconds) * 1000)) << 16
    try:
        data = encode_change(
            author=author, seq=NEXT_SEQ[seed] + seq_delta, deps=deps, hlc=hlc, actors=actors,
            names=["c", "f", "g"], ops=op_list, room_id=ROOM_ID if right_room else b"",
            sign=SIGN[seed],
        )
    except (TypeError, ValueError, OverflowError):
        return  # not even packable
    replica = _base_replica()
    before = replica.state()
    status = check_apply(data, replica)
    if status == "rejected":
        assert replica.state() == before
        assert replica.change_count() == 3
    elif status == "applied":
        assert replica.change_count() == 4
        assert replica.state() is not None  # the state view still works
        again = replica.apply(data, NOW_APPLY)
        assert again.status == "duplicate"


# --------------------------------------------------------------------------- round trips

hashes = st.binary(min_size=32, max_size=32)
hash_tuples = st.lists(hashes, max_size=5, unique=True).map(tuple)
peers = st.text(alphabet="123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz",
                min_size=1, max_size=64)
ttls = st.integers(0, 16)
presence_fields = st.dictionaries(st.text(max_size=8), values, max_size=5).filter(
    lambda v: _depth(v) <= DEFAULT_LIMITS.max_value_depth
)


@FUZZ
@given(
    st.one_of(
        st.builds(Changes, hashes, st.lists(st.binary(max_size=50), max_size=5).map(tuple),
                  st.booleans()),
        st.builds(Heads, hashes, hash_tuples,
                  st.dictionaries(hashes, st.integers(1, 2**40), max_size=4).map(
                      lambda d: tuple(sorted(d.items()))),
                  st.binary(max_size=40), st.booleans()),
        st.builds(Snapshot, hashes, st.binary(max_size=200)),
        st.builds(IHave, hashes, hash_tuples),
        st.builds(Graft, hashes, hash_tuples),
        st.builds(Want, hashes, hash_tuples),
        st.builds(Prune, hashes, st.lists(hashes, max_size=5).map(tuple)),
        st.builds(lambda room, who, seq, fields, sig: make_presence(
            room, who, seq, normalize_value(fields), lambda _: sig),
            hashes, hashes, st.integers(0, 2**63 - 1), presence_fields,
            st.binary(min_size=64, max_size=64)),
        st.builds(ForwardJoin, hashes, peers, ttls),
        st.builds(Shuffle, hashes, peers, ttls, st.lists(peers, max_size=64).map(tuple)),
        st.builds(ShuffleReply, hashes, st.lists(peers, max_size=64).map(tuple)),
        st.builds(Disconnect, hashes, st.lists(peers, max_size=64).map(tuple)),
    )
)
def test_frames_roundtrip(msg: Any) -> None:
    data = encode_frame(msg)
    back = decode_frame(data)
    if isinstance(msg, Heads):
        msg = Heads(msg.room_id, tuple(sorted(msg.heads)), tuple(sorted(msg.vv)), msg.bloom,
                    msg.reply)
    assert back == msg
    assert encode_frame(back) == data


@FUZZ
@given(
    st.binary(min_size=32, max_size=32),
    st.integers(1, 2**64 - 1),
    st.lists(hashes, max_size=4, unique=True),
    st.integers(0, 2**63 - 1),
    st.lists(values.filter(lambda v: _depth(v) <= DEFAULT_LIMITS.max_value_depth),
             min_size=1, max_size=5),
    st.binary(min_size=64, max_size=64),
)
def test_changes_roundtrip(
    author: bytes, seq: int, deps: list[bytes], hlc: int, vals: list[Any], sig: bytes
) -> None:
    other = bytes(32) if author != bytes(32) else b"\x01" * 32
    ops: list[Any] = [[OP_CREATE, 1, None], [OP_MOVE, [0, 7], 1], [OP_ROLE, 0, 2]]
    ops += [[OP_SET, [0, 3], 0, 1, v] for v in vals]
    data = encode_change(
        author=author, seq=seq, deps=deps, hlc=hlc, actors=[other], names=["c", "f"],
        ops=ops, room_id=ROOM_ID, sign=lambda _: sig,
    )
    ch = decode_change(data)
    assert (ch.author, ch.seq, ch.deps, ch.hlc) == (author, seq, sorted(deps), hlc)
    assert ch.actors == [other] and ch.names == ["c", "f"] and ch.ops == ops
    assert ch.signature == sig and ch.body + sig == data
    assert pack([ch.author, ch.seq, ch.deps, ch.hlc, [ch.actors, ch.names, ch.ops]]) == ch.body


def test_float_bits_survive() -> None:
    for x in (0.0, -0.0, 5e-324, 1.7976931348623157e308, 0.1):
        data = encode_change(
            author=ACTORS[0], seq=1, deps=[HEAD], hlc=1, actors=[], names=["c", "f"],
            ops=[[OP_SET, 1, 0, 1, x]], room_id=ROOM_ID, sign=lambda _: bytes(64),
        )
        got = decode_change(data).ops[0][4]
        assert struct.pack(">d", got) == struct.pack(">d", x)
