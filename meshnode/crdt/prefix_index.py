"""Applied changes by the first bytes of their ID, for compact changes (``protocol.compact``).

A compact change names its deps by 8-byte prefixes; the receiver finds the full IDs here.
Kept apart from the ID index (``ChangeGraph.index``), built only where it is used, and in
columns rather than a dict of every prefix (65-88 bytes a change): the prefixes, as 64-bit
ints, in sorted ``array`` columns with the changes' positions beside them (12 bytes a change),
looked up by bisection. A column of fewer than 2,048 entries takes a new one in place (a
memmove); past that, changes applied since the column was last sorted wait in a small dict
until they are an eighth of it, then both are merged (one sort). From 32,768 entries the
columns are split into 256 buckets by the prefix's first byte, so a merge sorts one bucket,
never the whole index: a long-lived room's node never stalls on it. A small index is one
column (256 buckets would cost about 60 kB however few changes they held, and netsim keeps
10,000 replicas). 13-18 bytes a change, under 1 kB when empty (``docs/performance.md``,
2026-12-06 session 7). Two changes sharing a prefix (rare: 2^-64 by chance, or ground on
purpose with about 2^32 hashes) are both kept, and counted (``shared``).
"""

from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Mapping

from protocol.frames import PREFIX_BYTES

BUCKETS = 256
SPLIT_AT = 1 << 15  # entries from which the index is split into BUCKETS columns
MIN_RECENT = 8  # per bucket
INSERT_BELOW = 2048  # entries of a bucket below which an entry is inserted in place
_OFFSET = 1 << 31  # positions are signed 32-bit (base entries are negative)
_LOW = (1 << 32) - 1


class PrefixIndex:
    """Prefix (as an int) -> positions of the changes in their ``ChangeGraph``."""

    __slots__ = ("keys", "positions_", "recent", "shared", "shift")

    def __init__(self) -> None:
        # Per bucket (``key >> shift``): sorted keys, the positions beside them, and what was
        # added since the bucket was last sorted. One bucket (shift 64: every key's is 0)
        # until the index holds SPLIT_AT entries, so that a small graph (netsim runs 10,000
        # of them) pays for three containers, not 768.
        self.shift = 64
        self.keys: list[array[int]] = [array("Q")]
        self.positions_: list[array[int]] = [array("i")]
        self.recent: list[dict[int, list[int]]] = [{}]
        # Entries whose prefix an entry before them has: while none, a change held has
        # its prefix to itself (``ChangeGraph.holds_alone``) without a lookup.
        self.shared = 0

    @classmethod
    def of(cls, index: Mapping[bytes, int]) -> "PrefixIndex":
        """An index of every ``change ID -> position`` in ``index``."""
        out = cls()
        packed = [(int.from_bytes(cid[:PREFIX_BYTES], "big") << 32) | (pos + _OFFSET)
                  for cid, pos in index.items()]
        packed.sort()
        out.shared = sum(1 for i in range(1, len(packed))
                         if packed[i] >> 32 == packed[i - 1] >> 32)
        out._install(0, packed)
        return out

    def __len__(self) -> int:
        return sum(map(len, self.keys)) + sum(len(ps) for r in self.recent for ps in r.values())

    def add(self, change_id: bytes, pos: int) -> None:
        """Note the change at ``pos``."""
        key = int.from_bytes(change_id[:PREFIX_BYTES], "big")
        b = key >> self.shift
        recent = self.recent[b]
        same = recent.get(key)
        if same is None:
            keys = self.keys[b]
            i = bisect_right(keys, key)
            if i and keys[i - 1] == key:
                self.shared += 1
            if not recent and len(keys) < INSERT_BELOW:
                # A small column takes the entry in place (a memmove of at most 16 kB):
                # re-sorting it every few changes would cost more than the whole lookup.
                keys.insert(i, key)
                self.positions_[b].insert(i, pos)
                return
            recent[key] = [pos]
        else:
            same.append(pos)
            self.shared += 1
        if len(recent) > max(MIN_RECENT, len(self.keys[b]) >> 3):
            self._merge(b)

    def _merge(self, b: int) -> None:
        # Each entry as one int (the prefix, then the position made non-negative): sorting
        # ints is several times faster than sorting tuples.
        packed = [(k << 32) | (p + _OFFSET)
                  for k, p in zip(self.keys[b], self.positions_[b], strict=True)]
        packed += [(k << 32) | (p + _OFFSET) for k, ps in self.recent[b].items() for p in ps]
        packed.sort()
        self._install(b, packed)

    def _install(self, b: int, packed: list[int]) -> None:
        """Make sorted ``packed`` entries bucket ``b``'s columns (split into BUCKETS buckets
        when the single one reaches SPLIT_AT)."""
        if self.shift == 64 and len(packed) >= SPLIT_AT:
            self.shift = 56
            self.keys = [array("Q") for _ in range(BUCKETS)]
            self.positions_ = [array("i") for _ in range(BUCKETS)]
            self.recent = [{} for _ in range(BUCKETS)]
            lo = 0
            for b in range(BUCKETS):
                hi = bisect_left(packed, (b + 1) << 88, lo)  # the next byte's first entry
                self._install(b, packed[lo:hi])
                lo = hi
            return
        self.keys[b] = array("Q", [x >> 32 for x in packed])
        self.positions_[b] = array("i", [(x & _LOW) - _OFFSET for x in packed])
        self.recent[b] = {}

    def positions(self, prefix: bytes) -> list[int]:
        """Positions of the changes whose ID starts with ``prefix`` (none when the prefix is
        not ``PREFIX_BYTES`` long)."""
        if len(prefix) != PREFIX_BYTES:
            return []
        key = int.from_bytes(prefix, "big")
        b = key >> self.shift
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
