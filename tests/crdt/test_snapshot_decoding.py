"""Snapshots and Bloom filters are decoders of peer bytes too: garbage, mutations and forgeries
give a typed ``DecodeError`` (never another exception), and valid ones round-trip."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshnode.crdt import ROOT, SceneReplica
from protocol.bloom import BloomFilter
from protocol.errors import DecodeError

from .harness import ident, make_room

FUZZ = settings(max_examples=150, deadline=None)


def _snapshot() -> tuple[bytes, SceneReplica]:
    room = make_room(["editor"], tag="snap-fuzz")
    owner, bob = room.replicas
    a = owner.create_entity(ROOT, {"name": {"text": "a"}, "t": {"p": [1.0, 2.0, 3.0]}})
    owner.create_entity(a, {"name": {"text": "b"}})
    data = owner.commit(10.0)
    assert data is not None
    bob.apply(data, 10.0)
    return owner.snapshot(), owner


SNAP, OWNER = _snapshot()


def test_valid_snapshot_round_trips() -> None:
    rep = SceneReplica.from_snapshot(SNAP, ident("snap-reader"))
    assert rep.state() == OWNER.state()
    assert rep.heads() == OWNER.heads()


@FUZZ
@given(st.binary(max_size=400))
def test_random_bytes_are_typed_errors(data: bytes) -> None:
    with pytest.raises(DecodeError):
        SceneReplica.from_snapshot(data, ident("snap-reader"))


@FUZZ
@given(st.data())
def test_mutated_snapshots_are_typed_errors_or_load(data: st.DataObject) -> None:
    raw = bytearray(SNAP)
    kind = data.draw(st.sampled_from(["flip", "truncate", "extend", "splice"]))
    if kind == "flip":
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i] ^= 1 << data.draw(st.integers(0, 7))
    elif kind == "truncate":
        raw = raw[: data.draw(st.integers(0, len(raw) - 1))]
    elif kind == "extend":
        raw += data.draw(st.binary(min_size=1, max_size=20))
    else:
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i:i] = data.draw(st.binary(min_size=1, max_size=20))
    try:
        SceneReplica.from_snapshot(bytes(raw), ident("snap-reader"))
    except DecodeError:
        return
    # The signature covers every byte: a mutated snapshot can only load if unchanged.
    assert bytes(raw) == SNAP


def test_untrusted_signer_is_refused() -> None:
    with pytest.raises(DecodeError):
        SceneReplica.from_snapshot(SNAP, ident("snap-reader"), trusted_signers=[b"\x00" * 32])


@FUZZ
@given(st.binary(max_size=64))
def test_bloom_decode_is_typed(data: bytes) -> None:
    try:
        bloom = BloomFilter.decode(data)
    except DecodeError:
        return
    assert (b"\x00" * 32 in bloom) in (True, False)


@FUZZ
@given(st.lists(st.binary(min_size=32, max_size=32), max_size=50, unique=True),
       st.binary(min_size=4, max_size=4))
def test_bloom_has_no_false_negatives(ids: list[bytes], salt: bytes) -> None:
    bloom = BloomFilter.decode(BloomFilter.build(ids, salt).encode())
    assert all(i in bloom for i in ids)
