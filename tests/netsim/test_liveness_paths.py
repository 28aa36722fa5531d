"""``Liveness._reachable`` answers from cached components: the same answers as a graph search
over the working links at that moment, through crashes, joins, partitions and heals."""

from __future__ import annotations

import tomllib
from collections import deque
from pathlib import Path

from netsim.scenario import parse
from netsim.simulation import Simulation

REPO = Path(__file__).resolve().parents[2]


def _search(sim: Simulation, a: int, b: int) -> bool:
    """The plain breadth-first search the cache replaced."""
    if not sim.nodes[b].alive:
        return False
    seen = {a}
    queue = deque([a])
    while queue:
        u = queue.popleft()
        for v in sim.adj[u]:
            if v in seen or (u, v) not in sim.connected or sim.links[(u, v)].cut:
                continue
            if v == b:
                return True
            seen.add(v)
            queue.append(v)
    return False


def test_reachable_matches_a_fresh_search_throughout_a_churn_run() -> None:
    with open(REPO / "netsim/scenarios/churn.toml", "rb") as fh:
        raw = tomllib.load(fh)
    raw["duration_s"] = 60
    raw["events"].append({"at_s": 35, "kind": "partition", "groups": [[0, 4, 5, 6], "rest"]})
    raw["events"].append({"at_s": 45, "kind": "heal"})
    checks: list[tuple[float, int, int]] = []  # (time, pairs checked, pairs reachable)
    box: list[Simulation] = []

    def check(t: float) -> None:  # every 5,000 events, mid-run
        sim = box[0]
        n = len(sim.nodes)
        reachable = 0
        for a in range(n):
            for b in range(n):
                want = _search(sim, a, b)
                assert sim.liveness._reachable(a, b) == want, (t, a, b)
                reachable += want
        checks.append((t, n * n, reachable))

    sim = Simulation(parse(raw), progress=check)
    box.append(sim)
    liveness = sim.liveness
    paths_changed = liveness.paths_changed

    def changed_then_check() -> None:  # right after every crash, join, partition and heal
        paths_changed()
        check(sim.engine.now)

    liveness.paths_changed = changed_then_check  # type: ignore[method-assign]
    sim.run()
    assert len(checks) >= 15
    # The run went through states where some pairs could not reach each other, and others
    # where most could: the cache was checked on both sides.
    assert any(r < p // 2 for _, p, r in checks) or any(r < p - 200 for _, p, r in checks)
    assert max(r for _, _, r in checks) > 1000
