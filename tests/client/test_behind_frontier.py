"""A kept replica that comes back after the node's pruning frontier passed it: the client's
decider (``behind_frontier``, fed the node's ``/heads`` frontier) says so exactly when the
replica lacks changes the node holds only below its frontier, and starting again from the
node's signed snapshot plus the changes after it converges, where syncing the kept replica by
changes cannot."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from meshnode.client.failover import behind_frontier
from meshnode.crdt import ROOT, SceneReplica
from meshnode.crdt.clock import hlc_from_seconds
from meshnode.identity import Identity

NOW = 1_700_000_000.0
NODE, EDITOR, AWAY = Identity.generate(), Identity.generate(), Identity.generate()


def _sync(src: SceneReplica, dst: SceneReplica, now: float) -> None:
    dst.apply_many(src.changes_since(dst.heads(), dst.version_vector()), now)


def test_a_replica_the_frontier_passed_rejoins_from_the_snapshot() -> None:
    node = SceneReplica.create(NODE, NOW, name="f", nonce=b"f" * 16)
    node.grant(EDITOR.public_id, "editor")
    node.grant(AWAY.public_id, "editor")
    first = node.commit(NOW)
    assert first is not None
    editor = SceneReplica.from_genesis(node.genesis, EDITOR)
    away = SceneReplica.from_genesis(node.genesis, AWAY)
    _sync(node, editor, NOW)
    _sync(node, away, NOW)
    ent = editor.create_entity(ROOT, {"p": {"x": 0}})
    t = NOW
    for i in range(200):  # the member is away for these
        t += 60.0
        editor.set_field(ent, "p", "x", i)
        data = editor.commit(t)
        assert data is not None and node.apply(data, t).status == "applied"
    caught_up = SceneReplica.from_genesis(node.genesis, EDITOR)
    _sync(node, caught_up, t)
    assert not behind_frontier(away.version_vector(), node.frontier_vv())  # none yet
    snapshot, pruned = node.compact(hlc_from_seconds(t - 600))
    assert pruned
    frontier = node.frontier_vv()
    assert behind_frontier(away.version_vector(), frontier)
    assert not behind_frontier(caught_up.version_vector(), frontier)
    assert not behind_frontier(node.version_vector(), frontier)
    # By changes alone the kept replica never catches up: the pruned ones are not sent.
    _sync(node, away, t)
    assert away.state() != node.state()
    # From the node's signed snapshot plus the changes after it, it does.
    rejoined = SceneReplica.from_snapshot(snapshot, AWAY)
    _sync(node, rejoined, t)
    assert rejoined.state() == node.state()
    assert not behind_frontier(rejoined.version_vector(), frontier)
    assert rejoined.role_of(AWAY.public_id) == "editor"


@given(st.dictionaries(st.binary(min_size=1, max_size=2), st.integers(0, 50), max_size=4),
       st.dictionaries(st.binary(min_size=1, max_size=2), st.integers(0, 50), max_size=4))
def test_behind_frontier_is_any_author_below(vv: dict[bytes, int],
                                             frontier: dict[bytes, int]) -> None:
    expected = any(vv.get(a, 0) < s for a, s in frontier.items())
    assert behind_frontier(vv, frontier) == expected
    merged = {a: max(vv.get(a, 0), frontier.get(a, 0)) for a in vv.keys() | frontier.keys()}
    assert not behind_frontier(merged, frontier)
