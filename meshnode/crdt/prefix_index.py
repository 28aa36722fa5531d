"""Applied changes by the first bytes of their ID, for compact changes (``protocol.compact``).

A compact change names its deps by 8-byte prefixes; the receiver finds the full IDs here.
Kept apart from the ID index (``ChangeGraph.index``), built only where it is used, and in
columns rather than a dict of every prefix (65-88 bytes a change): the prefixes, as 64-bit
ints, in sorted ``array`` columns with the changes' positions beside them (12 bytes a change),
looked up by bisection. Changes applied since a column was last sorted wait in a small dict
until they are an eighth of it; then both are merged (one sort). The columns are split into
256 buckets by the prefix's first byte, so a merge sorts one bucket, never the whole index:
a long-lived room's node never stalls on it. About 16-21 bytes a change in all
(``docs/performance.md``, 2026-12-06 session 7). Two changes sharing a prefix (rare: 2^-64 by
chance, or ground on purpose with about 2^32 hashes) are both kept.
"""

from array import array
from bisect import bisect_left
from collections.abc import Mapping

from protocol.frames import PREFIX_BYTES

BUCKETS = 256
MIN_RECENT = 8  # per bucket
_OFFSET = 1 << 31  # positions are signed 32-bit (base entries are negative)
_LOW = (1 << 32) - 1


class PrefixIndex:
    """Prefix (as an int) -> positions of the changes in their ``ChangeGraph``."""

    __slots__ = ("keys", "positions_", "recent")

    def __init__(self) -> None:
        # Per bucket (the prefix's first byte): sorted keys, the positions beside them, and
        # what was added since the bucket was last sorted.
        self.keys: list[array[int]] = [array("Q") for _ in range(BUCKETS)]
        self.positions_: list[array[int]] = [array("i") for _ in range(BUCKETS)]
        self.recent: list[dict[int, list[int]]] = [{} for _ in range(BUCKETS)]

    @classmethod
    def of(cls, index: Mapping[bytes, int]) -> "PrefixIndex":
        """An index of every ``change ID -> position`` in ``index``."""
        out = cls()
        for cid, pos in index.items():
            key = int.from_bytes(cid[:PREFIX_BYTES], "big")
            out.recent[key >> 56].setdefault(key, []).append(pos)
        for b in range(BUCKETS):
            out._merge(b)
        return out

    def __len__(self) -> int:
        return sum(map(len, self.keys)) + sum(len(ps) for r in self.recent for ps in r.values())

    def add(self, change_id: bytes, pos: int) -> None:
        """Note the change at ``pos``."""
        key = int.from_bytes(change_id[:PREFIX_BYTES], "big")
        b = key >> 56
        recent = self.recent[b]
        same = recent.get(key)
        if same is None:
            recent[key] = [pos]
        else:
            same.append(pos)
        if len(recent) > max(MIN_RECENT, len(self.keys[b]) >> 3):
            self._merge(b)

    def _merge(self, b: int) -> None:
        # Each entry as one int (the prefix, then the position made non-negative): sorting
        # ints is several times faster than sorting tuples.
        packed = [(k << 32) | (p + _OFFSET)
                  for k, p in zip(self.keys[b], self.positions_[b], strict=True)]
        packed += [(k << 32) | (p + _OFFSET) for k, ps in self.recent[b].items() for p in ps]
        packed.sort()
        self.keys[b] = array("Q", [x >> 32 for x in packed])
        self.positions_[b] = array("i", [(x & _LOW) - _OFFSET for x in packed])
        self.recent[b] = {}

    def positions(self, prefix: bytes) -> list[int]:
        """Positions of the changes whose ID starts with ``prefix`` (none when the prefix is
        not ``PREFIX_BYTES`` long)."""
        if len(prefix) != PREFIX_BYTES:
            return []
        key = int.from_bytes(prefix, "big")
        b = key >> 56
        keys = self.keys[b]
        i = bisect_left(keys, key)
        out: list[int] = []
        while i < len(keys) and keys[i] == key:
            out.append(self.positions_[b][i])
            i += 1
        more = self.recent[b].get(key)
        if more:
            out += more
        return out
