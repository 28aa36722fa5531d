"""Who may let whom into a room, decided from the replica alone (pure functions).

Membership is signed `ROLE` changes in the room's CRDT, so admitting someone is writing one:
a node can admit only as far as its own role allows (``meshnode.crdt.roles``), and an invite
carries its issuer's authority and no more, whoever redeems it. An invite revoked in the room,
or whose uses (as this replica counts them) reached its ``max_uses``, admits nobody; the CRDT's
count stays the source of truth when two nodes redeem the last use at once
(``meshnode.crdt.revocation``).
"""

from meshnode.crdt import SceneReplica
from meshnode.crdt.roles import ROLE_BY_NAME, may_set_role
from meshnode.rooms.invite import Invite


def may_grant(replica: SceneReplica, granter: str | bytes, member: str | bytes,
              role: str) -> bool:
    """Whether ``granter`` (PeerID or key) may give ``member`` the role ``role`` now."""
    return may_set_role(ROLE_BY_NAME[replica.role_of(granter)],
                        ROLE_BY_NAME[replica.role_of(member)], ROLE_BY_NAME[role])


def invite_problem(replica: SceneReplica, invite: Invite, member: str, now_ms: int) -> str | None:
    """Why ``invite``, presented by ``member``, does not admit them to ``replica``'s room
    (None: it does): ``bad_signature``, ``expired``, ``wrong_room``,
    ``issuer_may_not_grant`` (an admin's invite can never make an admin), ``revoked``,
    ``used_up`` (its ``max_uses`` members were admitted already) or ``removed`` (it admitted
    this member once, and they were removed since: a removed member comes back only with a
    new invite or a role an admin gives them)."""
    problem = invite.verify(now_ms)
    if problem is None and invite.room_id != replica.room_id:
        problem = "wrong_room"
    if problem is None and replica.invite_revoked(invite.id):
        problem = "revoked"
    if problem is None and invite.max_uses and replica.invite_uses(invite.id) >= invite.max_uses:
        problem = "used_up"
    if (problem is None and replica.was_removed(member)
            and replica.invite_admitted(invite.id, member)):
        problem = "removed"
    if problem is None and not may_grant(replica, invite.issuer, member, invite.role):
        problem = "issuer_may_not_grant"
    return problem


def mint_problem(replica: SceneReplica, issuer: str | bytes, role: str) -> str | None:
    """Why an invite for ``role`` signed by ``issuer`` could never admit anyone to
    ``replica``'s room (None: it can), said so that the operator knows what to do. Checked
    when the invite is minted, with the rule ``invite_problem`` applies when it is redeemed
    (``issuer_may_not_grant``): the issuer's role must let it give ``role`` to a newcomer."""
    issuer_role = replica.role_of(issuer)
    if may_set_role(ROLE_BY_NAME[issuer_role], ROLE_BY_NAME["none"], ROLE_BY_NAME[role]):
        return None
    if issuer_role in ("owner", "admin"):
        return (f"an {role} invite signed by this node (an {issuer_role} of the room) could "
                f"never admit anyone: only the room's owner grants {role}. Ask the owner's "
                "node for the invite, or invite as editor or viewer")
    return (f"this node is {issuer_role} in the room, so an invite it signs could never admit "
            "anyone: only the owner and admins admit members. Ask the owner's node for the "
            "invite, or have the owner make this node an admin (`meshnode room role ROOM "
            "PEERID admin` on the owner's node)")


def may_auto_admit(replica: SceneReplica, member: str | bytes) -> bool:
    """Whether an ``open`` room may admit ``member`` on its own: not if an owner or admin
    removed them (a new invite still admits them; the one they came in with does not)."""
    return not replica.was_removed(member)
