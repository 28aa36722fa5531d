"""Byzantine members and strangers: every malicious change is refused with its exact reason,
leaves the replica exactly as it was, and never raises."""

from __future__ import annotations

import itertools
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meshnode.crdt import (
    APPLIED,
    BUFFERED,
    DUPLICATE,
    REJECTED,
    ROOT,
    ApplyResult,
    Equivocation,
    PermissionDenied,
    SceneReplica,
)
from meshnode.crdt.clock import hlc_from_seconds
from protocol.change import (
    OP_CREATE,
    OP_DELETE,
    OP_GENESIS,
    OP_MOVE,
    OP_ROLE,
    OP_SET,
    ROLE_ADMIN,
    ROLE_EDITOR,
    ROLE_NONE,
    ROLE_VIEWER,
    change_id,
    decode_change,
)

from .harness import (
    assert_converged,
    assert_tree_invariants,
    craft,
    deliver,
    full_sync,
    heads_hlc,
    ident,
    make_room,
    reference_state,
    sync_pair,
)

NOW = 1000.0
DECODE_REASONS = {"schema", "malformed_msgpack", "limit_exceeded", "too_large", "malformed"}


def frozen(r: SceneReplica) -> tuple:
    """Everything a rejected change must leave untouched."""
    return (
        r.state(),
        r.heads(),
        r.change_count(),
        r.buffered_count(),
        r.members(),
        len(r.equivocations),
    )


def assert_rejected(r: SceneReplica, data, reason: str, now: float = NOW) -> ApplyResult:
    """Offer ``data`` through ``apply`` and ``apply_many``: rejected for ``reason``, no effect."""
    before = frozen(r)
    res = r.apply(data, now)
    assert res.status == REJECTED, res
    assert res.reason == reason, res
    assert res.applied == ()
    assert frozen(r) == before
    # The same verdict again (cached or recomputed), also inside a batch.
    [again] = r.apply_many([data], now)
    assert (again.status, again.reason) == (REJECTED, reason)
    assert frozen(r) == before
    return res


@pytest.fixture
def room():
    """owner, editor, viewer, admin, admin; the owner's entity ``o_ent`` and the editor's
    ``e_ent`` known everywhere."""
    rm = make_room(["editor", "viewer", "admin", "admin"], now=NOW, tag="byz")
    o, ed, _vw, _ad, _ad2 = rm.replicas
    rm.o_ent = o.create_entity(ROOT, {"name": {"text": "owner's"}})
    data = o.commit(NOW)
    for r in rm.replicas[1:]:
        deliver(r, [data], NOW)
    rm.e_ent = ed.create_entity(ROOT, {"name": {"text": "editor's"}})
    data = ed.commit(NOW)
    for r in rm.replicas:
        deliver(r, [data], NOW)
    return rm


# --------------------------------------------------------------------------- signatures


def test_tampered_body_is_bad_signature(room):
    o, ed = room.replicas[:2]
    ed.create_entity(ROOT, {"name": {"text": "hello"}})
    data = ed.commit(NOW)
    pos = data.index(b"hello")
    tampered = data[:pos] + b"jello" + data[pos + 5 :]
    assert decode_change(tampered).ops  # still a well-formed change
    assert_rejected(o, tampered, "bad_signature")
    sig_flipped = data[:-1] + bytes([data[-1] ^ 1])
    assert_rejected(o, sig_flipped, "bad_signature")
    assert o.apply(data, NOW).status == APPLIED  # the genuine one is still welcome


def test_every_single_byte_corruption_is_refused(room):
    """Flip one bit at every position of a real change: always refused, never raises."""
    o, ed = room.replicas[:2]
    ed.set_field(room.e_ent, "transform", "position", [1.0, 2.0, 3.0])
    ed.create_entity(room.e_ent, {"name": {"text": "x"}})
    data = ed.commit(NOW)
    before = frozen(o)
    for i in range(len(data)):
        for bit in (0x01, 0x80):
            bad = data[:i] + bytes([data[i] ^ bit]) + data[i + 1 :]
            res = o.apply(bad, NOW)
            assert res.status == REJECTED, (i, res)
            assert res.reason in DECODE_REASONS | {"bad_signature"}, (i, res)
    assert frozen(o) == before


def test_forged_signature_claiming_another_author(room):
    o = room.owner
    mallory = ident("mallory")
    forged = craft(o, room.identities[1], [[OP_CREATE, 5, None]], sign=mallory.sign)
    assert decode_change(forged).author == room.identities[1].public_key
    assert_rejected(o, forged, "bad_signature")


def test_cross_room_replay_is_bad_signature():
    """Same owner and members in two rooms: a change from room A is refused in room B."""
    owner, bob = ident("xroom", 0), ident("xroom", 1)
    room_a = make_room(["editor"], identities=[owner, bob], tag="room A")
    room_b = make_room(["editor"], identities=[owner, bob], tag="room B")
    assert room_a.owner.room_id != room_b.owner.room_id
    bob_a = room_a.replicas[1]
    bob_a.create_entity(ROOT, {"name": {"text": "from A"}})
    data = bob_a.commit(NOW)
    assert_rejected(room_b.owner, data, "bad_signature")
    # Even re-signed by nobody: the same body with B's heads is a different change anyway.
    assert room_a.owner.apply(data, NOW).status == APPLIED


def test_foreign_genesis_and_misplaced_genesis(room):
    o = room.owner
    other = SceneReplica.create(room.identities[0], now=NOW, nonce=b"elsewhere")
    # Another room's genesis is signed for the empty room ID: not valid here.
    assert_rejected(o, other.genesis, "bad_signature")
    # A genesis-shaped change (no deps) signed for this room.
    g = craft(o, room.identities[0], [[OP_GENESIS, "x", b"n"]], deps=[], seq=1)
    assert_rejected(o, g, "foreign_genesis")
    m = craft(o, room.identities[0], [[OP_GENESIS, "x", b"n"]])
    assert_rejected(o, m, "misplaced_genesis")
    # The room's own genesis is simply known.
    res = o.apply(room.genesis, NOW)
    assert (res.status, res.reason) == (DUPLICATE, "already_known")


# --------------------------------------------------------------------------- replay


def test_replay_of_an_applied_change_is_a_duplicate(room):
    o, ed = room.replicas[:2]
    ed.create_entity(ROOT)
    data = ed.commit(NOW)
    assert o.apply(data, NOW).status == APPLIED
    before = frozen(o)
    for res in [o.apply(data, NOW), *o.apply_many([data, data], NOW)]:
        assert (res.status, res.reason, res.change_id) == (
            DUPLICATE,
            "already_known",
            change_id(data),
        )
    assert frozen(o) == before
    # Twice in one fresh batch: the first applies, the second is a duplicate.
    fresh = make_room(["editor"], tag="byz-dup", identities=room.identities[:2])
    fresh.replicas[1].create_entity(ROOT)
    d2 = fresh.replicas[1].commit(NOW)
    r1, r2 = fresh.owner.apply_many([d2, d2], NOW)
    assert r1.status == APPLIED and (r2.status, r2.reason) == (DUPLICATE, "already_known")
    # Re-delivering your own change to yourself is harmless too.
    assert ed.apply(data, NOW).status == DUPLICATE


# --------------------------------------------------------------------------- membership, roles


def test_change_from_a_non_member(room):
    o = room.owner
    stranger = ident("stranger")
    data = craft(o, stranger, [[OP_CREATE, 1, None]], seq=1)
    assert_rejected(o, data, "not_a_member")
    # With deps this replica lacks, a stranger is not even buffered (transient refusal).
    lost = craft(o, stranger, [[OP_CREATE, 1, None]], seq=1, deps=[b"\x42" * 32])
    assert_rejected(o, lost, "unknown_author")
    assert o.buffered_count() == 0


def test_viewer_cannot_edit(room):
    o, _ed, vw = room.replicas[:3]
    viewer = room.identities[2]
    for ops, actors, names in [
        ([[OP_CREATE, 1, None]], [], []),
        (
            [[OP_SET, [0, room.o_ent.counter], 0, 1, "x"]],
            [room.identities[0].public_key],
            ["name", "text"],
        ),
        ([[OP_CREATE, 1, None], [OP_ROLE, 0, ROLE_VIEWER]], [ident("newbie").public_key], []),
    ]:
        data = craft(o, viewer, ops, actors=actors, names=names)
        assert_rejected(o, data, "viewer_cannot_edit")
    with pytest.raises(PermissionDenied):
        vw.create_entity(ROOT)
    # A viewer's change made only of role ops gets past that check and fails the role table.
    data = craft(o, viewer, [[OP_ROLE, 0, ROLE_VIEWER]], actors=[ident("newbie").public_key])
    assert_rejected(o, data, "role_change_not_allowed")


def test_editor_cannot_change_another_members_entity(room):
    o = room.owner
    editor = room.identities[1]
    owner_key = room.identities[0].public_key
    ref = [0, room.o_ent.counter]
    for ops, names in [
        ([[OP_SET, ref, 0, 1, "mine now"]], ["name", "text"]),
        ([[OP_MOVE, ref, room.e_ent.counter]], []),
        ([[OP_DELETE, ref]], []),
        # All or nothing: a valid create before the bad op does not survive either.
        ([[OP_CREATE, 7, None], [OP_DELETE, ref]], []),
    ]:
        data = craft(o, editor, ops, actors=[owner_key], names=names)
        assert_rejected(o, data, "not_entity_owner")
    assert not o.exists((editor.public_key, 7))
    # The local API refuses the same edits up front.
    ed = room.replicas[1]
    with pytest.raises(PermissionDenied):
        ed.set_field(room.o_ent, "name", "text", "mine now")
    with pytest.raises(PermissionDenied):
        ed.delete(room.o_ent)


def test_admin_may_change_another_members_entity(room):
    o, ed, _vw, ad = room.replicas[:4]
    ad.set_field(room.e_ent, "name", "text", "admin was here")
    ad.move(room.e_ent, room.o_ent)
    data = ad.commit(NOW)
    for r in (o, ed):
        res = r.apply(data, NOW)
        assert res.status == APPLIED, res
        assert r.get_field(room.e_ent, "name", "text") == "admin was here"
        assert r.parent_of(room.e_ent) == room.o_ent
    # Crafted by hand as well: an admin deletes the owner's entity.
    admin = room.identities[3]
    data = craft(
        o, admin, [[OP_DELETE, [0, room.o_ent.counter]]], actors=[room.identities[0].public_key]
    )
    assert o.apply(data, NOW).status == APPLIED
    assert not o.exists(room.o_ent)


def test_editor_cannot_grant_roles(room):
    o = room.owner
    editor = room.identities[1]
    for member, role in [
        (ident("newbie").public_key, ROLE_VIEWER),
        (room.identities[2].public_key, ROLE_EDITOR),
        (room.identities[3].public_key, ROLE_NONE),
    ]:
        data = craft(o, editor, [[OP_ROLE, 0, role]], actors=[member])
        assert_rejected(o, data, "role_change_not_allowed")
    with pytest.raises(PermissionDenied):
        room.replicas[1].grant(ident("newbie").public_id, "viewer")


def test_admin_cannot_demote_owner_or_admins_or_make_admins(room):
    o = room.owner
    admin = room.identities[3]
    cases = [
        (room.identities[0].public_key, ROLE_NONE),  # demote the owner
        (room.identities[0].public_key, ROLE_VIEWER),
        (room.identities[4].public_key, ROLE_NONE),  # revoke another admin
        (room.identities[4].public_key, ROLE_EDITOR),  # demote another admin
        (room.identities[1].public_key, ROLE_ADMIN),  # promote an editor to admin
    ]
    for member, role in cases:
        data = craft(o, admin, [[OP_ROLE, 0, role]], actors=[member])
        assert_rejected(o, data, "role_change_not_allowed")
    ad = room.replicas[3]
    with pytest.raises(PermissionDenied):
        ad.revoke(room.identities[0].public_id)
    with pytest.raises(PermissionDenied):
        ad.grant(room.identities[4].public_id, "editor")
    with pytest.raises(PermissionDenied):
        ad.grant(room.identities[1].public_id, "admin")
    with pytest.raises(PermissionDenied):
        ad.grant(admin.public_id, "viewer")  # nobody changes their own role
    # What an admin may do: demote an editor, admit a newcomer.
    newbie = ident("newbie")
    data = craft(
        o,
        admin,
        [[OP_ROLE, 0, ROLE_VIEWER], [OP_ROLE, 1, ROLE_EDITOR]],
        actors=[room.identities[1].public_key, newbie.public_key],
    )
    assert o.apply(data, NOW).status == APPLIED
    assert o.role_of(room.identities[1].public_id) == "viewer"
    assert o.role_of(newbie.public_id) == "editor"


def test_revoked_editors_concurrent_change_is_retracted_later_one_rejected():
    room = make_room(["editor", "editor"], tag="byz-revoke")
    o, bob, carol = room.replicas
    bob_id = room.identities[1]
    o.revoke(bob_id.public_id)
    revoke = o.commit(NOW + 1)
    # Bob has not seen the revocation: his edit is past the cut-off it names (his last seq
    # the owner had seen), so it is retracted everywhere: kept as a tombstone, no effect.
    e1 = bob.create_entity(ROOT, {"name": {"text": "concurrent"}})
    c1 = bob.commit(NOW + 2)
    # Bob then learns of it; his replica refuses to edit ...
    deliver(bob, [revoke], NOW + 3)
    with pytest.raises(PermissionDenied):
        bob.create_entity(ROOT)
    # ... and a change that has seen it (hand-made, as a malicious Bob would) is refused.
    c2 = craft(bob, bob_id, [[OP_CREATE, 2, None]], seq=2, now=NOW + 4)
    assert set(decode_change(c2).deps) == {change_id(revoke), change_id(c1)}
    # Carol and the owner receive everything in different orders and agree.
    deliver(carol, [c1], NOW + 5)
    deliver(carol, [revoke], NOW + 5)
    assert_rejected(carol, c2, "not_a_member", now=NOW + 5)
    res = o.apply_many([c2, c1], NOW + 5)
    assert [r.status for r in res] == [REJECTED, APPLIED]
    assert res[0].reason == "not_a_member"  # judged after c1 was applied in the same batch
    assert res[1].reason == "revoked"
    assert_rejected(bob, c2, "not_a_member", now=NOW + 5)
    for r in (o, bob, carol):
        assert not r.exists(e1)
        assert r.retraction(change_id(c1)) == "revoked"
        assert not r.exists((bob_id.public_key, 2))
        assert r.role_of(bob_id.public_id) == "none"
        assert not r.has_change(change_id(c2))
    assert_converged([o, bob, carol])


def test_revoked_members_change_arriving_before_its_deps_is_refused_transiently():
    room = make_room(["editor", "editor"], tag="byz-revoke2")
    o, bob, carol = room.replicas
    o.revoke(room.identities[1].public_id)
    revoke = o.commit(NOW + 1)
    bob.create_entity(ROOT)
    c1 = bob.commit(NOW + 2)
    bob.create_entity(ROOT)
    c2 = bob.commit(NOW + 3)  # depends on c1; neither has seen the revocation
    deliver(carol, [revoke], NOW + 4)
    # Carol now thinks Bob is no member, so she will not buffer c2 for him ...
    assert_rejected(carol, c2, "unknown_author", now=NOW + 4)
    # ... but the refusal is transient: with c1 there, c2 is judged on its past and stands.
    res = carol.apply_many([c2, c1], NOW + 4)
    assert [r.status for r in res] == [APPLIED, APPLIED]
    full_sync([o, bob, carol], NOW + 5)


# --------------------------------------------------------------------------- clocks, seqs


def test_future_timestamp_is_refused_then_accepted_when_time_catches_up(room):
    o, ed = room.replicas[:2]
    ed.create_entity(ROOT, {"name": {"text": "from the future"}})
    data = ed.commit(NOW + 120.0)  # the editor's clock runs two minutes fast
    assert_rejected(o, data, "future_timestamp", now=NOW)
    assert_rejected(o, data, "future_timestamp", now=NOW + 59.0)
    # Transient: not cached; once our clock is within the 60 s bound it is fine.
    res = o.apply(data, NOW + 60.0)
    assert res.status == APPLIED, res
    assert o.rejections["future_timestamp"] == 4


def test_far_future_crafted_timestamp(room):
    o = room.owner
    data = craft(o, room.identities[1], [[OP_CREATE, 9, None]], hlc=2**62)
    assert_rejected(o, data, "future_timestamp")


def test_bad_seq_and_clock_not_after_deps(room):
    o = room.owner
    editor = room.identities[1]
    assert_rejected(o, craft(o, editor, [[OP_CREATE, 9, None]], seq=5), "bad_seq")
    assert_rejected(o, craft(o, editor, [[OP_CREATE, 9, None]], seq=1), "bad_seq")
    assert_rejected(
        o, craft(o, editor, [[OP_CREATE, 9, None]], hlc=heads_hlc(o)), "clock_not_after_deps"
    )


def test_references_to_unknown_or_existing_entities(room):
    o = room.owner
    editor = room.identities[1]
    ek = editor.public_key
    cases = [
        ([[OP_SET, 99, 0, 1, 1]], [], ["a", "b"], "unknown_entity"),
        ([[OP_MOVE, room.e_ent.counter, 99]], [], [], "unknown_entity"),
        ([[OP_CREATE, 10, 99]], [], [], "unknown_entity"),
        ([[OP_DELETE, 99]], [], [], "unknown_entity"),
        ([[OP_CREATE, room.e_ent.counter, None]], [], [], "entity_exists"),
        ([[OP_CREATE, 10, None], [OP_CREATE, 10, None]], [], [], "entity_exists"),
        ([[OP_SET, None, 0, 1, 1]], [], ["a", "b"], "root_is_immutable"),
    ]
    for ops, actors, names, reason in cases:
        assert_rejected(o, craft(o, editor, ops, actors=actors, names=names), reason)
    # An entity created in a change outside this change's causal past is unknown to it.
    ed = room.replicas[1]
    ed.create_entity(ROOT)
    hidden = ed.commit(NOW)
    o.apply(hidden, NOW)
    admin = room.identities[3]
    c = decode_change(hidden)
    data = craft(
        o, admin, [[OP_DELETE, [0, c.ops[0][1]]]], actors=[ek], deps=c.deps
    )  # deps from before ``hidden``
    assert_rejected(o, data, "unknown_entity")
    assert o.exists((ek, c.ops[0][1]))


# --------------------------------------------------------------------------- equivocation


def _equivocating_room():
    """Bob runs two replicas with the SAME identity; each signs a different seq 1."""
    room = make_room(["editor", "admin"], tag="byz-equiv")
    o, bob1, carol = room.replicas
    bob2 = SceneReplica.from_genesis(room.genesis, room.identities[1])
    deliver(bob2, o.changes_since(bob2.heads()), NOW)
    e1 = bob1.create_entity(ROOT, {"name": {"text": "one"}, "transform": {"position": [1.0]}})
    x1 = bob1.commit(NOW + 1)
    e2 = bob2.create_entity(ROOT, {"name": {"text": "two"}})
    bob2.move(e2, ROOT)
    x2 = bob2.commit(NOW + 2)
    assert e1 == e2  # the same entity ID, minted twice
    c1, c2 = decode_change(x1), decode_change(x2)
    assert (c1.author, c1.seq) == (c2.author, c2.seq) and x1 != x2
    return room, (o, bob1, carol, bob2), (x1, x2), e1


def test_equivocation_is_recorded_and_both_changes_applied():
    room, (o, bob1, carol, bob2), (x1, x2), ent = _equivocating_room()
    deliver(o, [x1], NOW + 3)
    res = o.apply(x2, NOW + 3)
    assert res.status == APPLIED
    assert o.equivocations == [
        Equivocation(room.identities[1].public_key, 1, (change_id(x1), change_id(x2)))
    ]
    assert set(o.heads()) >= {change_id(x1), change_id(x2)}
    deliver(carol, [x2, x1], NOW + 3)
    assert len(carol.equivocations) == 1
    assert set(carol.equivocations[0].change_ids) == {change_id(x1), change_id(x2)}
    assert carol.state() == o.state()
    # Later honest edits on top of both branches, then anti-entropy: everyone agrees,
    # including both of Bob's replicas.
    carol.set_field(ent, "name", "text", "carol decides")
    carol.create_entity(ent)
    deliver(o, [carol.commit(NOW + 4)], NOW + 4)
    full_sync([o, bob1, carol, bob2], NOW + 5)
    assert o.get_field(ent, "name", "text") == "carol decides"
    for r in (o, bob1, carol, bob2):
        assert len(r.equivocations) == 1
    # After the fork, Bob (from either replica) can still make valid changes.
    bob1.create_entity(ROOT)
    data = bob1.commit(NOW + 6)
    assert decode_change(data).seq == 2
    for r in (o, carol, bob2):
        assert r.apply(data, NOW + 6).status == APPLIED
    assert_converged([o, carol, bob2, bob1])


def test_equivocation_converges_in_every_delivery_order():
    room, (o, _bob1, carol, _bob2), (x1, x2), ent = _equivocating_room()
    # Honest changes built on each branch.
    deliver(o, [x1], NOW + 3)
    o.set_field(ent, "name", "text", "owner on branch one")
    y1 = o.commit(NOW + 4)
    deliver(carol, [x2], NOW + 3)
    carol.create_entity(ent, {"name": {"text": "carol on branch two"}})
    y2 = carol.commit(NOW + 4)
    changes = [x1, x2, y1, y2]
    states, heads = set(), set()
    for k, order in enumerate(itertools.permutations(changes)):
        r = SceneReplica.from_genesis(room.genesis, ident("observer", k))
        deliver(r, o.changes_since([])[:2], NOW)  # genesis + grants
        for j, data in enumerate(order):
            if j % 2:
                deliver(r, [data], NOW + 5)
            else:
                deliver(r, [data], NOW + 5, many=False)
        assert r.buffered_count() == 0
        assert len(r.equivocations) == 1
        assert_tree_invariants(r)
        states.add(repr(sorted(r.state().items())))
        heads.add(tuple(r.heads()))
    assert len(states) == 1 and len(heads) == 1
    # And in one batch, in any order.
    for order in itertools.islice(itertools.permutations(changes), 0, 24, 5):
        r = SceneReplica.from_genesis(room.genesis, ident("batch"))
        deliver(r, o.changes_since([])[:2], NOW)
        deliver(r, list(order), NOW + 5)
        assert repr(sorted(r.state().items())) in states


# --------------------------------------------------------------------------- missing deps


def test_changes_whose_deps_never_arrive_are_buffered_boundedly():
    room = make_room(["editor", "editor"], tag="byz-buffer", max_buffered_changes=5)
    o, bob, carol = room.replicas
    bob.create_entity(ROOT)
    withheld = bob.commit(NOW)
    chain = []
    for k in range(9):
        bob.create_entity(ROOT, {"name": {"text": f"#{k}"}})
        chain.append(bob.commit(NOW + k * 0.01))
    # Plus changes that depend on a hash nobody has.
    phantom = b"\xab" * 32
    ghosts = [
        craft(
            o,
            room.identities[1],
            [[OP_CREATE, 50 + k, None]],
            seq=3 + k,
            deps=[phantom],
            hlc=hlc_from_seconds(NOW) + k,
        )
        for k in range(3)
    ]
    before_state = o.state()
    for data in chain + ghosts:
        res = o.apply(data, NOW + 1)
        assert (res.status, res.reason) == (BUFFERED, "missing_deps"), res
        assert o.buffered_count() <= 5
    assert o.buffered_count() == 5
    assert o.state() == before_state
    assert phantom in o.missing_deps()
    # A buffered change offered again is a duplicate, not a second buffer entry.
    res = o.apply(ghosts[-1], NOW + 1)
    assert (res.status, res.reason) == (DUPLICATE, "already_known")
    # Normal edits keep flowing.
    carol.create_entity(ROOT, {"name": {"text": "life goes on"}})
    res = o.apply(carol.commit(NOW + 2), NOW + 2)
    assert res.status == APPLIED
    o.create_entity(ROOT)
    assert o.commit(NOW + 2) is not None
    # The withheld change finally arrives: it applies; what was evicted comes back by sync.
    res = o.apply(withheld, NOW + 3)
    assert res.status == APPLIED
    for src, dst in itertools.permutations([o, bob, carol], 2):
        sync_pair(src, dst, NOW + 4)
    for src, dst in itertools.permutations([o, bob, carol], 2):
        sync_pair(src, dst, NOW + 4)
    assert o.heads() == bob.heads() == carol.heads()
    assert o.state() == bob.state() == carol.state()
    assert all(o.has_change(change_id(d)) for d in chain)
    # Only the ghosts are left, still waiting for a hash that will never come.
    assert o.missing_deps() == {phantom}
    assert o.buffered_count() == len(ghosts)


def test_buffer_bounded_in_bytes_too():
    room = make_room(["editor"], tag="byz-buffer-bytes", max_buffered_bytes=2_000)
    o, bob = room.replicas
    bob.create_entity(ROOT)
    bob.commit(NOW)  # withheld
    for _ in range(10):
        bob.create_entity(ROOT, {"blob": {"data": "x" * 500}})
        res = o.apply(bob.commit(NOW), NOW)
        assert res.status == BUFFERED
        assert o.buffered_count() <= 4
    full_sync([o, bob], NOW + 1)


def test_buffered_change_that_turns_out_invalid_is_dropped(room):
    o, ed = room.replicas[:2]
    editor = room.identities[1]
    ed.create_entity(ROOT)
    first = ed.commit(NOW)
    # Built on ``first`` (withheld), but touches the owner's entity: invalid.
    bad = craft(
        ed, editor, [[OP_DELETE, [0, room.o_ent.counter]]], actors=[room.identities[0].public_key]
    )
    res = o.apply(bad, NOW)
    assert res.status == BUFFERED
    res = o.apply(first, NOW)
    assert res.status == APPLIED and res.applied == (change_id(first),)
    assert o.buffered_count() == 0
    assert o.exists(room.o_ent)
    assert o.rejections.get("not_entity_owner") == 1
    assert_rejected(o, bad, "not_entity_owner")


# --------------------------------------------------------------------------- garbage


def test_garbage_and_truncated_changes_never_raise(room):
    o, ed = room.replicas[:2]
    ed.create_entity(ROOT, {"name": {"text": "hello"}})
    data = ed.commit(NOW)
    cases = [
        (b"", "schema"),
        (b"\x00", "schema"),
        (b"\x00" * 64, "schema"),
        (b"\x00" * 65, "schema"),
        (b"\xc1" * 100, "malformed_msgpack"),
        (data[: len(data) // 2], "malformed_msgpack"),
        (data[:-1], "malformed_msgpack"),
        (data + b"x", "malformed_msgpack"),
        (b"\x00" * (300 * 1024), "too_large"),
        ("not bytes", "schema"),
        (None, "schema"),
        (12345, "schema"),
    ]
    for junk, reason in cases:
        res = o.apply(junk, NOW)  # type: ignore[arg-type]
        assert (res.status, res.reason, res.change_id) == (REJECTED, reason, None), junk
    for n in range(0, len(data), 7):
        res = o.apply(data[:n], NOW)
        assert res.status == REJECTED and res.reason in DECODE_REASONS
    # A batch mixing junk and a good change: each gets its own verdict.
    results = o.apply_many([b"junk", data, data[:10]], NOW)
    assert [r.status for r in results] == [REJECTED, APPLIED, REJECTED]


@settings(deadline=None, max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(junk=st.binary(max_size=400))
def test_random_bytes_are_rejected(junk):
    o = _shared_room().owner
    before = frozen(o)
    res = o.apply(junk, NOW)
    assert res.status == REJECTED
    assert res.reason in DECODE_REASONS | {"bad_signature"}
    assert frozen(o) == before


@settings(deadline=None, max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32), n=st.integers(1, 8))
def test_random_mutations_of_a_valid_change_are_rejected(seed, n):
    room = _shared_room()
    o, data = room.owner, room.valid_change
    rng = random.Random(seed)
    bad = bytearray(data)
    for _ in range(n):
        kind = rng.randrange(3)
        pos = rng.randrange(len(bad))
        if kind == 0:
            bad[pos] ^= 1 + rng.randrange(255)
        elif kind == 1:
            del bad[pos]
        else:
            bad.insert(pos, rng.randrange(256))
    bad = bytes(bad)
    if bad == data:
        return
    before = frozen(o)
    res = o.apply(bad, NOW)
    assert res.status == REJECTED, res
    assert res.reason in DECODE_REASONS | {"bad_signature"}
    assert frozen(o) == before


_SHARED: list = []


def _shared_room():
    """One room reused by the hypothesis tests above (it must stay unchanged anyway)."""
    if not _SHARED:
        rm = make_room(["editor"], tag="byz-shared")
        rm.replicas[1].create_entity(ROOT, {"name": {"text": "x"}, "t": {"p": [1.0, 2.0]}})
        rm.valid_change = rm.replicas[1].commit(NOW)
        _SHARED.append(rm)
    return _SHARED[0]


def test_honest_replicas_agree_after_a_barrage(room):
    """Everything above thrown at two replicas in different orders: they stay equal."""
    o, ed, _vw, ad, ad2 = room.replicas
    editor, owner_key = room.identities[1], room.identities[0].public_key
    junk = [
        craft(o, editor, [[OP_DELETE, [0, room.o_ent.counter]]], actors=[owner_key]),
        craft(o, ident("stranger"), [[OP_CREATE, 1, None]], seq=1),
        craft(o, room.identities[2], [[OP_CREATE, 1, None]]),
        craft(o, editor, [[OP_CREATE, 9, None]], seq=7),
        b"\x00" * 70,
    ]
    ad.set_field(room.o_ent, "name", "text", "admin edit")
    good = [ad.commit(NOW)]
    for order, r in ((junk + good, ad2), (good[::-1] + junk[::-1], o)):
        results = r.apply_many(order, NOW)
        assert sum(x.status == APPLIED for x in results) == 1
    full_sync([o, ed, ad, ad2], NOW)
    assert o.state() == reference_state(o.changes_since([]))


# --------------------------------------------------------------------------- equivocation + deps


def _observers(room, n=2):
    out = []
    for k in range(n):
        r = SceneReplica.from_genesis(room.genesis, ident("observer", 100 + k))
        deliver(r, room.owner.changes_since([]), NOW)
        out.append(r)
    return out


def _offer_in_order(r: SceneReplica, batches) -> None:
    for batch in batches:
        for res in r.apply_many(batch, NOW + 10):
            assert res.status in (APPLIED, BUFFERED, DUPLICATE, REJECTED)


def _anti_entropy(p: SceneReplica, q: SceneReplica) -> None:
    for _ in range(3):
        q.apply_many(p.changes_since(q.heads()), NOW + 10)
        p.apply_many(q.changes_since(p.heads()), NOW + 10)


def test_equivocation_cannot_split_honest_replicas_via_entity_references():
    """BUG (reported, see the xfail reason): an editor equivocates at seq 1 -- x1 creates
    entity (bob, 1), x2 creates (bob, 7) -- and then signs z (seq 2, deps = [x2]) that sets
    a field of (bob, 1), an entity that is NOT in z's causal past.

    ``_integrate`` decides "is this entity in the change's past?" by version vector
    (creation seq <= vv[creator]), which cannot tell x1 from x2. A replica that already has
    x1 accepts z; one that gets z before x1 rejects it (unknown_entity, and caches that).
    The two honest replicas then never converge, whatever anti-entropy does."""
    room = make_room(["editor"], tag="byz-split")
    o, bob_r = room.replicas
    bob = room.identities[1]
    bob_r.create_entity(ROOT)
    x1 = bob_r.commit(NOW + 1)
    x2 = craft(o, bob, [[OP_CREATE, 7, None]], seq=1)
    z = craft(
        o,
        bob,
        [[OP_SET, 1, 0, 1, "boom"]],
        names=["c", "f"],
        seq=2,
        deps=[change_id(x2)],
        hlc=decode_change(x2).hlc + 1,
    )
    p, q = _observers(room)
    _offer_in_order(p, [[x1], [x2], [z]])
    _offer_in_order(q, [[x2], [z], [x1], [z]])
    _anti_entropy(p, q)
    assert p.heads() == q.heads()
    assert p.state() == q.state()
    # z's verdict must not depend on delivery order; judged on its causal past it is invalid.
    assert not p.has_change(change_id(z)) and not q.has_change(change_id(z))


def test_equivocating_admin_cannot_split_honest_replicas_via_grants():
    """Same BUG through roles: admin equivocates at seq 1 -- a1 admits carol as editor, a2
    admits dave -- then carol's change depends only on a2 (a branch where she is no member).
    ``RoleBook.role_in_past`` counts a grant when vv[grantor] >= its seq, so a replica that
    has a1 accepts carol's change and one that has not refuses it."""
    room = make_room(["admin"], tag="byz-split-roles")
    o = room.owner
    admin, carol, dave = room.identities[1], ident("carol"), ident("dave")
    a1 = craft(o, admin, [[OP_ROLE, 0, ROLE_EDITOR]], actors=[carol.public_key], seq=1)
    a2 = craft(
        o,
        admin,
        [[OP_ROLE, 0, ROLE_EDITOR]],
        actors=[dave.public_key],
        seq=1,
        hlc=decode_change(a1).hlc + 5,
    )
    c = craft(
        o, carol, [[OP_CREATE, 1, None]], seq=1, deps=[change_id(a2)], hlc=decode_change(a2).hlc + 1
    )
    p, q = _observers(room)
    _offer_in_order(p, [[a1], [a2], [c]])
    _offer_in_order(q, [[a2], [c], [a1], [c]])
    _anti_entropy(p, q)
    assert p.heads() == q.heads()
    assert p.state() == q.state()
    assert not p.has_change(change_id(c)) and not q.has_change(change_id(c))


def test_actor_given_as_dep_index_must_name_another_distinct_author(room):
    """An actor may be sent as the index of a dep whose author it is; it must still be
    neither the change's author nor a repeat of another actor."""
    o, ed = room.replicas[:2]
    editor, owner_key = room.identities[1], room.identities[0].public_key
    # A dep authored by the owner and one authored by the editor itself.
    o.set_field(room.o_ent, "name", "text", "fresh")
    by_owner = o.commit(NOW)
    deliver(ed, [by_owner], NOW)
    ed.create_entity(ROOT)
    by_editor = ed.commit(NOW)  # depends on by_owner
    deliver(o, [by_editor], NOW)
    o.create_entity(ROOT)
    deliver(ed, [o.commit(NOW)], NOW)
    ed.create_entity(ROOT)
    deliver(o, [ed.commit(NOW)], NOW)
    # Make the two heads be one change by each author.
    o.create_entity(ROOT)
    head_o = o.commit(NOW)
    ed.create_entity(ROOT)
    head_e = ed.commit(NOW)
    deliver(o, [head_e], NOW)
    deps = sorted([change_id(head_o), change_id(head_e)])
    own_index = deps.index(change_id(head_e))
    owner_index = deps.index(change_id(head_o))
    ref = [0, room.o_ent.counter]
    hlc = heads_hlc(o) + 1
    self_actor = craft(o, editor, [[OP_MOVE, [0, 1], None]], deps=deps, hlc=hlc, actors=[own_index])
    assert_rejected(o, self_actor, "bad_actor")
    twice = craft(
        o, editor, [[OP_MOVE, [1, 1], None]], deps=deps, hlc=hlc, actors=[owner_key, owner_index]
    )
    assert_rejected(o, twice, "bad_actor")
    # Used properly, the index names the owner: an editor still may not touch its entity.
    proper = craft(o, editor, [[OP_DELETE, ref]], deps=deps, hlc=hlc, actors=[owner_index])
    assert_rejected(o, proper, "not_entity_owner")


def test_equivocators_locally_created_entity_referenced_later_does_not_crash():
    """Bob (admin) runs two replicas with one identity. bob1 creates entity (bob, 1) through
    the local API; its twin x2 (same seq) only edits the owner's entity. Once bob1 holds both,
    an honest change that references (bob, 1) must be judged (here: applied), not crash
    the replica: the check for "created in this change's past" must know the local commit."""
    room = make_room(["admin", "admin"], tag="byz-eq-local")
    o, bob1, carol = room.replicas
    owners = o.create_entity(ROOT)
    c0 = o.commit(NOW)
    for r in (bob1, carol):
        deliver(r, [c0], NOW)
    bob2 = SceneReplica.from_genesis(room.genesis, room.identities[1])
    deliver(bob2, o.changes_since([]), NOW)
    ent = bob1.create_entity(ROOT)
    x1 = bob1.commit(NOW + 1)
    bob2.set_field(owners, "n", "t", "twin")
    x2 = bob2.commit(NOW + 2)
    deliver(carol, [x1], NOW + 3)
    carol.set_field(ent, "n", "t", "carol")
    y = carol.commit(NOW + 4)
    assert bob1.apply(x2, NOW + 5).status == APPLIED
    assert len(bob1.equivocations) == 1
    res = bob1.apply(y, NOW + 5)  # must not raise
    assert res.status == APPLIED, res
    assert bob1.get_field(ent, "n", "t") == "carol"
    full_sync([o, bob1, carol, bob2], NOW + 6)


def test_equivocation_after_a_snapshot_does_not_crash():
    """Entities a replica knows only from a snapshot, whose creator then equivocates."""
    room = make_room(["admin", "admin"], tag="byz-eq-snap")
    o, bob1, carol = room.replicas
    ent = bob1.create_entity(ROOT)
    x0 = bob1.commit(NOW)
    for r in (o, carol):
        deliver(r, [x0], NOW)
    late = SceneReplica.from_snapshot(o.snapshot(), ident("late"))
    bob2 = SceneReplica.from_snapshot(o.snapshot(), room.identities[1])
    # Twins at seq 2: one sets a field, the other creates something else.
    bob1.set_field(ent, "n", "t", "one")
    x1 = bob1.commit(NOW + 1)
    bob2.create_entity(ROOT)
    x2 = bob2.commit(NOW + 2)
    deliver(carol, [x1, x2], NOW + 3)
    carol.set_field(ent, "n", "t", "carol")
    y = carol.commit(NOW + 4)
    results = late.apply_many([x1, x2, y], NOW + 5)  # must not raise
    assert [r.status for r in results] == [APPLIED, APPLIED, APPLIED], results
    assert late.get_field(ent, "n", "t") == "carol"
    assert late.state() == carol.state()
