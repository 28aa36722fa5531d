"""Topologies for netsim: which pairs of nodes have a (two-direction) link, and its parameters.

A :class:`Topology` is an undirected graph on nodes ``0 .. n-1`` with optional 2-D positions
(km) and per-edge :class:`~netsim.links.LinkSpec` overrides. Builders make the usual shapes
(full mesh, star, ring, line, Erdős–Rényi, Barabási–Albert, geographic, two LAN clusters joined
by a satellite hop); :func:`build` dispatches on a kind name with a parameter dict (as read from a
scenario file). Random builders take an injected ``random.Random``, so the same seed gives the
same graph.

Per-edge specs: ``edge_specs[(a, b)]`` applies to both directions of edge ``a``–``b``; a key
``(b, a)`` in the reverse orientation, if present too, overrides the direction ``b → a``
(asymmetric links). Use :meth:`Topology.link_spec` to resolve a direction.

The :class:`Topology` class and the graph algorithms over it (connectivity, neighbours, hop
counts, shortest latency) are in ``netsim.topology_graph``, re-exported here; this module holds
the builders.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from netsim.links import PRESETS, LinkSpec
from netsim.topology_graph import Edge as Edge
from netsim.topology_graph import Topology as Topology
from netsim.topology_graph import _components
from netsim.topology_graph import hop_distances as hop_distances
from netsim.topology_graph import is_connected as is_connected
from netsim.topology_graph import neighbours as neighbours
from netsim.topology_graph import shortest_from as shortest_from
from netsim.topology_graph import shortest_latency_ms as shortest_latency_ms

__all__ = [
    "FIBRE_KM_PER_MS",
    "KINDS",
    "Topology",
    "barabasi_albert",
    "build",
    "from_edges",
    "full_mesh",
    "geographic",
    "hop_distances",
    "is_connected",
    "line",
    "neighbours",
    "random_graph",
    "ring",
    "satellite",
    "shortest_from",
    "shortest_latency_ms",
    "star",
]

#: Propagation speed in optical fibre, km per millisecond (~2/3 c).
FIBRE_KM_PER_MS = 200.0

# --- helpers -------------------------------------------------------------------------------------


def _norm(edges: Iterable[Edge]) -> list[Edge]:
    return sorted({(min(a, b), max(a, b)) for a, b in edges})


def _check_n(n: object, minimum: int = 1, name: str = "n") -> int:
    if isinstance(n, bool) or not isinstance(n, int) or n < minimum:
        raise ValueError(f"{name}: must be an integer >= {minimum}, got {n!r}")
    return n


# --- deterministic builders ----------------------------------------------------------------------


def full_mesh(n: int) -> Topology:
    """Every pair of nodes linked."""
    _check_n(n)
    return Topology(n, [(a, b) for a in range(n) for b in range(a + 1, n)])


def star(n: int) -> Topology:
    """Node 0 is the hub, linked to every other node."""
    _check_n(n)
    return Topology(n, [(0, b) for b in range(1, n)])


def line(n: int) -> Topology:
    """A path ``0 - 1 - … - n-1``."""
    _check_n(n)
    return Topology(n, [(a, a + 1) for a in range(n - 1)])


def ring(n: int) -> Topology:
    """A cycle ``0 - 1 - … - n-1 - 0`` (a single edge for n = 2)."""
    _check_n(n)
    return Topology(n, _norm([(a, (a + 1) % n) for a in range(n) if n > 1 and a != (a + 1) % n]))


def from_edges(n: int, edges: Iterable[Iterable[int]]) -> Topology:
    """A graph from explicit pairs; orientation is normalised and duplicates merged.

    Self-loops, nodes out of range and malformed pairs raise ``ValueError``. The graph need not
    be connected (use :func:`is_connected` to check).
    """
    _check_n(n)
    pairs: list[Edge] = []
    for e in edges:
        pair = list(e)
        if len(pair) != 2 or not all(
            isinstance(x, int) and not isinstance(x, bool) for x in pair
        ):
            raise ValueError(f"edges: {e!r} is not a pair of node indices")
        a, b = pair
        if not (0 <= a < n and 0 <= b < n):
            raise ValueError(f"edges: {e!r} has a node outside 0..{n - 1}")
        if a == b:
            raise ValueError(f"edges: {e!r} is a self-loop")
        pairs.append((a, b))
    return Topology(n, _norm(pairs))


# --- random builders -----------------------------------------------------------------------------


def _connect_components(n: int, edges: list[Edge], rng: random.Random) -> list[Edge]:
    """Link the components of a graph with random edges (each component, in order of its
    smallest node, to a random node of a random earlier component)."""
    comps = _components(n, edges)
    extra: list[Edge] = []
    for i in range(1, len(comps)):
        u = rng.choice(comps[i])
        v = rng.choice(comps[rng.randrange(i)])
        extra.append((min(u, v), max(u, v)))
    return _norm(edges + extra)


def random_graph(n: int, degree: float, rng: random.Random) -> Topology:
    """Erdős–Rényi G(n, p) with ``p = degree / (n - 1)`` (so the mean degree is ``degree``),
    made connected by linking its components with random edges.

    Uses geometric skipping (Batagelj & Brandes 2005), O(n + m).
    """
    _check_n(n)
    if isinstance(degree, bool) or not isinstance(degree, int | float) or not degree >= 0:
        raise ValueError(f"degree: must be a number >= 0, got {degree!r}")
    if n == 1:
        return Topology(1, [])
    p = min(1.0, degree / (n - 1))
    edges: list[Edge] = []
    if p >= 1.0:
        edges = full_mesh(n).edges
    elif p > 0.0:
        log_q = math.log(1.0 - p)
        v, w = 1, -1
        while v < n:
            w += 1 + int(math.log(1.0 - rng.random()) / log_q)
            while w >= v and v < n:
                w -= v
                v += 1
            if v < n:
                edges.append((w, v))
    return Topology(n, _connect_components(n, edges, rng))


def barabasi_albert(n: int, m: int, rng: random.Random) -> Topology:
    """Barabási–Albert preferential attachment: a full mesh on the first ``m + 1`` nodes, then
    each new node links to ``m`` distinct existing nodes chosen with probability proportional to
    their degree. Connected; ``m * (m + 1) / 2 + (n - m - 1) * m`` edges."""
    _check_n(m, 1, "m")
    _check_n(n, m + 1, "n")
    edges = [(a, b) for a in range(m + 1) for b in range(a + 1, m + 1)]
    ends: list[int] = [x for e in edges for x in e]  # each node once per incident edge
    for v in range(m + 1, n):
        targets: set[int] = set()
        while len(targets) < m:
            targets.add(rng.choice(ends))
        for t in sorted(targets):
            edges.append((t, v))
            ends.extend((t, v))
    return Topology(n, _norm(edges))


def _knn(points: list[tuple[float, float]], k: int, area: float) -> list[list[int]]:
    """The ``k`` nearest other points of every point (ties by index), via a uniform grid."""
    n = len(points)
    k = min(k, n - 1)
    if k <= 0:
        return [[] for _ in range(n)]
    cells_per_side = max(1, int(math.sqrt(n / 2.0)))
    cell = area / cells_per_side if area > 0 else 1.0
    grid: dict[tuple[int, int], list[int]] = {}

    def cell_of(p: tuple[float, float]) -> tuple[int, int]:
        cx = min(cells_per_side - 1, int(p[0] / cell))
        cy = min(cells_per_side - 1, int(p[1] / cell))
        return cx, cy

    for i, p in enumerate(points):
        grid.setdefault(cell_of(p), []).append(i)
    out: list[list[int]] = []
    for i, p in enumerate(points):
        cx, cy = cell_of(p)
        found: list[tuple[float, int]] = []
        r = 0
        while True:
            for gx in range(cx - r, cx + r + 1):
                for gy in range(cy - r, cy + r + 1):
                    if max(abs(gx - cx), abs(gy - cy)) != r:
                        continue  # only the ring at Chebyshev distance r
                    for j in grid.get((gx, gy), ()):
                        if j != i:
                            q = points[j]
                            found.append(((p[0] - q[0]) ** 2 + (p[1] - q[1]) ** 2, j))
            # Every point not yet scanned is at least r * cell away from p.
            if len(found) >= k:
                found.sort()
                if found[k - 1][0] <= (r * cell) ** 2 or r >= cells_per_side:
                    break
            elif r >= cells_per_side:
                found.sort()
                break
            r += 1
        out.append([j for _, j in found[:k]])
    return out


def _join_nearest(points: list[tuple[float, float]], edges: list[Edge], area: float) -> list[Edge]:
    """Connect a geometric graph: join its components along a minimum spanning tree of
    closest inter-component pairs (Kruskal on candidate pairs from a wider k-nearest search,
    then an exhaustive closest-pair search for anything still apart)."""
    n = len(points)
    comps = _components(n, edges)
    if len(comps) <= 1:
        return edges
    comp_of = [0] * n
    for ci, comp in enumerate(comps):
        for v in comp:
            comp_of[v] = ci
    parent = list(range(len(comps)))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    def d2(i: int, j: int) -> float:
        return (points[i][0] - points[j][0]) ** 2 + (points[i][1] - points[j][1]) ** 2

    candidates = sorted(
        (d2(i, j), min(i, j), max(i, j))
        for i, near in enumerate(_knn(points, 16, area))
        for j in near
        if comp_of[i] != comp_of[j]
    )
    extra: list[Edge] = []
    for _, i, j in candidates:
        ri, rj = find(comp_of[i]), find(comp_of[j])
        if ri != rj:
            parent[max(ri, rj)] = min(ri, rj)
            extra.append((i, j))
    edges = _norm(edges + extra)
    comps = _components(n, edges)
    while len(comps) > 1:  # rare: components farther apart than 16 neighbours
        inside = set(comps[0])
        _, i, j = min((d2(i, j), i, j) for i in comps[0] for j in range(n) if j not in inside)
        edges = _norm([*edges, (min(i, j), max(i, j))])
        comps = _components(n, edges)
    return edges


def geographic(
    n: int,
    rng: random.Random,
    area_km: float = 1000.0,
    degree: int = 4,
    base_ms: float = 2.0,
    base_spec: LinkSpec | None = None,
) -> Topology:
    """Nodes at uniform random points in an ``area_km`` × ``area_km`` square, each linked to its
    ``degree`` nearest neighbours; components are joined by closest pairs of points.

    Every edge gets ``edge_specs[(a, b)] = base_spec.replace(latency_ms=base_ms + km / 200)``
    (fibre), where ``base_spec`` defaults to ``LinkSpec()`` — pass the scenario's default link so
    only the latency differs. ``positions`` holds the points (km).
    """
    _check_n(n)
    _check_n(degree, 1, "degree")
    for name, value in (("area_km", area_km), ("base_ms", base_ms)):
        if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
            raise ValueError(f"{name}: must be a number >= 0, got {value!r}")
    area = float(area_km)
    points = [(rng.uniform(0.0, area), rng.uniform(0.0, area)) for _ in range(n)]
    near = _knn(points, degree, area)
    edges = _norm((i, j) for i in range(n) for j in near[i])
    edges = _join_nearest(points, edges, area)
    base = base_spec if base_spec is not None else LinkSpec()
    specs: dict[Edge, LinkSpec] = {}
    for a, b in edges:
        km = math.dist(points[a], points[b])
        specs[(a, b)] = base.replace(latency_ms=float(base_ms) + km / FIBRE_KM_PER_MS)
    return Topology(n, edges, positions=points, edge_specs=specs)


def satellite(
    n: int,
    rng: random.Random | None = None,
    cluster_spec: LinkSpec | None = None,
    bridge_spec: LinkSpec | None = None,
) -> Topology:
    """Two LAN clusters joined by one satellite hop.

    Nodes ``0 .. n//2 - 1`` and ``n//2 .. n-1`` are each a full mesh with ``cluster_spec``
    (default preset "lan"); the single edge ``(0, n//2)`` uses ``bridge_spec`` (default preset
    "satellite", ~600 ms RTT). ``rng`` is accepted for a uniform builder signature; the result is
    deterministic.
    """
    del rng
    _check_n(n, 2)
    half = n // 2
    lan = cluster_spec if cluster_spec is not None else PRESETS["lan"]
    sat = bridge_spec if bridge_spec is not None else PRESETS["satellite"]
    edges: list[Edge] = []
    for lo, hi in ((0, half), (half, n)):
        edges.extend((a, b) for a in range(lo, hi) for b in range(a + 1, hi))
    specs = {e: lan for e in edges}
    edges.append((0, half))
    specs[(0, half)] = sat
    edges = _norm(edges)
    return Topology(n, edges, edge_specs=specs)


# --- dispatch ------------------------------------------------------------------------------------

#: Topology kinds accepted by :func:`build`, with their optional parameters and defaults.
KINDS: dict[str, dict[str, Any]] = {
    "full": {},
    "star": {},
    "ring": {},
    "line": {},
    "random": {"degree": 4.0},
    "barabasi_albert": {"m": 2},
    "geographic": {"area_km": 1000.0, "degree": 4, "base_ms": 2.0},
    "edges": {"edges": None},
    "satellite": {},
}


def build(
    kind: str,
    params: Mapping[str, Any],
    rng: random.Random,
    default_spec: LinkSpec | None = None,
) -> Topology:
    """Build a topology by kind name (see :data:`KINDS`).

    ``params`` must give the node count as ``nodes`` (or ``n``) plus any of the kind's own
    parameters; a ``kind`` key, if present, is ignored. ``default_spec`` is the scenario's
    default link, used as the base of geographic per-edge specs. Unknown kinds or parameters
    raise ``ValueError``.
    """
    if kind not in KINDS:
        raise ValueError(f"topology kind: unknown {kind!r} (known: {sorted(KINDS)})")
    p = {k: v for k, v in params.items() if k != "kind"}
    if "nodes" in p and "n" in p:
        raise ValueError("topology: give the node count once, as 'nodes' (or 'n')")
    if "nodes" not in p and "n" not in p:
        raise ValueError(f"topology {kind!r}: 'nodes' (node count) is required")
    n = _check_n(p.pop("nodes") if "nodes" in p else p.pop("n"), 1, "nodes")
    allowed = KINDS[kind]
    unknown = sorted(set(p) - set(allowed))
    if unknown:
        raise ValueError(
            f"topology {kind!r}: unknown parameter(s) {unknown} (allowed: nodes, "
            f"{', '.join(sorted(allowed)) or 'nothing else'})"
        )
    args = {**allowed, **p}
    simple: dict[str, Callable[[int], Topology]] = {
        "full": full_mesh,
        "star": star,
        "ring": ring,
        "line": line,
    }
    if kind in simple:
        return simple[kind](n)
    if kind == "random":
        return random_graph(n, args["degree"], rng)
    if kind == "barabasi_albert":
        return barabasi_albert(n, args["m"], rng)
    if kind == "geographic":
        return geographic(
            n,
            rng,
            area_km=args["area_km"],
            degree=args["degree"],
            base_ms=args["base_ms"],
            base_spec=default_spec,
        )
    if kind == "edges":
        if args["edges"] is None:
            raise ValueError("topology 'edges': parameter 'edges' (list of [a, b]) is required")
        if not isinstance(args["edges"], list | tuple):
            raise ValueError("topology 'edges': 'edges' must be a list of [a, b] pairs")
        return from_edges(n, args["edges"])
    return satellite(n, rng)
