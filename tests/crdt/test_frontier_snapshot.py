"""Frontier snapshots (version 3): the changes below a frontier are summarised, not listed.

A replica started from a frontier snapshot holds per author only a seq count and its last
change, the frontier's boundary and the changes the state names. The rule that makes that
exact: a later change must have its deps after the frontier or on its boundary, i.e. the
frontier is behind every peer's heads (``docs/operators.md``, pruning rule). Under that rule,
whatever the cut, the frontier and the delivery order, and with an equivocating author, the
replica ends where one that replayed everything ends, and judges new changes alike.
"""

from __future__ import annotations

import os
import random

import msgpack
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meshnode.crdt import ROOT, SceneReplica
from meshnode.crdt.snapshot import decode_snapshot
from protocol.change import decode_change
from protocol.limits import DEFAULT_LIMITS
from tests.crdt.harness import deliver, ident
from tests.crdt.test_snapshot_join import (
    NOW,
    _catch_up,
    _full,
    _history,
    _stranger_change,
)

EXAMPLES = int(os.environ.get("FRONTIER_EXAMPLES", "15"))


def _same(a: SceneReplica, b: SceneReplica) -> None:
    assert a.state() == b.state()
    assert a.heads() == b.heads()
    assert a.version_vector() == b.version_vector()
    assert a.members() == b.members()
    assert a.change_count() == b.change_count()
    assert a.retracted_changes() == b.retracted_changes()
    # The evidence may name a twin below the frontier by the later change alone.
    assert {e.author for e in a.equivocations} == {e.author for e in b.equivocations}


def _frontier_for(early: SceneReplica, changes: list[bytes], fraction: float) -> int:
    """A frontier that keeps what every change ``early`` lacks builds on: each dep of such a
    change is after the frontier, or on its boundary (a dep of a change after it, or one of
    its maximal changes). That is the rule a pruning node follows; the highest frontier
    that meets it is found, then one at ``fraction`` of the way up to it is taken (the rule
    holds for every lower frontier too)."""
    info = {}
    for data in changes:
        ch = decode_change(data, DEFAULT_LIMITS)
        info[ch.change_id] = (ch.hlc, ch.deps)
    held = [c for c in info if early.has_change(c)]
    missing = [c for c in info if not early.has_change(c)]

    def valid(t: int) -> bool:
        below = {c for c in held if info[c][0] <= t}
        if any(info[c][0] <= t for c in missing):
            return False
        depended = {d for c in below for d in info[c][1]}
        window_deps = {d for c in held if c not in below for d in info[c][1]}
        return all(d not in below or d in window_deps or d not in depended
                   for c in missing for d in info[c][1])

    floor = min(h for h, _ in info.values())
    best = floor
    for t in sorted({h for h, _ in info.values()}, reverse=True):
        if valid(t):
            best = t
            break
    return floor + int((best - floor) * fraction)


def _history_with_sync(seed: int, steps: int) -> tuple[bytes, list[bytes]]:
    """Two stretches of concurrent editing with partial syncs (the second one after the
    first has reached everyone), so deep frontiers exist."""
    genesis, first = _history(seed, steps)
    if len(first) < 3:
        return genesis, first
    return genesis, first + _continue(genesis, first, seed, steps)


def _continue(genesis: bytes, first: list[bytes], seed: int, steps: int) -> list[bytes]:
    rng = random.Random(seed + 1)
    writers = [SceneReplica.from_genesis(genesis, ident(f"snapjoin-{seed % 3}", i))
               for i in range(4)]
    for w in writers:
        deliver(w, first, NOW + 50)
    out = []
    t = NOW + 60
    for _ in range(steps):
        w = rng.choice(writers)
        try:
            w.create_entity(ROOT, {"p": {"x": rng.random()}}) if rng.random() < 0.3 \
                else w.set_field(rng.choice(w.entities()), "p", "x", rng.random())
        except (ValueError, PermissionError, IndexError):
            w.discard()
            continue
        t += 0.01
        data = w.commit(t)
        if data is not None:
            out.append(data)
        if rng.random() < 0.4:
            a, b = rng.sample(writers, 2)
            deliver(b, a.changes_since(b.heads()), t)
    return out


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), steps=st.integers(5, 40), cut=st.floats(0.0, 1.0),
       fraction=st.floats(0.0, 1.0), order_seed=st.integers(0, 10_000),
       one_by_one=st.booleans())
def test_frontier_snapshot_plus_later_changes_equals_full_replay(
    seed: int, steps: int, cut: float, fraction: float, order_seed: int, one_by_one: bool
) -> None:
    genesis, changes = _history_with_sync(seed, steps)
    full = _full(genesis, changes, "full")
    rng = random.Random(order_seed)
    subset = [c for c in changes if rng.random() < 0.5 + cut / 2]
    rng.shuffle(subset)
    early = SceneReplica.from_genesis(genesis, ident("early"))
    deliver(early, subset, NOW + 100, allow_transient=True)
    frontier = _frontier_for(early, changes, fraction)
    snap = early.snapshot(keep_after_hlc=frontier)
    late = SceneReplica.from_snapshot(snap, ident("late"),
                                      trusted_signers=[early.identity.public_key])
    assert late.change_count() == early.change_count()
    assert late.state() == early.state() and late.heads() == early.heads()
    _catch_up(late, changes, full, rng, one_by_one)
    _same(late, full)
    # A snapshot of the late replica (a frontier of a frontier) carries on alike.
    later = SceneReplica.from_snapshot(late.snapshot(keep_after_hlc=frontier), ident("later"),
                                       trusted_signers=[late.identity.public_key])
    _same(later, full)
    editor = SceneReplica.from_genesis(genesis, ident(f"snapjoin-{seed % 3}", 1))
    deliver(editor, changes, NOW + 100)
    editor.create_entity(ROOT, {"p": {"x": 1.0}})
    nxt = editor.commit(NOW + 101)
    stranger = SceneReplica.from_genesis(genesis, ident("stranger"))
    stranger_edit = _stranger_change(stranger, full)
    for r in (late, later, full):
        assert r.apply(nxt, NOW + 101).status == "applied"
        assert r.apply(stranger_edit, NOW + 101).reason == "not_a_member"
    _same(late, full)
    _same(later, full)


def test_frontier_snapshot_size_does_not_grow_with_history() -> None:
    """Editing the same fields over and over: the frontier snapshot stays the room's size."""
    from tests.crdt.harness import make_room

    room = make_room(["editor"], tag="frontier-size")
    owner, editor = room.replicas
    ent = editor.create_entity(ROOT, {"p": {"x": 0}})
    editor.commit(NOW)
    sizes = []
    t = NOW
    for rounds in (50, 500):
        for i in range(rounds):
            t += 0.01
            editor.set_field(ent, "p", "x", i)
            editor.commit(t)
        deliver(owner, editor.changes_since(owner.heads()), t)
        snap = owner.snapshot(keep_after_hlc=owner._clock.value)
        sizes.append(len(snap))
        late = SceneReplica.from_snapshot(snap, ident("fs-late"))
        assert late.state() == owner.state()
        assert late.change_count() == owner.change_count()
        body = msgpack.unpackb(snap[:-64], raw=False)
        assert body[1] == 3 and body[6] == []  # nothing after the frontier
    assert sizes[1] <= sizes[0] + 16  # wider integers (counts), nothing per change
    assert len(owner.snapshot()) > 10 * sizes[1]  # every change listed


def test_change_below_the_frontier_is_not_merged() -> None:
    """A change stamped below the frontier: one the frontier summarises is a duplicate; one
    it never saw (a peer that was away since) is refused, and that peer must start again
    from a snapshot (``behind_frontier``)."""
    from tests.crdt.harness import make_room

    room = make_room(["editor", "editor"], tag="frontier-behind")
    owner, a, b = room.replicas
    ent = a.create_entity(ROOT)
    x = a.commit(NOW)
    b.set_field(b.create_entity(ROOT), "p", "x", 1)
    offline = b.commit(NOW + 1)  # b is away: nobody has it
    for r in (owner,):
        deliver(r, [x], NOW + 2)
    a.set_field(ent, "p", "x", 2)
    overwritten = a.commit(NOW + 3)
    a.set_field(ent, "p", "x", 3)
    deliver(owner, [overwritten, a.commit(NOW + 3.5)], NOW + 3.5)
    snap = owner.snapshot(keep_after_hlc=owner._clock.value)
    late = SceneReplica.from_snapshot(snap, ident("fb-late"))
    assert late.apply(x, NOW + 4).reason == "already_known"  # kept: it created ``ent``
    res = late.apply(overwritten, NOW + 4)  # summarised only
    assert (res.status, res.reason) == ("duplicate", "behind_frontier")
    res = late.apply(offline, NOW + 4)
    assert (res.status, res.reason) == ("rejected", "behind_frontier")
    assert late.state() == owner.state()


def test_version_2_snapshot_still_read() -> None:
    """Snapshots written before frontiers (version 2: every change listed) still load."""
    from meshnode.crdt.snapshot import encode_snapshot
    from tests.crdt.harness import make_room

    room = make_room(["editor"], tag="frontier-v2")
    owner, editor = room.replicas
    editor.set_field(editor.create_entity(ROOT), "p", "x", 1)
    deliver(owner, [editor.commit(NOW)], NOW)
    content = owner.export_content()
    assert content.frontier is not None
    genesis_rec = decode_snapshot(owner.snapshot(), DEFAULT_LIMITS, None)
    from dataclasses import replace

    from meshnode.crdt.content import ChangeRecord

    g = decode_change(owner.genesis, DEFAULT_LIMITS)
    v2 = replace(content, frontier=None, changes=(
        ChangeRecord(g.change_id, g.author, 1, g.hlc, ()), *content.changes))
    ident_ = owner.identity
    data = encode_snapshot(v2, ident_.public_key, owner.room_id, ident_.sign)
    assert msgpack.unpackb(data[:-64], raw=False)[1] == 2
    late = SceneReplica.from_snapshot(data, ident("fv2-late"))
    assert late.state() == owner.state() and late.heads() == owner.heads()
    assert genesis_rec.content.frontier is not None
