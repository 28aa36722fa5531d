"""The hash DAG of applied changes, and the bounded buffer of changes waiting for their deps.

Each change names the hashes of the heads its author had seen (its deps). A change is applied
only once all its deps are, so the applied set is always causally closed, and each change gets
a version vector (author -> highest seq in its causal past, itself included) that answers
"was X in this change's past?" in one lookup.
"""

import contextlib
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field

from protocol.change import Change


@dataclass(slots=True)
class ChangeMeta:
    """What the replica keeps about an applied change besides its effects."""

    author: bytes
    seq: int
    hlc: int
    deps: tuple[bytes, ...]
    vv: dict[bytes, int] | None  # None until needed, for changes loaded from a snapshot


def merge_vv(vvs: Iterable[dict[bytes, int]]) -> dict[bytes, int]:
    """Pointwise maximum of version vectors (a new dict)."""
    it = iter(vvs)
    first = next(it, None)
    if first is None:
        return {}
    out = dict(first)
    for vv in it:
        for author, seq in vv.items():
            if out.get(author, 0) < seq:
                out[author] = seq
    return out


class ChangeGraph:
    """Applied changes in application (topological) order, their heads and raw bytes."""

    __slots__ = ("_past_cache", "by_author_seq", "heads", "meta", "order", "raw", "vv_all")

    def __init__(self) -> None:
        self.meta: dict[bytes, ChangeMeta] = {}
        self.order: list[bytes] = []
        self.raw: dict[bytes, bytes] = {}
        self.heads: set[bytes] = set()
        self.by_author_seq: dict[tuple[bytes, int], bytes] = {}
        self.vv_all: dict[bytes, int] = {}
        self._past_cache: dict[tuple[bytes, ...], dict[bytes, int]] = {}

    def add(self, change_id: bytes, meta: ChangeMeta, data: bytes | None) -> bytes | None:
        """Record an applied change. Returns the ID of an earlier change with the same
        (author, seq) if this one equivocates, else None."""
        self.meta[change_id] = meta
        self.order.append(change_id)
        if data is not None:
            self.raw[change_id] = data
        heads = self.heads
        for d in meta.deps:
            heads.discard(d)
        heads.add(change_id)
        if self.vv_all.get(meta.author, 0) < meta.seq:
            self.vv_all[meta.author] = meta.seq
        key = (meta.author, meta.seq)
        other = self.by_author_seq.get(key)
        if other is None:
            self.by_author_seq[key] = change_id
            return None
        return other

    def vv_of(self, change_id: bytes) -> dict[bytes, int]:
        """The version vector of an applied change (computed on first use if absent)."""
        meta = self.meta
        m = meta[change_id]
        if m.vv is not None:
            return m.vv
        # Iterative post-order: snapshot histories can be far deeper than Python's stack.
        stack = [change_id]
        while stack:
            top = meta[stack[-1]]
            todo = [d for d in top.deps if meta[d].vv is None]
            if todo:
                stack.extend(todo)
                continue
            stack.pop()
            if top.vv is None:
                vv = merge_vv(meta[d].vv for d in top.deps)  # type: ignore[misc]
                if vv.get(top.author, 0) < top.seq:
                    vv[top.author] = top.seq
                top.vv = vv
        return m.vv  # type: ignore[return-value]

    def past_vv(self, heads: Iterable[bytes]) -> dict[bytes, int]:
        """Version vector of the union of the causal pasts of ``heads`` (all applied); a new
        dict the caller may change."""
        key = tuple(heads)
        cached = self._past_cache.get(key)
        if cached is None:
            # Concurrent changes of one sync round usually share their deps (the heads all
            # replicas had after the previous round): merge those once.
            cached = merge_vv(self.vv_of(h) for h in key)
            if len(self._past_cache) >= 256:
                self._past_cache.clear()
            self._past_cache[key] = cached
        return dict(cached)

    def in_past(self, target: bytes, heads: Iterable[bytes]) -> bool:
        """True if change ``target`` is one of ``heads`` or in their causal past: the exact
        test, needed where version vectors are ambiguous (an author who equivocated). The walk
        skips every change whose version vector shows it cannot reach ``target``."""
        tm = self.meta[target]
        author, seq = tm.author, tm.seq
        stack = list(heads)
        seen: set[bytes] = set()
        while stack:
            h = stack.pop()
            if h == target:
                return True
            if h in seen:
                continue
            seen.add(h)
            if self.vv_of(h).get(author, 0) < seq:
                continue
            stack.extend(self.meta[h].deps)
        return False

    def ancestors(self, roots: Iterable[bytes]) -> set[bytes]:
        """Every known change reachable from ``roots`` through deps (roots included)."""
        seen: set[bytes] = set()
        stack = [r for r in roots if r in self.meta]
        while stack:
            h = stack.pop()
            if h in seen:
                continue
            seen.add(h)
            stack.extend(d for d in self.meta[h].deps if d not in seen)
        return seen


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
