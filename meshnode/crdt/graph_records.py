"""The plain records the hash graph takes in and gives out, apart from the graph itself.

``ChangeMeta`` (a change's record: what ``ChangeGraph.add`` takes, what ``ChangeGraph.meta``
reads back), the changes a frontier keeps below it (``BaseEntry`` and its kinds ``BASE_*``)
and what ``ChangeGraph.cut`` returns (``Frontier``); and ``merge_vv``, on version vectors as
plain dicts. They are data, not the graph's columns: ``SceneContent`` and the snapshot codec
carry them, and they depend on nothing but the standard library. ``meshnode.crdt.graph``
re-exports them under their old names.
"""

from collections.abc import Iterable, Mapping
from dataclasses import dataclass


@dataclass(slots=True)
class ChangeMeta:
    """An applied change's record besides its effects: what ``ChangeGraph.add`` takes (``vv``
    is what the caller computed when applying it, or None; the graph keeps a compact form
    instead) and what ``ChangeGraph.meta`` reads back (a copy: changing it changes nothing;
    ``pos`` is -1 for a base entry, ``lag`` its vector's entries below the applied prefix)."""

    author: bytes
    seq: int
    hlc: int
    deps: tuple[bytes, ...]
    vv: Mapping[bytes, int] | None = None
    pos: int = -1
    lag: dict[bytes, int] | None = None


def merge_vv(vvs: Iterable[Mapping[bytes, int]]) -> dict[bytes, int]:
    """Pointwise maximum of version vectors (a new dict)."""
    out: dict[bytes, int] = {}
    for vv in vvs:
        for author, seq in vv.items():
            if out.get(author, 0) < seq:
                out[author] = seq
    return out


BASE_NAMED = 0
"""A base entry kept because the state names it (author, seq and clock only)."""
BASE_BOUNDARY = 1
"""A base entry whose version vector is kept (a dep of a later change, an invite revocation)."""
BASE_HEAD = 2
"""A boundary entry no change after the frontier depends on: one of the heads."""


@dataclass(frozen=True, slots=True)
class BaseEntry:
    """A change below the frontier that the graph keeps (see ``ChangeGraph.load_frontier``):
    ``lag`` are its vector's entries below ``base`` (kinds 1 and 2), ``past`` the changes of
    forked authors (from their fork on) in its causal past."""

    change_id: bytes
    author: bytes
    seq: int
    hlc: int
    kind: int
    lag: tuple[tuple[bytes, int], ...] = ()
    past: tuple[bytes, ...] = ()


@dataclass(frozen=True, slots=True)
class Frontier:
    """What ``ChangeGraph.cut`` returns: the frontier's clock, per-author seq counts and last
    changes below it, how many changes below it are not kept, the kept ones, and the changes
    after it (in order)."""

    hlc: int
    base: dict[bytes, int]
    head_of: dict[bytes, bytes]
    pruned: int
    entries: tuple[BaseEntry, ...]
    window: tuple[bytes, ...]
