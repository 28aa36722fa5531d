"""Compact changes held until their deps arrive (``protocol.compact``). Sans-I/O.

A compact change names its deps by 8-byte prefixes; a receiver that lacks a dep cannot
rebuild the canonical change (nor check its signature, nor even know its ID), so it holds
the compact bytes, keyed by the prefixes it misses, asks the sender for them
(``WantPrefix``), and tries again when a change with one of those prefixes is applied.

Bounded like the replica's pending buffer: at most ``max_changes`` changes and ``max_bytes``
bytes, the oldest evicted first (anti-entropy brings an evicted change again once its deps
exist); a sender's held changes go when its link does.
"""

from collections import OrderedDict
from dataclasses import dataclass

from protocol.frames import PREFIX_BYTES


@dataclass(slots=True)
class HeldChange:
    """A compact change waiting for ``missing`` prefixes, from ``peer``."""

    peer: str
    missing: frozenset[bytes]


class CompactHold:
    """The held compact changes of one room (see the module docstring)."""

    __slots__ = ("by_prefix", "bytes", "changes", "evicted", "max_bytes", "max_changes")

    def __init__(self, max_changes: int, max_bytes: int) -> None:
        self.max_changes = max_changes
        self.max_bytes = max_bytes
        self.changes: OrderedDict[bytes, HeldChange] = OrderedDict()  # compact bytes -> why
        self.by_prefix: dict[bytes, set[bytes]] = {}
        self.bytes = 0
        self.evicted = 0

    def __len__(self) -> int:
        return len(self.changes)

    def hold(self, data: bytes, peer: str, missing: tuple[bytes, ...]) -> bool:
        """Hold ``data`` until a change with one of the ``missing`` prefixes is applied.
        False if it was held already (only its sender and prefixes are updated)."""
        old = self.changes.pop(data, None)
        if old is not None:
            self._unlink(data, old)
        else:
            self.bytes += len(data)
        entry = HeldChange(peer, frozenset(missing))
        self.changes[data] = entry
        for p in entry.missing:
            self.by_prefix.setdefault(p, set()).add(data)
        while len(self.changes) > self.max_changes or self.bytes > self.max_bytes:
            gone, why = self.changes.popitem(last=False)
            self.bytes -= len(gone)
            self.evicted += 1
            self._unlink(gone, why)
        return old is None

    def _unlink(self, data: bytes, entry: HeldChange) -> None:
        for p in entry.missing:
            waiting = self.by_prefix.get(p)
            if waiting is not None:
                waiting.discard(data)
                if not waiting:
                    del self.by_prefix[p]

    def release(self, applied: list[bytes]) -> list[tuple[str, bytes]]:
        """The held changes that a newly applied change (by ID) may complete, as
        ``(sender, compact bytes)``, in the order they were held; no longer held."""
        hit: set[bytes] = set()
        for cid in applied:
            waiting = self.by_prefix.get(cid[:PREFIX_BYTES])
            if waiting:
                hit |= waiting
        if not hit:
            return []
        out = []
        for data in [d for d in self.changes if d in hit]:
            entry = self.changes.pop(data)
            self.bytes -= len(data)
            self._unlink(data, entry)
            out.append((entry.peer, data))
        return out

    def forget_peer(self, peer: str) -> int:
        """Drop what ``peer`` sent (its link is gone); how many."""
        gone = [d for d, e in self.changes.items() if e.peer == peer]
        for data in gone:
            entry = self.changes.pop(data)
            self.bytes -= len(data)
            self._unlink(data, entry)
        return len(gone)

    def wanted(self, peer: str) -> list[bytes]:
        """Prefixes that changes held from ``peer`` wait for, sorted."""
        return sorted({p for e in self.changes.values() if e.peer == peer for p in e.missing})
