"""Convergence of honest replicas: random concurrent edits, skewed clocks, messy delivery.

Each example founds a room with 2-5 replicas, runs a random program of local edits (create,
set, move, delete, and in some tests role changes), commits with per-replica skewed clocks
(within +-30 s; replicas accept up to 60 s of future), and delivers changes shuffled,
duplicated, partly dropped, in split batches, through both ``apply`` and ``apply_many``.
After a final anti-entropy sync every replica must have equal heads and equal ``state()``,
sound trees, and the state an independent from-scratch oracle computes from the same changes.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meshnode.crdt import ROOT, EntityId, PermissionDenied, SceneReplica
from protocol.change import change_id

from .harness import (
    Network,
    assert_converged,
    assert_created_accounted,
    assert_tree_invariants,
    deliver,
    full_sync,
    ident,
    make_room,
    reference_state,
)

# CRDT_MAX_EXAMPLES=5000 turns these into a longer bug hunt.
SETTINGS = settings(
    deadline=None,
    max_examples=int(os.environ.get("CRDT_MAX_EXAMPLES", "100")),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# --------------------------------------------------------------------------- strategies

scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8)
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(min_size=0, max_size=5), inner, max_size=4)
    ),
    max_leaves=6,
)
vectors = st.lists(
    st.floats(allow_nan=False, allow_infinity=False, width=64), min_size=3, max_size=3
)
values = vectors | json_values
components = st.sampled_from(["transform", "name", "mesh", "light"])
fields_ = st.sampled_from(["position", "rotation", "text", "color", "extra"])
# Skews are multiples of 1/4 s, so every ``now`` is an exact float and the +-30 s bound holds
# to the millisecond.
skews = st.integers(-120, 120).map(lambda q: q / 4)

idx = st.integers(0, 10_000)
op_kinds = st.sampled_from(["create", "create", "set", "set", "move", "move", "move", "delete"])
edit_spec = st.tuples(op_kinds, idx, idx, components, fields_, values)
edit = st.tuples(st.just("edit"), idx, op_kinds, idx, idx, components, fields_, values)
commit = st.tuples(st.just("commit"), idx)
deliver_ = st.tuples(
    st.just("deliver"),
    idx,
    idx,
    st.integers(0, 2**32),
    st.sampled_from([0.0, 0.3, 0.7]),
    st.booleans(),
)
tick = st.tuples(st.just("tick"), st.integers(0, 20).map(lambda q: q / 4))
role_change = st.tuples(
    st.just("role"), idx, idx, st.sampled_from(["none", "viewer", "editor", "admin"])
)
discard = st.tuples(st.just("discard"), idx)

conflict = st.tuples(
    st.just("conflict"),
    st.sampled_from(["cycle", "delete_vs_move", "delete_vs_add"]),
    idx,
    idx,
    idx,
    idx,
    idx,
)
"""Two replicas make a known-nasty pair of concurrent edits on entities both can see."""

basic_actions = st.one_of(edit, edit, edit, edit, commit, commit, deliver_, deliver_, tick)


_NOTHING = st.nothing()


def rounds(extra=_NOTHING, min_rounds: int = 3, max_rounds: int = 10):
    """A program of rounds: several replicas edit and commit concurrently, then some changes
    travel (partly), then time passes. ``extra`` actions (e.g. role changes) are mixed in."""
    one_round = st.tuples(
        st.lists(
            st.tuples(idx, st.lists(edit_spec, min_size=1, max_size=3)), min_size=1, max_size=4
        ),
        st.lists(deliver_ | conflict | extra, max_size=4),
        tick,
    )

    def flatten(rs):
        out = []
        for writers, travel, t in rs:
            for r, specs in writers:
                out.extend(("edit", r, *spec) for spec in specs)
                out.append(("commit", r))
            out.extend(travel)
            out.append(t)
        return out

    return st.lists(one_round, min_size=min_rounds, max_size=max_rounds).map(flatten)


def room_roles(min_members: int = 1, max_members: int = 4, choices=("editor", "admin")):
    return st.lists(st.sampled_from(choices), min_size=min_members, max_size=max_members)


# --------------------------------------------------------------------------- the runner


@dataclass
class Run:
    """Interprets a random program against a room and checks invariants along the way."""

    net: Network
    pending_creates: dict[int, list[EntityId]] = field(default_factory=dict)
    seen: dict[int, set[EntityId]] = field(default_factory=dict)
    check_commit_is_invisible: bool = True

    @property
    def replicas(self) -> list[SceneReplica]:
        return self.net.room.replicas

    def role(self, i: int) -> str:
        r = self.replicas[i]
        return r.role_of(r.identity.public_id)

    def remember(self, i: int) -> None:
        self.seen.setdefault(i, set()).update(self.replicas[i].entities())

    def editable(self, i: int, ents: list[EntityId]) -> list[EntityId]:
        r = self.replicas[i]
        if self.role(i) in ("admin", "owner"):
            return ents
        me = r.identity.public_key
        return [e for e in ents if e.creator == me]

    def do(self, action: tuple[Any, ...]) -> None:
        kind = action[0]
        n = len(self.replicas)
        if kind == "edit":
            self.edit(action[1] % n, *action[2:])
        elif kind == "commit":
            self.commit(action[1] % n)
        elif kind == "deliver":
            _, src, dst, seed, drop, many = action
            src, dst = src % n, dst % n
            if src != dst:
                rng = random.Random(seed)
                self.net.deliver_random(src, dst, rng, drop=drop, dup=0.3, many=many)
                self.remember(dst)
        elif kind == "tick":
            self.net.t += action[1]
        elif kind == "role":
            self.role_op(action[1] % n, action[2] % n, action[3])
        elif kind == "discard":
            self.discard(action[1] % n)
        elif kind == "conflict":
            self.conflict(*action[1:])
        else:  # pragma: no cover
            raise AssertionError(kind)

    def edit(self, i: int, op: str, a: int, b: int, comp: str, fld: str, value: Any) -> None:
        r = self.replicas[i]
        if self.role(i) not in ("editor", "admin", "owner"):
            with pytest.raises(PermissionDenied):
                r.create_entity(ROOT)
            return
        live = sorted(r.entities())
        if op == "create":
            parents = [ROOT, *live]
            parent = parents[b % len(parents)]
            ent = r.create_entity(parent, {comp: {fld: value}})
            assert r.parent_of(ent) == parent
            assert r.get_field(ent, comp, fld) == value
            self.pending_creates.setdefault(i, []).append(ent)
            self.remember(i)
        elif op == "set":
            cands = self.editable(i, sorted(self.seen.get(i, set()) | set(live)))
            if not cands:
                return
            ent = cands[a % len(cands)]
            r.set_field(ent, comp, fld, value)
            assert r.get_field(ent, comp, fld) == value
        elif op == "move":
            cands = self.editable(i, live)
            if not cands:
                return
            ent = cands[a % len(cands)]
            parents = [ROOT, *live]
            parent = parents[b % len(parents)]
            # Would it make a cycle? Walk up from the new parent.
            node, cycle = parent, False
            while node != ROOT:
                if node == ent:
                    cycle = True
                    break
                node = r.parent_of(node)
            if cycle:
                before = r.state()
                with pytest.raises(ValueError):
                    r.move(ent, parent)
                assert r.state() == before
            else:
                r.move(ent, parent)
                assert r.parent_of(ent) == parent
        elif op == "delete":
            cands = self.editable(i, live)
            if not cands:
                return
            ent = cands[a % len(cands)]
            r.delete(ent)
            assert r.parent_of(ent) is None
            assert not r.exists(ent)
        assert_tree_invariants(r)

    def conflict(self, what: str, i: int, j: int, a: int, b: int, c: int) -> None:
        n = len(self.replicas)
        i, j = i % n, j % n
        if i == j:
            j = (i + 1) % n
        ri, rj = self.replicas[i], self.replicas[j]
        if not {self.role(i), self.role(j)} <= {"editor", "admin", "owner"}:
            return
        shared = sorted(set(ri.entities()) & set(rj.entities()))
        both = [e for e in self.editable(i, shared) if e in set(self.editable(j, shared))]
        if what == "cycle":
            # i moves x under y while j moves y under x (each fine locally).
            if len(both) < 2:
                return
            x = both[a % len(both)]
            rest = [e for e in both if e != x]
            y = rest[b % len(rest)]
            if ri.parent_of(x) is None or rj.parent_of(y) is None:
                return
            if _is_ancestor(ri, x, y) or _is_ancestor(rj, y, x):
                return
            ri.move(x, y)
            rj.move(y, x)
        elif what == "delete_vs_move":
            if not both:
                return
            x = both[a % len(both)]
            targets = [e for e in [ROOT, *sorted(rj.entities())] if not _is_ancestor(rj, x, e)]
            ri.delete(x)
            rj.move(x, targets[b % len(targets)])
        elif what == "delete_vs_add":
            # i deletes p while j adds a child under it.
            if not both:
                return
            p = both[a % len(both)]
            ri.delete(p)
            child = rj.create_entity(p, {"name": {"text": f"child {c}"}})
            self.pending_creates.setdefault(j, []).append(child)
            self.remember(j)
        self.commit(i)
        self.commit(j)

    def role_op(self, i: int, j: int, role: str) -> None:
        r = self.replicas[i]
        if i == j or j == 0:
            return
        target = self.net.room.identities[j].public_id
        mine, theirs = self.role(i), r.role_of(target)  # as replica i sees them
        allowed = mine == "owner" or (mine == "admin" and theirs != "admin" and role != "admin")
        if allowed:
            r.grant(target, role)
            assert r.role_of(target) == role
        else:
            with pytest.raises(PermissionDenied):
                r.grant(target, role)

    def commit(self, i: int) -> None:
        r = self.replicas[i]
        before = r.state()
        pending = r.pending_ops
        try:
            data = self.net.commit(i)
        except PermissionDenied:
            # A role change applied since the edits took the right away: rolled back.
            assert r.pending_ops == 0
            for ent in self.pending_creates.pop(i, []):
                assert not r.exists(ent)
                self.seen.get(i, set()).discard(ent)
            self.check_committed_state(i)
            return
        if data is None:
            assert pending == 0
            return
        if self.check_commit_is_invisible:
            # The uncommitted batch sorted after everything applied; its stamp does too.
            assert r.state() == before
        self.net.created.extend(self.pending_creates.pop(i, []))
        assert r.has_change(change_id(data))
        assert r.pending_ops == 0

    def discard(self, i: int) -> None:
        r = self.replicas[i]
        r.discard()
        assert r.pending_ops == 0
        for ent in self.pending_creates.pop(i, []):
            assert not r.exists(ent)
            self.seen.get(i, set()).discard(ent)
        self.check_committed_state(i)

    def check_committed_state(self, i: int) -> None:
        """With no local batch, the state is exactly what the applied changes say."""
        r = self.replicas[i]
        assert r.state() == reference_state(r.changes_since([]), r.retracted_changes())

    def finish(self) -> None:
        net = self.net
        net.t += 100.0
        for i in range(len(self.replicas)):
            self.commit(i)
        full_sync(self.replicas, net.t)
        reps = self.replicas
        assert_converged(reps)
        for d in net.log:
            cid = change_id(d)
            assert all(r.has_change(cid) for r in reps)
        expected = reference_state(reps[0].changes_since([]), reps[0].retracted_changes())
        for r in reps:
            assert r.state() == expected
            assert_created_accounted(r, net.created)
            assert not r.equivocations


def _is_ancestor(r: SceneReplica, anc: EntityId, node: EntityId) -> bool:
    """True if ``anc`` is ``node`` or above it in ``r``'s live tree."""
    while node != ROOT and node is not None:
        if node == anc:
            return True
        node = r.parent_of(node)
    return False


def seed_scene(run: Run) -> None:
    """The owner creates a small shared tree that every replica starts from, so that the
    random edits conflict (concurrent moves, deletes and sets on the same entities)."""
    owner = run.replicas[0]
    a = owner.create_entity(ROOT, {"name": {"text": "a"}})
    b = owner.create_entity(a, {"name": {"text": "b"}})
    c = owner.create_entity(b)
    d = owner.create_entity(ROOT)
    e = owner.create_entity(d, {"transform": {"position": [0.0, 0.0, 0.0]}})
    run.pending_creates[0] = [a, b, c, d, e]
    data = run.net.commit(0)
    assert data is not None
    run.net.created.extend(run.pending_creates.pop(0))
    for i, r in enumerate(run.replicas[1:], start=1):
        deliver(r, [data], run.net.now(i))
        run.remember(i)
    run.remember(0)


def run_program(
    roles: list[str], skew: list[float], program: list[tuple[Any, ...]], **kw: Any
) -> Run:
    room = make_room(roles)
    net = Network(room, skew[: len(roles) + 1])
    # A change from a member this replica has seen revoked, arriving before its deps, is
    # refused ("unknown_author", transient) rather than buffered; anti-entropy resends it.
    net.allow_transient = any(a[0] == "role" for a in program)
    run = Run(net, **kw)
    seed_scene(run)
    for action in program:
        run.do(action)
    run.finish()
    return run


# --------------------------------------------------------------------------- property tests


@SETTINGS
@given(
    roles=room_roles(choices=("editor", "admin")),
    skew=st.lists(skews, min_size=5, max_size=5),
    program=rounds() | st.lists(basic_actions, min_size=10, max_size=60),
)
def test_random_concurrent_edits_converge(roles, skew, program):
    run_program(roles, skew, program)


@SETTINGS
@given(
    roles=room_roles(choices=("admin",)),
    skew=st.lists(skews, min_size=5, max_size=5),
    program=rounds(),
)
def test_all_admins_heavy_conflicts_converge(roles, skew, program):
    """Admins may touch every entity: the most concurrent moves, deletes and sets."""
    run_program(roles, skew, program)


@SETTINGS
@given(
    roles=room_roles(choices=("viewer", "editor", "admin")),
    skew=st.lists(skews, min_size=5, max_size=5),
    program=rounds(extra=role_change),
)
def test_mixed_roles_with_concurrent_role_changes_converge(roles, skew, program):
    """Owner and admins grant, demote and revoke while others edit concurrently."""
    run_program(roles, skew, program)


@SETTINGS
@given(
    roles=room_roles(min_members=1, max_members=3),
    skew=st.lists(skews, min_size=5, max_size=5),
    rounds=st.lists(
        st.tuples(
            st.lists(edit, min_size=1, max_size=6),  # local edits, left uncommitted
            st.lists(deliver_, min_size=1, max_size=3),  # remote changes arrive meanwhile
            st.lists(edit, max_size=4),  # more local edits on top
            st.lists(st.one_of(commit, commit, discard), min_size=1, max_size=3),
        ),
        min_size=2,
        max_size=8,
    ),
)
def test_uncommitted_local_edits_interleaved_with_remote_applies(roles, skew, rounds):
    """Local ops carry an infinite stamp until commit: remote changes applied in between
    sort before them, the commit does not change the local view, a discard leaves exactly
    the applied changes' state, and everything converges."""
    room = make_room(roles)
    run = Run(Network(room, skew[: len(roles) + 1]))
    seed_scene(run)
    for first, deliveries, more, ends in rounds:
        for a in first:
            run.do(a)
        for d in deliveries:
            run.do(d)
        for a in more:
            run.do(a)
        for e in ends:
            run.do(e)
        for i in range(len(room.replicas)):
            if room.replicas[i].pending_ops == 0:
                run.check_committed_state(i)
    run.finish()


# --------------------------------------------------------------------------- named scenarios


def _two_admins():
    room = make_room(["admin", "admin"])
    return room, room.replicas


def test_concurrent_moves_that_would_form_a_cycle():
    """A moves x under y while B moves y under x: the earlier move wins, the later is skipped."""
    for a_first in (True, False):
        _room, (o, a, b) = _two_admins()
        x = o.create_entity(ROOT, {"name": {"text": "x"}})
        y = o.create_entity(ROOT, {"name": {"text": "y"}})
        deliver(a, [o.commit(1000.0)], 1000.0)
        deliver(b, a.changes_since(b.heads()), 1000.0)
        a.move(x, y)
        b.move(y, x)
        ta, tb = (1001.0, 1002.0) if a_first else (1002.0, 1001.0)
        ca, cb = a.commit(ta), b.commit(tb)
        deliver(a, [cb], 1003.0)
        deliver(b, [ca], 1003.0)
        deliver(o, [cb, ca], 1003.0)
        assert_converged([o, a, b])
        if a_first:
            assert a.parent_of(x) == y and a.parent_of(y) == ROOT
        else:
            assert a.parent_of(y) == x and a.parent_of(x) == ROOT
        assert a.state() == reference_state(a.changes_since([]))


def test_three_way_cycle_and_long_chain():
    """x->y, y->z, z->x concurrently from three replicas: at least one is skipped."""
    room = make_room(["admin", "admin"])
    o, a, b = room.replicas
    x, y, z = (o.create_entity(ROOT) for _ in range(3))
    full_sync_from(o, [a, b], o.commit(1000.0))
    o.move(x, y)
    a.move(y, z)
    b.move(z, x)
    cs = [o.commit(1001.0), a.commit(1001.5), b.commit(1002.0)]
    for r in (o, a, b):
        deliver(r, cs, 1003.0)
    assert_converged([o, a, b])
    parents = {e: o.parent_of(e) for e in (x, y, z)}
    assert parents == {x: y, y: z, z: ROOT}


def full_sync_from(src: SceneReplica, dsts: list[SceneReplica], data: bytes | None) -> None:
    assert data is not None
    for d in dsts:
        deliver(d, [data], 1000.0)


@pytest.mark.parametrize("delete_first", [True, False])
def test_delete_vs_concurrent_move(delete_first):
    """A deletes x while B moves x under z: the later stamp decides (a later move revives)."""
    _room, (o, a, b) = _two_admins()
    x = o.create_entity(ROOT, {"name": {"text": "x"}})
    child = o.create_entity(x, {"name": {"text": "child of x"}})
    z = o.create_entity(ROOT)
    full_sync_from(o, [a, b], o.commit(1000.0))
    a.delete(x)
    b.move(x, z)
    ta, tb = (1001.0, 1002.0) if delete_first else (1002.0, 1001.0)
    ca, cb = a.commit(ta), b.commit(tb)
    for r in (o, a, b):
        deliver(r, [cb, ca] if r is a else [ca, cb], 1003.0)
    assert_converged([o, a, b])
    if delete_first:  # the move is later: x (and its subtree) come back under z
        assert o.parent_of(x) == z and o.parent_of(child) == x
    else:
        assert o.parent_of(x) is None and o.parent_of(child) is None
        assert str(x) not in o.state() and str(child) not in o.state()


@pytest.mark.parametrize("delete_first", [True, False])
def test_delete_parent_while_child_added_concurrently(delete_first):
    """A deletes p while B creates c under p: c is never live, whichever is stamped first."""
    room = make_room(["admin", "editor"])
    o, a, b = room.replicas
    p = o.create_entity(ROOT)
    full_sync_from(o, [a, b], o.commit(1000.0))
    a.delete(p)
    c = b.create_entity(p, {"name": {"text": "orphan"}})
    ta, tb = (1001.0, 1002.0) if delete_first else (1002.0, 1001.0)
    ca, cb = a.commit(ta), b.commit(tb)
    for r in (o, a, b):
        deliver(r, [ca, cb], 1003.0)
    assert_converged([o, a, b])
    for r in (o, a, b):
        assert not r.exists(p) and not r.exists(c)
        assert r.parent_of(c) is None
        assert_created_accounted(r, [p, c])
    assert o.state() == reference_state(o.changes_since([]))


def test_concurrent_sets_last_writer_wins_by_clock_then_author():
    _room, (o, a, b) = _two_admins()
    e = o.create_entity(ROOT)
    full_sync_from(o, [a, b], o.commit(1000.0))
    a.set_field(e, "transform", "position", [1.0, 1.0, 1.0])
    b.set_field(e, "transform", "position", [2.0, 2.0, 2.0])
    # Same ``now``: equal physical clocks; the tie breaks on the author's key.
    ca, cb = a.commit(1001.0), b.commit(1001.0)
    for r in (o, a, b):
        deliver(r, [ca, cb], 1001.0)
    assert_converged([o, a, b])
    winner = max((a, [1.0, 1.0, 1.0]), (b, [2.0, 2.0, 2.0]), key=lambda t: t[0].identity.public_key)
    assert o.get_field(e, "transform", "position") == winner[1]


def test_skewed_clocks_within_bound_are_accepted():
    """Replica clocks 30 s ahead and 30 s behind exchange changes without a rejection."""
    room = make_room(["editor", "editor"])
    o, fast, slow = room.replicas
    e1 = fast.create_entity(ROOT)
    c1 = fast.commit(1000.0 + 30.0)
    deliver(slow, [c1], 1000.0 - 30.0)
    e2 = slow.create_entity(e1)
    c2 = slow.commit(1000.0 - 30.0)  # stamped after c1 anyway: the HLC observed c1
    deliver(o, [c2, c1], 1000.0)
    deliver(fast, [c2], 1000.0 + 30.0)
    assert_converged([o, fast, slow])
    assert o.parent_of(e2) == e1


# --------------------------------------------------------------------------- snapshots


@settings(SETTINGS, max_examples=max(20, SETTINGS.max_examples // 3))
@given(
    roles=room_roles(choices=("editor", "admin")),
    skew=st.lists(skews, min_size=5, max_size=5),
    program=rounds(),
    pick=st.integers(0, 10_000),
)
def test_snapshot_of_a_converged_room_joins_and_keeps_converging(roles, skew, program, pick):
    """After a random history: a late joiner loads a snapshot (same state and heads, no
    replay), a member restarts from one with its own identity, and edits made afterwards on
    every side still converge."""
    run = run_program(roles, skew, program)
    reps = run.replicas
    n = len(reps)
    t = run.net.t + 1.0
    src = reps[pick % n]
    snap = src.snapshot()
    late = SceneReplica.from_snapshot(snap, ident("late-joiner"))
    assert late.state() == src.state()
    assert late.heads() == src.heads()
    assert late.members() == src.members()
    assert_tree_invariants(late)
    k = 1 + pick % (n - 1)  # a non-owner member restarts from the snapshot
    restarted = SceneReplica.from_snapshot(snap, run.net.room.identities[k])
    assert restarted.state() == src.state()
    # New edits everywhere: on the owner, on the restarted member, on an old replica.
    owner = reps[0]
    e = owner.create_entity(ROOT, {"name": {"text": "after snapshot"}})
    data_o = owner.commit(t)
    mine = restarted.create_entity(ROOT, {"name": {"text": "restarted"}})
    data_r = restarted.commit(t)
    deliver(late, [data_r, data_o], t)
    everyone = [*reps[:k], restarted, *reps[k + 1 :]]
    deliver(restarted, [data_o], t)
    for r in everyone:
        deliver(r, [data_o, data_r], t)
    assert_converged([*everyone, late])
    assert late.exists(e) and late.exists(mine)
    # The restarted member continued its own entity counter and seq: nothing clashes.
    assert mine not in run.net.created
