"""The hash DAG of applied changes, and the bounded buffer of changes waiting for their deps.

Each change names the hashes of the heads its author had seen (its deps). A change is applied
only once all its deps are, so the applied set is always causally closed, and each change has
a version vector (author -> highest seq in its causal past, itself included) that answers
"was X in this change's past?" in one lookup.

Version vectors are not stored whole: one per change would cost one entry per author who ever
wrote (a room with churn has thousands) on every change, memory that grows as changes x
identities. Instead the graph keeps, per author, the positions (in application order) at
which that author's highest seq went up (``tops``, 8 bytes per change), and per change only
its *lag*: the authors whose entry in its vector is below "everything applied before it"
(changes concurrent with it that happened to be applied first; usually none or a few). The
vector of change ``c`` at author ``a`` is then ``lag(c)[a]`` if present, else the number of
``a``'s seqs applied up to ``c``'s position (a bisection). See ``docs/performance.md``.
"""

import contextlib
from array import array
from bisect import bisect_right
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from protocol.change import Change


@dataclass(slots=True)
class ChangeMeta:
    """What the replica keeps about an applied change besides its effects.

    ``vv`` is what the caller computed when applying it (or None); ``ChangeGraph.add`` drops
    it and keeps the compact form (``pos``, ``lag``) instead."""

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


class PastVV(Mapping[bytes, int]):
    """The version vector of the union of the causal pasts of some applied changes, read
    lazily from the graph (a lookup costs a bisection per change, whatever the number of
    authors). ``vv[author] = seq`` overrides an entry (e.g. a new change's own seq)."""

    __slots__ = ("_graph", "_heads", "_own")

    def __init__(self, graph: "ChangeGraph", heads: tuple[bytes, ...]) -> None:
        self._graph = graph
        self._heads = heads
        self._own: dict[bytes, int] = {}

    def get(self, author: bytes, default: int = 0) -> int:  # type: ignore[override]
        own = self._own.get(author)
        if own is not None:
            return own
        seq_in = self._graph.seq_in
        best = 0
        for h in self._heads:
            s = seq_in(h, author)
            if s > best:
                best = s
        return best if best else default

    def __getitem__(self, author: bytes) -> int:
        seq = self.get(author, 0)
        if not seq:
            raise KeyError(author)
        return seq

    def __setitem__(self, author: bytes, seq: int) -> None:
        self._own[author] = seq

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.materialize())

    def __len__(self) -> int:
        return len(self.materialize())

    def materialize(self) -> dict[bytes, int]:
        """The whole vector as a dict (costs one lookup per author)."""
        out = {a: s for a in self._graph.vv_all if (s := self.get(a, 0))}
        out.update(self._own)
        return out


class ChangeGraph:
    """Applied changes in application (topological) order, their heads and raw bytes."""

    __slots__ = ("by_author_seq", "heads", "meta", "order", "raw", "tops", "vv_all")

    by_author_seq: "AuthorSeqIndex"

    def __init__(self) -> None:
        self.meta: dict[bytes, ChangeMeta] = {}
        self.order: list[bytes] = []
        self.raw: dict[bytes, bytes] = {}
        self.heads: set[bytes] = set()
        self.vv_all: dict[bytes, int] = {}
        # author -> tops[a][s - 1] = the position at which a's highest applied seq became s
        self.tops: dict[bytes, array[int]] = {}
        self.by_author_seq = AuthorSeqIndex(self)

    def add(self, change_id: bytes, meta: ChangeMeta, data: bytes | None) -> bytes | None:
        """Record an applied change (its deps all applied; its seq at most one above its
        author's highest so far). Returns the ID of an earlier change with the same
        (author, seq) if this one equivocates, else None. Raises ``ValueError`` if the seq
        skips ahead (only a corrupt snapshot can ask for that)."""
        metas = self.meta
        author, seq = meta.author, meta.seq
        top = self.vv_all.get(author, 0)
        if seq > top + 1:
            raise ValueError(f"seq {seq} skips ahead of the author's {top}")
        pos = len(self.order)
        dep_metas = [metas[d] for d in meta.deps]
        # Share the dep hashes with the keys of ``meta`` (decoded ones are fresh copies).
        order = self.order
        meta.deps = tuple(order[m.pos] for m in dep_metas)
        meta.pos = pos
        meta.vv = None
        metas[change_id] = meta
        order.append(change_id)
        if data is not None:
            self.raw[change_id] = data
        heads = self.heads
        for d in meta.deps:
            heads.discard(d)
        heads.add(change_id)
        if seq > top:
            self.vv_all[author] = seq
            tops = self.tops.get(author)
            if tops is None:
                tops = self.tops[author] = array("q")
            tops.append(pos)
        if dep_metas:
            meta.lag = self._lag(meta, dep_metas, pos)
        if seq > top:
            return None
        return order[self.tops[author][seq - 1]]

    def _lag(self, meta: ChangeMeta, dep_metas: list[ChangeMeta], pos: int) -> dict[bytes, int]\
            | None:
        """The entries where the change's vector is below the applied prefix's: only authors
        of changes applied after its latest dep, or lagging in one of its deps, can be."""
        latest = max(m.pos for m in dep_metas)
        candidates = {meta.author}
        for m in dep_metas:
            if m.lag:
                candidates.update(m.lag)
        metas, order = self.meta, self.order
        for p in range(latest + 1, pos):
            candidates.add(metas[order[p]].author)
        tops = self.tops
        lag: dict[bytes, int] | None = None
        for a in candidates:
            best = meta.seq if a == meta.author else 0
            for m in dep_metas:
                s = self._seq_at(m, a)
                if s > best:
                    best = s
            if best < bisect_right(tops[a], pos):
                if lag is None:
                    lag = {}
                lag[a] = best
        return lag

    def _seq_at(self, m: ChangeMeta, author: bytes) -> int:
        lag = m.lag
        if lag is not None:
            s = lag.get(author)
            if s is not None:
                return s
        tops = self.tops.get(author)
        return 0 if tops is None else bisect_right(tops, m.pos)

    def seq_in(self, change_id: bytes, author: bytes) -> int:
        """``author``'s highest seq in the causal past of an applied change (itself
        included): its version vector's entry."""
        return self._seq_at(self.meta[change_id], author)

    def vv_of(self, change_id: bytes) -> dict[bytes, int]:
        """The whole version vector of an applied change (a new dict; one lookup per
        author: prefer ``seq_in``)."""
        return PastVV(self, (change_id,)).materialize()

    def past_vv(self, heads: Iterable[bytes]) -> PastVV:
        """Version vector of the union of the causal pasts of ``heads`` (all applied), read
        lazily; the caller may override entries."""
        return PastVV(self, tuple(heads))

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
            if self.seq_in(h, author) < seq:
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


class AuthorSeqIndex:
    """``index[(author, seq)]``: the first applied change with that author and seq. The
    change at which an author's highest seq first became ``seq`` is exactly that one, so
    ``ChangeGraph.tops`` answers it without a table of its own."""

    __slots__ = ("_graph",)

    def __init__(self, graph: ChangeGraph) -> None:
        self._graph = graph

    def get(self, key: tuple[bytes, int]) -> bytes | None:
        """The change ID, or None if no such change is applied."""
        author, seq = key
        tops = self._graph.tops.get(author)
        if tops is None or not 1 <= seq <= len(tops):
            return None
        return self._graph.order[tops[seq - 1]]

    def __getitem__(self, key: tuple[bytes, int]) -> bytes:
        cid = self.get(key)
        if cid is None:
            raise KeyError(key)
        return cid

    def __contains__(self, key: tuple[bytes, int]) -> bool:
        return self.get(key) is not None


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
