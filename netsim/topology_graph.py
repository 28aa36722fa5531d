"""The :class:`Topology` graph and what is read from it: connectivity, adjacency, hop counts
and shortest one-way latency.

A topology is ``n`` nodes and undirected edges with optional positions and per-edge link
overrides; the functions here read one and never build one. The builders
(``netsim.topology``, which re-exports everything here) make the usual shapes and use
:func:`_components` to join what a random draw left apart; the simulation, its metrics and the
emulation's results ask for neighbours, hop distances and latency paths.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from netsim.links import LinkSpec

__all__ = [
    "Edge",
    "Topology",
    "hop_distances",
    "is_connected",
    "neighbours",
    "shortest_from",
    "shortest_latency_ms",
]

Edge = tuple[int, int]


@dataclass
class Topology:
    """An undirected graph: ``n`` nodes, ``edges`` as sorted ``(a, b)`` pairs with ``a < b``
    (no duplicates, no self-loops), optional ``positions`` (km) and per-edge link overrides."""

    n: int
    edges: list[Edge]
    positions: list[tuple[float, float]] | None = None
    edge_specs: dict[Edge, LinkSpec] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.n, bool) or not isinstance(self.n, int) or self.n < 1:
            raise ValueError(f"n: must be an integer >= 1, got {self.n!r}")
        seen: set[Edge] = set()
        for e in self.edges:
            a, b = e
            if not (0 <= a < self.n and 0 <= b < self.n):
                raise ValueError(f"edges: {e} has a node outside 0..{self.n - 1}")
            if a >= b:
                raise ValueError(f"edges: {e} must be (a, b) with a < b (no self-loops)")
            if e in seen:
                raise ValueError(f"edges: duplicate edge {e}")
            seen.add(e)
        if self.positions is not None and len(self.positions) != self.n:
            raise ValueError(f"positions: expected {self.n} entries, got {len(self.positions)}")
        for key in self.edge_specs:
            a, b = key
            if (min(a, b), max(a, b)) not in seen:
                raise ValueError(f"edge_specs: {key} is not an edge")

    def link_spec(self, src: int, dst: int, default: LinkSpec) -> LinkSpec:
        """The spec of direction ``src → dst``: ``edge_specs[(src, dst)]``, else
        ``edge_specs[(dst, src)]``, else ``default``."""
        spec = self.edge_specs.get((src, dst))
        if spec is None:
            spec = self.edge_specs.get((dst, src), default)
        return spec

    def degrees(self) -> list[int]:
        """Degree of every node."""
        deg = [0] * self.n
        for a, b in self.edges:
            deg[a] += 1
            deg[b] += 1
        return deg

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly description (edge specs as ``"a-b"`` → field dict)."""
        return {
            "n": self.n,
            "edges": [list(e) for e in self.edges],
            "positions": None if self.positions is None else [list(p) for p in self.positions],
            "edge_specs": {
                f"{a}-{b}": self.edge_specs[(a, b)].to_dict() for a, b in sorted(self.edge_specs)
            },
        }



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
