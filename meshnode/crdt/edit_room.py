"""``RoomEdits``: local edits of the room itself, not its scene: roles, invites, admission
and a private room's name.

The first class above ``EditChecks`` in the editing part of ``SceneReplica``'s chain
(``LocalEdits(SceneEdits(RoomEdits(EditChecks)))``, one file each; ``meshnode.crdt.editing``
says what every edit guarantees). Separate from the scene edits (``edit_scene``): these ops
change who may write, are judged against each member's authority, and are booked in the role
book as committed grants once ``commit`` (``editing``) has signed them
(``_commit_role_ops``).
"""

from meshnode.crdt.edit_batch import ACTOR_BYTES, INVITE_EXTRA_BYTES, ROLE_OP_BYTES, EditBatch
from meshnode.crdt.edit_checks import EditChecks
from meshnode.crdt.results import PermissionDenied
from meshnode.crdt.roles import (
    ROLE_ADMIN,
    ROLE_BY_NAME,
    ROLE_NAMES,
    ROLE_NONE,
    ROLE_OWNER,
    may_set_role,
)
from protocol.change import MAX_INVITE_USES, OP_REVOKE_INVITE, OP_ROLE, Op
from protocol.private_ops import OP_NAME


class RoomEdits(EditChecks):
    """The room edits of ``SceneReplica`` (a base of it, on ``EditChecks``; the state lives
    in the replica)."""

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
