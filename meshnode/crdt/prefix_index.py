"""Applied changes by the first bytes of their ID, for compact changes (``protocol.compact``).

A compact change names its deps by 8-byte prefixes; the receiver finds the full IDs here.
Kept apart from the ID index (``ChangeGraph.index``) and only where it is used: one entry per
change is a dict slot and a 64-bit int key (``docs/performance.md``, 2026-12-06 session 7, for
the bytes per change). Two changes sharing a prefix (rare: 2^-64 by chance, or ground on
purpose, about 2^32 hashes) are both kept, in ``more``.
"""

from collections.abc import Iterable, Mapping

from protocol.frames import PREFIX_BYTES


class PrefixIndex:
    """Prefix (as an int) -> position of the change in its ``ChangeGraph`` (or several)."""

    __slots__ = ("first", "more")

    def __init__(self) -> None:
        self.first: dict[int, int] = {}
        self.more: dict[int, list[int]] = {}

    @classmethod
    def of(cls, index: Mapping[bytes, int]) -> "PrefixIndex":
        """An index of every ``change ID -> position`` in ``index``."""
        out = cls()
        for cid, pos in index.items():
            out.add(cid, pos)
        return out

    def add(self, change_id: bytes, pos: int) -> None:
        """Note the change at ``pos`` (its position object is shared, not copied)."""
        key = int.from_bytes(change_id[:PREFIX_BYTES], "big")
        had = self.first.setdefault(key, pos)
        if had != pos:
            self.more.setdefault(key, []).append(pos)

    def positions(self, prefix: bytes) -> Iterable[int]:
        """Positions of the changes whose ID starts with ``prefix`` (an empty tuple when the
        prefix is not ``PREFIX_BYTES`` long)."""
        if len(prefix) != PREFIX_BYTES:
            return ()
        key = int.from_bytes(prefix, "big")
        pos = self.first.get(key)
        if pos is None:
            return ()
        more = self.more.get(key)
        return (pos,) if more is None else (pos, *more)
