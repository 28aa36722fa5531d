"""Replicas cloned from one set-up template (netsim/shared_setup.py, issue 15, item 3): a clone
is indistinguishable from a replica that applied the set-up itself, and N clones hold one set
of N grants until one of them changes a role."""

from __future__ import annotations

from typing import Any

from meshnode.crdt import ROOT, SceneReplica
from meshnode.identity import Identity
from netsim.caches import SimulationCaches
from netsim.scenario import parse
from netsim.shared_setup import SharedRoleBook, clone_for
from netsim.simulation import Simulation


def _ident(k: int) -> Identity:
    return Identity.from_private_bytes(bytes([k + 1]) * 32)


def _room(members: int) -> tuple[SceneReplica, list[bytes], list[Identity]]:
    owner = SceneReplica.create(_ident(0), now=0.0, name="r", nonce=b"\x05" * 16)
    ids = [_ident(k) for k in range(1, members + 1)]
    setup = list(owner.changes_since([])[1:])
    for k, ident in enumerate(ids):
        owner.grant(ident.public_id, "editor" if k % 2 else "viewer")
        if owner.pending_ops >= 7:  # several set-up changes, as netsim commits every 200
            setup.append(owner.commit(0.0) or b"")
    setup.append(owner.commit(0.0) or b"")
    return owner, setup, ids


def _view(rep: SceneReplica) -> tuple[Any, ...]:
    return (rep.members(), rep.heads(), rep.version_vector(), rep.change_count(),
            rep.state(), rep.own_seq, rep.role_of(rep.identity.public_id))


def test_a_clone_behaves_as_a_replica_that_applied_the_setup() -> None:
    owner, setup, ids = _room(20)
    with SimulationCaches().active():
        template = SceneReplica.from_genesis(owner.genesis, ids[0])
        template.apply_many(setup, 0.0)
        for ident in (ids[1], ids[2]):  # an editor and a viewer
            applied = SceneReplica.from_genesis(owner.genesis, ident)
            applied.apply_many(setup, 0.0)
            clone = clone_for(template, ident)
            assert _view(clone) == _view(applied)
            # The next change each signs is the same, byte for byte (same identity, seq,
            # deps, clock and entity counter), and both accept the other's.
            if clone.role_of(ident.public_id) == "editor":
                for rep in (clone, applied):
                    rep.create_entity(ROOT, {"name": {"text": "x"}})
                a, b = clone.commit(1.0), applied.commit(1.0)
                assert a is not None and a == b
                assert _view(clone) == _view(applied)


def test_clones_share_one_grant_table_until_one_changes_a_role() -> None:
    owner, setup, ids = _room(30)
    with SimulationCaches().active():
        template = SceneReplica.from_genesis(owner.genesis, ids[0])
        template.apply_many(setup, 0.0)
        a, b = clone_for(template, ids[1]), clone_for(template, ids[2])
        assert isinstance(a._roles, SharedRoleBook)
        assert a._roles.grants is b._roles.grants is template._roles.grants
        before = b.members()
        owner.grant(ids[3].public_id, "none")
        removal = owner.commit(1.0)
        assert removal is not None
        assert a.apply(removal, 1.0).status == "applied"
        # a copied the table before writing: b and the template still see the old roles.
        assert a._roles.grants is not b._roles.grants
        assert a.role_of(ids[3].public_id) == "none"
        assert b.members() == before == template.members()
        assert b.role_of(ids[3].public_id) != "none"


def test_a_simulated_public_room_keeps_one_grant_table_a_private_one_its_own() -> None:
    raw: dict[str, Any] = {
        "seed": 3, "duration_s": 2,
        "topology": {"kind": "random", "nodes": 10, "degree": 3},
        "links": {"latency_ms": 20},
        "workload": {"editors": 3, "edits_per_s": 2},
    }
    sim = Simulation(parse(raw))
    books = [node.replica._roles for node in sim.nodes[1:]]
    assert all(book.grants is books[0].grants for book in books)
    assert len(books[0].grants) == 9
    private = Simulation(parse({**raw, "workload": {**raw["workload"], "private": True}}))
    tables = {id(node.replica._roles.grants) for node in private.nodes}
    assert len(tables) == len(private.nodes)


def test_an_edit_without_grants_copies_nothing_a_local_grant_copies_once() -> None:
    owner, setup, ids = _room(10)
    with SimulationCaches().active():
        template = SceneReplica.from_genesis(owner.genesis, ids[0])
        template.apply_many(setup, 0.0)
        editor = clone_for(template, ids[1])  # odd index: an editor
        assert editor.role_of(ids[1].public_id) == "editor"
        editor.create_entity(ROOT)
        editor.discard()
        editor.create_entity(ROOT)
        assert editor.commit(1.0) is not None
        assert editor._roles.grants is template._roles.grants
        boss = clone_for(template, ids[1])
        boss._roles.add(ids[5].public_key, ([0, b"", b""], 2, ids[1].public_key, 9))
        assert boss._roles.grants is not template._roles.grants
        assert len(template._roles.grants[ids[5].public_key]) == 1  # its set-up grant only
        assert len(boss._roles.grants[ids[5].public_key]) == 2
