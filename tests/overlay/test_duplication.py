"""Plumtree keeps duplication low: once each author's tree has settled, a change reaches every
node about once, along (close to) the fastest path."""

from __future__ import annotations

import heapq
import random

import pytest

from meshnode.overlay import OverlayConfig

from .harness import Network, random_connected_edges

N_NODES = 50
AUTHORS = 5
WARMUP_PER_AUTHOR = 4
MEASURED = 200


def shortest_latencies(net: Network, src: int) -> dict[int, float]:
    """One-way latency of the fastest path from ``src`` over the open links (Dijkstra)."""
    dist = {src: 0.0}
    heap = [(0.0, src)]
    while heap:
        d, i = heapq.heappop(heap)
        if d > dist[i]:
            continue
        for j in net.neighbors(i):
            link = net.links[(min(i, j), max(i, j))]
            nd = d + link.dirs[(i, j)].latency
            if nd < dist.get(j, float("inf")):
                dist[j] = nd
                heapq.heappush(heap, (nd, j))
    return dist


@pytest.mark.parametrize("jitter", [0.0, 0.01])
def test_payload_copies_per_node_per_change(jitter: float) -> None:
    rng = random.Random(50)
    config = OverlayConfig(active_view_size=8, anti_entropy_interval_s=5.0)
    net = Network(seed=50, config=config, allow_new_links=False)
    room = net.add_room(N_NODES)
    edges = random_connected_edges(room.nodes, 4.0, rng, max_degree=config.active_view_size)
    for a, b in edges:
        net.link(a, b, latency=rng.uniform(0.01, 0.06), jitter=jitter)
    net.run_for(1.0)
    topology = net.edges()
    assert topology == set(edges)  # HyParView did not reshape it

    authors = rng.sample(room.nodes, AUTHORS)
    for _ in range(WARMUP_PER_AUTHOR):
        for a in authors:
            net.edit_random(a, rng)
            net.run_for(0.1)
    net.run_for(2.0)
    assert net.converged()
    before = net.stats_totals()

    measured = []
    for _ in range(MEASURED):
        measured.append(net.edit_random(rng.choice(authors), rng))
        net.run_for(0.05)
    net.run_for(3.0)
    after = net.stats_totals()
    assert net.edges() == topology

    for cid in measured:
        assert net.delivered(cid), "a change did not reach every node"
    net.assert_converged()

    pushed = after["payload_pushed_in"] - before["payload_pushed_in"]
    pulled = after["payload_pulled_in"] - before["payload_pulled_in"]
    factor = (pushed + pulled) / (N_NODES - 1) / MEASURED
    # Latency stretch: delivery delay over the fastest path's latency.
    stretch = []
    for cid in measured:
        origin = net.changes[cid]
        best = shortest_latencies(net, origin.node)
        for i in room.nodes:
            if i != origin.node:
                stretch.append((net.nodes[i].deliveries[cid].at - origin.at) / best[i])
    mean_stretch = sum(stretch) / len(stretch)
    per = (N_NODES - 1) * MEASURED
    print(
        f"\njitter {jitter}: duplication {factor:.3f} payload copies per node per change "
        f"(push {pushed / per:.3f}, pull {pulled / per:.3f}); "
        f"latency stretch mean {mean_stretch:.3f}, max {max(stretch):.3f}"
    )
    assert factor <= 1.3
    assert mean_stretch <= 1.3 + 10 * jitter
