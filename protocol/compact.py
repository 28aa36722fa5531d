"""The compact WIRE form of a change: its deps as 8-byte hash prefixes.

A change's deps are the full 32-byte IDs of the heads its author had seen; about 20 of them
per change in a busy room, 13.5 of its ~45 bytes per op. Between two peers that both speak
link version :data:`COMPACT_VERSION` (their hellos' ``versions``), a change travels instead as::

    0xC1 || author || seq || bin(prefixes) || hlc || ops block || signature

where ``author``, ``seq``, ``hlc`` and the ops block are the exact msgpack bytes of those
elements of the canonical body (spliced, not re-encoded), and ``prefixes`` is one bin of the
first :data:`PREFIX_BYTES` bytes of each dep, in the canonical (sorted) order. ``0xC1`` is
the one byte msgpack never uses, so no canonical change (a msgpack array, ``0x95``) and no
msgpack object at all starts with it: a decoder tells the two forms apart by the first byte.

The compact form is never stored, signed or hashed: the signature and the change ID are those
of the canonical change, which the receiver rebuilds byte for byte (:func:`expand_change`) by
looking each prefix up in its own change graph. A prefix it cannot resolve (it lacks the dep)
yields :class:`MissingDeps`, and the receiver asks for the changes by prefix (``WantPrefix``);
a prefix that matches several changes it holds is tried in each combination (at most
:data:`MAX_COMBINATIONS`), the author's signature deciding.

Only changes whose deps are encoded exactly as :func:`protocol.msgpack_io.pack` encodes them
are compacted (every change this codebase makes); any other is sent as it is.
"""

import itertools
from collections import Counter
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

import msgpack

from protocol.change import (
    HASH_BYTES,
    SIGNATURE_BYTES,
    header_problem,
    signing_payload,
)
from protocol.compact_cache import expansion_cache
from protocol.compact_scan import scan_canonical, scan_compact
from protocol.frames import COMPACT_VERSION, PREFIX_BYTES
from protocol.limits import DEFAULT_LIMITS, Limits
from protocol.msgpack_io import pack

__all__ = [
    "COMPACT_VERSION", "MALFORMED", "MARKER", "MAX_COMBINATIONS", "NO_SIGNATURE_MATCH",
    "PREFIX_BYTES", "REASONS", "TOO_AMBIGUOUS", "CompactParts", "Expanded", "Expansion",
    "MissingDeps", "Unexpandable", "compact_change", "expand_change", "is_compact",
    "parse_compact",
]

MARKER = 0xC1
"""First byte of a compact change: msgpack's never-used byte, so never a canonical change."""

MAX_COMBINATIONS = 16
"""Dep combinations an ambiguous compact change may need tried (each a signature check)."""

_CANONICAL_HEAD = 0x95  # a canonical body is a fixarray of 5

# Stable reasons (metric labels) for a compact change that cannot be expanded.
MALFORMED = "compact_malformed"
TOO_AMBIGUOUS = "compact_too_ambiguous"
NO_SIGNATURE_MATCH = "compact_no_signature_match"
REASONS = frozenset({MALFORMED, TOO_AMBIGUOUS, NO_SIGNATURE_MATCH})


@dataclass(frozen=True, slots=True)
class Expanded:
    """The canonical change rebuilt from a compact one. ``tried``: combinations of deps whose
    signature was checked (0: every prefix had one candidate, nothing was checked here)."""

    data: bytes
    tried: int = 0


@dataclass(frozen=True, slots=True)
class MissingDeps:
    """Prefixes (in order, distinct) that match no change the receiver holds: ask for them."""

    prefixes: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class Unexpandable:
    """A compact change refused: ``reason`` is one of :data:`REASONS`, ``detail`` in words."""

    reason: str
    detail: str


Expansion = Expanded | MissingDeps | Unexpandable


def is_compact(data: bytes) -> bool:
    """Whether ``data`` is in the compact form (by its first byte; not validated)."""
    return len(data) > 0 and data[0] == MARKER


def _reader(data: bytes, limits: Limits) -> msgpack.Unpacker:
    u = msgpack.Unpacker(
        raw=False, use_list=True, strict_map_key=True, max_buffer_size=len(data) + 1,
        max_str_len=limits.max_str_bytes,
        max_bin_len=max(limits.max_bin_bytes, limits.max_change_bytes),
        max_array_len=max(limits.max_collection_items, limits.max_ops_per_change),
        max_map_len=limits.max_collection_items, max_ext_len=0,
    )
    u.feed(data)
    return u


_MAX_ITEMS = max(DEFAULT_LIMITS.max_collection_items, DEFAULT_LIMITS.max_ops_per_change)


def compact_change(data: bytes) -> bytes:
    """The compact form of canonical change bytes, or ``data`` itself when it has no deps
    (nothing to save) or is not in the canonical encoding (module docstring). Raises
    nothing for any input: bytes it cannot read are returned unchanged."""
    if len(data) <= SIGNATURE_BYTES + 1 or data[0] != _CANONICAL_HEAD:
        return data
    cache = expansion_cache.value
    if cache is not None and type(data) is bytes:
        got = cache.compacted.get(data)
        if got is None:
            got = _compact(data)
            cache.remember_compact(data, got)
        return got
    return _compact(data)


def _compact(data: bytes) -> bytes:
    fast = scan_canonical(data, _MAX_ITEMS)  # every change this codebase makes
    return _compact_general(data) if fast is None else fast


def _compact_general(data: bytes) -> bytes:
    """:func:`compact_change` by msgpack's reader, for bytes the hand reader leaves."""
    body = data[:-SIGNATURE_BYTES]
    try:
        u = _reader(body[1:], DEFAULT_LIMITS)
        u.skip()  # author
        u.skip()  # seq
        s_end = u.tell()
        deps = u.unpack()
        d_end = u.tell()
        u.skip()  # hlc
        h_end = u.tell()
    except Exception:
        return data
    if type(deps) is not list or not deps or h_end >= len(body) - 1 or any(
        type(d) is not bytes or len(d) != HASH_BYTES for d in deps
    ) or any(deps[i] >= deps[i + 1] for i in range(len(deps) - 1)) \
            or pack(deps) != body[1 + s_end:1 + d_end]:
        return data
    prefixes = b"".join(d[:PREFIX_BYTES] for d in deps)
    return b"".join((bytes((MARKER,)), body[1:1 + s_end], pack(prefixes), body[1 + d_end:],
                     data[-SIGNATURE_BYTES:]))


@dataclass(frozen=True, slots=True)
class CompactParts:
    """A compact change split up (the raw msgpack bytes of each canonical element kept)."""

    author: bytes
    head: bytes  # the raw author and seq
    prefixes: tuple[bytes, ...]
    tail: bytes  # the raw hlc and ops block
    signature: bytes
    seq: int


def parse_compact(data: bytes, limits: Limits = DEFAULT_LIMITS) -> CompactParts | Unexpandable:
    """Split a compact change and check its envelope (the ops block is checked later, by
    ``decode_change`` on the rebuilt change)."""
    def bad(detail: str) -> Unexpandable:
        return Unexpandable(MALFORMED, f"compact change: {detail}")

    if type(data) is not bytes or not is_compact(data):
        return bad("does not start with the compact marker 0xC1")
    if len(data) > limits.max_change_bytes:
        return bad(f"{len(data)} bytes is over {limits.max_change_bytes}")
    if len(data) <= SIGNATURE_BYTES + 1:
        return bad("too short to hold a signature")
    fast = scan_compact(data, limits.max_deps)  # every change this codebase compacts
    if fast is not None:
        author, seq, head, prefixes, tail, signature = fast
        return CompactParts(author, head, prefixes, tail, signature, seq)
    return _parse_general(data, limits)


def _parse_general(data: bytes, limits: Limits) -> CompactParts | Unexpandable:
    """:func:`parse_compact` by msgpack's reader (the envelope's size already checked)."""
    def bad(detail: str) -> Unexpandable:
        return Unexpandable(MALFORMED, f"compact change: {detail}")

    inner = data[1:-SIGNATURE_BYTES]
    try:
        u = _reader(inner, limits)
        author = u.unpack()
        seq = u.unpack()
        s_end = u.tell()
        blob = u.unpack()
        p_end = u.tell()
        hlc = u.unpack()
        h_end = u.tell()
    except Exception as exc:
        return bad(f"not valid msgpack: {type(exc).__name__}")
    problem = header_problem(author, seq, hlc)
    if problem is not None:
        return bad(problem)
    if type(blob) is not bytes or not blob or len(blob) % PREFIX_BYTES:
        return bad(f"deps must be one non-empty bin of {PREFIX_BYTES}-byte prefixes")
    n = len(blob) // PREFIX_BYTES
    if n > limits.max_deps:
        return bad(f"{n} deps is over {limits.max_deps}")
    prefixes = tuple(blob[i:i + PREFIX_BYTES] for i in range(0, len(blob), PREFIX_BYTES))
    if any(prefixes[i] > prefixes[i + 1] for i in range(n - 1)):
        return bad("dep prefixes are not in sorted order")
    if h_end >= len(inner):
        return bad("no ops block")
    return CompactParts(author, inner[:s_end], prefixes, inner[p_end:], data[-SIGNATURE_BYTES:],
                        seq)


def _rebuild(head: bytes, deps: Sequence[bytes], tail: bytes, signature: bytes
             ) -> tuple[bytes, bytes]:
    body = b"".join((bytes((_CANONICAL_HEAD,)), head, pack(list(deps)), tail))
    return body, body + signature


def _deps_of(canonical: bytes, head: bytes, n: int) -> list[bytes]:
    """The deps of ``canonical``, rebuilt by :func:`_rebuild` from ``head`` and ``n`` deps."""
    first = 1 + len(head) + (1 if n < 16 else 3)  # after pack's array header
    return [canonical[x:x + HASH_BYTES] for x in range(first + 2, first + 34 * n, 34)]


def expand_change(
    data: bytes,
    resolve: Callable[[bytes], Collection[bytes]],
    *,
    room_id: bytes,
    verify: Callable[[bytes, bytes, bytes], bool],
    limits: Limits = DEFAULT_LIMITS,
    max_checks: int = MAX_COMBINATIONS,
    held: Callable[[bytes, int], bytes | None] | None = None,
) -> Expansion:
    """Rebuild the canonical change from compact bytes.

    ``resolve(prefix)``: the full IDs of the changes the receiver holds whose ID starts
    with ``prefix``. ``verify(key, signature, payload)``: an Ed25519 check, used only when a
    prefix matches several changes (the combination whose rebuilt body the author signed
    wins), at most ``max_checks`` times (more: :data:`TOO_AMBIGUOUS`). Never raises on bad
    input: returns :class:`Unexpandable` instead.

    ``held(author, seq)``: the canonical bytes of the change the receiver holds (applied,
    its deps with it) by that author with that seq, if any. When its compact form is
    ``data`` itself, that change is the answer, found without resolving a prefix: gossip
    delivers most changes several times, and this is a copy. It is the change the
    resolution would rebuild: each prefix matches its dep (held, since the change is
    applied), and where a prefix also matches another change the signature, equal in both,
    signs only that change's body. A different change by the same author and seq (an
    equivocation) differs from the held one's compact form, so it is rebuilt from the
    prefixes as before, and the replica then sees two changes with one (author, seq).

    While a ``protocol.compact_cache.ExpansionCache`` is installed, what is rebuilt with the
    default limits is remembered there, for ``shared_expansion``.
    """
    if type(data) is bytes and SIGNATURE_BYTES + 1 < len(data) <= limits.max_change_bytes \
            and data[0] == MARKER:
        fast = scan_compact(data, limits.max_deps)
    else:
        fast = None
    if fast is None:  # not read by hand: the general reader decides (and names what is bad)
        parts = parse_compact(data, limits)
        if isinstance(parts, Unexpandable):
            return parts
        author, seq, head = parts.author, parts.seq, parts.head
        prefixes, tail, signature = parts.prefixes, parts.tail, parts.signature
    else:
        author, seq, head, prefixes, tail, signature = fast
    if held is not None:
        twin = held(author, seq)
        if twin is not None and twin.endswith(signature) and compact_change(twin) == data:
            return Expanded(twin)
    got = _expand_parts(head, prefixes, tail, signature, author, resolve, room_id, verify,
                        max_checks)
    cache = expansion_cache.value
    if cache is not None and isinstance(got, Expanded) and limits is DEFAULT_LIMITS:
        cache.remember(data, got.data, tuple(_deps_of(got.data, head, len(prefixes))))
    return got


def _expand_parts(head: bytes, prefixes: tuple[bytes, ...], tail: bytes, signature: bytes,
                  author: bytes, resolve: Callable[[bytes], Collection[bytes]],
                  room_id: bytes, verify: Callable[[bytes, bytes, bytes], bool],
                  max_checks: int) -> Expansion:
    """The resolution of :func:`expand_change`, on a parsed compact change."""
    if len(set(prefixes)) == len(prefixes):
        # The usual case: distinct prefixes, each matching exactly one change we hold.
        deps: list[bytes] = []
        for p in prefixes:
            one = resolve(p)
            if len(one) != 1:
                break
            c = next(iter(one))
            if type(c) is not bytes or len(c) != HASH_BYTES or not c.startswith(p):
                break
            deps.append(c)
        else:
            return Expanded(_rebuild(head, deps, tail, signature)[1])
    candidates: list[list[bytes]] = []
    missing: list[bytes] = []
    total = 1
    cache: dict[bytes, list[bytes]] = {}
    shared = Counter(prefixes)
    for p in prefixes:
        found = cache.get(p)
        if found is None:
            found = cache[p] = sorted(
                {c for c in resolve(p) if type(c) is bytes and len(c) == HASH_BYTES
                 and c.startswith(p)})
        if len(found) < shared[p]:  # none, or fewer than the deps that share it
            if p not in missing:
                missing.append(p)
            continue
        candidates.append(found)
        total *= len(found)
        if total > MAX_COMBINATIONS:
            return Unexpandable(TOO_AMBIGUOUS, f"dep prefixes match over {MAX_COMBINATIONS} "
                                               "combinations of known changes")
    if missing:
        return MissingDeps(tuple(missing))
    # Deps are sorted and distinct: only such combinations could have been signed.
    combos = [combo for combo in itertools.product(*candidates)
              if all(combo[i] < combo[i + 1] for i in range(len(combo) - 1))]
    if len(combos) == 1:
        return Expanded(_rebuild(head, combos[0], tail, signature)[1])
    if len(combos) > max_checks:
        return Unexpandable(TOO_AMBIGUOUS, f"{len(combos)} combinations of known changes "
                                           f"match its dep prefixes; {max_checks} may be checked")
    tried = 0
    for combo in combos:
        body, whole = _rebuild(head, combo, tail, signature)
        tried += 1
        if verify(author, signature, signing_payload(room_id, body)):
            return Expanded(whole, tried)
    return Unexpandable(NO_SIGNATURE_MATCH, f"none of {tried} combinations of the changes "
                                            "matching its dep prefixes is signed by its author")
