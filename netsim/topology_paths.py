"""Graph algorithms over a :class:`~netsim.topology.Topology`: connectivity, adjacency, hop
counts and shortest one-way latency.

They read a topology, never build one: the builders (``netsim.topology``) use
:func:`_components` to join what a random draw left apart, and the simulation, its metrics and
the emulation's results ask for neighbours, hop distances and latency paths. Re-exported from
``netsim.topology``.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from netsim.links import LinkSpec
    from netsim.topology import Edge, Topology

__all__ = [
    "hop_distances",
    "is_connected",
    "neighbours",
    "shortest_from",
    "shortest_latency_ms",
]


def _components(n: int, edges: Iterable[Edge]) -> list[list[int]]:
    parent = list(range(n))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in edges:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    groups: dict[int, list[int]] = {}
    for v in range(n):
        groups.setdefault(find(v), []).append(v)
    return [groups[r] for r in sorted(groups)]


def is_connected(n: int, edges: Iterable[Edge]) -> bool:
    """Whether the undirected graph on ``0 .. n-1`` is connected."""
    return n <= 1 or len(_components(n, edges)) == 1


def neighbours(topology: Topology) -> list[list[int]]:
    """Sorted adjacency lists."""
    adj: list[list[int]] = [[] for _ in range(topology.n)]
    for a, b in topology.edges:
        adj[a].append(b)
        adj[b].append(a)
    for lst in adj:
        lst.sort()
    return adj


def hop_distances(topology: Topology, src: int) -> list[int]:
    """Hop count from ``src`` to every node by BFS (``-1`` where unreachable)."""
    adj = neighbours(topology)
    dist = [-1] * topology.n
    dist[src] = 0
    queue = deque([src])
    while queue:
        u = queue.popleft()
        for v in adj[u]:
            if dist[v] < 0:
                dist[v] = dist[u] + 1
                queue.append(v)
    return dist


def _weighted_adj(topology: Topology, default_spec: LinkSpec) -> list[list[tuple[int, float]]]:
    adj: list[list[tuple[int, float]]] = [[] for _ in range(topology.n)]
    for a, b in topology.edges:
        adj[a].append((b, topology.link_spec(a, b, default_spec).latency_ms))
        adj[b].append((a, topology.link_spec(b, a, default_spec).latency_ms))
    return adj


def _dijkstra(adj: list[list[tuple[int, float]]], src: int) -> list[float]:
    dist = [math.inf] * len(adj)
    dist[src] = 0.0
    heap = [(0.0, src)]
    while heap:
        d, u = heapq.heappop(heap)
        if d > dist[u]:
            continue
        for v, w in adj[u]:
            nd = d + w
            if nd < dist[v]:
                dist[v] = nd
                heapq.heappush(heap, (nd, v))
    return dist


def shortest_from(topology: Topology, src: int, default_spec: LinkSpec) -> list[float]:
    """One-way shortest-path latency (ms, by base ``latency_ms``) from ``src`` to every node
    (``math.inf`` where unreachable). Directed: asymmetric edge specs are honoured."""
    return _dijkstra(_weighted_adj(topology, default_spec), src)


def shortest_latency_ms(topology: Topology, default_spec: LinkSpec) -> list[list[float]]:
    """All-pairs shortest one-way latency in ms (``[src][dst]``; Dijkstra from every node).

    O(n · m log n): fine up to a few thousand nodes; use :func:`shortest_from` beyond that.
    """
    adj = _weighted_adj(topology, default_spec)
    return [_dijkstra(adj, s) for s in range(topology.n)]
