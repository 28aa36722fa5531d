"""Regression: HyParView stays split after a partition heals unless full views rewire.

During a partition each side fills its active views from its own side; once every view is
full, nothing takes a passive peer again (repair runs only while a view has room, and a full
node refuses every link that is not a JOIN), so the two sides never link up after the heal
and their edits never meet. Found by ``test_convergence.test_live_replicas_converge`` (seed
178, n 12, degree 2.0, partition mask 246). These tests pin that repro and its siblings with
the core's DEFAULT rewiring settings (``OverlayConfig.rewire_interval_s``): every one of them
stayed split for good before rewiring was on by default, except where noted.
"""

from __future__ import annotations

import pytest

from meshnode.overlay import ConnectRequest, OverlayConfig

from .harness import Network, ring_edges
from .test_convergence import CONFIG, Action, run_scenario


def _twice_partitioned(seed: int, n: int, degree: float, mask: int) -> dict:
    """The shape hypothesis found: edits, a 6 s partition by ``mask``, edits, and the same
    partition again once the first has healed (by then each side is a complete graph)."""
    return {
        "seed": seed, "n": n, "degree": degree, "max_latency": 0.05, "max_loss": 0.0,
        "jitter": 0.0, "allow_new_links": True,
        "actions": [Action("edit", 0, 0.1), Action("partition", 0, 0.1, 6.0, mask),
                    Action("edit", 1, 0.3), Action("edit", 5, 0.3),
                    Action("partition", 0, 7.0, 6.0, mask)],
    }


def _merged(net: Network, timeout: float) -> bool:
    return net.run_until(lambda: net.is_connected(active=True) and net.converged(),
                         timeout=timeout, step=1.0)


@pytest.mark.parametrize(("seed", "n", "degree", "mask"), [
    (178, 12, 2.0, 246),  # the repro: nodes 1, 2, 4, 5, 6, 7 against 0, 3, 8, 9, 10, 11
    (178, 12, 3.0, 246),  # denser start
    (11, 14, 2.5, 0b11001100110011),  # 8 against 6
    (3, 15, 4.0, 0b101010101010101),  # 8 against 7, interleaved
    (5, 12, 2.0, 0b111111),  # halves by index
    (9, 11, 3.5, 0b10110011010),  # 6 against 5
], ids=["repro-178", "dense", "n14", "n15-interleaved", "halves", "n11"])
def test_full_sides_merge_after_the_partition_heals(seed: int, n: int, degree: float,
                                                    mask: int) -> None:
    net = run_scenario(_twice_partitioned(seed, n, degree, mask))
    assert _merged(net, timeout=120.0), f"overlay split: {sorted(net.active_edges())}"
    net.assert_converged()
    for node in net.nodes:
        assert node.overlay is not None
        assert len(node.overlay.view.active) <= CONFIG.active_view_size + 1  # + a trial


def test_rewiring_is_on_by_default() -> None:
    """What the tests here run with: the core's default, not a setting made for them."""
    assert CONFIG.rewire_interval_s == OverlayConfig().rewire_interval_s > 0


def _cliques(groups: list[list[int]], seed: int, apart_s: float = 30.0) -> Network:
    """A ring over every node, partitioned into ``groups`` for ``apart_s`` (30 s is long
    enough for each group of 6 to become a complete graph: every view of 5 full), an edit in
    each group, then healed, and discovery tells every node of every other."""
    net = Network(seed=seed, config=CONFIG, allow_new_links=True)
    room = net.add_room(sum(len(g) for g in groups))
    for a, b in ring_edges(room.nodes):
        net.link(a, b)
    net.run_for(1.0)
    net.partition(groups)
    net.run_for(apart_s)
    for g in groups:
        net.edit_random(g[0])
    net.run_for(2.0)
    assert not net.converged()
    net.heal()
    for i in room.nodes:
        net.introduce(i, room.nodes)
    return net


def test_three_full_groups_merge_after_the_partition_heals() -> None:
    groups = [list(range(0, 6)), list(range(6, 12)), list(range(12, 18))]
    net = _cliques(groups, seed=61)
    assert all(len(net.nodes[i].overlay.view.active) == 5  # type: ignore[union-attr]
               for g in groups for i in g), "precondition: every view full"
    assert _merged(net, timeout=120.0), f"overlay split: {sorted(net.active_edges())}"
    net.assert_converged()


def test_groups_merge_after_a_partition_longer_than_the_backoff() -> None:
    """Apart for 20 minutes: every node's rewire interval has backed off to its maximum
    (nothing moved on its side), and neither the heal nor discovery tells anyone anything
    new (every node already knew every other). The first swap across (one of 12 nodes'
    jittered timers) bridges the groups; its heads name changes the other side lacks, which
    puts both ends back to the base rate, and the groups mix."""
    net = Network(seed=64, config=CONFIG, allow_new_links=True)
    room = net.add_room(12)
    groups = [room.nodes[:6], room.nodes[6:]]
    for a, b in ring_edges(room.nodes):
        net.link(a, b)
    for i in room.nodes:
        net.introduce(i, room.nodes)
    net.run_for(1.0)
    net.partition(groups)
    net.run_for(1_200.0)
    for g in groups:
        net.edit_random(g[0])
    net.run_for(2.0)
    net.heal()
    assert all(net.nodes[i].overlay.view.rewire_every  # type: ignore[union-attr]
               == CONFIG.rewire_max_interval_s for i in room.nodes)
    assert _merged(net, timeout=CONFIG.rewire_max_interval_s), sorted(net.active_edges())
    net.assert_converged()


def test_a_single_node_side_rejoins_after_the_heal() -> None:
    """One node cut off alone, the other six a complete graph: the lone node's view is
    empty, so its JOIN displaces a neighbour (this case never stayed split; it guards that
    rewiring does not get in its way)."""
    groups = [[3], [0, 1, 2, 4, 5, 6]]
    net = _cliques(groups, seed=62)
    assert _merged(net, timeout=60.0), f"overlay split: {sorted(net.active_edges())}"
    net.assert_converged()


def test_a_settled_mesh_rewires_rarely() -> None:
    """Bounded churn: once nothing moves, the rewire interval backs off to
    ``rewire_max_interval_s``; a swap is confirmed before anyone is evicted, and never
    evicts a link younger than half an interval, so views stay full and connected."""
    net = Network(seed=63, config=CONFIG, allow_new_links=True)
    room = net.add_room(20)
    for a, b in ring_edges(room.nodes):
        net.link(a, b)
    for i in room.nodes:
        net.introduce(i, room.nodes)  # new peers: every node rewires at the base rate
    net.run_for(1_000.0)
    t0 = net.now
    window = CONFIG.rewire_max_interval_s
    for _ in range(int(window // 20)):
        net.run_for(20.0)
        assert net.is_connected(active=True)
        for i in room.nodes:
            ov = net.nodes[i].overlay
            assert ov is not None
            assert len(ov.view.active) <= CONFIG.active_view_size + 1
    swaps = [d for d in net.disconnects if d[0] >= t0 and d[3] == "rewire"]
    # Each swap evicts one neighbour at each end (the peer's only if it was full): at most
    # two per swap, and about one swap per node per window (its interval is jittered by
    # +-25%, so a few nodes fit a second one in).
    assert len(swaps) <= 2 * 1.5 * len(room.nodes), len(swaps)
    assert [d for d in net.disconnects if d[0] >= t0 and d[3] == "misbehaving"] == []


def _two_full_cliques() -> tuple[Network, list[int], list[int]]:
    """Two complete graphs of 6 (every view of 5 full, every link settled), apart while
    they settle, then healed; no node rewires on its own timer (the test drives it)."""
    net = Network(seed=65, config=CONFIG, allow_new_links=True)
    room = net.add_room(12)
    left, right = room.nodes[:6], room.nodes[6:]
    net.partition([left, right])
    for group in (left, right):
        for k, a in enumerate(group):
            for b in group[k + 1:]:
                net.link(a, b)
    for i in room.nodes:
        net.introduce(i, room.nodes)
    net.run_for(CONFIG.rewire_interval_s)  # links older than half an interval: settled
    net.heal()
    for i in room.nodes:
        net.nodes[i].overlay.view.next_rewire = float("inf")  # type: ignore[union-attr]
    assert all(len(active(net, i)) == 5 for i in room.nodes)
    return net, left, right


def active(net: Network, i: int) -> set[int]:
    ov = net.nodes[i].overlay
    assert ov is not None
    return {net.index_of(p) for p in ov.view.active}


@pytest.mark.parametrize("taken", [True, False])
def test_a_swap_evicts_only_once_the_peer_took_it(taken: bool) -> None:
    """A rewire across two full groups: the peer takes it by evicting one settled
    neighbour, and only then does the initiator evict one of its own (both views stay
    full, with one link across). A peer that swapped within the last half interval refuses,
    and then nobody loses a neighbour."""
    net, left, right = _two_full_cliques()
    a = left[0]
    view_a = net.nodes[a].overlay.view  # type: ignore[union-attr]
    if not taken:
        for i in right:
            net.nodes[i].overlay.view.last_swap = net.now  # type: ignore[union-attr]
    before = {i: active(net, i) for i in left + right}
    view_a.passive = [net.nodes[i].peer_id for i in right]
    view_a.next_rewire = net.now  # at its next tick (within a repair interval)
    t0 = net.now
    net.run_for(2.0)
    asked = [net.index_of(e.peer) for t, e in net.nodes[a].events
             if t >= t0 and isinstance(e, ConnectRequest)]
    assert len(asked) == 1 and asked[0] in right
    p = asked[0]
    rewires = [d[1:3] for d in net.disconnects if d[0] >= t0 and d[3] == "rewire"]
    assert not view_a.trials and not view_a.swaps
    if taken:
        assert p in active(net, a) and a in active(net, p)
        assert len(active(net, a)) == len(active(net, p)) == 5
        assert len(before[a] - active(net, a)) == len(before[p] - active(net, p)) == 1
        assert sorted(i for i, _ in rewires) == sorted([a, p])
    else:
        assert all(active(net, i) == before[i] for i in left + right)
        assert rewires == []
        assert [d for d in net.disconnects if d[0] >= t0 and d[1:] == (p, a, "view_full")]


def test_a_short_view_backs_off_its_refused_repairs() -> None:
    """Two nodes with one neighbour each (each other) know only peers whose views are all
    full: every repair link they open is refused. They keep trying, but ever more slowly
    (at most one round per 16 repair intervals), not every interval."""
    config = OverlayConfig(active_view_size=5, repair_interval_s=0.5, rewire_interval_s=0.0)
    net = Network(seed=66, config=config, allow_new_links=True)
    room = net.add_room(8)
    clique, pair = room.nodes[:6], room.nodes[6:]
    for k, a in enumerate(clique):
        for b in clique[k + 1:]:
            net.link(a, b)
    net.link(pair[0], pair[1])
    for i in pair:
        net.introduce(i, clique)
    net.run_for(20.0)
    t0 = net.now
    net.run_for(120.0)
    refused = [d for d in net.disconnects if d[0] >= t0 and d[3] == "view_full"]
    # Without backoff: 2 nodes x 4 free slots x 240 rounds = 1,920 refused links.
    rounds = 120.0 / (16 * config.repair_interval_s)
    assert len(refused) <= 2 * 4 * (rounds + 1), len(refused)
    assert all(len(active(net, i)) == 5 for i in clique)
    assert active(net, pair[0]) == {pair[1]}
