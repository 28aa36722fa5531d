"""Starting from a snapshot plus the changes after it equals replaying everything.

A joining client or a restarting node loads a signed snapshot and then applies the changes
it lacks, in whatever order the network delivers them. Whatever the cut (any causally
closed set of changes, taken from a replica that saw them in any order), whatever the order
of the rest, and with an equivocating author in the history, it must end exactly where a
replica that replayed the whole history from the genesis ends: same scene, heads, version
vector, members, equivocations; and it must then judge new changes alike.
"""

from __future__ import annotations

import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meshnode.crdt import ROOT, SceneReplica
from tests.crdt.harness import deliver, ident, make_room

NOW = 5_000.0


def _history(seed: int, steps: int) -> tuple[bytes, list[bytes]]:
    """A room's history: an owner, two editors and an editor who runs two replicas under
    one identity (so it equivocates), editing concurrently with partial syncs."""
    rng = random.Random(seed)
    room = make_room(["editor", "editor", "editor"], tag=f"snapjoin-{seed % 3}")
    twin = SceneReplica.from_genesis(room.genesis, room.identities[3])
    deliver(twin, room.owner.changes_since([]), NOW)
    writers = [*room.replicas, twin]
    every: dict[bytes, bytes] = {}
    for d in room.owner.changes_since([]):
        every[d] = d
    t = NOW
    for _ in range(steps):
        w = rng.choice(writers)
        ents = [e for e in w.entities() if e.creator == w.identity.public_key]
        act = rng.random()
        try:
            if act < 0.35 or not ents:
                parent = rng.choice([ROOT, *w.entities()[:3]])
                w.create_entity(parent, {"p": {"x": rng.random()}})
            elif act < 0.75:
                w.set_field(rng.choice(ents), "p", "x", rng.random())
            elif act < 0.9:
                w.move(rng.choice(ents), rng.choice([ROOT, *w.entities()[:4]]))
            else:
                w.delete(rng.choice(ents))
        except (ValueError, PermissionError):
            w.discard()
            continue
        t += 0.01
        data = w.commit(t)
        if data is not None:
            every[data] = data
        if rng.random() < 0.4:  # a partial sync between two replicas
            a, b = rng.sample(writers, 2)
            deliver(b, a.changes_since(b.heads()), t)
    return room.genesis, list(every)


def _full(genesis: bytes, changes: list[bytes], tag: str) -> SceneReplica:
    r = SceneReplica.from_genesis(genesis, ident(tag))
    deliver(r, changes, NOW + 100)
    assert r.buffered_count() == 0
    return r


def _catch_up(late: SceneReplica, changes: list[bytes], full: SceneReplica,
              rng: random.Random, one_by_one: bool) -> None:
    """``late`` (started from a snapshot) is sent every change, those in its snapshot too
    (duplicates), in any order, then what anti-entropy would send (an author refused for now,
    whose grant had not arrived yet, comes again), and holds nothing back."""
    rest = list(changes)
    rng.shuffle(rest)
    deliver(late, rest, NOW + 100, many=not one_by_one, allow_transient=True)
    deliver(late, full.changes_since(late.heads(), late.version_vector()), NOW + 100)
    assert late.buffered_count() == 0


def _same(a: SceneReplica, b: SceneReplica) -> None:
    assert a.state() == b.state()
    assert a.heads() == b.heads()
    assert a.version_vector() == b.version_vector()
    assert a.members() == b.members()
    assert a.change_count() == b.change_count()
    assert sorted(sorted(e.change_ids) for e in a.equivocations) == \
        sorted(sorted(e.change_ids) for e in b.equivocations)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), steps=st.integers(5, 30), cut=st.floats(0.0, 1.0),
       order_seed=st.integers(0, 10_000), one_by_one=st.booleans())
def test_snapshot_plus_later_changes_equals_full_replay(
    seed: int, steps: int, cut: float, order_seed: int, one_by_one: bool
) -> None:
    genesis, changes = _history(seed, steps)
    full = _full(genesis, changes, "full")
    rng = random.Random(order_seed)
    # The cut: whatever a replica holds after receiving a random subset in a random order
    # (changes whose deps it lacks stay buffered and are not in its snapshot).
    subset = [c for c in changes if rng.random() < cut]
    rng.shuffle(subset)
    early = SceneReplica.from_genesis(genesis, ident("early"))
    deliver(early, subset, NOW + 100, allow_transient=True)
    snap = early.snapshot()
    late = SceneReplica.from_snapshot(snap, ident("late"),
                                      trusted_signers=[early.identity.public_key])
    _catch_up(late, changes, full, rng, one_by_one)
    _same(late, full)
    _judge_next_alike(genesis, seed, changes, late, full)
    _same(late, full)


def _judge_next_alike(genesis: bytes, seed: int, changes: list[bytes], joined: SceneReplica,
                      full: SceneReplica) -> None:
    """``joined`` (from a snapshot) and ``full`` judge what comes next alike: an editor's
    edit on top of ``changes`` is applied, a stranger's change refused (``not_a_member``)."""
    editor = SceneReplica.from_genesis(genesis, ident(f"snapjoin-{seed % 3}", 1))
    deliver(editor, changes, NOW + 100)
    editor.create_entity(ROOT, {"p": {"x": 1.0}})
    nxt = editor.commit(NOW + 101)
    assert nxt is not None
    stranger_edit = _stranger_change(SceneReplica.from_genesis(genesis, ident("stranger")),
                                     full)
    for r in (joined, full):
        assert r.apply(nxt, NOW + 101).status == "applied"
        assert r.apply(stranger_edit, NOW + 101).reason == "not_a_member"


def _stranger_change(stranger: SceneReplica, room: SceneReplica) -> bytes:
    from tests.crdt.harness import craft

    return craft(room, stranger.identity, [[3, 1, None]], seq=1)


def test_equivocation_inside_the_snapshot_is_kept() -> None:
    for seed in range(40):
        genesis, changes = _history(seed, 30)
        full = _full(genesis, changes, "full")
        if not full.equivocations:
            continue
        late = SceneReplica.from_snapshot(full.snapshot(), ident("late"),
                                          trusted_signers=[full.identity.public_key])
        _same(late, full)
        return
    raise AssertionError("no history with an equivocation: the generator must make one")
