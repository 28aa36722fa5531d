"""Local editing: the uncommitted batch behind ``create_entity``, ``set_field``, ``move``,
``delete``, ``grant``, ``commit`` and ``discard``.

Local edits apply to the replica at once and collect in one batch; ``commit(now)`` signs it as
one change. Until then its ops carry an "infinitely late" stamp, so changes applied from peers
in between sort before them, exactly as they will once the batch is stamped (its clock value is
taken at commit, after everything applied so far). ``LocalEdits`` is a base of
``SceneReplica`` (``SceneReplica(... PrivateRoom(LocalEdits(SceneEdits(RoomEdits(
EditChecks)))))``, ``meshnode.crdt.replica``: single inheritance, which mypyc can compile,
unlike two mixins); its root ``EditChecks`` declares the replica state it works on.

What it guarantees: a refused edit (any exception from an editing method) leaves no trace, so
every change ``commit`` returns is one every honest replica applies. Each method first checks
everything that can fail (arguments, values, names, role, quota, room in the batch) and only
then touches the batch and the scene; ``commit`` re-checks what a change applied from a peer in
the meantime can invalidate (role, quota), never reuses a seq it signed before, and never
returns an empty change or one over the wire limits.

The editing API is one chain of classes, a file each: ``EditChecks`` (``edit_checks``: the
declared state and the checks every edit makes first) <- ``RoomEdits`` (``edit_room``: roles,
invites, admission, a private room's name) <- ``SceneEdits`` (``edit_scene``: create, set a
field, move, delete) <- ``LocalEdits`` (here: ``commit`` and ``discard``); the batch itself
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
from meshnode.crdt.edit_room import RoomEdits as RoomEdits
from meshnode.crdt.edit_scene import SceneEdits as SceneEdits
from meshnode.crdt.graph import ChangeMeta
from meshnode.crdt.quota import quota_problem
from meshnode.crdt.results import CommitRefused, OwnHistoryMissing, PermissionDenied, QuotaExceeded
from meshnode.crdt.roles import ROLE_HOST, ROLE_VIEWER, may_set_role
from protocol.change import OP_REVOKE_INVITE, OP_ROLE, change_id, encode_change


class LocalEdits(SceneEdits):
    """The local editing API of ``SceneReplica`` (a base of it, on ``SceneEdits``; the state
    lives in the replica): ``commit`` and ``discard`` here, the edits in its bases."""

    def _fill_cutoffs(self, batch: EditBatch, vv: Mapping[bytes, int]) -> None:
        """Each role op names the member's highest seq this replica has seen."""
        if not batch.has_role_ops:
            return  # (most batches: no walk over every op at each commit)
        for op in batch.ops:
            if op[0] == OP_ROLE:
                op[3] = vv.get(batch.actors[op[1]], 0)

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
