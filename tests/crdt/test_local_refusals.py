"""A refused local edit leaves no trace, so a replica never emits a change the others reject.

Issue 9 item 5: ``create_entity(parent=X)`` with X just deleted raised, as it should, but left an
empty batch behind; the next ``commit()`` emitted a change with no ops that every other replica
rejected (``schema``), and every later change of that author then waited for it forever
(``missing_deps``). The property test below drives random local edits on several replicas,
with many that must be refused (deleted, unknown or special entities, cycles, values and names
the wire cannot carry, edits the role does not allow, grants nobody may make, batches over tiny
limits), through commits and remote delivery in random orders, and checks that

* every refused edit changes nothing (no ops, no scene change),
* every committed change has no unused name or actor (nothing half-made is signed),
* every replica accepts every change it is offered (applied, buffered or duplicate; a transient
  ``unknown_author`` is tolerated while grants race; changes retracted by a concurrent
  demotion's cut-off are tombstones, not refusals), and after anti-entropy every honest
  replica has applied every committed change, nothing is left buffered, and all converge.
"""

from __future__ import annotations

import math
import os
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meshnode.crdt import (
    APPLIED,
    REJECTED,
    ROOT,
    BatchFull,
    EntityId,
    PermissionDenied,
    SceneReplica,
)
from meshnode.crdt.ids import TRASH
from protocol.change import OP_CREATE, OP_DELETE, OP_MOVE, OP_ROLE, OP_SET, decode_change
from protocol.limits import Limits

from .harness import (
    OK_STATUSES,
    assert_converged,
    full_sync,
    ident,
    make_room,
    reference_state,
)

SETTINGS = settings(
    deadline=None,
    max_examples=int(os.environ.get("CRDT_MAX_EXAMPLES", "120")),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# Tiny limits, so that full batches (ops, names, actors, bytes) are refused often too.
LIMITS = Limits(
    max_ops_per_change=8,
    max_names_per_change=4,
    max_actors_per_change=3,
    max_change_bytes=6 * 1024,
    max_value_bytes=1024,
)
NOW = 1000.0
REFUSALS = (ValueError, TypeError, PermissionDenied, BatchFull)

GOOD_VALUES: list[object] = [1, "x", [1.0, 2.0, 3.0], {"k": [1, "y"]}, None, "z" * 700]
BAD_VALUES: list[object] = [
    math.nan, math.inf, [1.0, math.nan], object(), b"bytes", 2**64, {1: "x"}, "x" * 2000,
]
GOOD_NAMES = ["transform", "name", "c3", "c4", "c5", "c6"]
BAD_NAMES: list[object] = ["", "x" * 65, 5]


def value(n: int) -> object:
    """Mostly values the wire carries; one in four it cannot."""
    return BAD_VALUES[n % len(BAD_VALUES)] if n % 4 == 3 else GOOD_VALUES[n % len(GOOD_VALUES)]


def name(n: int) -> str:
    """Mostly valid names; one in six is not."""
    if n % 6 == 5:
        return BAD_NAMES[n % len(BAD_NAMES)]  # type: ignore[return-value]
    return GOOD_NAMES[n % len(GOOD_NAMES)]


ROLES = ["admin", "editor", "viewer", "none", "owner", "superuser"]
KINDS = ["create", "create_with", "set", "set", "move", "move", "delete", "grant", "commit",
         "commit", "deliver", "deliver"]

step = st.tuples(
    st.sampled_from(KINDS),
    st.integers(0, 3),
    st.integers(0, 1_000),
    st.integers(0, 1_000),
    st.integers(0, 1_000),
    st.integers(0, 2**32),
)


def _used_names_and_actors(data: bytes) -> None:
    """Every name and actor a committed change lists is used by one of its ops."""
    ch = decode_change(data, LIMITS)
    names: set[int] = set()
    actors: set[int] = set()

    def ref(r: object) -> None:
        if isinstance(r, list):
            actors.add(r[0])

    for op in ch.ops:
        code = op[0]
        if code == OP_SET:
            ref(op[1])
            names.update((op[2], op[3]))
        elif code == OP_CREATE:
            ref(op[2])
        elif code == OP_MOVE:
            ref(op[1])
            ref(op[2])
        elif code == OP_DELETE:
            ref(op[1])
        elif code == OP_ROLE:
            actors.add(op[1])
    assert names == set(range(len(ch.names))), ("unused names", ch.names, ch.ops)
    assert actors == set(range(len(ch.actors))), ("unused actors", ch.actors, ch.ops)


class World:
    """Four replicas (owner, editor, admin, viewer) and every change any of them committed."""

    def __init__(self) -> None:
        self.room = make_room(["editor", "admin", "viewer"], tag="refusals", limits=LIMITS)
        self.replicas = self.room.replicas
        self.committed: list[bytes] = []
        self.created: list[EntityId] = []
        ghost_key = self.room.identities[1].public_key
        self.specials = [ROOT, ROOT, ROOT, TRASH, EntityId(ghost_key, 999_999)]

    def entity(self, r: SceneReplica, n: int) -> EntityId:
        """Mostly an entity live at ``r``; else one someone made (maybe deleted, maybe unknown
        here), or the root, the trash or a never-made one."""
        live = sorted(r.entities())
        k, n = n % 5, n // 5
        if live and k < 3:
            return live[n % len(live)]
        if self.created and k <= 3:
            return self.created[n % len(self.created)]
        return self.specials[n % len(self.specials)]

    def attempt(self, r: SceneReplica, kind: str, a: int, b: int, c: int) -> None:
        if kind == "create":
            self.created.append(r.create_entity(self.entity(r, a)))
        elif kind == "create_with":
            comps = {name(a): {name(b): value(c)}}
            if c % 3 == 0:
                comps["name"] = {"text": value(c // 3)}
            self.created.append(r.create_entity(self.entity(r, a // 7), comps))  # type: ignore[arg-type]
        elif kind == "set":
            r.set_field(self.entity(r, a), name(b), name(c), value(b + c))
        elif kind == "move":
            r.move(self.entity(r, a), self.entity(r, b))
        elif kind == "delete":
            r.delete(self.entity(r, a))
        elif kind == "grant":
            member = self.room.identities[a % len(self.room.identities)]
            key: object = member.public_id if b % 5 else b"short"
            r.grant(key, ROLES[c % len(ROLES)])  # type: ignore[arg-type]

    def edit(self, i: int, kind: str, a: int, b: int, c: int) -> None:
        r = self.replicas[i]
        ops, state = r.pending_ops, r.state()
        roles = {str(m): r.role_of(m.public_id) for m in self.room.identities}
        try:
            self.attempt(r, kind, a, b, c)
        except REFUSALS:
            # No trace: nothing pending, nothing visible, no role changed.
            assert r.pending_ops == ops
            assert r.state() == state
            assert {str(m): r.role_of(m.public_id) for m in self.room.identities} == roles

    def commit(self, i: int) -> None:
        r = self.replicas[i]
        try:
            data = r.commit(NOW)
        except PermissionDenied:
            assert r.pending_ops == 0  # rolled back: a peer's change took the right away
            return
        if data is not None:
            _used_names_and_actors(data)
            self.committed.append(data)

    def deliver(self, src: int, dst: int, seed: int) -> None:
        rng = random.Random(seed)
        a, b = self.replicas[src], self.replicas[dst]
        batch = a.changes_since(b.heads()) if rng.random() < 0.5 else a.changes_since([])
        batch = [d for d in batch if rng.random() < 0.8]
        rng.shuffle(batch)
        results = b.apply_many(batch, NOW) if seed % 2 else [b.apply(d, NOW) for d in batch]
        for res in results:
            if res.status == REJECTED:
                # Only a transient verdict, while grants race with edits; never a final one.
                assert res.reason == "unknown_author", res
            else:
                assert res.status in OK_STATUSES, res


@SETTINGS
@given(st.lists(step, min_size=10, max_size=80))
def test_refused_local_edits_never_reach_the_wire(program):
    world = World()
    for kind, i, a, b, c, seed in program:
        if kind == "commit":
            world.commit(i)
        elif kind == "deliver":
            world.deliver(i, (i + 1 + seed % 3) % 4, seed)
        else:
            world.edit(i, kind, a, b, c)
    for i in range(4):
        world.commit(i)
    full_sync(world.replicas, NOW)
    assert_converged(world.replicas)
    for r in world.replicas:
        # Retractions (a member's edits past a cut-off a concurrent demotion named) are the
        # revocation rule at work, not refusals of a malformed change: counted, applied as
        # tombstones, identical everywhere.
        assert r.rejections.keys() <= {"unknown_author", "revoked", "authority_revoked"}, (
            r.rejections)
        for data in world.committed:
            assert r.has_change(decode_change(data, LIMITS).change_id)
    first = world.replicas[0]
    assert first.state() == reference_state(first.changes_since([]), first.retracted_changes())


# --------------------------------------------------------------------------- the cases by hand


@pytest.fixture
def pair() -> tuple[SceneReplica, SceneReplica]:
    room = make_room(["editor"], tag="refusals-pair", limits=LIMITS)
    return room.replicas[0], room.replicas[1]


def _commit_and_check(src: SceneReplica, dst: SceneReplica) -> bytes | None:
    data = src.commit(NOW)
    if data is not None:
        assert dst.apply(data, NOW).status == APPLIED
    return data


def test_create_under_a_just_deleted_parent_leaves_no_empty_change(pair):
    """The issue's reproduction: refused first op of a batch, then commit."""
    o, peer = pair
    x = o.create_entity(ROOT)
    o.delete(x)
    _commit_and_check(o, peer)
    with pytest.raises(ValueError):
        o.create_entity(x)
    assert o.pending_ops == 0
    assert o.commit(NOW) is None
    # The author's next change is applied at once (nothing waits for a lost seq).
    y = o.create_entity(ROOT)
    _commit_and_check(o, peer)
    assert peer.exists(y) and peer.buffered_count() == 0


@pytest.mark.parametrize(
    "refused",
    [
        lambda o, e, f: o.set_field(e, "c", "f", math.nan),
        lambda o, e, f: o.set_field(e, "", "f", 1),
        lambda o, e, f: o.set_field(ROOT, "c", "f", 1),
        lambda o, e, f: o.set_field(e, "c", "f", "x" * 2000),
        lambda o, e, f: o.move(e, e),
        lambda o, e, f: o.move(e, f),
        lambda o, e, f: o.move(TRASH, e),
        lambda o, e, f: o.delete(ROOT),
        lambda o, e, f: o.create_entity(e, {"name": {"text": math.inf}}),
        lambda o, e, f: o.create_entity(e, {"name": {"": 1}}),
        lambda o, e, f: o.grant(o.identity.public_id, "viewer"),
        lambda o, e, f: o.grant(b"short", "viewer"),
        lambda o, e, f: o.grant(o.identity.public_id.replace("W", "X", 1), "admin"),
    ],
)
def test_each_refusal_on_a_fresh_batch_commits_nothing(pair, refused):
    o, peer = pair
    e = o.create_entity(ROOT)
    f = o.create_entity(e)
    _commit_and_check(o, peer)
    with pytest.raises(REFUSALS):
        refused(o, e, f)
    assert o.pending_ops == 0 and o.commit(NOW) is None
    assert o.create_entity(ROOT).counter == f.counter + 1  # no entity number was used up
    _commit_and_check(o, peer)


def test_a_refused_entity_with_components_is_not_made_half(pair):
    o, peer = pair
    e = o.create_entity(ROOT, {"name": {"text": "kept"}})
    with pytest.raises(ValueError):
        o.create_entity(e, {"name": {"text": "fine"}, "meta": {"bad": math.nan}})
    assert o.pending_ops == 2 and len(o.entities()) == 1
    data = _commit_and_check(o, peer)
    assert data is not None
    _used_names_and_actors(data)
    assert peer.state() == o.state()


def test_batch_full_in_the_middle_of_an_entity_refuses_it_whole():
    room = make_room(["editor"], tag="refusals-full", limits=LIMITS)
    o, peer = room.replicas
    o.create_entity(ROOT)
    # 1 + 8 ops do not fit in a batch of 8: refused before anything is made.
    with pytest.raises(BatchFull):
        o.create_entity(ROOT, {"c": {f"f{k}": k for k in range(8)}})
    assert o.pending_ops == 1 and len(o.entities()) == 1
    # Names: four fit; a fifth (with a new component) is refused whole.
    ent = o.create_entity(ROOT, {"a": {"b": 1}, "c": {"d": 2}})
    with pytest.raises(BatchFull):
        o.set_field(ent, "e", "b", 1)
    data = o.commit(NOW)
    assert data is not None
    _used_names_and_actors(data)
    assert peer.apply(data, NOW).status == APPLIED


def test_grants_to_more_actors_than_a_change_may_list_are_refused():
    limits = Limits(max_actors_per_change=2)
    room = make_room([], tag="refusals-actors", limits=limits)
    o = room.owner
    peer = SceneReplica.from_genesis(room.genesis, ident("refusals-peer"), limits=limits)
    others = [ident("refusals-actor", k) for k in range(3)]
    o.grant(others[0].public_id, "viewer")
    o.grant(others[1].public_id, "viewer")
    with pytest.raises(BatchFull):
        o.grant(others[2].public_id, "viewer")
    data = o.commit(NOW)
    assert data is not None and peer.apply(data, NOW).status == APPLIED
    assert o.role_of(others[2].public_id) == "none"


def test_a_move_between_two_entities_of_one_new_creator_takes_one_actor_slot():
    # The batch's fast path (``_require``) counts the creators new to the batch: a move
    # naming two entities of one creator lists that creator once, so it fits the last slot;
    # a third creator does not.
    limits = Limits(max_actors_per_change=2)
    room = make_room([], tag="refusals-slots", limits=limits)
    o = room.owner
    ids = [ident("refusals-slots-member", k) for k in range(3)]
    members = [SceneReplica.from_genesis(room.genesis, i, limits=limits) for i in ids]
    replicas = [o, *members]

    def share(src: SceneReplica) -> None:
        data = src.commit(NOW)
        assert data is not None
        for r in replicas:
            if r is not src:
                assert r.apply(data, NOW).status == APPLIED

    for pair in (ids[:2], ids[2:]):  # (at most two actors per change)
        for i in pair:
            o.grant(i.public_id, "editor")
        share(o)
    made = []
    for r in members:
        made.append((r.create_entity(ROOT), r.create_entity(ROOT)))
        share(r)
    (a1, _), (b1, b2), (c1, c2) = made
    o.set_field(a1, "name", "text", "first creator")  # one slot: a's
    o.move(b1, b2)  # b's entities on both sides: one more slot, the last
    with pytest.raises(BatchFull):
        o.move(c1, c2)
    data = o.commit(NOW)
    assert data is not None
    ch = decode_change(data)
    assert len(ch.actors) == 2 and [op[0] for op in ch.ops] == [OP_SET, OP_MOVE]
    for r in members:
        assert r.apply(data, NOW).status == APPLIED
    assert_converged(replicas)
