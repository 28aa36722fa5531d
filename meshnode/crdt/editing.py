"""Local editing: the uncommitted batch behind ``create_entity``, ``set_field``, ``move``,
``delete``, ``grant``, ``commit`` and ``discard``.

Local edits apply to the replica at once and collect in one batch; ``commit(now)`` signs it as
one change. Until then its ops carry an "infinitely late" stamp, so changes applied from peers
in between sort before them, exactly as they will once the batch is stamped (its clock value is
taken at commit, after everything applied so far). ``LocalEdits`` is a base of
``SceneReplica`` (``SceneReplica(... PrivateRoom(LocalEdits(EditChecks)))``,
``meshnode.crdt.replica``: single inheritance, which mypyc can compile, unlike two mixins);
its root ``EditChecks`` declares the replica state it works on.

What it guarantees: a refused edit (any exception from an editing method) leaves no trace, so
every change ``commit`` returns is one every honest replica applies. Each method first checks
everything that can fail (arguments, values, names, role, quota, room in the batch) and only
then touches the batch and the scene; ``commit`` re-checks what a change applied from a peer in
the meantime can invalidate (role, quota), never reuses a seq it signed before, and never
returns an empty change or one over the wire limits.

``LocalEdits`` (here: the editing API, ``commit`` and ``discard``) stands on ``EditChecks``
(``edit_checks``: the declared state and the checks every edit makes first); the batch itself
and the byte bounds of its ops are in ``edit_batch``.
"""

from collections.abc import Mapping
from typing import Any

from meshnode.crdt.edit_batch import _REF_BYTES as _REF_BYTES
from meshnode.crdt.edit_batch import ACTOR_BYTES as ACTOR_BYTES
from meshnode.crdt.edit_batch import CREATE_OP_BYTES as CREATE_OP_BYTES
from meshnode.crdt.edit_batch import DELETE_OP_BYTES as DELETE_OP_BYTES
from meshnode.crdt.edit_batch import DEP_BYTES as DEP_BYTES
from meshnode.crdt.edit_batch import ENVELOPE_BYTES as ENVELOPE_BYTES
from meshnode.crdt.edit_batch import INF_HLC as INF_HLC
from meshnode.crdt.edit_batch import INVITE_EXTRA_BYTES as INVITE_EXTRA_BYTES
from meshnode.crdt.edit_batch import MOVE_OP_BYTES as MOVE_OP_BYTES
from meshnode.crdt.edit_batch import ROLE_OP_BYTES as ROLE_OP_BYTES
from meshnode.crdt.edit_batch import SET_OP_BYTES as SET_OP_BYTES
from meshnode.crdt.edit_batch import EditBatch as EditBatch
from meshnode.crdt.edit_batch import Fields as Fields
from meshnode.crdt.edit_batch import Node as Node
from meshnode.crdt.edit_batch import PrivateBatch as PrivateBatch
from meshnode.crdt.edit_batch import Register as Register
from meshnode.crdt.edit_checks import EditChecks as EditChecks
from meshnode.crdt.graph import ChangeMeta
from meshnode.crdt.ids import ROOT, TRASH, EntityId
from meshnode.crdt.quota import quota_problem
from meshnode.crdt.results import CommitRefused, OwnHistoryMissing, PermissionDenied, QuotaExceeded
from meshnode.crdt.roles import (
    ROLE_ADMIN,
    ROLE_BY_NAME,
    ROLE_EDITOR,
    ROLE_HOST,
    ROLE_NAMES,
    ROLE_NONE,
    ROLE_OWNER,
    ROLE_VIEWER,
    may_set_role,
)
from meshnode.crdt.tree import make_entry
from protocol.change import (
    MAX_INVITE_USES,
    OP_CREATE,
    OP_DELETE,
    OP_MOVE,
    OP_REVOKE_INVITE,
    OP_ROLE,
    OP_SET,
    Op,
    change_id,
    encode_change,
)
from protocol.private_ops import OP_NAME
from protocol.values import Value


class LocalEdits(EditChecks):
    """The local editing API of ``SceneReplica`` (a base of it, on ``EditChecks``; the state
    lives in the replica)."""

    def create_entity(
        self,
        parent: Node = ROOT,
        components: Mapping[str, Mapping[str, object]] | None = None,
    ) -> EntityId:
        """Create an entity under ``parent`` with initial ``components``
        (``{component: {field: value}}``); returns its ID.

        All or nothing: if any part is refused (``ValueError``, ``TypeError``,
        ``PermissionDenied``, ``QuotaExceeded``, ``BatchFull``) nothing is created."""
        if components is not None and not isinstance(components, Mapping):
            raise TypeError("components must be a mapping of component -> {field: value}")
        prepared: list[tuple[str, str, Value, int]] = []
        for comp, fields in (components or {}).items():
            if not isinstance(fields, Mapping):
                raise TypeError(f"component {comp!r} must map field names to values")
            self._check_name(comp)
            for field, value in fields.items():
                self._check_name(field)
                prepared.append((comp, field, *self._prepared_value(value)))
        par = self._live(parent, "parent")
        problem = self._own_history_problem()
        if problem is not None:
            # The missing changes may have created entities: their numbers are unknown here.
            raise OwnHistoryMissing(f"{problem}: new entities must wait until peers send them")
        counter = self._counter + 1
        if self._role() >= ROLE_EDITOR:
            problem = quota_problem(self._role(), counter)
            if problem is not None:
                raise QuotaExceeded(problem)
        # Reserve room for the whole entity so it is never committed half-made.
        batch = self._require(
            ROLE_EDITOR,
            "create entities",
            1 + len(prepared),
            CREATE_OP_BYTES + sum(size + SET_OP_BYTES for *_, size in prepared),
            [n for comp, field, *_ in prepared for n in (comp, field)],
            [par[0]] if par != ROOT else [],
        )
        ent = EntityId(self._me, counter)
        node: Node = (self._me, counter)
        idx = len(batch.ops)
        batch.ops.append([OP_CREATE, counter, self._ref(batch, par)])
        batch.bytes += CREATE_OP_BYTES
        self._counter = counter
        self._creation[node] = self._graph.vv_all.get(self._me, 0) + 1
        batch.creates.append(node)
        self._tree.push_local(make_entry(batch.stamp, idx, node, par))
        for comp, field, value, size in prepared:
            self._put_field(batch, node, comp, field, value, size)
        return ent

    def set_field(self, entity: Node, component: str, field: str, value: object) -> None:
        """Set one field of one component of an entity (last writer wins)."""
        # The hot path of local editing: kept flat on purpose (see docs/performance.md).
        try:
            creator, counter = entity
        except (TypeError, ValueError):
            raise TypeError("entity must be an EntityId") from None
        creator = self._keys.get(creator)  # type: ignore[assignment]
        ent: Node = (creator, counter)
        if creator is None or ent not in self._creation:
            raise ValueError(f"entity {entity} is unknown")
        level = ROLE_EDITOR if creator is self._me else ROLE_ADMIN
        if type(value) is list and len(value) <= 16:
            for x in value:
                if type(x) is not float or x - x != 0.0:
                    value, size = self._prepared_value(value)
                    break
            else:
                value = list(value)
                size = 9 * len(value) + 3
        elif type(value) is str and (size := len(value.encode()) + 5) <= min(
                self.limits.max_value_bytes, self.limits.max_str_bytes):
            pass  # a str header takes at most 5 bytes: within both limits
        else:
            value, size = self._prepared_value(value)
        batch = self._batch
        key = (ent, component, field)
        op = ci = fi = None
        fast = False
        if batch is not None and level <= batch.required:
            # Everything this op needs may already be in the batch (role checked, names and
            # creator listed): then only the room left needs a look.
            op = batch.set_index.get(key)
            room = self._max_batch_bytes - DEP_BYTES * len(self._graph.heads) - batch.bytes
            if op is not None:
                fast = size <= room
            elif size + SET_OP_BYTES <= room and len(batch.ops) < self._max_ops:
                names = batch.name_index
                ci = names.get(component)
                fi = names.get(field)
                fast = (
                    ci is not None and fi is not None
                    and (
                        creator is self._me or creator in batch.actor_index
                        # a creator new to the batch: ``_ref`` below lists it
                        or (size + SET_OP_BYTES + ACTOR_BYTES <= room
                            and len(batch.actors) < self.limits.max_actors_per_change)
                    )
                )
        if not fast:
            self._check_name(component)
            self._check_name(field)
            new_op = batch is None or key not in batch.set_index
            batch = self._require(
                level,
                "edit this entity",
                1 if new_op else 0,
                size + (SET_OP_BYTES if new_op else 0),
                (component, field) if new_op else (),
                (creator,) if new_op else (),
            )
            op = batch.set_index.get(key)
        assert batch is not None  # opened by _require, or ``fast`` (for the type checker)
        # From here on nothing can fail (the body of _put_field, inlined for speed).
        if op is not None:
            batch.bytes += size
            op[4] = value  # a later write in the same batch replaces the earlier one
        else:
            if ci is None:
                ci = self._name(batch, component)
            if fi is None:
                fi = self._name(batch, field)
            if creator is self._me:
                ref: Any = counter
            else:
                idx = batch.actor_index.get(creator)
                ref = self._ref(batch, ent) if idx is None else [idx, counter]
            op = [OP_SET, ref, ci, fi, value]
            batch.ops.append(op)
            batch.set_index[key] = op
            batch.bytes += size + SET_OP_BYTES
        comps = self._fields.get(ent)
        if comps is None:
            comps = self._fields[ent] = {}
        fd = comps.get(component)
        if fd is None:
            fd = comps[component] = {}
        stamp = batch.stamp
        prev = fd.get(field)
        if prev is None or prev[0] is not stamp:
            # (A field set again in this batch already has its pre-batch register saved.)
            batch.field_undo.append((fd, field, prev))
        fd[field] = (stamp, value)

    def _put_field(
        self, batch: EditBatch, ent: Node, component: str, field: str, value: Value, size: int
    ) -> None:
        """Record a checked ``SET`` in the batch and show it in the scene (cannot fail; the
        same steps are inlined at the end of ``set_field``)."""
        key = (ent, component, field)
        op = batch.set_index.get(key)
        if op is not None:
            batch.bytes += size
            op[4] = value  # a later write in the same batch replaces the earlier one
        else:
            names = batch.name_index
            ci = names.get(component)
            if ci is None:
                ci = self._name(batch, component)
            fi = names.get(field)
            if fi is None:
                fi = self._name(batch, field)
            ref = ent[1] if ent[0] is self._me else self._ref(batch, ent)
            op = [OP_SET, ref, ci, fi, value]
            batch.ops.append(op)
            batch.set_index[key] = op
            batch.bytes += size + SET_OP_BYTES
        comps = self._fields.get(ent)
        if comps is None:
            comps = self._fields[ent] = {}
        fd = comps.get(component)
        if fd is None:
            fd = comps[component] = {}
        batch.field_undo.append((fd, field, fd.get(field)))
        fd[field] = (batch.stamp, value)

    def move(self, entity: Node, new_parent: Node) -> None:
        """Move an entity (and its subtree) under ``new_parent``."""
        if entity == ROOT:
            raise ValueError("the root cannot be moved")
        ent = self._live(entity, "entity")
        if not isinstance(new_parent, tuple) or len(new_parent) != 2:
            raise TypeError("new parent must be an EntityId")
        tree_parent = self._tree.parent
        # (An unknown key is not interned: the walk below refuses its entity.)
        par = ROOT if new_parent == ROOT else (
            self._keys.get(new_parent[0], new_parent[0]), new_parent[1])
        if tree_parent.get(ent) == par:  # (then the new parent is live: the entity is)
            if self._role() < self._needed_for(ent):
                raise PermissionDenied(f"role {ROLE_NAMES[self._role()]!r} may not move this")
            return  # already there: no op (as Loro does), so nothing to sign or send
        # One walk up from the new parent: it must reach the root (else it is deleted or
        # unknown) without passing the entity (else the move makes a cycle).
        node: Node | None = par
        while node != ROOT:
            if node == ent:
                raise ValueError("moving an entity under itself or its descendant makes a cycle")
            node = tree_parent.get(node)  # type: ignore[arg-type]
            if node is None:
                raise ValueError(f"new parent {new_parent} is deleted or unknown")
        batch = self._require(
            self._needed_for(ent), "move this entity", 1, MOVE_OP_BYTES, (),
            [n[0] for n in (ent, par) if n != ROOT],
        )
        idx = len(batch.ops)
        batch.ops.append([OP_MOVE, self._ref(batch, ent), self._ref(batch, par)])
        batch.bytes += MOVE_OP_BYTES
        self._tree.push_local(make_entry(batch.stamp, idx, ent, par))

    def delete(self, entity: Node) -> None:
        """Delete an entity and, with it, its subtree."""
        if entity == ROOT:
            raise ValueError("the root cannot be deleted")
        ent = self._live(entity, "entity")
        batch = self._require(
            self._needed_for(ent), "delete this entity", 1, DELETE_OP_BYTES, (), [ent[0]]
        )
        idx = len(batch.ops)
        batch.ops.append([OP_DELETE, self._ref(batch, ent)])
        batch.bytes += DELETE_OP_BYTES
        self._tree.push_local(make_entry(batch.stamp, idx, ent, TRASH))

    def grant(
        self, member: str | bytes, role: str, *, invite: bytes | None = None,
        max_uses: int = 0,
    ) -> None:
        """Give ``member`` (PeerID or public key) a role: "admin", "editor", "viewer" or
        "none" (removes them). See ``meshnode.crdt.roles`` for who may grant what.

        A grant that lowers a role names the member's cut-off (filled in at ``commit``):
        every replica then retracts the member's changes that had not seen it.
        ``invite``: the ID of the invite being redeemed, whose use limit is ``max_uses``
        (0: none); ``PermissionDenied`` if it is used up or revoked here.
        """
        key = self._member_key(member)
        code = ROLE_BY_NAME.get(role)
        if code is None or code == ROLE_OWNER:
            raise ValueError(f"role must be one of admin, editor, viewer, none; not {role!r}")
        if key == self._me:
            raise PermissionDenied("a member cannot change their own role")
        if not may_set_role(self._role(), self._roles.current_role(key), code):
            raise PermissionDenied(
                f"a {ROLE_NAMES[self._role()]} may not make this member {role!r}"
            )
        if invite is not None:
            if type(invite) is not bytes or len(invite) != 32 or code == ROLE_NONE:
                raise ValueError("an invite is a 32-byte ID and grants a role other than none")
            if not 0 <= max_uses < MAX_INVITE_USES:
                raise ValueError(f"max_uses must be in [0, {MAX_INVITE_USES})")
            if self.invite_revoked(invite):
                raise PermissionDenied("this invite was revoked")
            if max_uses and self.invite_uses(invite) >= max_uses:
                raise PermissionDenied(f"this invite was used {max_uses} time(s) already")
        op_bytes = ROLE_OP_BYTES + (INVITE_EXTRA_BYTES if invite is not None else 0)
        batch = self._require(ROLE_ADMIN, "change roles", 1, op_bytes, (), [key], scene=False)
        if key not in batch.actor_index:
            batch.actor_index[key] = len(batch.actors)
            batch.actors.append(key)
            batch.bytes += ACTOR_BYTES
        op: Op = [OP_ROLE, batch.actor_index[key], code, 0]  # cut-off: set at commit
        if invite is not None:
            op += [invite, max_uses]
        batch.ops.append(op)
        batch.has_role_ops = True
        batch.bytes += op_bytes
        batch.role_ops.append((key, code))
        seq = self._graph.vv_all.get(self._me, 0) + 1
        self._roles.add(key, (batch.stamp, code, self._me, seq))

    def revoke(self, member: str | bytes) -> None:
        """Remove a member: their role becomes none, and every replica retracts their
        changes that had not seen the removal (see ``grant``)."""
        self.grant(member, "none")

    def revoke_invite(self, invite_id: bytes) -> None:
        """Revoke an invite: grants naming it that this change has not seen count for
        nothing, on every replica (owner and admins may)."""
        if type(invite_id) is not bytes or len(invite_id) != 32:
            raise ValueError("an invite ID is 32 bytes")
        batch = self._require(ROLE_ADMIN, "revoke invites", scene=False)
        batch.ops.append([OP_REVOKE_INVITE, invite_id])
        batch.bytes += 40
        batch.revokes.append(invite_id)

    def admit(self, member: str | bytes, role: str, *, invite_id: bytes, max_uses: int,
              proof: bytes, now: float) -> None:
        """Grant ``member`` the role of an invite it redeemed, on the invite's authority:
        ``proof`` is ``meshnode.crdt.redemption.make_proof(...)`` (the signed invite and the
        invitee's redemption signature). Any member may do it, a ``host`` only this way.
        Raises ``PermissionDenied`` (with the reason every replica would give) if the proof
        does not admit ``member`` now (``now``: wall-clock seconds, for the expiry)."""
        from meshnode.crdt.clock import hlc_from_seconds
        from meshnode.crdt.results import Rejected

        key = self._member_key(member)
        code = ROLE_BY_NAME.get(role)
        if code is None or code in (ROLE_NONE, ROLE_OWNER) or key == self._me:
            raise ValueError(f"admit gives viewer, editor, admin or host to another member, "
                             f"not {role!r}")
        if self._roles.current_role(self._me) == ROLE_NONE:
            raise PermissionDenied("only members write grants")
        vv = dict(self._graph.vv_all)
        op: Op = [OP_ROLE, 0, code, vv.get(key, 0), invite_id, max_uses, proof]
        try:
            self._check_host_grant(op, key, self._roles.role_in_past(key, vv), hlc_from_seconds(
                now), vv, sorted(self._graph.heads))
        except Rejected as rej:
            raise PermissionDenied(f"the invite does not admit this member: {rej.reason}") \
                from None
        if self.invite_revoked(invite_id):
            raise PermissionDenied("this invite was revoked")
        if max_uses and self.invite_uses(invite_id) >= max_uses:
            raise PermissionDenied(f"this invite was used {max_uses} time(s) already")
        op_bytes = ROLE_OP_BYTES + INVITE_EXTRA_BYTES + len(proof) + 3
        batch = self._require(ROLE_NONE, "admit", 1, op_bytes, (), [key], scene=False)
        if key not in batch.actor_index:
            batch.actor_index[key] = len(batch.actors)
            batch.actors.append(key)
            batch.bytes += ACTOR_BYTES
        op[1] = batch.actor_index[key]
        batch.ops.append(op)
        batch.has_role_ops = True
        batch.bytes += op_bytes
        seq = self._graph.vv_all.get(self._me, 0) + 1
        self._roles.add(key, (batch.stamp, code, self._me, seq))

    def set_room_name(self, name: str) -> None:
        """Rename a private room (owner and admins; sealed like scene ops). A room that is
        not private has its name in the genesis, which cannot change."""
        if self._epochs is None:
            raise ValueError("only a private room's name can be set (it is sealed)")
        if type(name) is not str or len(name) > 200:
            raise ValueError("a room name is a string of at most 200 characters")
        batch = self._require(ROLE_ADMIN, "rename the room", 1, len(name.encode()) + 8)
        batch.ops.append([OP_NAME, name])
        batch.bytes += len(name.encode()) + 8

    def _fill_cutoffs(self, batch: EditBatch, vv: Mapping[bytes, int]) -> None:
        """Each role op names the member's highest seq this replica has seen."""
        if not batch.has_role_ops:
            return  # (most batches: no walk over every op at each commit)
        for op in batch.ops:
            if op[0] == OP_ROLE:
                op[3] = vv.get(batch.actors[op[1]], 0)

    def _commit_role_ops(self, batch: EditBatch, cid: bytes, seq: int, hlc: int) -> None:
        """Book the role ops of a just-committed batch as a peer's would be booked."""
        # ``admit`` (a host's grant by proof) is in ``ops`` but not ``role_ops`` (which
        # ``commit`` checks against the author's own authority): it is booked here too.
        if not batch.has_role_ops and not batch.revokes:
            return
        stamp = batch.stamp
        self._roles.drop_stamp(stamp, batch.actors)  # booked again below, as committed grants
        vv = self._graph.vv_all
        roles = [
            (i, m, op, op[3], self._roles.role_in_past(m, vv))
            for i, op in enumerate(batch.ops) if op[0] == OP_ROLE
            for m in (batch.actors[op[1]],)
        ]
        self._record_role_ops(cid, self._me, seq, hlc, stamp, roles, batch.revokes)

    @property
    def pending_ops(self) -> int:
        """How many local ops wait for ``commit``."""
        return 0 if self._batch is None else len(self._batch.ops)

    def commit(self, now: float, *, mono: float | None = None) -> bytes | None:
        """Sign the uncommitted batch as one change; return its bytes (None if empty).

        ``now`` is wall-clock time (seconds) for the change's clock stamp; ``mono`` the
        monotonic reading taken with it (None: same as ``now``; see ``SceneReplica.apply``).

        If a change applied since the edits took away the right to make them (role or entity
        quota), the batch is rolled back and ``PermissionDenied`` (``QuotaExceeded``) raised.
        ``CommitRefused`` (the batch is kept) if the change could not be valid now: this
        identity signed later seqs than this replica holds (``OwnHistoryMissing``), more
        heads than one change may name, or a change over ``max_change_bytes``.
        """
        batch = self._batch
        if batch is None:
            return None
        if not batch.ops and self._private_batch is None:
            self.discard()  # nothing to sign: an empty change is invalid everywhere
            return None
        graph = self._graph
        vv = dict(graph.vv_all)
        role = self._roles.role_in_past(self._me, vv)
        if role == ROLE_HOST:
            role = ROLE_VIEWER  # its batch holds only proof-carrying grants (``admit``)
        allowed = role >= batch.required and all(
            may_set_role(role, self._roles.role_in_past(m, vv), r) for m, r in batch.role_ops
        )
        if not allowed:
            self.discard()
            raise PermissionDenied("this replica's role changed: the batch was rolled back")
        if batch.creates:
            problem = quota_problem(role, max(n[1] for n in batch.creates))
            if problem is not None:
                self.discard()
                raise QuotaExceeded(f"{problem}: the batch was rolled back")
        seq = vv.get(self._me, 0) + 1
        problem = self._own_history_problem()
        if problem is not None:
            raise OwnHistoryMissing(
                f"{problem}: signing seq {seq} again would equivocate and skipping ahead is "
                "refused by peers (bad_seq). Sync with peers until its own changes are back; "
                "the batch is kept"
            )
        self._fill_cutoffs(batch, vv)
        deps = sorted(graph.heads)
        if len(deps) > self.limits.max_deps:
            raise CommitRefused(
                f"the replica has {len(deps)} heads and one change may name "
                f"{self.limits.max_deps}: wait until peers' changes merge them; the batch is kept",
                "too_many_heads",
            )
        hlc = self._clock.tick(now, mono)
        booked: dict[str, Any] | None = None
        ops, names, pub_actors = batch.ops, batch.names, batch.actors
        if self._epochs is not None:
            if self._epochs.blocked and any(op[0] not in (OP_ROLE, OP_REVOKE_INVITE)
                                            for op in ops):
                raise CommitRefused("some content here waits for an epoch key: the sealed "
                                    "edits wait for a reader's SHARE; the batch is kept",
                                    "waiting_for_key")
            pub_actors, ops, booked = self._seal_batch(
                batch.ops, batch.actors, batch.names, vv, deps, seq, hlc)
            names = []
        actors = self._actors_by_dep(pub_actors, deps) if pub_actors else []
        data = encode_change(
            author=self._me,
            seq=seq,
            deps=deps,
            hlc=hlc,
            actors=actors,
            names=names,
            ops=ops,
            room_id=self.room_id,
            sign=self._identity.sign,
        )
        if len(data) > self.limits.max_change_bytes:
            # Only when heads grew since the edits were made: the bytes are never sent.
            raise CommitRefused(
                f"the change would take {len(data)} bytes, over {self.limits.max_change_bytes} "
                "(the replica's heads grew since the edits): discard() and redo them in "
                "smaller batches; the batch is kept",
                "too_large",
            )
        cid = change_id(data)
        stamp = batch.stamp
        stamp[0] = hlc
        stamp[2] = cid
        for node in batch.creates:
            self._creation[node] = seq
            self._created_by.setdefault(node, []).append(cid)
        vv[self._me] = seq
        self._batch = None
        graph.add(cid, ChangeMeta(self._me, seq, hlc, tuple(deps), vv), data)
        if booked is not None:
            batch.ops, batch.actors = ops, pub_actors  # book role ops as peers see them
            self._commit_private(cid, seq, hlc, deps, booked)
        self._commit_role_ops(batch, cid, seq, hlc)
        return data

    def _actors_by_dep(self, keys: list[bytes], deps: list[bytes]) -> list[bytes | int]:
        """The actor list as sent: a key that authored one of ``deps`` is that dep's index
        (1 byte, not 33). (The graph's columns are read inline: a commit names ~20 deps.)"""
        graph = self._graph
        index, col_author, authors = graph.index, graph.col_author, graph.authors
        head_author: dict[bytes, int] = {}
        for i, d in enumerate(deps):
            p = index[d]
            a = authors[col_author[p]] if p >= 0 else graph.base_entries[~p].author
            if a not in head_author:
                head_author[a] = i
        return [head_author.get(a, a) for a in keys]

    def discard(self) -> None:
        """Roll back every uncommitted local edit."""
        batch = self._batch
        self._private_batch = None
        if batch is None:
            return
        self._batch = None
        self._tree.remove_pending(batch.stamp)
        for fd, field, prev in reversed(batch.field_undo):
            if prev is None:
                fd.pop(field, None)
            else:
                fd[field] = prev
        for fd, field, reg in batch.shadowed:
            cur = fd.get(field)
            if cur is None or cur[0] <= reg[0]:
                fd[field] = reg
        for node in batch.creates:
            self._creation.pop(node, None)
        self._roles.drop_stamp(batch.stamp, batch.actors)
        self._my_role = None
        self._counter = batch.counter_before
