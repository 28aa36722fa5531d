"""Head snapshots: a frontier snapshot whose frontier sits at (or near) the writer's heads.

A node serves joining clients a snapshot with its frontier near its current heads
(``meshnode.rooms.head_snapshots``), so it lists few changes whatever the history's length.
A client started from it, then given the changes the node applies later (in any order, with
the ones it already holds again), must end where a replica that replayed the whole history
ends, and judge new changes alike; an equivocating author is in the history. A change stamped
at or before the frontier that the writer lacked is refused as ``behind_frontier`` (never
merged wrongly): that is what tells the client to start again from a fresh snapshot.
"""

from __future__ import annotations

import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meshnode.crdt import ROOT, SceneReplica
from meshnode.crdt.snapshot import decode_snapshot
from protocol.change import decode_change
from protocol.limits import DEFAULT_LIMITS
from tests.crdt.harness import deliver, ident
from tests.crdt.test_frontier_snapshot import _continue, _same
from tests.crdt.test_snapshot_join import (
    NOW,
    _catch_up,
    _full,
    _history,
    _judge_next_alike,
)


def _hlc(data: bytes) -> int:
    return decode_change(data, DEFAULT_LIMITS).hlc


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), steps=st.integers(5, 40), back=st.floats(0.0, 0.2),
       order_seed=st.integers(0, 10_000), one_by_one=st.booleans(), job=st.booleans())
def test_head_snapshot_plus_later_changes_equals_full_replay(
    seed: int, steps: int, back: float, order_seed: int, one_by_one: bool, job: bool
) -> None:
    genesis, first = _history(seed, steps)
    rng = random.Random(order_seed)
    node = SceneReplica.from_genesis(genesis, ident("node"))
    delivered = list(first)
    rng.shuffle(delivered)
    deliver(node, delivered, NOW + 100, allow_transient=True)
    deliver(node, first, NOW + 100, allow_transient=True)
    # The frontier at the node's heads, or a little behind them (``SETTLE_S``).
    top = max(_hlc(c) for c in first)
    floor = min(_hlc(c) for c in first)
    frontier = top - int((top - floor) * back)
    snap = node.snapshot_job(frontier)() if job else node.snapshot(keep_after_hlc=frontier)
    content = decode_snapshot(snap, DEFAULT_LIMITS, None).content
    assert content.frontier is not None
    listed = len(content.changes)
    assert listed == sum(1 for c in node.changes_since([]) if _hlc(c) > frontier)
    if back == 0.0:
        assert listed == 0  # at the heads: nothing listed, the room only summarised
    client = SceneReplica.from_snapshot(snap, ident("client"),
                                        trusted_signers=[node.identity.public_key])
    assert client.state() == node.state() and client.heads() == node.heads()
    assert client.version_vector() == node.version_vector()
    # The room moves on (built on what every writer had); the client gets it all, shuffled,
    # with what it already holds again, as the node's sync would send it.
    later = _continue(genesis, first, seed, steps)
    everything = first + later
    full = _full(genesis, everything, "full")
    _catch_up(client, everything, full, rng, one_by_one)
    _same(client, full)
    _judge_next_alike(genesis, seed, everything, client, full)
    _same(client, full)


def late_change() -> tuple[SceneReplica, bytes, SceneReplica]:
    """A node, a change an author made offline (stamped before the node's head snapshot but
    not yet applied by it), and a client started from that snapshot."""
    genesis, first = _history(11, 20)
    node = SceneReplica.from_genesis(genesis, ident("node"))
    deliver(node, first, NOW + 100)
    writer = SceneReplica.from_genesis(genesis, ident("snapjoin-2", 1))
    deliver(writer, first, NOW + 100)
    writer.create_entity(ROOT, {"p": {"x": 3.0}})
    offline = writer.commit(NOW + 90)  # made while the writer was away
    assert offline is not None
    node.tick_clock(NOW + 110)
    snap = node.snapshot(keep_after_hlc=_hlc(offline) + 1)
    client = SceneReplica.from_snapshot(snap, ident("client"),
                                        trusted_signers=[node.identity.public_key])
    return node, offline, client


def test_a_change_the_writer_lacked_below_the_frontier_is_refused() -> None:
    """A late change (stamped before the head snapshot's frontier, applied by the node after
    it wrote the snapshot) is refused by the client as ``behind_frontier``, never merged into
    a summary that lacks it: the client's cue to start again from a fresh snapshot."""
    node, offline, client = late_change()
    assert node.apply(offline, NOW + 120).status == "applied"
    res = client.apply(offline, NOW + 120)
    assert (res.status, res.reason) == ("rejected", "behind_frontier")
    # The node's next head snapshot has it below its frontier: the client restarts from it.
    fresh = SceneReplica.from_snapshot(node.snapshot(keep_after_hlc=_hlc(offline) + 1),
                                       ident("client"),
                                       trusted_signers=[node.identity.public_key])
    assert fresh.state() == node.state()
    assert fresh.version_vector() == node.version_vector()
