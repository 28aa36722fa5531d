"""Pruning (compaction): a replica that drops its history below a frontier stays convergent.

The rule (docs/operators.md, "Pruning rule"): the frontier stays behind everything a peer may
still build on (its heads, and what it holds that the pruning replica lacks, with their
deps). Under it, peers that keep editing and syncing in any order after the pruning all end
where a replica that kept every change ends; a peer behind the prune point starts again from
the pruned replica's signed snapshot plus the changes after it, and converges too.
"""

from __future__ import annotations

import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meshnode.crdt import ROOT, SceneReplica
from protocol.change import change_id, decode_change
from protocol.limits import DEFAULT_LIMITS
from tests.crdt.harness import deliver, ident, make_room
from tests.crdt.test_frontier_snapshot import EXAMPLES, _frontier_for

NOW = 9_000.0


def _edit(w: SceneReplica, rng: random.Random, t: float) -> bytes | None:
    mine = [e for e in w.entities() if e.creator == w.identity.public_key]
    try:
        if not mine or rng.random() < 0.3:
            w.create_entity(rng.choice([ROOT, *w.entities()[:3]]), {"p": {"x": rng.random()}})
        elif rng.random() < 0.8:
            w.set_field(rng.choice(mine), "p", "x", rng.random())
        elif rng.random() < 0.5:
            w.move(rng.choice(mine), rng.choice([ROOT, *w.entities()[:4]]))
        else:
            w.delete(rng.choice(mine))
    except (ValueError, PermissionError):
        w.discard()
        return None
    return w.commit(t)


def _same(a: SceneReplica, b: SceneReplica) -> None:
    assert a.state() == b.state()
    assert a.heads() == b.heads()
    assert a.version_vector() == b.version_vector()
    assert a.members() == b.members()
    assert a.change_count() == b.change_count()


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), before=st.integers(5, 60), after=st.integers(0, 40),
       fraction=st.floats(0.0, 1.0))
def test_lagging_peers_converge_after_pruning(
    seed: int, before: int, after: int, fraction: float
) -> None:
    rng = random.Random(seed)
    room = make_room(["editor", "editor", "editor"], tag=f"prune-{seed % 4}")
    node, *peers = room.replicas
    everyone = [node, *peers]
    every: list[bytes] = list(node.changes_since([]))
    t = NOW

    def step() -> None:
        nonlocal t
        t += 0.01
        data = _edit(rng.choice(everyone), rng, t)
        if data is not None:
            every.append(data)
        if rng.random() < 0.5:  # a partial sync in either direction
            a, b = rng.sample(everyone, 2)
            deliver(b, a.changes_since(b.heads()), t)

    for _ in range(before):
        step()
    frontier = min(_frontier_for(node, every, fraction), _behind_every_peer(node, peers, every))
    snap, dropped = node.compact(frontier)
    assert node.change_count() == SceneReplica.from_snapshot(snap, ident("x")).change_count()
    for _ in range(after):
        step()
    # Everyone syncs with everyone, in a random order, until nothing moves.
    for _ in range(6):
        for a in everyone:
            for b in rng.sample(everyone, len(everyone)):
                if a is not b:
                    deliver(b, a.changes_since(b.heads(), b.version_vector()), t + 1)
    full = SceneReplica.from_genesis(room.genesis, ident("prune-full"))
    deliver(full, every, t + 1)
    for r in everyone:
        assert r.buffered_count() == 0
        _same(r, full)
    # A newcomer (or a peer behind the prune point) starts from the node's snapshot plus
    # the changes after it, and converges.
    late = SceneReplica.from_snapshot(node.snapshot(), ident("prune-late"))
    deliver(late, node.changes_since(late.heads(), late.version_vector()), t + 1)
    _same(late, full)
    assert len(dropped) <= full.change_count()


def test_peer_behind_the_prune_point_starts_again_from_a_snapshot() -> None:
    room = make_room(["editor", "editor"], tag="prune-behind")
    node, active, away = room.replicas
    t = NOW
    ent = active.create_entity(ROOT, {"p": {"x": 0}})
    deliver(node, [active.commit(t)], t)
    deliver(away, node.changes_since(away.heads()), t)
    for i in range(30):
        t += 1
        active.set_field(ent, "p", "x", i)
        deliver(node, [active.commit(t)], t)
    _, dropped = node.compact(_clock(node))
    assert len(dropped) > 20
    # ``away`` comes back: what the node sends cannot connect to what it has...
    deliver(away, node.changes_since(away.heads(), away.version_vector()), t + 1)
    assert away.state() != node.state()
    # ...so it starts again from the node's signed snapshot and the changes after it.
    back = SceneReplica.from_snapshot(node.snapshot(), away.identity)
    deliver(back, node.changes_since(back.heads(), back.version_vector()), t + 1)
    assert back.state() == node.state() and back.heads() == node.heads()
    mine = back.create_entity(ROOT, {"p": {"x": "back"}})
    res = node.apply(back.commit(t + 2), t + 2)
    assert res.status == "applied"
    assert node.get_field(mine, "p", "x") == "back"


def _behind_every_peer(node: SceneReplica, peers: list[SceneReplica],
                       changes: list[bytes]) -> int:
    """The rule's other half: the frontier stays behind every peer's heads, so each peer
    holds all that falls below it (a peer that does not is behind the prune point and starts
    again from the snapshot, the next test). The highest such frontier."""
    stamps = [(decode_change(d, DEFAULT_LIMITS).hlc, change_id(d)) for d in changes]
    lacking = [h for h, cid in stamps
               if node.has_change(cid) and any(not p.has_change(cid) for p in peers)]
    return min(lacking) - 1 if lacking else max(h for h, _ in stamps)


def _clock(r: SceneReplica) -> int:
    return r._clock.value
