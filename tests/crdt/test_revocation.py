"""Revocation that holds (issue 9 item 3): cut-offs on demotion and removal, invite use limits
and invite revocation, judged the same way by every replica in any delivery order."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meshnode.crdt import APPLIED, REJECTED, ROOT, EntityId, PermissionDenied, SceneReplica
from meshnode.crdt.clock import hlc_from_seconds
from meshnode.identity import Identity
from protocol.change import OP_CREATE, OP_ROLE, OP_SET, ROLE_EDITOR, change_id, decode_change

from .harness import (
    assert_converged,
    craft,
    deliver,
    full_sync,
    heads_hlc,
    ident,
    make_room,
    reference_state,
)

NOW = 1000.0
INVITE = b"\x11" * 32


def ids_of(replica: SceneReplica) -> dict[bytes, Any]:
    return {change_id(d): decode_change(d) for d in replica.changes_since([])}


def ancestors(changes: dict[bytes, Any], cid: bytes) -> set[bytes]:
    seen: set[bytes] = set()
    stack = [cid]
    while stack:
        c = stack.pop()
        if c in seen or c not in changes:
            continue
        seen.add(c)
        stack.extend(changes[c].deps)
    return seen


# --------------------------------------------------------------------------- the attack


def test_a_demoted_admin_cannot_backdate_a_grant_or_an_entity() -> None:
    """The reproduction: an admin demoted by the owner keeps signing on a copy of the room
    from before the demotion (next seq, old deps). Nothing of it takes effect anywhere."""
    room = make_room(["admin", "editor"], tag="backdate")
    owner, admin, editor = room.replicas
    mallory = room.identities[1]
    sock = ident("backdate-sockpuppet")
    old_heads = admin.heads()  # the admin's copy, from before the demotion
    owner.grant(mallory.public_id, "viewer")
    demotion = owner.commit(NOW + 1)
    assert demotion is not None
    op = decode_change(demotion).ops[0]
    assert op[0] == OP_ROLE and op[3] == 0  # the cut-off: the admin's last seq seen (none)
    deliver(editor, [demotion], NOW + 1)
    # Mallory signs seq 1 on the old copy: a new entity and a grant to a sockpuppet.
    forged = craft(admin, mallory, [[OP_CREATE, 1, None], [OP_ROLE, 0, ROLE_EDITOR, 0]],
                   deps=old_heads, actors=[sock.public_key], now=NOW + 2)
    # The sockpuppet then "edits", with the forged grant in its past.
    res = owner.apply(forged, NOW + 3)
    assert (res.status, res.reason) == (APPLIED, "revoked")
    puppet = craft(owner, sock, [[OP_CREATE, 1, None]], now=NOW + 4)
    res = owner.apply(puppet, NOW + 4)
    assert (res.status, res.reason) == (APPLIED, "authority_revoked")
    assert owner.state() == {}
    assert owner.role_of(sock.public_id) == "none"
    assert owner.role_of(mallory.public_id) == "viewer"
    # The replica that had accepted the forged change before the demotion retracts it.
    deliver(admin, [forged], NOW + 2)
    assert admin.exists((mallory.public_key, 1)) and admin.role_of(sock.public_id) == "editor"
    deliver(admin, [demotion, puppet], NOW + 5)
    assert not admin.exists((mallory.public_key, 1))
    assert admin.role_of(sock.public_id) == "none"
    full_sync([owner, admin, editor], NOW + 6)
    for r in (owner, admin, editor):
        assert r.state() == {}
        assert r.retraction(change_id(forged)) == "revoked"
        assert r.retraction(change_id(puppet)) == "authority_revoked"
        assert r.rejections.get("revoked", 0) + r.rejections.get("authority_revoked", 0) >= 1


def test_removed_members_change_after_the_cut_off_never_takes_effect_in_any_order() -> None:
    for order in ([0, 1], [1, 0]):
        room = make_room(["editor", "editor"], tag=f"remove-{order}")
        owner, bob, carol = room.replicas
        e1 = bob.create_entity(ROOT, {"name": {"text": "before"}})
        c1 = bob.commit(NOW + 1)
        deliver(owner, [c1], NOW + 1)
        owner.revoke(room.identities[1].public_id)
        removal = owner.commit(NOW + 2)
        assert decode_change(removal).ops[0][3] == 1  # Bob's seq 1 was seen: it stays
        e2 = bob.create_entity(ROOT, {"name": {"text": "concurrent"}})
        c2 = bob.commit(NOW + 3)
        batch = [[c1, removal, c2][i] for i in ([0, 1, 2] if order == [0, 1] else [2, 0, 1])]
        deliver(carol, batch, NOW + 4)
        full_sync([owner, bob, carol], NOW + 5)
        for r in (owner, bob, carol):
            assert r.exists(e1) and not r.exists(e2)
            assert r.retraction(change_id(c2)) == "revoked"
            assert r.retraction(change_id(c1)) is None


def test_honest_changes_on_top_of_a_retracted_one_are_not_stuck() -> None:
    """Carol (admin) built on Bob's entity before she heard of Bob's removal: her change
    applies everywhere; its op on Bob's retracted entity is a no-op, the rest has effect."""
    room = make_room(["editor", "admin"], tag="on-top")
    owner, bob, carol = room.replicas
    owner.revoke(room.identities[1].public_id)
    removal = owner.commit(NOW + 1)
    b = bob.create_entity(ROOT, {"name": {"text": "bob's"}})
    cb = bob.commit(NOW + 2)
    deliver(carol, [cb], NOW + 3)
    carol.set_field(b, "name", "text", "carol was here")
    child = carol.create_entity(b, {"name": {"text": "under bob's"}})
    own = carol.create_entity(ROOT, {"name": {"text": "carol's"}})
    cc = carol.commit(NOW + 4)
    for r in (owner, bob):
        deliver(r, [cc, cb, removal], NOW + 5)
    deliver(carol, [removal], NOW + 5)
    full_sync([owner, bob, carol], NOW + 6)
    for r in (owner, bob, carol):
        assert r.has_change(change_id(cc)) and r.retraction(change_id(cc)) is None
        assert r.exists(own) and not r.exists(b) and not r.exists(child)
        assert r.buffered_count() == 0
        assert r.state() == reference_state(r.changes_since([]), r.retracted_changes())


def test_changes_after_seeing_the_demotion_are_judged_with_the_new_role() -> None:
    room = make_room(["admin"], tag="demote")
    owner, ann = room.replicas
    mine = ann.create_entity(ROOT)
    deliver(owner, [ann.commit(NOW + 1)], NOW + 1)
    owner.grant(room.identities[1].public_id, "editor")
    demotion = owner.commit(NOW + 2)
    deliver(ann, [demotion], NOW + 3)
    assert ann.role_of(ann.identity.public_id) == "editor"
    ann.set_field(mine, "name", "text", "still mine")
    after = ann.commit(NOW + 4)
    deliver(owner, [after], NOW + 5)
    assert owner.retraction(change_id(after)) is None
    assert owner.get_field(mine, "name", "text") == "still mine"
    # ... and a later grant lets a removed member back in.
    owner.revoke(ann.identity.public_id)
    owner.grant(ann.identity.public_id, "editor")  # one change: the last op counts
    back = owner.commit(NOW + 6)
    deliver(ann, [back], NOW + 7)
    ann.create_entity(ROOT)
    again = ann.commit(NOW + 8)
    assert owner.apply(again, NOW + 8).reason is None
    assert_converged_after_sync([owner, ann])


def test_concurrent_demotions_by_two_admins_the_lowest_cut_off_wins() -> None:
    room = make_room(["admin", "admin", "editor"], tag="two-admins")
    owner, a1, a2, ed = room.replicas
    ed.create_entity(ROOT)
    c1 = ed.commit(NOW + 1)
    deliver(a2, [c1], NOW + 1)  # a2 has seen ed's seq 1, a1 has not
    a1.grant(room.identities[3].public_id, "viewer")
    d1 = a1.commit(NOW + 2)
    a2.grant(room.identities[3].public_id, "none")
    d2 = a2.commit(NOW + 2)
    assert decode_change(d1).ops[0][3] == 0 and decode_change(d2).ops[0][3] == 1
    full_sync([owner, a1, a2, ed], NOW + 3)
    for r in room.replicas:
        assert r.retraction(change_id(c1)) == "revoked"  # cut by a1's cut-off 0
        assert r.role_of(room.identities[3].public_id) in ("viewer", "none")


def test_a_cut_off_that_is_not_what_the_revoker_had_seen_is_rejected() -> None:
    room = make_room(["editor"], tag="bad-cutoff")
    owner, bob = room.replicas
    bob.create_entity(ROOT)
    deliver(owner, [bob.commit(NOW + 1)], NOW + 1)
    member = room.identities[1].public_key
    for cutoff in (0, 2):
        forged = craft(owner, room.identities[0], [[OP_ROLE, 0, 0, cutoff]],
                       actors=[member], now=NOW + 2)
        res = owner.apply(forged, NOW + 2)
        assert (res.status, res.reason) == (REJECTED, "bad_cutoff")
    # A three-element op (before cut-offs) still works: its cut-off is implied.
    legacy = craft(owner, room.identities[0], [[OP_ROLE, 0, 0]], actors=[member], now=NOW + 3)
    assert owner.apply(legacy, NOW + 3).status == APPLIED
    assert owner.role_of(member) == "none"


def test_a_rebuild_keeps_the_uncommitted_local_batch() -> None:
    room = make_room(["editor", "editor"], tag="rebuild-batch")
    owner, bob, carol = room.replicas
    b = bob.create_entity(ROOT)
    cb = bob.commit(NOW + 1)
    owner.revoke(room.identities[1].public_id)
    removal = owner.commit(NOW + 1)
    deliver(carol, [cb], NOW + 2)
    mine = carol.create_entity(ROOT, {"name": {"text": "pending"}})
    carol.set_field(mine, "t", "p", [1.0, 2.0, 3.0])
    assert carol.exists(b)
    deliver(carol, [removal], NOW + 3)  # retracts cb: a rebuild under the open batch
    assert not carol.exists(b)
    assert carol.exists(mine) and carol.get_field(mine, "t", "p") == [1.0, 2.0, 3.0]
    assert carol.pending_ops > 0
    data = carol.commit(NOW + 4)
    assert data is not None
    full_sync([owner, bob, carol], NOW + 5)
    assert owner.exists(mine) and owner.get_field(mine, "name", "text") == "pending"


def assert_converged_after_sync(replicas: list[SceneReplica]) -> None:
    full_sync(replicas, NOW + 100)
    assert_converged(replicas)


# --------------------------------------------------------------------------- invites


def two_hosts() -> tuple[SceneReplica, SceneReplica, SceneReplica]:
    """The owner and an admin host the room; two newcomers redeem invites at them."""
    room = make_room(["admin"], tag="invites")
    owner, admin = room.replicas
    watcher = SceneReplica.from_genesis(room.genesis, ident("watcher"))
    deliver(watcher, owner.changes_since([]), NOW)
    return owner, admin, watcher


def test_a_single_use_invite_redeemed_at_two_nodes_at_once_admits_one_everywhere() -> None:
    owner, admin, watcher = two_hosts()
    n1, n2 = ident("newcomer", 1), ident("newcomer", 2)
    owner.grant(n1.public_id, "editor", invite=INVITE, max_uses=1)
    g1 = owner.commit(NOW + 1)
    admin.grant(n2.public_id, "editor", invite=INVITE, max_uses=1)
    g2 = admin.commit(NOW + 2)
    assert owner.invite_uses(INVITE) == 1 and admin.invite_uses(INVITE) == 1
    # Each newcomer edits right away, with its own grant in its past.
    e1 = craft(owner, n1, [[OP_CREATE, 1, None]], now=NOW + 3)
    e2 = craft(admin, n2, [[OP_CREATE, 1, None]], now=NOW + 3)
    deliver(owner, [e1], NOW + 3)
    deliver(admin, [e2], NOW + 3)
    deliver(watcher, [e2, g2, e1, g1], NOW + 4)
    full_sync([owner, admin, watcher], NOW + 5)
    first, second = (n1, n2) if (decode_change(g1).hlc, owner.identity.public_key) < (
        decode_change(g2).hlc, admin.identity.public_key) else (n2, n1)
    for r in (owner, admin, watcher):
        assert r.invite_uses(INVITE) == 1
        assert r.role_of(first.public_id) == "editor"
        assert r.role_of(second.public_id) == "none"
        assert r.exists((first.public_key, 1)) and not r.exists((second.public_key, 1))
    assert_converged([owner, admin, watcher])


def test_a_used_up_or_revoked_invite_is_refused_locally() -> None:
    owner, _, _ = two_hosts()
    owner.grant(ident("n", 1).public_id, "viewer", invite=INVITE, max_uses=1)
    owner.commit(NOW + 1)
    with pytest.raises(PermissionDenied, match="used 1"):
        owner.grant(ident("n", 2).public_id, "viewer", invite=INVITE, max_uses=1)
    other = b"\x22" * 32
    owner.revoke_invite(other)
    owner.commit(NOW + 2)
    assert owner.invite_revoked(other)
    with pytest.raises(PermissionDenied, match="revoked"):
        owner.grant(ident("n", 3).public_id, "viewer", invite=other)
    with pytest.raises(ValueError):
        owner.grant(ident("n", 4).public_id, "none", invite=other)


def test_grants_a_revocation_had_not_seen_are_void_everywhere() -> None:
    owner, admin, watcher = two_hosts()
    n1, n2 = ident("rv", 1), ident("rv", 2)
    admin.grant(n1.public_id, "editor", invite=INVITE)
    seen = admin.commit(NOW + 1)
    deliver(owner, [seen], NOW + 1)
    admin.grant(n2.public_id, "editor", invite=INVITE)  # concurrent with the revocation
    unseen = admin.commit(NOW + 2)
    owner.revoke_invite(INVITE)
    revocation = owner.commit(NOW + 2)
    deliver(admin, [revocation], NOW + 3)  # admin had applied `unseen`: it is voided
    assert admin.role_of(n2.public_id) == "none"
    deliver(watcher, [revocation, unseen, seen], NOW + 4)
    full_sync([owner, admin, watcher], NOW + 5)
    for r in (owner, admin, watcher):
        assert r.invite_revoked(INVITE)
        assert r.role_of(n1.public_id) == "editor" and r.role_of(n2.public_id) == "none"
    # Nobody but the owner and admins may revoke an invite.
    ed = make_room(["editor"], tag="inv-ed")
    forged = craft(ed.owner, ed.identities[1], [[6, INVITE]], now=NOW + 1)
    assert ed.owner.apply(forged, NOW + 1).reason == "role_change_not_allowed"


# --------------------------------------------------------------------------- snapshots


def test_snapshot_carries_cut_offs_and_invite_state() -> None:
    room = make_room(["admin", "editor"], tag="snap-cut")
    owner, admin, _ = room.replicas
    old = admin.heads()
    owner.grant(ident("snap-n").public_id, "viewer", invite=INVITE, max_uses=1)
    owner.revoke(room.identities[1].public_id)
    owner.commit(NOW + 1)
    late = SceneReplica.from_snapshot(owner.snapshot(), ident("late"))
    assert late.export_content() == owner.export_content()
    assert late.invite_uses(INVITE) == 1 and late.role_of(room.identities[1].public_id) == "none"
    forged = craft(admin, room.identities[1], [[OP_CREATE, 1, None]], deps=old, now=NOW + 2)
    for r in (owner, late):
        assert r.apply(forged, NOW + 3).reason == "revoked"
        assert r.state() == {}


def test_a_replica_started_from_a_snapshot_rebuilds_from_it() -> None:
    room = make_room(["editor"], tag="snap-rebuild")
    owner, bob = room.replicas
    late = SceneReplica.from_snapshot(owner.snapshot(), ident("late-2"))
    keep = owner.create_entity(ROOT, {"name": {"text": "owner's"}})
    mine = owner.commit(NOW + 1)
    owner.revoke(room.identities[1].public_id)
    removal = owner.commit(NOW + 2)
    e = bob.create_entity(ROOT)
    victim = bob.commit(NOW + 2)
    deliver(late, [mine, victim], NOW + 3)
    assert late.exists(e)
    deliver(late, [removal], NOW + 4)  # a rebuild from the snapshot's content
    assert not late.exists(e) and late.exists(keep)
    deliver(owner, [victim], NOW + 4)
    assert late.state() == owner.state()
    assert late.retracted_changes() == owner.retracted_changes()


# --------------------------------------------------------------------------- property


@dataclass
class World:
    """Several replicas with random concurrent grants, demotions, edits and backdated changes."""

    replicas: list[SceneReplica]
    identities: list[Identity]
    t: float = NOW
    demotions: list[tuple[bytes, bytes, int]] = field(default_factory=list)  # (cid, member, c)
    heads_seen: dict[int, list[list[bytes]]] = field(default_factory=dict)
    forged: int = 0

    def now(self) -> float:
        return self.t

    def role(self, i: int) -> str:
        r = self.replicas[i]
        return r.role_of(r.identity.public_id)

    def edit(self, i: int, pick: int) -> None:
        r = self.replicas[i]
        if self.role(i) not in ("editor", "admin", "owner"):
            return
        ents = sorted(r.entities())
        mine = [e for e in ents if e.creator == r.identity.public_key]
        if pick % 3 == 0 or not mine:
            parents = [ROOT, *ents]
            r.create_entity(parents[pick % len(parents)], {"n": {"v": pick}})
        else:
            r.set_field(mine[pick % len(mine)], "n", "v", pick)
        r.commit(self.now())

    def grant(self, i: int, j: int, role: str) -> None:
        r = self.replicas[i]
        if i == j or j == 0:
            return
        target = self.identities[j].public_id
        before = r.role_of(target)
        try:
            r.grant(target, role)
        except PermissionDenied:
            return
        data = r.commit(self.now())
        assert data is not None
        op = decode_change(data).ops[0]
        order = ["none", "viewer", "editor", "admin"]
        if order.index(role) < order.index(before):
            self.demotions.append((change_id(data), self.identities[j].public_key, op[3]))

    def backdate(self, i: int, pick: int) -> None:
        """Replica i signs its next seq on a copy of the room it had earlier."""
        views = self.heads_seen.get(i)
        if not views or i == 0:
            return
        r, me = self.replicas[i], self.identities[i]
        deps = set(views[pick % len(views)])
        # Its own last change must be in the past (seq chain); everyone else's may be old.
        mine = [(cid, ch) for cid, ch in ids_of(r).items() if ch.author == me.public_key]
        if mine:
            deps.add(max(mine, key=lambda m: m[1].seq)[0])
        hlc = max(hlc_from_seconds(self.now()), heads_hlc(r) + 1)
        self.forged += 1
        counter = 1 + max((op[1] for _, ch in mine for op in ch.ops if op[0] == OP_CREATE),
                          default=0)
        data = craft(r, me, [[OP_CREATE, counter, None], [OP_SET, counter, 0, 1, pick]],
                     deps=sorted(deps), hlc=hlc, names=["n", "v"],
                     seq=r.version_vector().get(me.public_key, 0) + 1)
        res = r.apply(data, self.now())  # it knows what it signed (no equivocation)
        assert res.status in (APPLIED, REJECTED), res
        if res.status == REJECTED:
            assert res.reason in ("not_a_member", "viewer_cannot_edit"), res

    def deliver(self, src: int, dst: int, seed: int) -> None:
        if src == dst:
            return
        rng = random.Random(seed)
        a, b = self.replicas[src], self.replicas[dst]
        batch = a.changes_since(b.heads()) if rng.random() < 0.5 else a.changes_since([])
        batch = [d for d in batch if rng.random() >= 0.3]
        batch += [d for d in batch if rng.random() < 0.3]
        rng.shuffle(batch)
        deliver(b, batch, self.now(), allow_transient=True)

    def remember(self) -> None:
        for i, r in enumerate(self.replicas):
            self.heads_seen.setdefault(i, []).append(r.heads())


edit_ = st.tuples(st.just("edit"), st.integers(0, 4), st.integers(0, 50))
grant_ = st.tuples(st.just("grant"), st.integers(0, 4), st.integers(0, 4),
                   st.sampled_from(["none", "viewer", "editor", "admin"]))
demote_ = st.tuples(st.just("grant"), st.just(0), st.integers(1, 4),
                    st.sampled_from(["none", "viewer", "editor"]))
backdate_ = st.tuples(st.just("backdate"), st.integers(1, 4), st.integers(0, 50))
deliver_ = st.tuples(st.just("deliver"), st.integers(0, 4), st.integers(0, 4),
                     st.integers(0, 99))
action = st.one_of(edit_, edit_, grant_, demote_, backdate_, backdate_, deliver_, deliver_,
                   st.tuples(st.just("tick"), st.floats(0.001, 2.0)))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(roles=st.lists(st.sampled_from(["viewer", "editor", "admin", "admin"]), min_size=2,
                      max_size=3),
       program=st.lists(action, min_size=10, max_size=50))
def test_random_grants_demotions_edits_and_backdating_converge_and_cut_offs_hold(
    roles: list[str], program: list[tuple[Any, ...]]
) -> None:
    room = make_room(roles, tag="prop-revoke")
    w = World(room.replicas, room.identities)
    n = len(w.replicas)
    w.remember()
    for act in program:
        kind = act[0]
        if kind == "edit":
            w.edit(act[1] % n, act[2])
        elif kind == "grant":
            w.grant(act[1] % n, act[2] % n, act[3])
        elif kind == "backdate":
            w.backdate(act[1] % n, act[2])
        elif kind == "deliver":
            w.deliver(act[1] % n, act[2] % n, act[3])
        else:
            w.t += act[1]
        w.remember()
    w.t += 100.0
    full_sync(w.replicas, w.now())
    reps = w.replicas
    assert_converged(reps)
    first = reps[0]
    retracted = first.retracted_changes()
    for r in reps[1:]:
        assert r.retracted_changes() == retracted
    assert first.state() == reference_state(first.changes_since([]), retracted)
    # No change past a live cut-off (that had not seen it) takes effect anywhere.
    changes = ids_of(first)
    for cid, member, cutoff in w.demotions:
        if cid in retracted:
            continue
        for xid, ch in changes.items():
            if ch.author == member and ch.seq > cutoff and cid not in ancestors(changes, xid):
                assert xid in retracted, (xid.hex()[:8], cutoff)
                created = [EntityId(member, op[1]) for op in ch.ops if op[0] == OP_CREATE]
                assert not any(first.exists(e) for e in created)


# --------------------------------------------------------------------------- decoding


_ELEM = st.one_of(st.none(), st.booleans(), st.integers(-3, 2**33), st.binary(max_size=40),
                  st.text(max_size=4))


@settings(max_examples=300, deadline=None)
@given(st.lists(_ELEM, min_size=0, max_size=7), st.sampled_from([5, 6]))
def test_role_and_revoke_invite_ops_decode_or_are_typed_errors(rest: list[Any],
                                                                code: int) -> None:
    """The new op shapes at the decoding trust boundary: valid, or a ``DecodeError``."""
    from protocol.change import INVITE_ID_BYTES, encode_change
    from protocol.errors import DecodeError

    author, member = ident("fuzz", 1), ident("fuzz", 2)
    data = encode_change(author=author.public_key, seq=2, deps=[b"\x01" * 32], hlc=5,
                         actors=[member.public_key], names=[], ops=[[code, *rest]],
                         room_id=b"\x02" * 32, sign=author.sign)
    try:
        ch = decode_change(data)
    except DecodeError:
        return
    op = ch.ops[0]
    if code == 6:
        assert len(op) == 2 and type(op[1]) is bytes and len(op[1]) == INVITE_ID_BYTES
    else:
        assert len(op) in (3, 4, 6) and op[1] == 0 and 0 <= op[2] <= 3
        if len(op) == 6:
            assert len(op[4]) == INVITE_ID_BYTES and 0 <= op[5] < 2**32 and op[2] >= 1
