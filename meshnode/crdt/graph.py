"""The hash DAG of applied changes, and the bounded buffer of changes waiting for their deps.

Each change names the hashes of the heads its author had seen (its deps). A change is applied
only once all its deps are, so the applied set is always causally closed, and each change has
a version vector (author -> highest seq in its causal past, itself included) that answers
"was X in this change's past?" in one lookup.

The graph is kept in columns, not as an object per change: a room that keeps its history
inside the retention window holds hundreds of thousands of changes, and an object per change
(its record, its deps tuple, its clock and position ints) cost about 350 bytes of heap each.
A change is its position in application order (``order[pos]`` is its ID, ``index[id]`` its
position); its author (an index into ``authors``, each author's key held once), seq and clock
are entries of ``array`` columns at that position, and its deps are positions too, in one
flat array (``dep_start[pos]:dep_start[pos + 1]``). About 180 bytes per change, most of it
the ID and its dict slot. ``meta`` reads a change back as a ``ChangeMeta`` (built on demand).

Version vectors are not stored whole: one per change would cost one entry per author who ever
wrote (a room with churn has thousands) on every change, memory that grows as changes x
identities. Instead the graph keeps, per author, the positions (in application order) at
which that author's highest seq went up (``tops``, 4 bytes per change), and per change only
its *lag*: the authors whose entry in its vector is below "everything applied before it"
(changes concurrent with it that happened to be applied first; usually none or a few; kept
only where there are some, in ``lags``). The vector of change ``c`` at author ``a`` is then
``lag(c)[a]`` if present, else the number of ``a``'s seqs applied up to ``c``'s position (a
bisection). See ``docs/performance.md``.

A graph started from a *frontier* snapshot (``load_frontier``) does not hold the changes
below the frontier one by one: ``base[a]`` counts author ``a``'s seqs there, and only a few
of those changes are kept, as *base* entries (negative positions ``~k`` for the ``k``-th of
``base_entries``, reported as ``pos == -1``, no deps): the frontier's boundary (its maximal
changes and the deps of the changes after it), whose vectors are kept as lags below
``base``, and the changes the scene state names (field winners, grants...), kept for their
author, seq and clock only. Exact causality tests against the changes of an author who
equivocated (``forked``) use, at a base entry, the set of such changes in its past
(``base_past``).

``PendingBuffer`` and ``Waiting`` (the buffer) are in ``meshnode.crdt.dep_buffer``, and the
plain records (``ChangeMeta``, ``BaseEntry`` and its kinds, ``Frontier``, ``merge_vv``) in
``meshnode.crdt.graph_records``, all re-exported here.
"""

from array import array
from bisect import bisect_right
from collections import OrderedDict
from collections.abc import Iterable, Iterator, KeysView, Mapping

from meshnode.crdt.dep_buffer import PendingBuffer as PendingBuffer
from meshnode.crdt.dep_buffer import Waiting as Waiting
from meshnode.crdt.graph_records import BASE_BOUNDARY as BASE_BOUNDARY
from meshnode.crdt.graph_records import BASE_HEAD as BASE_HEAD
from meshnode.crdt.graph_records import BASE_NAMED as BASE_NAMED
from meshnode.crdt.graph_records import BaseEntry as BaseEntry
from meshnode.crdt.graph_records import ChangeMeta as ChangeMeta
from meshnode.crdt.graph_records import Frontier as Frontier
from meshnode.crdt.graph_records import merge_vv as merge_vv
from meshnode.crdt.prefix_index import PrefixIndex
from protocol.frames import PREFIX_BYTES

VV_MEMO_ENTRIES = 64
"""Head sets whose looked-up vector entries ``ChangeGraph.past_vv`` remembers."""

MAX_COLUMN_SEQ = 0xFFFF_FFFF
"""The largest seq the graph's seq column holds (4 bytes a change); an author would need
four billion changes to reach it."""


class PastVV(Mapping[bytes, int]):
    """The version vector of the union of the causal pasts of some applied changes, read
    lazily from the graph (a lookup costs a bisection per change, whatever the number of
    authors). ``vv[author] = seq`` overrides an entry (e.g. a new change's own seq).

    ``memo`` remembers the entries looked up (shared by every ``PastVV`` of the same heads:
    applied changes' vectors never change, and the concurrent changes of a sync round name
    the same deps and look up the same authors again and again)."""

    __slots__ = ("_graph", "_heads", "_memo", "_own", "_rows")

    def __init__(self, graph: "ChangeGraph", heads: tuple[bytes, ...],
                 memo: dict[bytes, int] | None = None) -> None:
        self._graph = graph
        self._heads = heads
        self._rows: list[int] | None = None  # the heads' positions, on the first lookup
        self._own: dict[bytes, int] = {}
        self._memo: dict[bytes, int] = {} if memo is None else memo

    def get(self, author: bytes, default: int = 0) -> int:  # type: ignore[override]
        own = self._own.get(author)
        if own is not None:
            return own
        best = self._memo.get(author)
        if best is None:
            graph = self._graph
            rows = self._rows
            if rows is None:
                index = graph.index
                rows = self._rows = [index[h] for h in self._heads]
            seq_at = graph._seq_at
            best = 0
            for p in rows:
                s = seq_at(p, author)
                if s > best:
                    best = s
            self._memo[author] = best
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


class MetaView(Mapping[bytes, ChangeMeta]):
    """``graph.meta``: every applied change (base entries included, in the order they were
    added) as a read-only mapping change ID -> ``ChangeMeta``, each built when read. Hot paths
    use ``ChangeGraph.index`` and the ``*_of`` accessors instead."""

    __slots__ = ("_graph",)

    def __init__(self, graph: "ChangeGraph") -> None:
        self._graph = graph

    def __getitem__(self, change_id: bytes) -> ChangeMeta:
        return self._graph.record(self._graph.index[change_id])

    def get(self, change_id: bytes,  # type: ignore[override]
            default: ChangeMeta | None = None) -> ChangeMeta | None:
        p = self._graph.index.get(change_id)
        return default if p is None else self._graph.record(p)

    def __contains__(self, change_id: object) -> bool:
        return change_id in self._graph.index

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._graph.index)

    def __len__(self) -> int:
        return len(self._graph.index)

    def keys(self) -> KeysView[bytes]:
        return self._graph.index.keys()


class ChangeGraph:
    """Applied changes in application (topological) order, their heads and raw bytes."""

    __slots__ = ("author_ix", "authors", "base", "base_entries", "base_head", "base_hlc",
                 "base_kind", "base_lags", "base_past", "by_author_seq", "col_author",
                 "col_hlc", "col_seq", "dep_rows", "dep_start", "forked", "heads", "index",
                 "lags", "meta", "order", "prefixes", "pruned", "raw", "tops", "vv_all",
                 "vv_memo")

    by_author_seq: "AuthorSeqIndex"

    def __init__(self) -> None:
        # Below the frontier (empty unless loaded from a frontier snapshot): see the module
        # docstring. ``pruned``: changes below it not held at all.
        self.base: dict[bytes, int] = {}
        self.base_head: dict[bytes, bytes] = {}
        self.base_kind: dict[bytes, int] = {}
        self.base_past: dict[bytes, frozenset[bytes]] = {}
        self.base_hlc = -1
        self.pruned = 0
        # base entry k (position ~k): the entry, and its lag (kinds 1 and 2) as a dict
        self.base_entries: list[BaseEntry] = []
        self.base_lags: list[dict[bytes, int] | None] = []
        # author -> lowest seq at which it signed two changes (version vectors are ambiguous
        # for its seqs from there on)
        self.forked: dict[bytes, int] = {}
        # change ID -> position (>= 0: ``order[pos]``; < 0: base entry ``~pos``). The keys
        # are the ``order`` entries themselves (one ``bytes`` per change).
        self.index: dict[bytes, int] = {}
        self.order: list[bytes] = []
        # Columns, one entry per position: author (index into ``authors``), seq, clock; the
        # deps of ``pos`` are ``dep_rows[dep_start[pos]:dep_start[pos + 1]]`` (positions).
        self.authors: list[bytes] = []
        self.author_ix: dict[bytes, int] = {}
        self.col_author: array[int] = array("I")
        self.col_seq: array[int] = array("I")
        self.col_hlc: array[int] = array("q")
        self.dep_start: array[int] = array("I", [0])
        self.dep_rows: array[int] = array("i")
        # position -> the change's lag, only where it has one (see the module docstring)
        self.lags: dict[int, dict[bytes, int]] = {}
        self.meta = MetaView(self)
        self.raw: dict[bytes, bytes] = {}
        self.heads: set[bytes] = set()
        self.vv_all: dict[bytes, int] = {}
        # author -> tops[a][s - 1] = the position at which a's highest applied seq became s
        self.tops: dict[bytes, array[int]] = {}
        self.by_author_seq = AuthorSeqIndex(self)
        # heads -> the entries of their past's vector looked up so far (see ``PastVV``)
        self.vv_memo: OrderedDict[tuple[bytes, ...], dict[bytes, int]] = OrderedDict()
        # ID prefix -> position, built on the first ``by_prefix`` (a node that never gets
        # compact changes pays nothing for it); see ``meshnode.crdt.prefix_index``.
        self.prefixes: PrefixIndex | None = None

    def __contains__(self, change_id: bytes) -> bool:
        return change_id in self.index

    # Reading one change (``p`` a position from ``index``).

    def by_prefix(self, prefix: bytes) -> list[bytes]:
        """The IDs of the applied changes (base entries included) that start with
        ``prefix`` (``protocol.compact.PREFIX_BYTES`` long)."""
        if self.prefixes is None:
            self.prefixes = PrefixIndex.of(self.index)
        return [self.id_at(p) for p in self.prefixes.positions(prefix)]

    def hold_alone(self, change_ids: Iterable[bytes]) -> bool:
        """Whether ``by_prefix(c[:PREFIX_BYTES]) == [c]`` for each of ``change_ids``: each
        is applied and no other applied change's ID starts as its does (answered without a
        lookup while no two do, which is all but always)."""
        index = self.index
        ids = tuple(change_ids)
        for c in ids:
            if c not in index:
                return False
        if self.prefixes is None:
            self.prefixes = PrefixIndex.of(index)
        if not self.prefixes.shared:
            return True
        return all(self.by_prefix(c[:PREFIX_BYTES]) == [c] for c in ids)

    def id_at(self, p: int) -> bytes:
        """The change ID at position ``p``."""
        return self.order[p] if p >= 0 else self.base_entries[~p].change_id

    def author_at(self, p: int) -> bytes:
        """The author of the change at position ``p``."""
        return self.authors[self.col_author[p]] if p >= 0 else self.base_entries[~p].author

    def seq_at(self, p: int) -> int:
        """The seq of the change at position ``p``."""
        return self.col_seq[p] if p >= 0 else self.base_entries[~p].seq

    def hlc_at(self, p: int) -> int:
        """The clock stamp of the change at position ``p``."""
        return self.col_hlc[p] if p >= 0 else self.base_entries[~p].hlc

    def deps_at(self, p: int) -> tuple[bytes, ...]:
        """The deps of the change at position ``p`` (none for a base entry)."""
        if p < 0:
            return ()
        rows = self.dep_rows[self.dep_start[p]:self.dep_start[p + 1]]
        order = self.order
        return tuple(order[d] if d >= 0 else self.base_entries[~d].change_id for d in rows)

    def lag_at(self, p: int) -> dict[bytes, int] | None:
        """The lag of the change at position ``p`` (see the module docstring), or None."""
        return self.lags.get(p) if p >= 0 else self.base_lags[~p]

    def record(self, p: int) -> ChangeMeta:
        """The change at position ``p`` as a (new) ``ChangeMeta``."""
        lag = self.lag_at(p)
        return ChangeMeta(self.author_at(p), self.seq_at(p), self.hlc_at(p), self.deps_at(p),
                          None, max(p, -1), None if lag is None else dict(lag))

    def author_of(self, change_id: bytes) -> bytes:
        """The author of an applied change (``KeyError`` if it is not)."""
        return self.author_at(self.index[change_id])

    def hlc_of(self, change_id: bytes) -> int:
        """The clock stamp of an applied change (``KeyError`` if it is not)."""
        return self.hlc_at(self.index[change_id])

    def deps_of(self, change_id: bytes) -> tuple[bytes, ...]:
        """The deps of an applied change (``KeyError`` if it is not)."""
        return self.deps_at(self.index[change_id])

    def add(self, change_id: bytes, meta: ChangeMeta, data: bytes | None) -> bytes | None:
        """Record an applied change (its deps all applied; its seq at most one above its
        author's highest so far). Returns the ID of an earlier change with the same
        (author, seq) if this one equivocates, else None. Raises ``ValueError`` if the seq
        skips ahead (only a corrupt snapshot can ask for that)."""
        index = self.index
        author, seq = meta.author, meta.seq
        top = self.vv_all.get(author, 0)
        if seq > top + 1:
            raise ValueError(f"seq {seq} skips ahead of the author's {top}")
        if not 0 <= seq <= MAX_COLUMN_SEQ:
            raise ValueError(f"seq {seq} is outside [0, {MAX_COLUMN_SEQ}]")
        deps = meta.deps
        dep_pos = [index[d] for d in deps]
        pos = len(self.order)
        heads = self.heads
        # Deps naming every head (every local commit): the change's past is everything
        # applied, so its vector is the applied prefix's and there is no lag to compute.
        all_heads = len(deps) == len(heads) and heads.issuperset(deps)
        ai = self.author_ix.get(author)
        if ai is None:
            ai = self.author_ix[author] = len(self.authors)
            self.authors.append(author)
        self.col_author.append(ai)
        self.col_seq.append(seq)
        self.col_hlc.append(meta.hlc)
        dep_rows = self.dep_rows
        dep_rows.extend(dep_pos)
        self.dep_start.append(len(dep_rows))
        index[change_id] = pos
        self.order.append(change_id)
        if self.prefixes is not None:
            self.prefixes.add(change_id, pos)
        if data is not None:
            self.raw[change_id] = data
        for d in deps:
            heads.discard(d)
        heads.add(change_id)
        if seq > top:
            self.vv_all[author] = seq
            tops = self.tops.get(author)
            if tops is None:
                tops = self.tops[author] = array("i")
            tops.append(pos)
        if dep_pos and not (all_heads and seq > top):
            lag = self._lag(author, seq, dep_pos, pos)
            if lag is not None:
                self.lags[pos] = lag
        if seq > top:
            return None
        if self.forked.get(author, seq + 1) > seq:
            self.forked[author] = seq
        twin = self.by_author_seq.get((author, seq))
        # Below the frontier only the author's last change is known: the evidence then
        # names the new change twice.
        return change_id if twin is None else twin

    def load_frontier(self, base: dict[bytes, int], heads_by_author: dict[bytes, bytes],
                      pruned: int, hlc: int, entries: "Iterable[BaseEntry]") -> None:
        """Start an empty graph at a frontier: ``base`` (author -> seq count below it), each
        author's last change there, how many changes below it are not kept, the frontier's
        clock and the kept base entries."""
        if self.index:
            raise ValueError("load_frontier needs an empty graph")
        self.base = dict(base)
        self.base_head = dict(heads_by_author)
        self.vv_all = dict(base)
        self.pruned = pruned
        self.base_hlc = hlc
        self.prefixes = None  # built again from the index when next asked for
        for e in entries:
            if e.change_id in self.index:
                raise ValueError("repeated base entry")
            self.index[e.change_id] = ~len(self.base_entries)
            self.base_entries.append(e)
            self.base_lags.append(dict(e.lag) if e.kind else None)
            self.base_kind[e.change_id] = e.kind
            if e.kind == BASE_HEAD:
                self.heads.add(e.change_id)
            if e.past:
                self.base_past[e.change_id] = frozenset(e.past)

    def count(self) -> int:
        """Every applied change, those below the frontier included."""
        return len(self.index) + self.pruned

    def count_stamped_before(self, hlc: int) -> int:
        """How many of the first changes in application order (base entries and changes
        without deps aside) are stamped at or before ``hlc``, up to the first that is not."""
        col_hlc, dep_start = self.col_hlc, self.dep_start
        n = 0
        for p in range(len(self.order)):
            if dep_start[p] == dep_start[p + 1]:
                continue
            if col_hlc[p] > hlc:
                break
            n += 1
        return n

    def cut(self, hlc: int, named: Iterable[bytes], with_vv: Iterable[bytes]) -> "Frontier":
        """The frontier of the changes stamped at or before ``hlc`` (raised to this graph's
        own frontier): a causally closed set, since a change's clock is after its deps'. Keeps
        the boundary, the ``named`` changes below it and, with their vectors, ``with_vv``."""
        hlc = max(hlc, self.base_hlc)
        index, order = self.index, self.order
        col_hlc, dep_start, dep_rows = self.col_hlc, self.dep_start, self.dep_rows
        # The genesis (no deps) is always below; it is kept too.
        below = [p for p in index.values()
                 if p < 0 or col_hlc[p] <= hlc or dep_start[p] == dep_start[p + 1]]
        hlc = max(hlc, self.hlc_at(below[0]))
        inside = set(below)
        window = [c for p, c in enumerate(order) if p not in inside]
        base = dict(self.base)
        head_of = dict(self.base_head)
        depended: set[int] = set()
        boundary: set[int] = {p for c in with_vv if (p := index.get(c)) is not None
                              and p in inside}
        for p in below:
            if p < 0:
                continue
            author, seq = self.author_at(p), self.col_seq[p]
            if seq > base.get(author, 0):
                base[author] = seq
                head_of[author] = order[p]
            depended.update(dep_rows[dep_start[p]:dep_start[p + 1]])
        for c in window:
            p = index[c]
            boundary.update(d for d in dep_rows[dep_start[p]:dep_start[p + 1]] if d in inside)
        base_kind = self.base_kind
        heads = {p for p in below if p not in depended
                 and (p >= 0 or base_kind.get(self.id_at(p)) == BASE_HEAD)}
        boundary |= heads
        kept = boundary | {p for c in named if (p := index.get(c)) is not None
                           and p in inside} | {below[0]}
        forked = self.forked
        twins = [p for p in below
                 if self.seq_at(p) >= forked.get(self.author_at(p), self.seq_at(p) + 1)]
        twin_ids = [self.id_at(p) for p in twins]
        kept.update(twins)
        entries = []
        for p in below:
            if p not in kept:
                continue
            c = self.id_at(p)
            kind = BASE_HEAD if p in heads else BASE_BOUNDARY if p in boundary else BASE_NAMED
            lag: tuple[tuple[bytes, int], ...] = ()
            past: tuple[bytes, ...] = ()
            if kind != BASE_NAMED:
                lag = tuple((a, s) for a, top in base.items()
                            if (s := self._seq_at(p, a)) < top)
                past = tuple(t for t in twin_ids if t != c and self.in_past(t, (c,)))
            entries.append(BaseEntry(c, self.author_at(p), self.seq_at(p), self.hlc_at(p),
                                     kind, lag, past))
        pruned = self.pruned + len(below) - len(entries)
        return Frontier(hlc, base, head_of, pruned, tuple(entries), tuple(window))

    def window(self) -> list[bytes]:
        """The applied changes held with their deps (all but the base entries), in order."""
        return self.order

    def _lag(self, author: bytes, seq: int, dep_pos: list[int], pos: int) \
            -> dict[bytes, int] | None:
        """The entries where the change's vector is below the applied prefix's: only authors
        of changes applied after its latest dep, or lagging in one of its deps, can be."""
        latest = max(max(dep_pos), -1)
        candidates = {author}
        # A dep's entry without a lag is a bisection of ``tops`` at its position, which
        # grows with the position: among the deps without a lag only the latest counts.
        free: int | None = None
        lagged: list[tuple[int, dict[bytes, int]]] = []
        lags, base_lags = self.lags, self.base_lags
        for d in dep_pos:
            dl = lags.get(d) if d >= 0 else base_lags[~d]  # lag_at, inline
            if dl:
                candidates.update(dl)
                lagged.append((d, dl))
            elif free is None or d > free:
                free = d
        if latest + 1 < pos:
            authors, col_author = self.authors, self.col_author
            if pos - latest <= 32:  # a few changes since the latest dep: the usual case
                for p in range(latest + 1, pos):
                    candidates.add(authors[col_author[p]])
            else:
                candidates.update(authors[i] for i in set(col_author[latest + 1:pos]))
        tops, base, vv_all = self.tops, self.base, self.vv_all
        lag: dict[bytes, int] | None = None
        for a in candidates:
            t = tops.get(a)
            below = base.get(a, 0)
            best = seq if a == author else 0
            if free is not None:
                s = below if t is None else below + bisect_right(t, free)
                if s > best:
                    best = s
            for d, dl in lagged:
                s = dl.get(a, -1)
                if s < 0:
                    s = below if t is None else below + bisect_right(t, d)
                if s > best:
                    best = s
            # The applied prefix's entry (every position in ``tops`` is at most ``pos``).
            if best < vv_all.get(a, 0):
                if lag is None:
                    lag = {}
                lag[a] = best
        return lag

    def _seq_at(self, p: int, author: bytes) -> int:
        """``author``'s entry in the version vector of the change at position ``p``."""
        lag = self.lags.get(p) if p >= 0 else self.base_lags[~p]
        if lag is not None:
            s = lag.get(author)
            if s is not None:
                return s
        tops = self.tops.get(author)
        below = self.base.get(author, 0)
        # A base entry (p < 0) is below every position.
        return below if tops is None else below + bisect_right(tops, p)

    def seq_in(self, change_id: bytes, author: bytes) -> int:
        """``author``'s highest seq in the causal past of an applied change (itself
        included): its version vector's entry."""
        return self._seq_at(self.index[change_id], author)

    def vv_of(self, change_id: bytes) -> dict[bytes, int]:
        """The whole version vector of an applied change (a new dict; one lookup per
        author: prefer ``seq_in``)."""
        return PastVV(self, (change_id,)).materialize()

    def past_vv(self, heads: Iterable[bytes]) -> PastVV:
        """Version vector of the union of the causal pasts of ``heads`` (all applied), read
        lazily; the caller may override entries."""
        key = tuple(heads)
        memos = self.vv_memo
        memo = memos.get(key)
        if memo is None:
            memo = memos[key] = {}
            if len(memos) > VV_MEMO_ENTRIES:
                memos.popitem(last=False)
        return PastVV(self, key, memo)

    def in_past(self, target: bytes, heads: Iterable[bytes]) -> bool:
        """True if change ``target`` is one of ``heads`` or in their causal past: the exact
        test, needed where version vectors are ambiguous (an author who equivocated). The walk
        skips every change whose version vector shows it cannot reach ``target``."""
        index = self.index
        tp = index[target]
        author, seq = self.author_at(tp), self.seq_at(tp)
        seq_at = self._seq_at
        if self.forked.get(author, seq + 1) > seq:
            # One change has this (author, seq): the version vector answers.
            return any(seq_at(index[h], author) >= seq for h in heads)
        stack = [index[h] for h in heads]
        seen: set[int] = set()
        base_past = self.base_past
        dep_start, dep_rows = self.dep_start, self.dep_rows
        while stack:
            p = stack.pop()
            if p == tp:
                return True
            if p in seen:
                continue
            seen.add(p)
            if seq_at(p, author) < seq:
                continue
            if p < 0:
                if target in base_past.get(self.id_at(p), ()):
                    return True
                continue
            stack.extend(dep_rows[dep_start[p]:dep_start[p + 1]])
        return False

    def ancestors(self, roots: Iterable[bytes]) -> set[bytes]:
        """Every known change reachable from ``roots`` through deps (roots included)."""
        index = self.index
        seen: set[int] = set()
        stack = [p for r in roots if (p := index.get(r)) is not None]
        dep_start, dep_rows = self.dep_start, self.dep_rows
        while stack:
            p = stack.pop()
            if p in seen:
                continue
            seen.add(p)
            if p >= 0:
                stack.extend(d for d in dep_rows[dep_start[p]:dep_start[p + 1]]
                             if d not in seen)
        return {self.id_at(p) for p in seen}


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
        graph = self._graph
        below = graph.base.get(author, 0)
        if seq <= below:
            return graph.base_head.get(author) if seq == below else None
        tops = graph.tops.get(author)
        if tops is None or not 1 <= seq - below <= len(tops):
            return None
        return graph.order[tops[seq - below - 1]]

    def __getitem__(self, key: tuple[bytes, int]) -> bytes:
        cid = self.get(key)
        if cid is None:
            raise KeyError(key)
        return cid

    def __contains__(self, key: tuple[bytes, int]) -> bool:
        return self.get(key) is not None
