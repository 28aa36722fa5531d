"""Every example scenario in ``netsim/scenarios`` runs in CI, scaled down, and ends as expected.

The full-size examples take seconds to tens of seconds each; here each one is shrunk to at most
``MAX_NODES`` nodes and ``MAX_DURATION_S`` simulated seconds: event and workload times are
scaled by the same factor, and node numbers named by events are mapped (order-preserving,
one-to-one) into the smaller room, so a partition still splits the same kind of groups, the
hostile nodes stay distinct, and crash/restart still name the same nodes.
"""

from __future__ import annotations

import copy
import tomllib
from pathlib import Path
from typing import Any

import pytest

from netsim.cli import run_scenario
from netsim.scenario import parse
from netsim.simulation import Simulation

SCENARIOS = Path(__file__).resolve().parents[2] / "netsim" / "scenarios"
EXAMPLES = sorted(SCENARIOS.glob("*.toml"))
MAX_NODES = 12
MAX_DURATION_S = 30.0
MAX_EDITS_PER_S = 4.0

# Hostile behaviours the overlay must detect and cut off. A withholding node (announces, never
# sends payloads) is only noticed when a neighbour grafts from it; with other paths around it
# the neighbours get every change first, so it is harmless and may stay connected.
MUST_CUT_OFF = {"flood", "garbage", "equivocate"}


def _index_map(used: list[int], n: int) -> dict[int, int]:
    """Map the sorted node numbers ``used`` one-to-one and in order into ``range(n)``, leaving
    numbers already below ``n`` in place where possible."""
    assert len(used) <= n, f"{len(used)} distinct nodes named by events, room of {n}"
    out: dict[int, int] = {}
    prev = -1
    for i, x in enumerate(used):
        m = max(prev + 1, min(x, n - (len(used) - i)))
        out[x] = prev = m
    return out


def reduce(raw: dict[str, Any], max_nodes: int = MAX_NODES,
           max_duration_s: float = MAX_DURATION_S) -> dict[str, Any]:
    """A smaller copy of a raw scenario dict (as read from TOML); see the module docstring."""
    data = copy.deepcopy(raw)
    topo = data["topology"]
    n = topo["nodes"]
    small = min(n, max_nodes)
    if topo["kind"] == "edges" and small < n:
        pytest.skip("an explicit edge list cannot be scaled down")
    topo["nodes"] = small
    for key in ("degree", "m"):
        if key in topo:
            topo[key] = min(topo[key], small - 1)
    duration = float(data.get("duration_s", 60.0))
    new_duration = min(duration, max_duration_s)
    f = new_duration / duration
    data["duration_s"] = new_duration

    events = data.get("events", [])
    used: set[int] = set()
    for ev in events:
        used.update(ev.get("nodes", []))
        for g in ev.get("groups", []):
            if g != "rest":
                used.update(g)
        for e in ev.get("edges", []):
            used.update(e)
    for ov in data.get("link_overrides", []):
        for e in ov["edges"]:
            used.update(e)
    mapping = _index_map(sorted(used), small)

    def edges(pairs: list[list[int]]) -> list[list[int]]:
        out: list[list[int]] = []
        for a, b in pairs:
            pair = sorted((mapping[a], mapping[b]))
            if pair[0] != pair[1] and pair not in out:
                out.append(pair)
        return out

    for ev in events:
        ev["at_s"] = round(ev["at_s"] * f, 6)
        if "nodes" in ev:
            ev["nodes"] = [mapping[x] for x in ev["nodes"]]
        if "groups" in ev:
            seen: set[int] = set()
            groups: list[Any] = []
            for g in ev["groups"]:
                if g == "rest":
                    groups.append(g)
                    continue
                members = [mapping[x] for x in g if mapping[x] not in seen]
                seen.update(members)
                if members:
                    groups.append(members)
            ev["groups"] = groups
        if "edges" in ev:
            ev["edges"] = edges(ev["edges"])
    for ov in data.get("link_overrides", []):
        ov["edges"] = edges(ov["edges"])
    data["link_overrides"] = [ov for ov in data.get("link_overrides", []) if ov["edges"]]

    wl = data.setdefault("workload", {})
    if "editors" in wl:
        wl["editors"] = min(wl["editors"], small)
    if "edits_per_s" in wl:
        wl["edits_per_s"] = min(wl["edits_per_s"], MAX_EDITS_PER_S)
    if "presence_hz" in wl:
        wl["presence_hz"] = min(wl["presence_hz"], 1.0)
    for key in ("start_s", "stop_s"):
        if wl.get(key) is not None:
            wl[key] = wl[key] * f

    if data["link_overrides"]:
        # Overrides must name edges of the (smaller, maybe random) graph: keep those that do.
        probe = Simulation(parse({**data, "link_overrides": []}))
        for ov in data["link_overrides"]:
            ov["edges"] = [e for e in ov["edges"] if tuple(e) in probe.edge_set]
        data["link_overrides"] = [ov for ov in data["link_overrides"] if ov["edges"]]
    return data


def _load(path: Path) -> dict[str, Any]:
    with open(path, "rb") as fh:
        return tomllib.load(fh)


def test_there_are_examples() -> None:
    names = {p.stem for p in EXAMPLES}
    assert {"partition", "satellite", "bursty_3g", "churn", "hostile", "geographic"} <= names


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_is_documented_and_valid_at_full_size(path: Path) -> None:
    text = path.read_text()
    assert text.startswith("#"), f"{path.name} must open with a comment saying what it answers"
    raw = _load(path)
    sc = parse(raw)
    assert sc.nodes <= 100
    assert sc.duration_s <= 120
    kinds = {ev.kind for ev in sc.events}
    expected_kinds = {
        "partition": {"partition", "heal"},
        "churn": {"crash", "restart", "join", "leave"},
        "hostile": {"hostile"},
        "geographic": {"degrade", "restore"},
    }.get(path.stem, set())
    assert expected_kinds <= kinds
    if path.stem == "hostile":
        assert {ev.behaviour for ev in sc.events} == {"flood", "garbage", "withhold", "equivocate"}
    if path.stem == "satellite":
        assert sc.topology["kind"] == "satellite" or any(
            spec.latency_ms >= 250 for _, spec in sc.link_overrides)
    if path.stem == "bursty_3g":
        assert sc.links.ge_p_good_bad > 0 and sc.links.latency_ms == 100.0


def test_reduce_maps_nodes_one_to_one_and_scales_time() -> None:
    raw = {
        "duration_s": 120, "topology": {"kind": "random", "nodes": 50, "degree": 4},
        "workload": {"editors": 10, "edits_per_s": 5, "stop_s": 80},
        "events": [
            {"at_s": 30, "kind": "partition", "groups": [[0, 1, 2], [40, 41], "rest"]},
            {"at_s": 40, "kind": "crash", "nodes": [45, 49]},
            {"at_s": 60, "kind": "heal"},
        ],
    }
    small = reduce(raw)
    sc = parse(small)
    assert sc.nodes == 12 and sc.duration_s == 30.0
    assert [ev.at_s for ev in sc.events] == [7.5, 10.0, 15.0]
    part, crash, _ = sc.events
    assert part.groups[0] == [0, 1, 2] and len(part.groups[1]) == 2
    assert set(crash.nodes).isdisjoint(part.groups[0] + part.groups[1])
    assert len(set(crash.nodes)) == 2
    assert sc.workload.stop_s == 20.0 and sc.workload.edits_per_s == MAX_EDITS_PER_S
    assert raw["topology"]["nodes"] == 50  # the original is untouched


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_runs_reduced_and_converges(path: Path) -> None:
    raw = reduce(_load(path))
    result = run_scenario(raw)
    sc = parse(raw)
    assert result["changes_submitted"] > 0
    assert result["converged"], f"{path.stem}: honest live replicas differ"
    assert result["delivery_ratio"] == 1.0
    assert result["changes_delivered"] == result["changes_submitted"]
    if any(ev.kind == "heal" for ev in sc.events):
        assert result["convergence_time_after_heal_s"] is not None
    if any(ev.kind == "partition" for ev in sc.events):
        assert result["frames_cut_by_partitions"] > 0
    left = {x for ev in sc.events if ev.kind == "leave" for x in ev.nodes}
    hostile = {x for ev in sc.events if ev.kind == "hostile" for x in ev.nodes}
    removed = {x for ev in sc.events if ev.kind == "remove" for x in ev.nodes}
    assert result["honest_live_nodes"] == sc.nodes - len(left | hostile | removed)
    for index, info in result["hostile"].items():
        if info["behaviour"] in MUST_CUT_OFF:
            assert info["cut_off"], f"hostile node {index} ({info['behaviour']}) still linked"
    assert result["latency_ms"]["p50"] >= result["shortest_path_latency_ms"]["p50"] * 0.5
