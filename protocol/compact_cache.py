"""Expansions of compact changes (``protocol.compact``) remembered across the replicas of one
process: for simulators, where thousands of nodes rebuild the very same compact bytes.

An entry is a compact change's bytes, the canonical bytes one receiver rebuilt from them
(with the default limits) and their deps. Another receiver reading with the default limits
takes the entry only where its own expansion would give the same bytes: every dep the entry
names is a change it holds whose prefix no other change it knows shares, which is exactly
when its resolution would find those deps and rebuild those bytes (``expand_change``); the
compact bytes, being the same, parse the same. The answer is thus the one an expansion
gives; what is shared is an immutable ``bytes``, so every replica keeps one object per change
rather than its own copy (about 19 kB a node in netsim's benchmark room). It also remembers
the compact form of canonical bytes (``compact_change``, a function of the bytes alone), which
every node that relays a change computes. A node may install one too; it gains nothing there.
"""

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager

from protocol.limits import DEFAULT_LIMITS, Limits
from protocol.scoped import ScopedHook

__all__ = ["ExpansionCache", "shared_expansion", "using_expansion_cache"]


class ExpansionCache:
    """Compact change bytes -> the canonical bytes rebuilt from them and their deps (at most
    ``max_entries``, oldest forgotten)."""

    __slots__ = ("compacted", "entries", "max_entries")

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self.entries: dict[bytes, tuple[bytes, tuple[bytes, ...]]] = {}
        self.compacted: dict[bytes, bytes] = {}  # canonical bytes -> their compact form

    def remember(self, compact: bytes, canonical: bytes, deps: tuple[bytes, ...]) -> None:
        """Note that ``compact`` was rebuilt as ``canonical``, whose deps are ``deps``."""
        entries = self.entries
        if len(entries) >= self.max_entries:
            del entries[next(iter(entries))]
        entries[compact] = (canonical, deps)

    def remember_compact(self, canonical: bytes, compact: bytes) -> None:
        """Note that ``compact_change(canonical)`` is ``compact``."""
        compacted = self.compacted
        if len(compacted) >= self.max_entries:
            del compacted[next(iter(compacted))]
        compacted[canonical] = compact


expansion_cache: ScopedHook[ExpansionCache] = ScopedHook()


def using_expansion_cache(cache: ExpansionCache | None) -> AbstractContextManager[None]:
    """Let ``expand_change`` and ``shared_expansion`` use ``cache`` (None: no cache) inside
    the block; the cache installed before is back when the block ends, even on error."""
    return expansion_cache.using(cache)


def shared_expansion(data: bytes, limits: Limits,
                     alone: Callable[[Sequence[bytes]], bool]) -> bytes | None:
    """What ``expand_change(data, ...)`` gives, if another receiver of this process expanded
    ``data`` and ``alone(deps)`` holds for its deps (each is a change the receiver holds and
    resolving its prefix finds it only): then the very same bytes object. None otherwise
    (no cache installed, other limits, not expanded yet, or a dep not held alone): the
    caller expands ``data`` itself."""
    cache = expansion_cache.value
    if cache is None or limits is not DEFAULT_LIMITS:
        return None
    got = cache.entries.get(data)
    if got is None or not alone(got[1]):
        return None
    return got[0]
