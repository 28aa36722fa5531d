"""``ReplicaContent``: a replica's committed state as plain data, out and in.

``export_content`` writes the state as a ``SceneContent`` (what a snapshot holds, cut at a
frontier); ``_import_content`` fills an empty replica from one (a loaded snapshot, a
compaction, the start of every rebuild). A base of ``SceneReplica`` (``meshnode.crdt.replica``
describes the chain).
"""


from meshnode.crdt.content import (
    ChangeRecord,
    EntityRecord,
    FieldRecord,
    FrontierContent,
    GrantRecord,
    MoveRecord,
    SceneContent,
)
from meshnode.crdt.graph import BaseEntry, ChangeGraph, ChangeMeta
from meshnode.crdt.replica_state import Node, ReplicaState
from meshnode.crdt.results import Equivocation
from meshnode.crdt.revocation import Cut, InviteUse
from meshnode.crdt.tree import Stamp, make_entry
from protocol.change import decode_change


class ReplicaContent(ReplicaState):
    """A ``SceneReplica``'s state exported as, and imported from, ``SceneContent``."""

    # ------------------------------------------------------------------ snapshots

    def export_content(self, keep_after_hlc: int | None = None, *,
                       opened: bool | None = None) -> SceneContent:
        """The committed state as plain data (what a snapshot holds).

        A private room's content carries its epoch book (``SceneContent.private``); its scene
        and the readers-only part only if ``opened`` (default: if this replica can seal a
        snapshot, ``PrivateRoom._snapshot_seal``), else none of it (a blind replica's).

        ``keep_after_hlc``: the frontier (a hybrid clock stamp; ``clock.hlc_from_seconds``):
        changes stamped after it are listed with their deps, those at or before it only
        summarised (``ChangeGraph.cut``). A replica started from the result validates a
        later change exactly as this one does if the change's deps are after the frontier,
        on its boundary or heads; others (a peer that has seen nothing after the frontier)
        wait for deps that never come, and that peer must start again from a snapshot.
        None: the genesis alone is below the frontier (every change listed)."""
        if self._batch is not None:
            raise RuntimeError("commit() or discard() the local batch first")
        ep = self._epochs
        if opened is None:
            opened = ep is not None and self._snapshot_seal() is not None
        graph = self._graph
        book = self._revocation
        named: set[bytes] = set()
        for comps in self._fields.values():
            for fd in comps.values():
                for stamp, _ in fd.values():
                    named.add(stamp[2])
        named.update(e[0][2] for e in self._tree.log)
        for makers in self._created_by.values():
            named.update(makers)
        for table in (self._roles.grants, self._roles.inert):
            for gl in table.values():
                named.update(g[0][2] for g in gl)
        named.update(book.dead)
        for e in self.equivocations:
            named.update(e.change_ids)
        named.update(c.change_id for per in book.cuts.values() for c in per.values())
        named.update(u.change_id for per in book.uses.values() for u in per.values())
        with_vv = {r.change_id for per in book.revocations.values() for r in per.values()}
        if ep is not None:
            # The key rules read epochs' causal pasts (R3, R4) after the frontier too.
            with_vv.update(ep.epochs)
            if ep.name is not None:
                named.add(ep.name[0][2])
        cut = graph.cut(-1 if keep_after_hlc is None else keep_after_hlc, named, with_vv)
        grants = [
            GrantRecord(member, g[0][2], g[1], inert)
            for inert, table in ((False, self._roles.grants), (True, self._roles.inert))
            for member, gl in table.items()
            for g in gl
        ]
        listed = set(cut.window)
        listed.update(e.change_id for e in cut.entries)
        private = self._export_private(listed, bool(opened))
        scene = private is None or private.opened  # never a private scene unless sealed
        return SceneContent(
            genesis=self.genesis,
            clock=self._clock.value,
            changes=tuple(
                ChangeRecord(cid, graph.author_at(p), graph.seq_at(p), graph.hlc_at(p),
                             graph.deps_at(p))
                for cid in cut.window
                for p in (graph.index[cid],)
            ),
            entities=tuple(
                EntityRecord(ent[0], ent[1], seq, tuple(self._created_by.get(ent, ())))
                for ent, seq in self._creation.items()
            ) if scene else (),
            moves=tuple(MoveRecord(e[0][2], e[1], e[2], e[3]) for e in self._tree.log)
            if scene else (),
            fields=tuple(
                FieldRecord(ent, comp, fname, stamp[2], value)
                for ent, comps in self._fields.items()
                for comp, fd in comps.items()
                for fname, (stamp, value) in fd.items()
            ) if scene else (),
            grants=tuple(grants),
            equivocations=tuple(e.change_ids for e in self.equivocations),
            retracted=tuple(book.dead.items()),
            dead_entities=tuple(sorted(book.dead_entities)) if scene else (),
            cuts=tuple(c for per in book.cuts.values() for c in per.values()),
            invite_uses=tuple(u for per in book.uses.values() for u in per.values()),
            invite_revocations=tuple(
                r for per in book.revocations.values() for r in per.values()
            ),
            frontier=FrontierContent(
                cut.hlc, tuple((a, s, cut.head_of[a]) for a, s in cut.base.items()),
                cut.pruned, cut.entries),
            private=private,
        )

    def _import_content(self, content: SceneContent) -> None:
        """Fill an empty replica from ``content``. Raises ``KeyError``/``ValueError`` if it
        is inconsistent (the snapshot loader turns those into a ``DecodeError``)."""
        gch = decode_change(content.genesis, self.limits)
        self._adopt_genesis(gch, content.genesis)
        graph = self._graph
        key = self._key
        stamps: dict[bytes, Stamp] = {gch.change_id: [gch.hlc, self.owner, gch.change_id]}
        frontier = content.frontier
        if frontier is not None:
            graph = self._graph = ChangeGraph()
            base_entries = [BaseEntry(e.change_id, key(e.author), e.seq, e.hlc, e.kind,
                                      tuple((key(a), s) for a, s in e.lag), e.past)
                            for e in frontier.entries]
            graph.load_frontier({key(a): s for a, s, _ in frontier.authors},
                                {key(a): h for a, _, h in frontier.authors},
                                frontier.pruned, frontier.hlc, base_entries)
            if gch.change_id not in graph.meta:
                raise ValueError("the frontier lacks the genesis")
            for be in base_entries:
                if be.seq > graph.base.get(be.author, 0):
                    raise ValueError("a frontier entry is above its author's count")
                stamps[be.change_id] = [be.hlc, be.author, be.change_id]
        changes = content.changes if frontier is not None else content.changes[1:]
        for c in changes:
            if c.change_id in graph.index or not all(d in graph.index for d in c.deps):
                raise ValueError("changes are not in causal order")
            author = key(c.author)
            # An equivocating pair is recorded from the equivocations below.
            graph.add(c.change_id, ChangeMeta(author, c.seq, c.hlc, c.deps, None), None)
            stamps[c.change_id] = [c.hlc, author, c.change_id]

        def node(n: Node) -> Node:
            return n if n[0] == b"" else (key(n[0]), n[1])

        for e in content.entities:
            ent = node((e.creator, e.counter))
            self._creation[ent] = e.creation_seq
            self._created_by[ent] = [stamps[c][2] for c in e.makers]
        entries = [
            make_entry(stamps[m.change_id], m.op_index, node(m.child), node(m.parent))
            for m in content.moves
        ]
        tree = self._tree
        entries.sort(key=lambda e: (e[0], e[1]))
        for entry in entries:
            tree._do(entry)
        tree.log = entries
        for f in content.fields:
            self._fields.setdefault(node(f.entity), {}).setdefault(f.component, {})[f.field] = (
                stamps[f.change_id], f.value)
        metas = graph.meta
        for g in content.grants:
            m = metas[g.change_id]
            grant = (stamps[g.change_id], g.role, m.author, m.seq)
            if g.inert:
                self._roles.add_inert(key(g.member), grant)
            else:
                self._roles.add(key(g.member), grant)
        for a, b in content.equivocations:
            ma = metas[a]
            if b not in metas:
                raise KeyError("equivocation names an unknown change")
            self.equivocations.append(Equivocation(ma.author, ma.seq, (a, b)))
            self._equivocators.add(ma.author)
            if graph.forked.get(ma.author, ma.seq + 1) > ma.seq:
                graph.forked[ma.author] = ma.seq
        book = self._revocation
        for cid, reason in content.retracted:
            if cid not in metas:
                raise KeyError("a retracted change is unknown")
            book.dead[cid] = reason
        book.dead_entities.update(node(n) for n in content.dead_entities)
        for cut in content.cuts:
            book.add_cut(Cut(key(cut.member), cut.change_id, metas[cut.change_id].author,
                             cut.seq, cut.cutoff))
        for use in content.invite_uses:
            if use.change_id not in metas:
                raise KeyError("an invite use names an unknown change")
            book.add_use(InviteUse(use.invite_id, use.hlc, use.author, use.change_id,
                                   use.op_index, key(use.member), use.max_uses))
        for rev in content.invite_revocations:
            if rev.change_id not in metas:
                raise KeyError("an invite revocation names an unknown change")
            book.add_revocation(rev)
        if content.private is not None:
            self._import_private(content.private, stamps)
        elif self._epochs is not None:
            raise ValueError("a private room's content without its epoch book")
        self._clock.observe(content.clock)
        me = self._me
        self._counter = max((n[1] for n in self._creation if n[0] == me), default=0)
