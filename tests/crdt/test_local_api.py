"""The local editing API of ``SceneReplica``: what the docs promise, and its errors."""

from __future__ import annotations

import math

import pytest

from meshnode.crdt import (
    APPLIED,
    ROOT,
    BatchFull,
    EntityId,
    PermissionDenied,
    SceneReplica,
)
from meshnode.identity import Identity
from protocol.change import decode_change
from protocol.errors import DecodeError
from protocol.limits import Limits

from .harness import assert_tree_invariants, deliver, ident, make_room, reference_state

NOW = 1000.0


def test_readme_snippet_works_as_written():
    owner, bob = Identity.generate(), Identity.generate()
    room = SceneReplica.create(owner, now=0.0, nonce=b"readme")
    peer = SceneReplica.from_genesis(room.genesis, bob)
    room.grant(bob.public_id, "editor")
    e = room.create_entity(
        parent=ROOT, components={"name": {"text": "cube"}, "transform": {"position": [0, 0, 0]}}
    )
    new_parent = room.create_entity(parent=ROOT)
    room.set_field(e, "transform", "position", [1.0, 2.0, 3.0])
    room.move(e, new_parent)
    assert room.parent_of(e) == new_parent
    assert room.get_field(e, "transform", "position") == [1.0, 2.0, 3.0]
    room.delete(e)
    assert not room.exists(e) and room.parent_of(e) is None
    data = room.commit(now=1.0)
    assert isinstance(data, bytes)
    res = peer.apply(data, now=1.0)
    assert res.status == APPLIED
    assert peer.heads() == room.heads()
    assert room.changes_since(peer.heads()) == []
    assert peer.state() == room.state()
    assert room.state() == {str(new_parent): {"parent": "root", "components": {}}}
    assert peer.role_of(bob.public_id) == "editor"
    assert peer.members() == {owner.public_id: "owner", bob.public_id: "editor"}
    assert peer.room_id == room.room_id and peer.owner == owner.public_key
    # And the other way round.
    f = peer.create_entity(new_parent, {"name": {"text": "bob's"}})
    res = room.apply(peer.commit(now=2.0), now=2.0)
    assert res.status == APPLIED
    assert room.state() == peer.state()
    assert room.state()[str(f)] == {
        "parent": str(new_parent),
        "components": {"name": {"text": "bob's"}},
    }


def test_state_shape_and_reads():
    room = make_room([], tag="api-state")
    o = room.owner
    assert o.state() == {} and o.entities() == []
    a = o.create_entity(ROOT, {"name": {"text": "a"}, "meta": {"tags": ["x", {"k": 1}]}})
    b = o.create_entity(a)
    assert o.state() == {
        str(a): {
            "parent": "root",
            "components": {"name": {"text": "a"}, "meta": {"tags": ["x", {"k": 1}]}},
        },
        str(b): {"parent": str(a), "components": {}},
    }
    assert sorted(o.entities()) == sorted([a, b])
    assert o.get_field(a, "name", "missing") is None
    assert o.get_field(b, "name", "text") is None
    # Reads are copies: mutating them (or the value passed in) does not change the scene.
    o.get_field(a, "meta", "tags")[1]["k"] = 2
    o.state()[str(a)]["components"]["meta"]["tags"].append("y")
    assert o.get_field(a, "meta", "tags") == ["x", {"k": 1}]
    vec = [1.0, 2.0, 3.0]
    o.set_field(a, "transform", "position", vec)
    vec[0] = 99.0
    nested = {"b": [1, 2], "a": None}
    o.set_field(a, "meta", "nested", nested)
    nested["b"].append(3)
    assert o.get_field(a, "transform", "position") == [1.0, 2.0, 3.0]
    assert o.get_field(a, "meta", "nested") == {"a": None, "b": [1, 2]}
    o.commit(NOW)
    assert o.state() == reference_state(o.changes_since([]))


def test_move_into_own_descendant_is_a_value_error():
    o = make_room([], tag="api-cycle").owner
    a = o.create_entity(ROOT)
    b = o.create_entity(a)
    c = o.create_entity(b)
    before = o.state()
    for ent, target in [(a, a), (a, b), (a, c), (b, c)]:
        with pytest.raises(ValueError):
            o.move(ent, target)
    assert o.state() == before
    with pytest.raises(ValueError):
        o.move(ROOT, a)
    with pytest.raises(ValueError):
        o.delete(ROOT)
    o.move(c, ROOT)  # fine
    o.move(a, c)  # now fine too
    assert o.parent_of(a) == c
    assert_tree_invariants(o)


def test_edits_of_deleted_or_unknown_entities():
    o = make_room([], tag="api-dead").owner
    a = o.create_entity(ROOT)
    child = o.create_entity(a)
    o.delete(a)
    assert not o.exists(child)
    with pytest.raises(ValueError):
        o.move(a, ROOT)
    with pytest.raises(ValueError):
        o.create_entity(a)
    with pytest.raises(ValueError):
        o.move(child, ROOT)
    with pytest.raises(ValueError):
        o.delete(a)
    ghost = EntityId(o.identity.public_key, 999)
    with pytest.raises(ValueError):
        o.set_field(ghost, "name", "text", "x")
    with pytest.raises(ValueError):
        o.create_entity(ghost)
    with pytest.raises(TypeError):
        o.create_entity("root")  # type: ignore[arg-type]


def test_editing_as_viewer_or_stranger_is_permission_denied():
    room = make_room(["viewer", "editor"], tag="api-perm")
    o, vw, ed = room.replicas
    ent = o.create_entity(ROOT)
    other = o.create_entity(ROOT)
    deliver(vw, [o.commit(NOW)], NOW)
    deliver(ed, vw.changes_since(ed.heads()), NOW)
    stranger = SceneReplica.from_genesis(room.genesis, ident("stranger"))
    deliver(stranger, o.changes_since(stranger.heads()), NOW)
    for r in (vw, stranger):
        before = r.state()
        with pytest.raises(PermissionDenied):
            r.create_entity(ROOT)
        with pytest.raises(PermissionDenied):
            r.set_field(ent, "name", "text", "x")
        with pytest.raises(PermissionDenied):
            r.move(ent, other)
        with pytest.raises(PermissionDenied):
            r.delete(ent)
        with pytest.raises(PermissionDenied):
            r.grant(room.identities[2].public_id, "viewer")
        assert r.pending_ops == 0 and r.commit(NOW) is None
        assert r.state() == before
    # An editor may not touch the owner's entity, nor hand out roles.
    with pytest.raises(PermissionDenied):
        ed.set_field(ent, "name", "text", "x")
    with pytest.raises(PermissionDenied):
        ed.grant(room.identities[1].public_id, "editor")
    with pytest.raises(PermissionDenied):
        o.grant(o.identity.public_id, "viewer")
    with pytest.raises(ValueError):
        o.grant(room.identities[1].public_id, "owner")
    with pytest.raises(ValueError):
        o.grant(room.identities[1].public_id, "superuser")
    with pytest.raises(ValueError):
        o.grant(b"short", "viewer")


@pytest.mark.parametrize(
    "value",
    [
        math.nan,
        math.inf,
        -math.inf,
        [1.0, math.nan, 2.0],
        {"a": [math.inf]},
        [[math.nan]],
        b"bytes",
        {1: "non-string key"},
        object(),
        2**64,
        -(2**63) - 1,
        [[[[[[[[[["too deep"]]]]]]]]]],
    ],
)
def test_values_the_wire_cannot_carry_are_value_errors(value):
    o = make_room([], tag="api-nan").owner
    ent = o.create_entity(ROOT)
    before = o.state()
    with pytest.raises(ValueError):
        o.set_field(ent, "c", "f", value)
    assert o.state() == before
    o.commit(NOW)
    assert o.state() == reference_state(o.changes_since([]))


@pytest.mark.parametrize("name", ["", "x" * 65, 5])
def test_bad_component_or_field_names(name):
    o = make_room([], tag="api-names").owner
    ent = o.create_entity(ROOT)
    with pytest.raises((ValueError, TypeError)):
        o.set_field(ent, name, "f", 1)  # type: ignore[arg-type]
    with pytest.raises((ValueError, TypeError)):
        o.set_field(ent, "c", name, 1)  # type: ignore[arg-type]


def test_values_round_trip_through_the_wire():
    room = make_room(["editor"], tag="api-values")
    o, peer = room.replicas
    ent = o.create_entity(ROOT)
    vals = {
        "none": None,
        "t": True,
        "f": False,
        "zero": 0,
        "neg": -(2**63),
        "big": 2**64 - 1,
        "float": -0.5,
        "str": "héllo ✓",
        "empty": "",
        "list": [1, "a", None, [2.5]],
        "map": {"z": 1, "a": {"b": [True]}},
        "vec": [0.0, -1.5, 1e300],
        "tuple": (1, 2),
    }
    for k, v in vals.items():
        o.set_field(ent, "c", k, v)
    res = peer.apply(o.commit(NOW), NOW)
    assert res.status == APPLIED
    got = peer.state()[str(ent)]["components"]["c"]
    assert got == {**vals, "tuple": [1, 2]}
    assert type(got["t"]) is bool and type(got["float"]) is float
    assert list(got["map"]) == ["a", "z"]  # canonical key order
    assert peer.state() == o.state()


def test_commit_with_nothing_pending_is_none():
    o = make_room([], tag="api-empty").owner
    heads = o.heads()
    assert o.pending_ops == 0
    assert o.commit(NOW) is None
    o.discard()  # harmless
    assert o.heads() == heads
    o.create_entity(ROOT)
    assert o.pending_ops == 1
    assert o.commit(NOW) is not None
    assert o.commit(NOW) is None


def test_later_write_in_one_batch_wins_and_ops_are_coalesced():
    room = make_room(["editor"], tag="api-coalesce")
    o, peer = room.replicas
    ent = o.create_entity(ROOT)
    o.set_field(ent, "t", "p", [1.0])
    o.set_field(ent, "t", "p", [2.0])
    o.grant(room.identities[1].public_id, "none")
    o.grant(room.identities[1].public_id, "viewer")
    assert o.role_of(room.identities[1].public_id) == "viewer"
    data = o.commit(NOW)
    sets = [op for op in decode_change(data).ops if op[0] == 2]
    assert len(sets) == 1
    deliver(peer, [data], NOW)
    assert peer.get_field(ent, "t", "p") == [2.0]
    assert peer.role_of(room.identities[1].public_id) == "viewer"
    assert o.role_of(room.identities[1].public_id) == "viewer"


def test_discard_rolls_back_local_edits():
    room = make_room(["admin"], tag="api-discard")
    o, ad = room.replicas
    keep = o.create_entity(ROOT, {"name": {"text": "keep"}})
    other = o.create_entity(keep)
    deliver(ad, [o.commit(NOW)], NOW)
    before = o.state()
    heads = o.heads()
    new = o.create_entity(keep, {"name": {"text": "new"}})
    o.set_field(keep, "name", "text", "changed")
    o.set_field(keep, "name", "text", "changed twice")
    o.set_field(keep, "extra", "x", 1)
    o.move(other, new)
    o.delete(keep)
    o.grant(room.identities[1].public_id, "viewer")
    assert o.state() != before
    o.discard()
    assert o.state() == before
    assert o.heads() == heads
    assert o.pending_ops == 0
    assert not o.exists(new)
    assert o.role_of(room.identities[1].public_id) == "admin"
    # The entity counter is reused: the discarded ID never went out.
    again = o.create_entity(ROOT)
    assert again == new
    deliver(ad, [o.commit(NOW + 1)], NOW + 1)
    assert ad.state() == o.state()


def test_discard_keeps_remote_changes_applied_in_between():
    room = make_room(["admin"], tag="api-discard-remote")
    o, ad = room.replicas
    a = o.create_entity(ROOT, {"name": {"text": "a"}})
    b = o.create_entity(ROOT, {"name": {"text": "b"}})
    deliver(ad, [o.commit(NOW)], NOW)
    # Local edits pending ...
    o.set_field(a, "name", "text", "local")
    o.set_field(b, "t", "p", [0.0])
    o.move(b, a)
    mine = o.create_entity(a)
    # ... while the admin's changes arrive and are applied underneath them.
    ad.set_field(a, "name", "text", "remote")
    ad.set_field(b, "name", "text", "remote b")
    theirs = ad.create_entity(b)
    ad.move(a, b)
    remote = ad.commit(NOW + 1)
    deliver(o, [remote], NOW + 1)
    # The local batch sorts after the remote change: its writes win, and its move of b
    # under a, redone after the admin's move of a under b, would make a cycle: skipped.
    assert o.get_field(a, "name", "text") == "local"
    assert o.get_field(b, "name", "text") == "remote b"
    assert o.parent_of(a) == b and o.parent_of(b) == ROOT
    assert o.parent_of(mine) == a and o.parent_of(theirs) == b
    assert_tree_invariants(o)
    o.discard()
    assert o.state() == ad.state()
    assert o.get_field(a, "name", "text") == "remote"
    assert o.get_field(b, "t", "p") is None
    assert o.exists(theirs) and not o.exists(mine)
    assert o.heads() == ad.heads()
    assert o.state() == reference_state(o.changes_since([]))


def test_commit_does_not_change_the_local_view():
    room = make_room(["admin"], tag="api-commit-view")
    o, ad = room.replicas
    a = o.create_entity(ROOT)
    deliver(ad, [o.commit(NOW)], NOW)
    o.set_field(a, "n", "t", "local")
    ad.set_field(a, "n", "t", "remote")
    deliver(o, [ad.commit(NOW + 5)], NOW)  # its clock is ahead; ours is behind
    view = o.state()
    data = o.commit(NOW)
    assert o.state() == view
    assert o.get_field(a, "n", "t") == "local"
    deliver(ad, [data], NOW + 5)
    assert ad.state() == view


def test_commit_after_role_revoked_concurrently_is_permission_denied():
    room = make_room(["editor", "admin"], tag="api-revoked")
    o, ed, ad = room.replicas
    mine = ed.create_entity(ROOT, {"name": {"text": "mine"}})
    made = ed.commit(NOW)
    deliver(o, [made], NOW)
    deliver(ad, [made], NOW)
    before = ed.state()
    heads = ed.heads()
    ed.set_field(mine, "name", "text", "doomed")
    ed.create_entity(mine)
    o.revoke(room.identities[1].public_id)
    deliver(ed, [o.commit(NOW + 1)], NOW + 1)
    with pytest.raises(PermissionDenied):
        ed.commit(NOW + 2)
    assert ed.pending_ops == 0
    assert ed.state() == before
    assert ed.heads() != heads and len(ed.heads()) == 1  # the revocation is applied
    assert ed.role_of(room.identities[1].public_id) == "none"
    assert ed.commit(NOW + 3) is None
    # An admin demoted to editor loses the edit on others' entities it had pending.
    ad.set_field(mine, "name", "text", "admin edit")
    o.grant(room.identities[2].public_id, "editor")
    o.commit(NOW + 4)
    deliver(ad, o.changes_since(ad.heads()), NOW + 4)  # the revocation and the demotion
    with pytest.raises(PermissionDenied):
        ad.commit(NOW + 5)
    assert ad.get_field(mine, "name", "text") == "mine"
    # ... but as an editor it can still make its own entities.
    own = ad.create_entity(ROOT)
    deliver(o, [ad.commit(NOW + 6)], NOW + 6)
    assert o.exists(own)


def test_batch_full_when_exceeding_limits():
    limits = Limits(max_ops_per_change=10, max_names_per_change=4)
    room = make_room([], tag="api-full", limits=limits)
    o = room.owner
    ent = o.create_entity(ROOT)
    for k in range(8):
        o.set_field(ent, "c", "f", k)  # coalesced into one op
        o.create_entity(ent)
    assert o.pending_ops == 10
    with pytest.raises(BatchFull):
        o.create_entity(ROOT)
    with pytest.raises(BatchFull):
        o.set_field(ent, "c", "other", 1)
    data = o.commit(NOW)
    assert len(decode_change(data, limits).ops) == 10
    o.create_entity(ROOT)  # room again after the commit
    # Too many distinct names in one batch.
    o.commit(NOW)
    o.set_field(ent, "a", "b", 1)
    o.set_field(ent, "c", "d", 1)
    with pytest.raises(BatchFull):
        o.set_field(ent, "e", "f", 1)
    o.commit(NOW)


def test_batch_full_by_bytes_and_every_commit_fits_the_wire():
    limits = Limits(max_change_bytes=8 * 1024, max_value_bytes=1024)
    room = make_room(["editor"], tag="api-full-bytes", limits=limits)
    o, peer = room.replicas
    ent = o.create_entity(ROOT)
    n = 0
    with pytest.raises(BatchFull):
        for n in range(1000):
            o.set_field(ent, "c", f"f{n}", "x" * 900)
    assert 0 < n < 1000
    data = o.commit(NOW)
    assert len(data) <= limits.max_change_bytes
    assert peer.apply(data, NOW).status == APPLIED
    with pytest.raises(ValueError):
        o.set_field(ent, "c", "f", "x" * 2000)  # one value over max_value_bytes


def test_entity_id_str_parse_roundtrip():
    o = make_room([], tag="api-ids").owner
    ent = o.create_entity(ROOT)
    text = str(ent)
    assert text.startswith(o.identity.public_id + "/")
    assert EntityId.parse(text) == ent
    assert EntityId.parse("root") == ROOT and str(ROOT) == "root"
    big = EntityId(o.identity.public_key, 2**40)
    assert EntityId.parse(str(big)) == big
    assert ent == (o.identity.public_key, ent.counter)  # plain tuples compare equal
    for bad in [
        "",
        "trash",
        "nope",
        f"{o.identity.public_id}/0",
        f"{o.identity.public_id}/x",
        f"{o.identity.public_id}/-1",
        "12D3KooWbogus/1",
        "/1",
    ]:
        with pytest.raises(ValueError):
            EntityId.parse(bad)


def test_from_genesis_refuses_a_bad_genesis():
    o = make_room([], tag="api-genesis").owner
    with pytest.raises(DecodeError):
        SceneReplica.from_genesis(o.genesis[:-1] + bytes([o.genesis[-1] ^ 1]), ident("x"))
    with pytest.raises(DecodeError):
        SceneReplica.from_genesis(b"junk", ident("x"))
    o.create_entity(ROOT)
    with pytest.raises(DecodeError):
        SceneReplica.from_genesis(o.commit(NOW), ident("x"))
