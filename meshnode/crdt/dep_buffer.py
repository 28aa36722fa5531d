"""The bounded buffer of verified changes waiting for their deps (``PendingBuffer``).

A change whose deps are not all applied waits here (``Waiting``) until they are; the buffer
is bounded in count and bytes, evicting the oldest first, so a peer that withholds deps
forever costs bounded memory. ``meshnode.crdt.graph`` holds the applied changes.
"""

import contextlib
from collections import OrderedDict
from dataclasses import dataclass, field

from protocol.change import Change


@dataclass(slots=True)
class Waiting:
    """A verified change whose deps have not all arrived."""

    data: bytes
    change: Change
    missing: set[bytes] = field(default_factory=set)


class PendingBuffer:
    """Changes waiting for deps, bounded in count and bytes; the oldest is evicted first.

    A peer can withhold deps forever; the bound keeps that from costing unbounded memory,
    and an evicted change simply comes back through anti-entropy once its deps exist.
    """

    __slots__ = ("by_dep", "bytes", "changes", "evicted", "max_bytes", "max_changes")

    def __init__(self, max_changes: int, max_bytes: int) -> None:
        self.max_changes = max_changes
        self.max_bytes = max_bytes
        self.changes: OrderedDict[bytes, Waiting] = OrderedDict()
        self.by_dep: dict[bytes, list[bytes]] = {}
        self.bytes = 0
        self.evicted = 0

    def __contains__(self, change_id: bytes) -> bool:
        return change_id in self.changes

    def __len__(self) -> int:
        return len(self.changes)

    def add(self, change_id: bytes, waiting: Waiting) -> None:
        """Buffer a change until every hash in ``waiting.missing`` is applied."""
        self.changes[change_id] = waiting
        self.bytes += len(waiting.data)
        for dep in sorted(waiting.missing):
            self.by_dep.setdefault(dep, []).append(change_id)
        while len(self.changes) > self.max_changes or self.bytes > self.max_bytes:
            old_id, old = self.changes.popitem(last=False)
            self.bytes -= len(old.data)
            self.evicted += 1
            self._unlink(old_id, old)

    def _unlink(self, change_id: bytes, waiting: Waiting) -> None:
        for dep in waiting.missing:
            lst = self.by_dep.get(dep)
            if lst is not None:
                with contextlib.suppress(ValueError):
                    lst.remove(change_id)
                if not lst:
                    del self.by_dep[dep]

    def release(self, applied_id: bytes) -> list[Waiting]:
        """Note that ``applied_id`` is applied; return changes that now have every dep."""
        ready: list[Waiting] = []
        for cid in self.by_dep.pop(applied_id, ()):
            w = self.changes.get(cid)
            if w is None:
                continue
            w.missing.discard(applied_id)
            if not w.missing:
                del self.changes[cid]
                self.bytes -= len(w.data)
                ready.append(w)
        return ready

    def drop_dependents(self, change_id: bytes) -> list[bytes]:
        """Remove every buffered change that (transitively) waits for ``change_id``, which
        will never be applied; return their IDs."""
        dropped: list[bytes] = []
        work = [change_id]
        while work:
            for cid in self.by_dep.pop(work.pop(), ()):
                w = self.changes.pop(cid, None)
                if w is None:
                    continue
                self.bytes -= len(w.data)
                self._unlink(cid, w)
                dropped.append(cid)
                work.append(cid)
        return dropped

    def missing_deps(self) -> set[bytes]:
        """Hashes some buffered change is waiting for (what to ask peers for)."""
        return set(self.by_dep)
