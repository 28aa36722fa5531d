"""The hand-read fast paths of ``protocol.compact`` (``protocol.compact_scan``) answer exactly
what msgpack's reader answers wherever they answer at all, and the receiver's shortcuts
(a held copy, another replica's expansion) give exactly the expansion's result."""

from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshnode.identity import verify_signature
from protocol.compact import (
    _MAX_ITEMS,
    CompactParts,
    Expanded,
    MissingDeps,
    _compact_general,
    _parse_general,
    compact_change,
    expand_change,
)
from protocol.compact_cache import ExpansionCache, shared_expansion, using_expansion_cache
from protocol.compact_scan import scan_canonical, scan_compact
from protocol.limits import DEFAULT_LIMITS
from protocol.msgpack_io import pack
from tests.protocol.test_compact import OTHER, PROPS, ROOM, changes, ids, make, resolver


def _same_parse(data: bytes) -> None:
    fast = scan_compact(data, DEFAULT_LIMITS.max_deps)
    if fast is None or len(data) > DEFAULT_LIMITS.max_change_bytes:
        return
    author, seq, head, prefixes, tail, signature = fast
    assert _parse_general(data, DEFAULT_LIMITS) == CompactParts(author, head, prefixes, tail,
                                                                signature, seq)


def _same_compact(data: bytes) -> None:
    fast = scan_canonical(data, _MAX_ITEMS)
    if fast is not None:
        assert fast == _compact_general(data)


def _mutate(raw: bytes, data: st.DataObject) -> bytes:
    out = bytearray(raw)
    for _ in range(data.draw(st.integers(1, 4))):
        out[data.draw(st.integers(0, len(out) - 1))] = data.draw(st.integers(0, 255))
    return bytes(out[:data.draw(st.integers(0, len(out)))] if data.draw(st.booleans()) else out)


@PROPS
@given(changes(), st.data())
def test_the_hand_readers_agree_with_msgpack_s_reader(case: tuple[bytes, list[bytes]],
                                                      data: st.DataObject) -> None:
    raw, _deps = case
    small = compact_change(raw)
    assert scan_canonical(raw, _MAX_ITEMS) == _compact_general(raw) == small  # read by hand
    assert scan_compact(small, DEFAULT_LIMITS.max_deps) is not None
    _same_parse(small)
    _same_parse(_mutate(small, data))
    _same_compact(_mutate(raw, data))


def test_encodings_pack_does_not_produce_are_left_to_the_general_reader() -> None:
    good = make(ids(2))
    small = compact_change(good)
    # seq as a signed int8 (msgpack reads it as 7; pack would write a fixint).
    odd = small[:35] + b"\xd0\x07" + small[36:]
    assert scan_compact(odd, DEFAULT_LIMITS.max_deps) is None
    parts = _parse_general(odd, DEFAULT_LIMITS)
    assert isinstance(parts, CompactParts) and parts.seq == 7
    # A deps array of 2 written as an array16: not pack's encoding, not compacted at all.
    at = good.index(b"\x92\xc4\x20")
    wide = good[:at] + b"\xdc\x00\x02" + good[at + 1:]
    assert scan_canonical(wide, _MAX_ITEMS) is None and compact_change(wide) == wide


def _expand(data: bytes, known: list[bytes], **kw: Any) -> Any:
    return expand_change(data, resolver(known), room_id=ROOM, verify=verify_signature, **kw)


def _never(prefix: bytes) -> list[bytes]:
    raise AssertionError("resolved a prefix")


def test_a_copy_of_a_held_change_is_that_change_without_resolving() -> None:
    deps = ids(3)
    raw = make(deps)
    got = expand_change(compact_change(raw), _never, room_id=ROOM, verify=verify_signature,
                        held=lambda author, seq: raw)
    assert isinstance(got, Expanded) and got.data is raw


def test_an_equivocation_is_rebuilt_from_its_prefixes_not_taken_for_the_held_one() -> None:
    deps = ids(3)
    held = make(deps, ops=None)  # same author and seq, another body: an equivocation
    other = make(deps, hlc=999_999)
    calls: list[tuple[bytes, int]] = []

    def lookup(author: bytes, seq: int) -> bytes:
        calls.append((author, seq))
        return held

    got = _expand(compact_change(other), deps, held=lookup)
    assert calls and isinstance(got, Expanded) and got.data == other and got.data != held
    # Same deps but one more: its compact form differs too.
    more = make(sorted(deps + ids(1, seed=9)))
    got = _expand(compact_change(more), deps + ids(1, seed=9), held=lookup)
    assert isinstance(got, Expanded) and got.data == more


def test_another_replica_s_expansion_is_taken_only_where_ours_would_give_it() -> None:
    deps = ids(2)
    raw = make(deps)
    small = compact_change(raw)
    cache = ExpansionCache(8)

    def holds(known: list[bytes]) -> Any:
        return lambda wanted: all(d in known for d in wanted)

    assert shared_expansion(small, DEFAULT_LIMITS, holds(deps)) is None  # no cache
    with using_expansion_cache(cache):
        assert shared_expansion(small, DEFAULT_LIMITS, holds(deps)) is None  # not yet
        first = _expand(small, deps)
        assert isinstance(first, Expanded) and cache.entries[small] == (first.data, tuple(deps))
        assert compact_change(raw) == small and cache.compacted[raw] == small
        # Every dep held, its prefix its own: the shared bytes, no resolution.
        assert shared_expansion(small, DEFAULT_LIMITS, holds(deps)) is first.data
        # A receiver lacking a dep (or whose dep shares its prefix) expands it itself...
        assert shared_expansion(small, DEFAULT_LIMITS, holds(deps[:1])) is None
        assert _expand(small, deps[:1]) == MissingDeps((deps[1][:8],))
        # ... as does one reading with other limits; what it rebuilds is not remembered.
        other = replace(DEFAULT_LIMITS, max_deps=DEFAULT_LIMITS.max_deps - 1)
        assert shared_expansion(small, other, holds(deps)) is None
        raw2 = make(ids(3, seed=4))
        assert isinstance(_expand(compact_change(raw2), ids(3, seed=4), limits=other), Expanded)
        assert compact_change(raw2) not in cache.entries
    assert _expand(small, deps) == first  # the same answer without any cache


def test_a_dep_sharing_its_prefix_falls_back_to_the_signature() -> None:
    """A receiver holding a second change with a dep's prefix expands by itself, and the
    signature decides: a forged entry in the cache is never taken on its word."""
    deps = ids(2)
    raw = make(deps)
    forged = compact_change(raw)[:-64] + bytes(64)
    cache = ExpansionCache(8)
    cache.remember(forged, raw[:-64] + bytes(64), tuple(deps))
    twin = deps[0][:8] + bytes(24)
    with using_expansion_cache(cache):
        assert shared_expansion(forged, DEFAULT_LIMITS, lambda wanted: False) is None
        got = _expand(forged, [*deps, twin])
        assert not isinstance(got, Expanded)


@pytest.mark.parametrize("n", [1, 15, 16, 40])
def test_deps_arrays_of_every_header_width_are_read_by_hand(n: int) -> None:
    deps = ids(n, seed=n)
    raw = make(deps, who=OTHER, seq=70_000, hlc=2**40)
    small = scan_canonical(raw, _MAX_ITEMS)
    assert small is not None and small == _compact_general(raw)
    assert pack(b"".join(d[:8] for d in deps)) in small
    got = _expand(small, deps)
    assert isinstance(got, Expanded) and got.data == raw
