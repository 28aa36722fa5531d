"""``ReplicaIntegrate``: one change's integration into the state, and rebuilding.

``_integrate`` validates a change whose deps are all applied against its causal past and
applies it (scene, roles, invites, graph); ``_rebuild`` recomputes the state from the stored
change bytes when a change retracts changes already applied, by integrating every change
again. The two call each other, so they sit together, apart from the entry points that feed
them (``ReplicaApply``, ``meshnode.crdt.replica_apply``, the class above this one). A base of
``SceneReplica`` (``meshnode.crdt.replica`` describes the chain).
"""

from typing import Any

from meshnode.crdt.editing import EditBatch
from meshnode.crdt.graph import ChangeGraph, ChangeMeta
from meshnode.crdt.privacy import SCENE_CODES, PrivatePlan
from meshnode.crdt.quota import entity_quota
from meshnode.crdt.replica_content import ReplicaContent
from meshnode.crdt.results import Equivocation, Rejected
from meshnode.crdt.revocation import Cut, InviteRevocation, InviteUse, RevocationBook
from meshnode.crdt.roles import (
    ROLE_ADMIN,
    ROLE_EDITOR,
    ROLE_HOST,
    ROLE_OWNER,
    ROLE_VIEWER,
    may_set_role,
    role_lowered,
)
from meshnode.crdt.scene_rules import SceneMove, SceneSet, judge_scene_ops
from meshnode.crdt.tree import MoveTree, Stamp, make_entry
from protocol.change import OP_REVOKE_INVITE, OP_ROLE, Change, decode_change
from protocol.private_ops import OP_SHARE, PRIVATE_OPS
from protocol.values import Value

Node = tuple[bytes, int]

MAX_REBUILD_PASSES = 8
"""A rebuild replays the history until the retracted set stops changing; with an honest
owner two or three passes do (``meshnode.crdt.revocation``). The cap keeps a pathological
history (an owner who equivocated) from looping; the result is still the same everywhere."""


class ReplicaIntegrate(ReplicaContent):
    """How a ``SceneReplica`` integrates one change, and rebuilds (see the module docstring)."""

    def _integrate(self, ch: Change, data: bytes | None, *, dry_run: bool = False
                   ) -> str | None:
        """Validate a change whose deps are all applied, then apply it (``dry_run``: only
        validate). All or nothing.

        Returns None, or the reason the change is kept only as a tombstone (see
        ``retraction``): acceptance is judged with every grant in the causal past, inert ones
        included, so it never depends on what was retracted; effect, with live grants and
        the cut-offs known here.
        """
        graph = self._graph
        index = graph.index
        author = self._key(ch.author)
        if not ch.deps:
            raise Rejected("foreign_genesis")
        dep_pos = [index[d] for d in ch.deps]
        vv = graph.past_vv(ch.deps)
        seq = ch.seq
        if seq != vv.get(author, 0) + 1:
            raise Rejected("bad_seq")
        hlc_at = graph.hlc_at
        for p in dep_pos:  # not after the latest dep's stamp: a loop, not max() of a generator
            if ch.hlc <= hlc_at(p):
                raise Rejected("clock_not_after_deps")
        equivocators = self._equivocators
        deps = ch.deps

        def in_past(target: bytes) -> bool:
            return graph.in_past(target, deps)

        book = self._roles
        inert = bool(book.inert)
        role = book.role_in_past(author, vv, in_past, equivocators, with_inert=inert)
        if role < ROLE_VIEWER:
            raise Rejected("not_a_member")
        ops = ch.ops
        if role == ROLE_HOST:
            # A host stores, relays and admits: it writes grants that carry an invite's
            # redemption proof, nothing else (meshnode.crdt.redemption).
            if any(op[0] != OP_ROLE or len(op) != 7 for op in ops):
                raise Rejected("host_needs_proof")
        elif role < ROLE_EDITOR and any(op[0] != OP_ROLE and op[0] != OP_SHARE for op in ops):
            raise Rejected("viewer_cannot_edit")
        admin = ROLE_ADMIN <= role <= ROLE_OWNER
        key = self._key
        actors: list[bytes] = []
        for a in ch.actors:
            actor = graph.author_at(dep_pos[a]) if isinstance(a, int) else key(a)
            if actor == author or actor in actors:
                raise Rejected("bad_actor")
            actors.append(actor)
        epochs = self._epochs
        if epochs is not None and any(op[0] in SCENE_CODES for op in ops):
            raise Rejected("unsealed_content")  # a private room's scene ops are sealed
        roles: list[tuple[int, bytes, list[Any], int]] = []  # (index, member, op, cut-off)
        issuers: list[bytes] = []  # whose authority each role op uses
        revokes: list[bytes] = []
        private_ops: list[list[Any]] = []

        def other(idx: int, op: list[Any]) -> None:
            code = op[0]
            if code == OP_ROLE:
                member = actors[op[1]]
                target_role = book.role_in_past(member, vv, in_past, equivocators,
                                                with_inert=inert)
                if len(op) == 7:
                    issuers.append(self._check_host_grant(op, member, target_role, ch.hlc,
                                                          vv, deps))
                elif role == ROLE_HOST or not may_set_role(role, target_role, op[2]):
                    raise Rejected("role_change_not_allowed")
                else:
                    issuers.append(author)
                cutoff = vv.get(member, 0)
                if len(op) >= 4 and op[3] != cutoff:
                    # The cut-off is what the revoker had seen: no more (it would let the
                    # member's backdated changes through), no less (it would retract what
                    # the revoker had already accepted). A 3-element op implies it.
                    raise Rejected("bad_cutoff")
                roles.append((idx, member, op, cutoff))
            elif code == OP_REVOKE_INVITE:
                if not admin:
                    raise Rejected("role_change_not_allowed")
                revokes.append(op[1])
            elif code in PRIVATE_OPS:
                if epochs is None:
                    raise Rejected("not_private")
                private_ops.append(op)
            else:
                raise Rejected("misplaced_genesis")

        creation = self._creation
        created, sets, moves, foreign = judge_scene_ops(
            ops, author, actors, ch.names, admin=admin, quota=entity_quota(role),
            creation=creation, created_by=self._created_by, equivocators=equivocators,
            graph=graph, deps=deps, vv=vv, other=other)
        plan: PrivatePlan | None = None
        if epochs is not None:
            plan = self._judge_private(ch, author, role, vv, actors, roles, private_ops)

        if dry_run:
            return None
        # Accepted. Does it take effect?
        cid = ch.change_id
        revocation = self._revocation
        retracted: str | None = None
        if author in revocation.cuts:

            def has_seen(cut: Cut) -> bool:
                if cut.change_id not in index:
                    return False  # a rebuild knows cut-offs that sort after this change
                if cut.author in equivocators:
                    return graph.in_past(cut.change_id, deps)
                return vv.get(cut.author, 0) >= cut.seq

            if revocation.cutting(author, seq, has_seen) is not None:
                retracted = "revoked"
        live_targets: list[int] = []
        if retracted is None and (roles or inert):
            live = book.role_in_past(author, vv, in_past, equivocators) if inert else role
            live_targets = [book.role_in_past(r[1], vv, in_past, equivocators) for r in roles]
            acting = [live if i is author
                      else book.role_in_past(i, vv, in_past, equivocators) for i in issuers]
            if (
                live < ROLE_VIEWER
                or (not ROLE_EDITOR <= live <= ROLE_OWNER
                    and any(op[0] != OP_ROLE and op[0] != OP_SHARE for op in ops))
                or (not ROLE_ADMIN <= live <= ROLE_OWNER and (foreign or revokes))
                or not all(may_set_role(a, t, r[2][2])
                           for a, t, r in zip(acting, live_targets, roles, strict=True))
            ):
                retracted = "authority_revoked"

        stamp: Stamp = [ch.hlc, author, cid]
        self._scene_effect(stamp, seq, created, sets, moves, retracted is not None)
        if retracted is not None:
            for _, member, op, _ in roles:
                book.add_inert(member, (stamp, op[2], author, seq))
        vv[author] = seq
        twin = graph.add(cid, ChangeMeta(author, seq, ch.hlc, tuple(ch.deps), vv), data)
        if twin is not None:
            self.equivocations.append(Equivocation(author, seq, (twin, cid)))
            self._equivocators.add(author)
        self._clock.observe(ch.hlc)
        if retracted is not None:
            revocation.dead[cid] = retracted
        elif roles or revokes:
            self._record_role_ops(
                cid, author, seq, ch.hlc, stamp,
                [(*r, t) for r, t in zip(roles, live_targets, strict=True)],
                revokes,
            )
        if plan is not None:
            self._record_private(ch, cid, author, plan)
        return retracted

    def _scene_effect(self, stamp: Stamp, seq: int, created: dict[Node, Node],
                      sets: list[SceneSet], moves: list[SceneMove], dead: bool) -> None:
        """Apply the scene ops of an accepted change (or of a sealed payload): record what it
        created; then, unless it is ``dead`` (retracted), its sets and moves."""
        cid = stamp[2]
        creation = self._creation
        created_by = self._created_by
        for ent in created:
            old = creation.get(ent)
            if old is None or old > seq:
                creation[ent] = seq
            makers = created_by.get(ent)
            if makers is None:
                created_by[ent] = [cid]
            else:
                makers.append(cid)  # an equivocator created it twice
        if stamp[1] == self._me:
            for ent in created:
                if ent[1] > self._counter:
                    self._counter = ent[1]
        dead_ents = self._revocation.dead_entities
        if dead:
            dead_ents.update(created)
            return
        if dead_ents:
            # Ops on entities a retracted change created are no-ops, everywhere alike.
            for ent, parent in created.items():
                if parent in dead_ents:
                    dead_ents.add(ent)
            moves = [m for m in moves if m[1] not in dead_ents and m[2] not in dead_ents]
            sets = [x for x in sets if x[0] not in dead_ents]
        if sets:
            self._apply_sets(stamp, sets)
        if moves:
            entries = [make_entry(stamp, i, c, p) for i, c, p in moves]
            if self._tree_batch is not None:
                self._tree_batch.extend(entries)
            else:
                self._tree.apply(entries)

    def _record_role_ops(
        self, cid: bytes, author: bytes, seq: int, hlc: int, stamp: Stamp,
        roles: list[tuple[int, bytes, list[Any], int, int]], revokes: list[bytes],
    ) -> None:
        """Take the role ops of an applied live change (``(op index, member, op, cut-off,
        member's live role before)``) into the books; flag a rebuild if they retract or void
        anything already applied."""
        book = self._roles
        revocation = self._revocation
        vv_all = self._graph.vv_all
        for idx, member, op, cutoff, before in roles:
            grant = (stamp, op[2], author, seq)
            if len(op) >= 6:
                use = InviteUse(op[4], hlc, author, cid, idx, member, op[5])
                was = revocation.effective_uses(op[4], self._in_past)
                revocation.add_use(use)
                now = revocation.effective_uses(op[4], self._in_past)
                if use in now:
                    book.add(member, grant)
                else:
                    book.add_inert(member, grant)  # over the limit, or after a revocation
                if any(u not in now for u in was):
                    revocation.needs_rebuild = True
            else:
                book.add(member, grant)
            if role_lowered(before, op[2]):
                revocation.add_cut(Cut(member, cid, author, seq, cutoff))
                if vv_all.get(member, 0) > cutoff or member in self._equivocators:
                    revocation.needs_rebuild = True  # the member has changes past the cut-off
        for invite_id in revokes:
            was = revocation.effective_uses(invite_id, self._in_past)
            revocation.add_revocation(InviteRevocation(invite_id, cid))
            now = revocation.effective_uses(invite_id, self._in_past)
            if any(u not in now for u in was):
                revocation.needs_rebuild = True
        self._my_role = None

    def _apply_sets(self, stamp: Stamp, sets: list[tuple[Node, str, str, Value]]) -> None:
        fields = self._fields
        batch = self._batch
        pending = batch.stamp if batch is not None else None
        for ent, comp, field, value in sets:
            comps = fields.get(ent)
            if comps is None:
                comps = fields[ent] = {}
            fd = comps.get(comp)
            if fd is None:
                fd = comps[comp] = {}
            cur = fd.get(field)
            if cur is None or cur[0] <= stamp:
                fd[field] = (stamp, value)
            elif cur[0] is pending and batch is not None:
                # Hidden behind an uncommitted local write; needed if that batch is discarded.
                batch.shadowed.append((fd, field, (stamp, value)))

    def _count_retraction(self, reason: str | None) -> None:
        if reason is not None:
            self.rejections[reason] = self.rejections.get(reason, 0) + 1

    # ------------------------------------------------------------------ rebuilding

    def _rebuild(self) -> None:
        """Recompute the state from the stored change bytes (from the loaded snapshot, if
        any, on), judging every change with the cut-offs and invite ops the previous pass
        found live, until the retracted set stops changing. A pure function of the set of
        changes held, so every replica with that set ends in the same state."""
        graph = self._graph
        base = self._base
        in_base: set[bytes] = set()
        if base is not None:  # imported with the base itself
            in_base.update(c.change_id for c in base.changes)
            if base.frontier is not None:
                in_base.update(e.change_id for e in base.frontier.entries)
        authors, col_author, col_hlc = graph.authors, graph.col_author, graph.col_hlc
        todo = sorted(
            (col_hlc[p], authors[col_author[p]], cid) for p, cid in enumerate(graph.order)
            if cid != self.room_id and cid not in in_base
        )
        datas = self._bytes_of([cid for _, _, cid in todo])
        changes = [(decode_change(d, self.limits), d) for d in datas]
        batch = self._batch
        pending = [e for e in self._tree.log if batch is not None and e[0] is batch.stamp]
        before = set(self._revocation.dead)
        knowledge = None
        previous: dict[bytes, str] | None = None
        self._full_graph = graph
        for _ in range(MAX_REBUILD_PASSES):
            self._reset_content()
            if knowledge is not None:
                self._revocation.seed(knowledge)
            self._tree_batch = []
            try:
                for ch, data in changes:  # (hlc, author, id) order is a causal order
                    try:
                        self._integrate(ch, data)
                    except Rejected:  # pragma: no cover - acceptance does not depend on it
                        continue
            finally:
                entries, self._tree_batch = self._tree_batch, None
                self._tree.apply(entries)
            book = self._revocation
            book.drop_changes(book.dead)
            found = book.copy_knowledge()
            if found == knowledge and book.dead == previous:
                break
            knowledge, previous = found, dict(book.dead)
        self._full_graph = None
        self._revocation.needs_rebuild = False
        for cid, reason in self._revocation.dead.items():
            if cid not in before:
                self._count_retraction(reason)
        if batch is not None:
            self._carry_batch(batch, pending)

    def _reset_content(self) -> None:
        """Forget every change's effect: back to the genesis (or the loaded snapshot)."""
        self._graph = ChangeGraph()
        self._tree = MoveTree()
        self._fields = {}
        self._creation = {}
        self._created_by = {}
        self._equivocators = set()
        self.equivocations = []
        self._revocation = RevocationBook()
        self._my_role = None
        if self._base is not None:
            self._import_content(self._base)
        else:
            self._adopt_genesis(decode_change(self.genesis, self.limits), self.genesis)

    def _carry_batch(self, batch: EditBatch, pending: list[list[Any]]) -> None:
        """Put the uncommitted local batch back on top of a rebuilt state."""
        seq = self._graph.vv_all.get(self._me, 0) + 1
        self._tree.apply([make_entry(batch.stamp, e[1], e[2], e[3]) for e in pending])
        for node in batch.creates:
            self._creation[node] = seq
        batch.field_undo = []
        batch.shadowed = []
        for (ent, comp, fname), op in batch.set_index.items():
            fd = self._fields.setdefault(ent, {}).setdefault(comp, {})
            batch.field_undo.append((fd, fname, fd.get(fname)))
            fd[fname] = (batch.stamp, op[4])
        for member, code in batch.role_ops:
            self._roles.add(member, (batch.stamp, code, self._me, seq))
