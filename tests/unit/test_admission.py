"""Admission decisions from the replica alone (meshnode.rooms.admission)."""

from meshnode.crdt import SceneReplica
from meshnode.identity import Identity
from meshnode.rooms.admission import invite_problem, may_auto_admit, may_grant, mint_problem
from meshnode.rooms.invite import Invite, make_invite

NOW_MS = 1_700_000_000_000


def room_with_admin() -> tuple[SceneReplica, Identity, Identity]:
    owner, admin = Identity.generate(), Identity.generate()
    replica = SceneReplica.create(owner, NOW_MS / 1000, nonce=b"admission-1")
    replica.grant(admin.public_id, "admin")
    replica.commit(NOW_MS / 1000)
    return replica, owner, admin


def invite(replica: SceneReplica, issuer: Identity, role: str, expires_ms: int = NOW_MS + 1,
           room_id: bytes | None = None, max_uses: int = 0) -> Invite:
    return make_invite(room_id or replica.room_id, replica.genesis, role, issuer.public_key,
                       issuer.sign, expires_ms, ["http://127.0.0.1:8470"], max_uses)


def test_roles_grant_what_the_table_allows() -> None:
    replica, owner, admin = room_with_admin()
    newcomer = Identity.generate().public_id
    assert may_grant(replica, owner.public_id, newcomer, "admin")
    assert may_grant(replica, admin.public_id, newcomer, "editor")
    assert not may_grant(replica, admin.public_id, newcomer, "admin")
    assert not may_grant(replica, newcomer, Identity.generate().public_id, "viewer")
    assert not may_grant(replica, admin.public_id, owner.public_id, "none")


def test_an_invite_carries_its_issuers_authority_and_no_more() -> None:
    replica, owner, admin = room_with_admin()
    newcomer = Identity.generate().public_id
    assert invite_problem(replica, invite(replica, owner, "admin"), newcomer, NOW_MS) is None
    assert invite_problem(replica, invite(replica, admin, "editor"), newcomer, NOW_MS) is None
    assert invite_problem(replica, invite(replica, admin, "admin"), newcomer,
                          NOW_MS) == "issuer_may_not_grant"
    stranger = Identity.generate()
    assert invite_problem(replica, invite(replica, stranger, "viewer"), newcomer,
                          NOW_MS) == "issuer_may_not_grant"


def test_expired_and_foreign_invites_are_refused() -> None:
    replica, owner, _ = room_with_admin()
    newcomer = Identity.generate().public_id
    assert invite_problem(replica, invite(replica, owner, "editor", expires_ms=NOW_MS - 1),
                          newcomer, NOW_MS) == "expired"
    other = SceneReplica.create(owner, NOW_MS / 1000, name="other", nonce=b"admission-2")
    assert invite_problem(replica, invite(other, owner, "editor"), newcomer,
                          NOW_MS) == "wrong_room"


def test_a_used_up_invite_admits_nobody_more() -> None:
    replica, owner, _ = room_with_admin()
    inv = invite(replica, owner, "editor", max_uses=2)
    for i in range(2):
        member = Identity.generate().public_id
        assert invite_problem(replica, inv, member, NOW_MS) is None
        replica.grant(member, inv.role, invite=inv.id, max_uses=inv.max_uses)
        replica.commit(NOW_MS / 1000 + 1 + i)
    assert replica.invite_uses(inv.id) == 2
    assert invite_problem(replica, inv, Identity.generate().public_id, NOW_MS) == "used_up"
    unlimited = invite(replica, owner, "viewer")
    assert invite_problem(replica, unlimited, Identity.generate().public_id, NOW_MS) is None


def test_a_revoked_invite_admits_nobody() -> None:
    replica, _, admin = room_with_admin()
    inv = invite(replica, admin, "viewer")
    replica.revoke_invite(inv.id)
    replica.commit(NOW_MS / 1000 + 1)
    assert invite_problem(replica, inv, Identity.generate().public_id, NOW_MS) == "revoked"
    # Only that invite: another one of the same admin still admits.
    other = invite(replica, admin, "viewer")
    assert invite_problem(replica, other, Identity.generate().public_id, NOW_MS) is None


def test_an_open_room_does_not_readmit_a_removed_member_on_its_own() -> None:
    replica, _, _ = room_with_admin()
    member, newcomer = Identity.generate().public_id, Identity.generate().public_id
    assert may_auto_admit(replica, member) and may_auto_admit(replica, newcomer)
    replica.grant(member, "editor")
    replica.commit(NOW_MS / 1000 + 1)
    replica.revoke(member)
    replica.commit(NOW_MS / 1000 + 2)
    assert not may_auto_admit(replica, member)
    assert may_auto_admit(replica, newcomer)


def test_invites_that_could_never_admit_are_refused_when_minted() -> None:
    """``mint_problem`` agrees with ``invite_problem``: what it lets through admits a
    newcomer, what it refuses would be ``issuer_may_not_grant`` at every node."""
    replica, owner, admin = room_with_admin()
    editor, stranger = Identity.generate(), Identity.generate()
    replica.grant(editor.public_id, "editor")
    replica.commit(NOW_MS / 1000 + 1)
    for issuer in (owner, admin, editor, stranger):
        for role in ("viewer", "editor", "admin"):
            problem = mint_problem(replica, issuer.public_key, role)
            redeemed = invite_problem(replica, invite(replica, issuer, role),
                                      Identity.generate().public_id, NOW_MS)
            assert (problem is None) == (redeemed is None), (issuer, role, redeemed)
    assert "only the room's owner grants admin" in str(mint_problem(replica, admin.public_key,
                                                                   "admin"))
    assert "this node is editor" in str(mint_problem(replica, editor.public_key, "viewer"))
    assert "this node is none" in str(mint_problem(replica, stranger.public_key, "viewer"))
