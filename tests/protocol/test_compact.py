"""The compact wire form of a change (``protocol.compact``): byte-exact round trips, the
ambiguity rule, missing prefixes, and a decoder that never raises on hostile bytes."""

import hashlib
import random
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meshnode.identity import Identity, verify_signature
from protocol.change import OP_SET, decode_change, encode_change
from protocol.compact import (
    MALFORMED,
    MARKER,
    MAX_COMBINATIONS,
    NO_SIGNATURE_MATCH,
    PREFIX_BYTES,
    TOO_AMBIGUOUS,
    Expanded,
    MissingDeps,
    Unexpandable,
    compact_change,
    expand_change,
    is_compact,
    parse_compact,
)
from protocol.errors import DecodeError, SchemaError, UnknownVersion
from protocol.frames import COMPACT_VERSION, Changes, WantPrefix, decode_frame, encode_frame
from protocol.msgpack_io import pack
from protocol.vectors import SEED_A, SEED_B, build_vectors

ROOM = hashlib.sha256(b"compact-room").digest()
AUTHOR = Identity.from_private_bytes(SEED_A)
OTHER = Identity.from_private_bytes(SEED_B)
PROPS = settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))


def make(deps: list[bytes], *, seq: int = 7, hlc: int = 123_456, ops: list[Any] | None = None,
         who: Identity = AUTHOR) -> bytes:
    return encode_change(author=who.public_key, seq=seq, deps=deps, hlc=hlc, actors=[0],
                         names=["transform", "position"],
                         ops=ops or [[OP_SET, [0, 1], 0, 1, [1.0, 2.0, 3.0]]],
                         room_id=ROOM, sign=who.sign)


def ids(n: int, seed: int = 1) -> list[bytes]:
    rng = random.Random(seed)
    return sorted(rng.randbytes(32) for _ in range(n))


def resolver(known: list[bytes]) -> Any:
    def resolve(prefix: bytes) -> list[bytes]:
        return [k for k in known if k.startswith(prefix)]
    return resolve


def expand(data: bytes, known: list[bytes], **kw: Any) -> Any:
    return expand_change(data, resolver(known), room_id=ROOM, verify=verify_signature, **kw)


def test_compact_saves_24_bytes_a_dep_and_expands_byte_for_byte() -> None:
    deps = ids(20)
    data = make(deps)
    small = compact_change(data)
    assert small[0] == MARKER and is_compact(small) and not is_compact(data)
    # out: an array16 of 20 bin8s of 32 bytes; in: one bin8 of 20 x 8 bytes
    assert len(data) - len(small) == (3 + 20 * 34) - (2 + 20 * 8)
    got = expand(small, deps + ids(50, seed=2))
    assert got == Expanded(data, 0)


def test_canonical_decoders_refuse_the_compact_form() -> None:
    small = compact_change(make(ids(3)))
    with pytest.raises(DecodeError):
        decode_change(small)
    assert msgpack.Unpacker().feed(small) is None  # (0xC1 is never a msgpack type byte)
    with pytest.raises(ValueError):  # msgpack's FormatError
        msgpack.unpackb(small)


def test_changes_without_deps_or_not_canonically_encoded_stay_as_they_are() -> None:
    genesis = bytes.fromhex(build_vectors()["changes"]["change/genesis"]["hex"])
    assert compact_change(genesis) == genesis
    data = make(ids(2))
    # The same deps with an array16 header instead of a fixarray: still a valid change.
    body = data[:-64]
    fix = pack(ids(2))
    odd = body.replace(fix, b"\xdc\x00\x02" + fix[1:], 1) + data[-64:]
    assert decode_change(odd).deps == ids(2)
    assert compact_change(odd) == odd
    for junk in (b"", b"\x95", b"\x95" + b"\x00" * 70, b"\xc1" * 100, b"\x95" * 200):
        assert compact_change(junk) == junk
    # A truncated change still has the shape: it travels compact and comes back as it was
    # (for the replica to refuse).
    assert expand(compact_change(data[:-1]), ids(2)) == Expanded(data[:-1], 0)


def test_missing_prefixes_are_named_once_in_order() -> None:
    deps = ids(5)
    got = expand(compact_change(make(deps)), [deps[0], deps[3]])
    assert got == MissingDeps(tuple(d[:PREFIX_BYTES] for d in (deps[1], deps[2], deps[4])))


def twin_of(target: bytes) -> bytes:
    """A fake ID sharing ``target``'s prefix (what a 2^32-hash grind would give)."""
    return target[:PREFIX_BYTES] + hashlib.sha256(target).digest()[:32 - PREFIX_BYTES]


def test_an_ambiguous_prefix_is_decided_by_the_signature() -> None:
    deps = ids(4)
    data = make(deps)
    twin = twin_of(deps[2])
    got = expand(compact_change(data), [*deps, twin])
    assert isinstance(got, Expanded) and got.data == data and got.tried >= 1


def test_an_ambiguous_prefix_without_the_true_dep_matches_no_signature() -> None:
    deps = ids(4)
    twins = [twin_of(deps[2]), twin_of(twin_of(deps[2]))]
    twins = [t[:PREFIX_BYTES] + bytes([i]) + t[PREFIX_BYTES + 1:] for i, t in enumerate(twins)]
    got = expand(compact_change(make(deps)), deps[:2] + deps[3:] + twins)
    assert isinstance(got, Unexpandable) and got.reason == NO_SIGNATURE_MATCH


def test_a_single_wrong_candidate_is_not_checked_here() -> None:
    """One candidate per prefix: rebuilt without a signature check (the replica's check
    then refuses it); the overlay does not blame the sender for that alone."""
    deps = ids(3)
    wrong = twin_of(deps[1])
    got = expand(compact_change(make(deps)), [deps[0], wrong, deps[2]])
    assert isinstance(got, Expanded) and got.tried == 0
    assert decode_change(got.data).deps == sorted([deps[0], wrong, deps[2]])
    assert not verify_signature(AUTHOR.public_key, got.data[-64:],
                                b"meshnode/change/v1\x00" + ROOM + got.data[:-64])


def test_two_deps_sharing_a_prefix_need_two_known_changes() -> None:
    a = ids(1)[0]
    b = a[:PREFIX_BYTES] + bytes(32 - PREFIX_BYTES)
    deps = sorted([a, b])
    data = make(deps)
    small = compact_change(data)
    assert expand(small, [a]) == MissingDeps((a[:PREFIX_BYTES],))
    assert expand(small, [a, b]) == Expanded(data, 0)  # one strictly sorted combination


def test_too_many_combinations_are_refused_before_any_check() -> None:
    deps = ids(5)
    known = deps + [twin_of(d) for d in deps]  # 2^5 = 32 combinations
    got = expand(compact_change(make(deps)), known)
    assert isinstance(got, Unexpandable) and got.reason == TOO_AMBIGUOUS
    assert MAX_COMBINATIONS >= 2 ** 4
    two = expand(compact_change(make(deps)), [*deps, twin_of(deps[0]), twin_of(deps[1])],
                 max_checks=2)
    assert isinstance(two, Unexpandable) and two.reason == TOO_AMBIGUOUS


@st.composite
def changes(draw: st.DrawFn) -> tuple[bytes, list[bytes]]:
    n = draw(st.integers(1, 40))
    deps = sorted(set(draw(st.lists(st.binary(min_size=32, max_size=32), min_size=n,
                                    max_size=n))))
    value = draw(st.one_of(
        st.lists(st.floats(allow_nan=False, allow_infinity=False), max_size=4),
        st.text(max_size=40), st.integers(-2**63, 2**63 - 1), st.booleans(), st.none()))
    ops = [[OP_SET, draw(st.integers(1, 2**40)), 0, 1, value]]
    data = make(deps, seq=draw(st.integers(1, 2**32)), hlc=draw(st.integers(0, 2**63 - 1)),
                ops=ops, who=draw(st.sampled_from([AUTHOR, OTHER])))
    return data, deps


@PROPS
@given(changes(), st.lists(st.binary(min_size=32, max_size=32), max_size=20))
def test_round_trip_is_byte_identical(case: tuple[bytes, list[bytes]],
                                      others: list[bytes]) -> None:
    data, deps = case
    small = compact_change(data)
    assert is_compact(small) and len(small) < len(data)
    got = expand(small, deps + others)
    assert isinstance(got, Expanded) and got.data == data
    assert decode_change(got.data).change_id == hashlib.sha256(data).digest()


def _expansion_is_typed(data: bytes, known: list[bytes]) -> None:
    got = expand(data, known)
    assert isinstance(got, Expanded | MissingDeps | Unexpandable)
    if isinstance(got, Unexpandable):
        assert got.reason in (MALFORMED, TOO_AMBIGUOUS, NO_SIGNATURE_MATCH)
    parsed = parse_compact(data)
    assert not isinstance(parsed, Unexpandable) or parsed.reason == MALFORMED


@PROPS
@given(st.binary(max_size=600))
def test_random_bytes_after_the_marker_never_raise(tail: bytes) -> None:
    _expansion_is_typed(bytes((MARKER,)) + tail, ids(3))


@PROPS
@given(changes(), st.data())
def test_mutated_compact_changes_never_raise(case: tuple[bytes, list[bytes]],
                                             data: st.DataObject) -> None:
    raw, deps = case
    small = bytearray(compact_change(raw))
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(small) - 1))
        small[i] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(small)))
    _expansion_is_typed(bytes(small[:cut] if data.draw(st.booleans()) else small), deps)


def test_malformed_envelopes_are_named() -> None:
    good = compact_change(make(ids(2)))
    author, sig = AUTHOR.public_key, good[-64:]
    cases = {
        "short": bytes((MARKER,)) + b"\x00" * 10,
        "author": bytes((MARKER,)) + pack(b"x") + pack(1) + pack(b"\x00" * 8) + pack(1)
        + pack([[], [], []]) + sig,
        "prefix length": bytes((MARKER,)) + pack(author) + pack(1) + pack(b"\x00" * 7)
        + pack(1) + pack([[], [], []]) + sig,
        "unsorted": bytes((MARKER,)) + pack(author) + pack(1) + pack(b"\x09" * 8 + b"\x01" * 8)
        + pack(1) + pack([[], [], []]) + sig,
        "no ops": bytes((MARKER,)) + pack(author) + pack(1) + pack(b"\x00" * 8) + pack(1) + sig,
        "seq": bytes((MARKER,)) + pack(author) + pack(0) + pack(b"\x00" * 8) + pack(1)
        + pack([[], [], []]) + sig,
    }
    for name, data in cases.items():
        got = parse_compact(data)
        assert isinstance(got, Unexpandable) and got.reason == MALFORMED, name


def test_want_prefix_frame_round_trips_and_checks_its_prefixes() -> None:
    msg = WantPrefix(ROOM, (b"\x01" * 8, b"\x02" * 8))
    assert decode_frame(encode_frame(msg)) == msg
    for bad in ([b"\x01" * 7], [b"\x01" * 8, b"\x01" * 8], [1], "x"):
        with pytest.raises(SchemaError):
            decode_frame(pack([1, WantPrefix.TYPE, ROOM, bad]))


def test_a_changes_frame_carries_compact_and_canonical_changes_in_version_1() -> None:
    """Version 2 is a capability of the link (the hello), not a frame envelope: the
    version-1 vectors, ``invalid/frame-version-2`` included, stay as they are."""
    data = make(ids(3))
    msg = Changes(ROOM, (compact_change(data), data), True)
    frame = encode_frame(msg)
    assert frame[1] == 1 and decode_frame(frame) == msg
    with pytest.raises(UnknownVersion):
        decode_frame(pack([COMPACT_VERSION, Changes.TYPE, ROOM, [], True]))
