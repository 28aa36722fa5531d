"""netsim.topology: builders, dispatch, and path helpers."""

from __future__ import annotations

import math
import random
from collections.abc import Callable

import pytest

from netsim.links import PRESETS, LinkSpec
from netsim.topology import (
    FIBRE_KM_PER_MS,
    KINDS,
    Topology,
    _knn,
    barabasi_albert,
    build,
    from_edges,
    full_mesh,
    geographic,
    hop_distances,
    is_connected,
    line,
    neighbours,
    random_graph,
    ring,
    satellite,
    shortest_from,
    shortest_latency_ms,
    star,
)


def _check_simple(t: Topology, n: int) -> None:
    assert t.n == n
    assert all(0 <= a < b < n for a, b in t.edges)
    assert len(set(t.edges)) == len(t.edges)
    assert t.edges == sorted(t.edges)
    assert is_connected(t.n, t.edges)


@pytest.mark.parametrize("n", [1, 2, 3, 10])
def test_deterministic_shapes(n: int) -> None:
    f, s, r, li = full_mesh(n), star(n), ring(n), line(n)
    for t in (f, s, r, li):
        _check_simple(t, n)
    assert len(f.edges) == n * (n - 1) // 2
    assert len(s.edges) == n - 1 and all(0 in e for e in s.edges)
    assert len(li.edges) == n - 1
    if n >= 3:
        assert len(r.edges) == n and set(r.degrees()) == {2}
        assert sorted(li.degrees())[:2] == [1, 1]


def test_random_graph_mean_degree_and_connected() -> None:
    t = random_graph(2000, 6, random.Random(1))
    _check_simple(t, 2000)
    mean = 2 * len(t.edges) / t.n
    assert mean == pytest.approx(6.0, rel=0.05)
    sparse = random_graph(50, 0, random.Random(2))  # no ER edges: a random tree of singletons
    _check_simple(sparse, 50)
    assert len(sparse.edges) == 49
    dense = random_graph(10, 100, random.Random(3))
    assert len(dense.edges) == 45


def test_barabasi_albert() -> None:
    n, m = 500, 3
    t = barabasi_albert(n, m, random.Random(4))
    _check_simple(t, n)
    assert len(t.edges) == m * (m + 1) // 2 + (n - m - 1) * m
    deg = t.degrees()
    assert min(deg) >= m
    assert max(deg) > 5 * statistics_mean(deg)  # hubs: a heavy-tailed degree distribution
    with pytest.raises(ValueError, match="m"):
        barabasi_albert(10, 0, random.Random(1))
    with pytest.raises(ValueError, match="n"):
        barabasi_albert(3, 3, random.Random(1))


def statistics_mean(xs: list[int]) -> float:
    return sum(xs) / len(xs)


def test_geographic() -> None:
    t = geographic(300, random.Random(5), area_km=2000.0, degree=4, base_ms=2.0)
    _check_simple(t, 300)
    assert t.positions is not None and len(t.positions) == 300
    assert all(0 <= x <= 2000 and 0 <= y <= 2000 for x, y in t.positions)
    assert min(t.degrees()) >= 4
    assert set(t.edge_specs) == set(t.edges)
    for a, b in t.edges:
        km = math.dist(t.positions[a], t.positions[b])
        assert t.edge_specs[(a, b)].latency_ms == pytest.approx(2.0 + km / FIBRE_KM_PER_MS)
    base = PRESETS["wan"]
    w = geographic(20, random.Random(5), base_spec=base)
    assert all(s.loss == base.loss and s.bandwidth_kbps == base.bandwidth_kbps
               for s in w.edge_specs.values())


def test_geographic_joins_clusters() -> None:
    # degree 1 on many points produces several components; the builder must connect them.
    for seed in range(5):
        t = geographic(200, random.Random(seed), degree=1)
        _check_simple(t, 200)


def test_knn_matches_brute_force() -> None:
    rng = random.Random(6)
    pts = [(rng.uniform(0, 100), rng.uniform(0, 100)) for _ in range(400)]
    got = _knn(pts, 5, 100.0)
    for i, p in enumerate(pts):
        brute = sorted((math.dist(p, q) ** 2, j) for j, q in enumerate(pts) if j != i)[:5]
        assert [math.dist(p, pts[j]) for j in got[i]] == pytest.approx(
            [math.sqrt(d) for d, _ in brute]
        )


def test_satellite() -> None:
    t = satellite(10, random.Random(1))
    _check_simple(t, 10)
    assert len(t.edges) == 2 * 10 + 1
    assert t.edge_specs[(0, 5)] == PRESETS["satellite"]
    assert all(s == PRESETS["lan"] for e, s in t.edge_specs.items() if e != (0, 5))
    odd = satellite(7)
    _check_simple(odd, 7)
    assert len(odd.edges) == 3 + 6 + 1
    d = shortest_latency_ms(t, LinkSpec())
    assert d[1][6] == pytest.approx(1 + 300 + 1)


def test_from_edges_and_validation() -> None:
    t = from_edges(4, [[1, 0], [0, 1], (2, 3)])
    assert t.edges == [(0, 1), (2, 3)]
    assert not is_connected(t.n, t.edges)
    with pytest.raises(ValueError, match="self-loop"):
        from_edges(3, [[1, 1]])
    with pytest.raises(ValueError, match="outside"):
        from_edges(3, [[0, 3]])
    with pytest.raises(ValueError, match="pair"):
        from_edges(3, [[0, 1, 2]])
    with pytest.raises(ValueError, match="a < b"):
        Topology(3, [(1, 0)])
    with pytest.raises(ValueError, match="duplicate"):
        Topology(3, [(0, 1), (0, 1)])
    with pytest.raises(ValueError, match="edge_specs"):
        Topology(3, [(0, 1)], edge_specs={(1, 2): LinkSpec()})
    with pytest.raises(ValueError, match="positions"):
        Topology(3, [], positions=[(0.0, 0.0)])


BUILDERS: dict[str, Callable[[random.Random], Topology]] = {
    "random": lambda r: random_graph(100, 4, r),
    "ba": lambda r: barabasi_albert(100, 2, r),
    "geo": lambda r: geographic(100, r),
}


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_random_builders_deterministic(name: str) -> None:
    a = BUILDERS[name](random.Random(42))
    b = BUILDERS[name](random.Random(42))
    c = BUILDERS[name](random.Random(43))
    assert a == b
    assert a.edges != c.edges


def test_build_dispatch() -> None:
    rng = random.Random(0)
    sizes = {"edges": 3}
    for kind in KINDS:
        params: dict[str, object] = {"nodes": sizes.get(kind, 12)}
        if kind == "edges":
            params["edges"] = [[0, 1], [1, 2]]
        t = build(kind, params, rng)
        _check_simple(t, params["nodes"])  # type: ignore[arg-type]
    assert build("ring", {"n": 5, "kind": "ring"}, rng) == ring(5)
    assert build("random", {"nodes": 50, "degree": 3}, random.Random(9)) == random_graph(
        50, 3, random.Random(9)
    )
    g = build("geographic", {"nodes": 10, "degree": 2}, rng, default_spec=PRESETS["3g"])
    assert all(s.queue_bytes == PRESETS["3g"].queue_bytes for s in g.edge_specs.values())
    with pytest.raises(ValueError, match="unknown 'mesh'"):
        build("mesh", {"nodes": 3}, rng)
    with pytest.raises(ValueError, match="degre"):
        build("ring", {"nodes": 3, "degre": 2}, rng)
    with pytest.raises(ValueError, match="nodes"):
        build("ring", {}, rng)
    with pytest.raises(ValueError, match="nodes"):
        build("ring", {"nodes": 0}, rng)
    with pytest.raises(ValueError, match="edges"):
        build("edges", {"nodes": 3}, rng)


def test_shortest_paths_known_graph() -> None:
    # 0 -1- 1 -1- 2 -1- 3, plus a slow shortcut 0 -10- 3 and an asymmetric 1 -> 2 direction.
    t = Topology(
        5,
        [(0, 1), (0, 3), (1, 2), (2, 3)],
        edge_specs={
            (0, 1): LinkSpec(latency_ms=1.0),
            (0, 3): LinkSpec(latency_ms=10.0),
            (2, 3): LinkSpec(latency_ms=1.0),
            (1, 2): LinkSpec(latency_ms=1.0),
            (2, 1): LinkSpec(latency_ms=20.0),  # overrides direction 2 -> 1 only
        },
    )
    default = LinkSpec(latency_ms=5.0)
    d = shortest_latency_ms(t, default)
    assert d[0][3] == pytest.approx(3.0)  # 0-1-2-3 beats the 10 ms shortcut
    assert d[3][0] == pytest.approx(10.0)  # 3-2-1-0 costs 22: the shortcut wins
    assert d[2][1] == pytest.approx(12.0)  # 2-3-0-1
    assert d[1][2] == pytest.approx(1.0)
    assert d[0][4] == math.inf and d[4][4] == 0.0
    assert shortest_from(t, 3, default) == d[3]
    assert hop_distances(t, 0) == [0, 1, 2, 1, -1]
    assert neighbours(t) == [[1, 3], [0, 2], [1, 3], [0, 2], []]
    assert t.link_spec(1, 2, default).latency_ms == 1.0
    assert t.link_spec(1, 0, default).latency_ms == 1.0  # one key serves both directions
    assert Topology(2, [(0, 1)]).link_spec(1, 0, default) == default
    assert t.link_spec(2, 1, default).latency_ms == 20.0
    assert t.link_spec(3, 0, default).latency_ms == 10.0


def test_to_dict() -> None:
    t = satellite(4)
    d = t.to_dict()
    assert d["n"] == 4 and d["edges"] == [[0, 1], [0, 2], [2, 3]]
    assert d["edge_specs"]["0-2"]["latency_ms"] == 300.0
