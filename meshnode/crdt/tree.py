"""The scene tree under Kleppmann et al.'s highly-available move operation.

Create, move and delete are all "move ``child`` under ``parent``" ops (delete moves under
``TRASH``), kept in a log sorted by their stamp. An op that arrives out of order is applied by
undoing the later ops, applying it, and redoing them (undo-do-redo); a move that would make a
node its own ancestor is skipped. Every replica that holds the same set of ops therefore ends
with the same parent map, and the tree never has a cycle.

Stamps are lists ``[hlc, author, change_id]`` shared by all ops of one change, plus the op's
index inside the change; a local change that is not committed yet carries an infinite
``hlc`` (it will be stamped after everything applied so far) that ``commit`` fills in.
"""

from bisect import bisect_right
from typing import Any

from meshnode.crdt.ids import ROOT, TRASH, EntityId

Node = tuple[bytes, int]
Stamp = list[Any]  # [hlc: int, author: bytes, change_id: bytes]

# A log entry: [stamp, op index, child, new parent, old parent or None, applied?]
Entry = list[Any]


def _entry_key(entry: Entry) -> tuple[Stamp, int]:
    return (entry[0], entry[1])


class MoveTree:
    """Parent map plus the ordered log of move ops that produced it."""

    __slots__ = ("log", "parent")

    def __init__(self) -> None:
        self.parent: dict[Node, Node] = {}
        self.log: list[Entry] = []

    # -- queries ---------------------------------------------------------------------------

    def is_ancestor(self, ancestor: Node, node: Node) -> bool:
        """True if ``ancestor`` is ``node`` or lies on its path to a root."""
        parent = self.parent
        while node is not None:
            if node == ancestor:
                return True
            node = parent.get(node)  # type: ignore[assignment]
        return False

    def is_live(self, node: Node) -> bool:
        """True if ``node`` is ROOT or reachable from it (not deleted, not unknown)."""
        parent = self.parent
        while True:
            if node == ROOT:
                return True
            nxt = parent.get(node)
            if nxt is None:
                return False
            node = nxt

    def live_nodes(self) -> dict[Node, Node]:
        """Every live node (ROOT excluded) mapped to its parent."""
        memo: dict[Node, bool] = {ROOT: True, TRASH: False}
        parent = self.parent
        out: dict[Node, Node] = {}
        for child, par in parent.items():
            path = []
            node = child
            while node not in memo:
                path.append(node)
                nxt = parent.get(node)
                if nxt is None:
                    memo[node] = False
                    break
                node = nxt
            verdict = memo[node]
            for p in path:
                memo[p] = verdict
            if verdict:
                out[child] = par
        return out

    # -- updates ---------------------------------------------------------------------------

    def _do(self, entry: Entry) -> None:
        child, new_parent = entry[2], entry[3]
        parent = self.parent
        entry[4] = parent.get(child)
        # Cycle check: walk up from the new parent; reaching the child means a cycle.
        node = new_parent
        while node is not None:
            if node == child:
                entry[5] = False
                return
            node = parent.get(node)
        parent[child] = new_parent
        entry[5] = True

    def _undo(self, entry: Entry) -> None:
        if entry[5]:
            old = entry[4]
            if old is None:
                del self.parent[entry[2]]
            else:
                self.parent[entry[2]] = old

    def apply(self, entries: list[Entry]) -> None:
        """Insert ops (any order) into the log and bring the parent map up to date.

        The log tail that sorts after the earliest new op is undone once, merged with the new
        ops and redone, so a batch costs one undo-redo pass, not one per op.
        """
        if not entries:
            return
        log = self.log
        if len(entries) > 1:
            entries.sort(key=_entry_key)
        first = _entry_key(entries[0])
        if not log or _entry_key(log[-1]) < first:
            for e in entries:
                self._do(e)
            log.extend(entries)
            return
        pos = bisect_right(log, first, key=_entry_key)
        tail = log[pos:]
        for e in reversed(tail):
            self._undo(e)
        del log[pos:]
        merged = tail + entries
        merged.sort(key=_entry_key)
        for e in merged:
            self._do(e)
        log.extend(merged)

    def push_local(self, entry: Entry) -> None:
        """Apply an op of the uncommitted local batch, which the caller checked makes no
        cycle: it sorts after every op in the log (its stamp is infinitely late), so it is
        appended, with no undo-redo and no cycle walk."""
        log = self.log
        if log:
            last = log[-1]
            # (The common case, the batch's previous op: same stamp, a lower index.)
            if not (last[0] is entry[0] and last[1] < entry[1]) \
                    and _entry_key(last) >= _entry_key(entry):
                self.apply([entry])  # not expected; kept correct all the same
                return
        parent = self.parent
        entry[4] = parent.get(entry[2])
        parent[entry[2]] = entry[3]
        entry[5] = True
        log.append(entry)

    def remove_pending(self, stamp: Stamp) -> None:
        """Undo and drop every op carrying ``stamp`` (an uncommitted local batch)."""
        log = self.log
        pos = len(log)
        while pos and log[pos - 1][0] is stamp:
            pos -= 1
        for e in reversed(log[pos:]):
            self._undo(e)
        del log[pos:]


def make_entry(stamp: Stamp, index: int, child: Node, new_parent: Node) -> Entry:
    """A log entry for a move of ``child`` under ``new_parent``."""
    return [stamp, index, child, new_parent, None, False]


__all__ = ["ROOT", "TRASH", "EntityId", "MoveTree", "make_entry"]
