"""What the replica tells its overlay so that a node does less per applied change (issue 15,
item 3): ``apply_many(..., ids=)`` takes the change IDs the caller already hashed, and
``roles_version`` moves only when roles may have changed, so that the overlay reviews its
peers' access after a role change, not after every scene change."""

from __future__ import annotations

import pytest

from meshnode.crdt import APPLIED, DUPLICATE, ROOT
from protocol.change import change_id, decode_change

from .harness import make_room

NOW = 1000.0


def test_apply_many_with_the_callers_ids_gives_the_same_results() -> None:
    room = make_room(["editor", "viewer"], tag="hints-ids")
    owner, editor, viewer = room.replicas
    datas = []
    for _ in range(4):
        editor.create_entity(ROOT)
        data = editor.commit(NOW)
        assert data is not None
        datas.append(data)
    plain = owner.apply_many(list(reversed(datas)), NOW)
    hinted = viewer.apply_many(list(reversed(datas)), NOW,
                               ids=[change_id(d) for d in reversed(datas)])
    assert [(r.status, r.reason, r.change_id, r.applied) for r in plain] == \
        [(r.status, r.reason, r.change_id, r.applied) for r in hinted]
    assert owner.state() == viewer.state()
    assert viewer.heads() == owner.heads()
    # Some IDs known, some not (None): the replica hashes the others itself.
    editor.create_entity(ROOT)
    more = editor.commit(NOW)
    assert more is not None
    got = viewer.apply_many([datas[0], more], NOW, ids=[change_id(datas[0]), None])
    assert [r.status for r in got] == [DUPLICATE, APPLIED]
    assert got[1].change_id == change_id(more)


def test_apply_many_refuses_ids_that_do_not_match_the_changes_in_number() -> None:
    room = make_room(["editor"], tag="hints-count")
    owner, editor = room.replicas
    editor.create_entity(ROOT)
    data = editor.commit(NOW)
    assert data is not None
    with pytest.raises(ValueError, match="1 ids for 2 changes"):
        owner.apply_many([data, data], NOW, ids=[change_id(data)])
    assert not owner.has_change(change_id(data))


def test_roles_version_moves_with_roles_only() -> None:
    room = make_room(["editor", "viewer"], tag="hints-roles")
    owner, editor, viewer = room.replicas
    stranger = make_room([], tag="hints-stranger").identities[0]

    # Scene changes, local and applied: roles as before, the version as before.
    before = (owner.roles_version, viewer.roles_version)
    ent = editor.create_entity(ROOT)
    editor.set_field(ent, "c", "f", 1)
    scene = editor.commit(NOW)
    assert scene is not None
    assert [r.status for r in owner.apply_many([scene], NOW)] == [APPLIED]
    assert [r.status for r in viewer.apply_many([scene], NOW)] == [APPLIED]
    assert (owner.roles_version, viewer.roles_version) == before

    # A local grant moves it at once (before the commit), a rollback again.
    owner.grant(stranger.public_id, "viewer")
    granted = owner.roles_version
    assert granted != before[0]
    owner.discard()
    assert owner.roles_version not in (before[0], granted)
    assert owner.role_of(stranger.public_id) == "none"

    # An applied grant moves it where it is applied; a removal too.
    owner.grant(stranger.public_id, "viewer")
    grant = owner.commit(NOW)
    assert grant is not None
    assert [r.status for r in viewer.apply_many([grant], NOW)] == [APPLIED]
    after_grant = viewer.roles_version
    assert after_grant != before[1]
    assert viewer.role_of(stranger.public_id) == "viewer"
    owner.revoke(stranger.public_id)
    removal = owner.commit(NOW + 1)
    assert removal is not None
    assert [r.status for r in viewer.apply_many([removal], NOW + 1)] == [APPLIED]
    assert viewer.roles_version != after_grant
    assert viewer.role_of(stranger.public_id) == "none"

    # A duplicate changes nothing.
    settled = viewer.roles_version
    assert [r.status for r in viewer.apply_many([removal, scene], NOW + 1)] == \
        [DUPLICATE, DUPLICATE]
    assert viewer.roles_version == settled


def test_change_ids_since_skips_what_the_peers_vector_covers() -> None:
    """``change_ids_since`` with a version vector: exactly the changes outside the heads'
    past above the vector's seqs, whether the vector covers an author, stops short of it,
    or names authors this replica has never seen (it reads the vector before the heads)."""
    room = make_room(["editor", "editor"], tag="hints-since")
    owner, a, b = room.replicas
    for r in (a, b, a, owner, b, b):
        r.create_entity(ROOT)
        data = r.commit(NOW)
        assert data is not None
        for other in room.replicas:
            if other is not r:
                other.apply(data, NOW)
    everything = owner.changes_since([])
    meta = {change_id(d): d for d in everything}
    decoded = {cid: decode_change(d) for cid, d in meta.items()}

    def past(heads: list[bytes]) -> set[bytes]:
        seen: set[bytes] = set()
        stack = list(heads)
        while stack:
            c = stack.pop()
            if c not in seen:
                seen.add(c)
                stack.extend(decoded[c].deps)
        return seen

    keys = [i.public_key for i in room.identities]
    order = list(meta)
    for cut in range(len(order)):
        heads = [order[cut]]
        for vv in ({}, {keys[1]: 1}, {keys[1]: 99, keys[2]: 2}, {keys[0]: 1, b"\x05" * 32: 3},
                   {k: 0 for k in keys}, {keys[2]: -1}):
            got = owner.change_ids_since(heads, vv)
            want = {c for c in order if c not in past(heads)
                    and decoded[c].seq > vv.get(decoded[c].author, 0)}
            assert set(got) == want and len(got) == len(want), (cut, vv)
