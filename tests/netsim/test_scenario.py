"""netsim.scenario: the TOML schema, its validation, and ``set_param`` for sweeps."""

from __future__ import annotations

import copy
import tomllib
from pathlib import Path
from typing import Any

import pytest

from netsim.links import PRESETS, LinkSpec
from netsim.scenario import DEFAULT_MIX, ScenarioError, Workload, load, parse, set_param

# The example from the issue that asked for netsim.
ISSUE_EXAMPLE = """
seed = 7
duration_s = 120

[topology]
kind = "random"
nodes = 50
degree = 4

[links]
latency_ms = 40
jitter_ms = 5
loss = 0.02
bandwidth_kbps = 2000

[workload]
editors = 10
edits_per_s = 5

[[events]]
at_s = 30
kind = "partition"
groups = [[0, 1, 2], "rest"]

[[events]]
at_s = 60
kind = "heal"
"""

PARTITION_TOML = Path(__file__).resolve().parents[2] / "netsim" / "scenarios" / "partition.toml"


def issue() -> dict[str, Any]:
    return tomllib.loads(ISSUE_EXAMPLE)


def test_issue_example_parses_with_the_right_values() -> None:
    sc = parse(issue())
    assert sc.seed == 7
    assert sc.duration_s == 120.0
    assert sc.nodes == 50
    assert sc.topology == {"kind": "random", "nodes": 50, "degree": 4}
    assert sc.links == LinkSpec(latency_ms=40.0, jitter_ms=5.0, loss=0.02, bandwidth_kbps=2000.0)
    assert isinstance(sc.links.latency_ms, float)  # TOML integers become floats
    assert sc.workload.editors == 10
    assert sc.workload.edits_per_s == 5
    assert sc.workload.mix == DEFAULT_MIX
    assert sc.workload.stop_s is None  # the simulation stops edits at 0.75 * duration
    assert sc.link_overrides == []
    assert sc.overlay == {}
    part, heal = sc.events
    assert (part.at_s, part.kind) == (30.0, "partition")
    assert part.groups == [[0, 1, 2], list(range(3, 50))]
    assert (heal.at_s, heal.kind) == (60.0, "heal")
    assert heal.groups == [] and heal.nodes == []


def test_partition_example_file_is_the_issue_example() -> None:
    sc = load(PARTITION_TOML)
    ref = parse(issue())
    assert sc.name == "partition"
    for attr in ("seed", "duration_s", "topology", "links", "workload", "events"):
        assert getattr(sc, attr) == getattr(ref, attr), attr


def test_defaults() -> None:
    sc = parse({"topology": {"kind": "ring", "nodes": 5}})
    assert sc.seed == 1
    assert sc.duration_s == 60.0
    assert sc.name == "scenario"
    assert sc.sample_interval_s == 0.5
    assert sc.links == LinkSpec()
    assert sc.workload == Workload()
    assert sc.events == []


def test_seed_argument_overrides_the_file() -> None:
    assert parse(issue(), seed=99).seed == 99
    assert load(PARTITION_TOML, seed=3).seed == 3


def test_events_are_sorted_by_time_and_rest_may_come_first() -> None:
    data = issue()
    data["events"] = [
        {"at_s": 60, "kind": "heal"},
        {"at_s": 30, "kind": "partition", "groups": ["rest", [4, 5]]},
    ]
    sc = parse(data)
    assert [e.kind for e in sc.events] == ["partition", "heal"]
    rest = [x for x in range(50) if x not in (4, 5)]
    assert sc.events[0].groups == [rest, [4, 5]]


def test_every_event_kind() -> None:
    data = issue()
    data["events"] = [
        {"at_s": 1, "kind": "crash", "nodes": [3, 4]},
        {"at_s": 2, "kind": "restart", "nodes": [3]},
        {"at_s": 3, "kind": "join", "nodes": [40]},
        {"at_s": 4, "kind": "leave", "nodes": [4]},
        {"at_s": 5, "kind": "degrade", "edges": [[2, 1]], "loss": 0.3, "latency_ms": 200},
        {"at_s": 6, "kind": "restore", "edges": [[1, 2]]},
        {"at_s": 7, "kind": "degrade", "preset": "3g"},
        {"at_s": 8, "kind": "restore"},
        {"at_s": 9, "kind": "hostile", "nodes": [7], "behaviour": "flood", "rate_per_s": 50},
        {"at_s": 9, "kind": "hostile", "nodes": [8], "behaviour": "withhold"},
    ]
    ev = parse(data).events
    assert [e.kind for e in ev] == ["crash", "restart", "join", "leave", "degrade", "restore",
                                    "degrade", "restore", "hostile", "hostile"]
    assert ev[0].nodes == [3, 4]
    assert ev[4].edges == [(1, 2)]  # normalised
    assert ev[4].link == {"loss": 0.3, "latency_ms": 200}
    assert ev[5].edges == [(1, 2)] and ev[5].link == {}
    assert ev[6].link == {"preset": "3g"} and ev[6].edges == []
    assert ev[8].behaviour == "flood" and ev[8].rate_per_s == 50.0
    assert ev[9].behaviour == "withhold" and ev[9].rate_per_s == 200.0  # default


def test_link_presets_and_overrides() -> None:
    data = issue()
    data["links"] = {"preset": "wan", "loss": 0.05}
    data["link_overrides"] = [
        {"edges": [[0, 1], [3, 2]], "preset": "satellite"},
        {"edges": [[4, 5]], "latency_ms": 7},
    ]
    sc = parse(data)
    assert sc.links == PRESETS["wan"].replace(loss=0.05)
    (e1, s1), (e2, s2) = sc.link_overrides
    assert e1 == [(0, 1), (2, 3)] and s1 == PRESETS["satellite"]
    # An override without a preset starts from the scenario's [links].
    assert e2 == [(4, 5)] and s2 == sc.links.replace(latency_ms=7.0)


def test_overlay_and_workload_tables() -> None:
    data = issue()
    data["overlay"] = {"graft_timeout_s": 2.0, "active_view_size": 5}
    data["workload"] = {"editors": 3, "edits_per_s": 2.5, "mix": {"transform": 1, "create": 1},
                        "start_s": 0.5, "stop_s": 50, "initial_entities": 6, "presence_hz": 2}
    data["sample_interval_s"] = 0.25
    sc = parse(data)
    assert sc.overlay == {"graft_timeout_s": 2.0, "active_view_size": 5}
    assert sc.workload == Workload(editors=3, edits_per_s=2.5, mix={"transform": 1, "create": 1},
                                   start_s=0.5, stop_s=50, initial_entities=6, presence_hz=2)
    assert sc.sample_interval_s == 0.25


def _with(path: str, value: Any) -> dict[str, Any]:
    data = issue()
    set_param(data, path, value)
    return data


def _event(**kw: Any) -> dict[str, Any]:
    data = issue()
    data["events"] = [kw]
    return data


def _drop(key: str) -> dict[str, Any]:
    data = issue()
    del data[key]
    return data


# (scenario dict, text the error message must contain: the offending key, and often the value)
BAD: dict[str, tuple[dict[str, Any], list[str]]] = {
    "unknown top-level key": (_with("colour", "red"), ["colour"]),
    "no topology": (_drop("topology"), ["topology"]),
    "topology without kind": (_with("topology", {"nodes": 5}), ["topology", "kind"]),
    "too few nodes": (_with("topology.nodes", 1), ["topology.nodes"]),
    "nodes not int": (_with("topology.nodes", "50"), ["topology.nodes"]),
    "unknown topology kind": (_with("topology.kind", "torus"), ["topology.kind", "torus"]),
    "unknown topology key": (_with("topology.radius", 3), ["topology", "radius"]),
    "duration zero": (_with("duration_s", 0), ["duration_s"]),
    "duration text": (_with("duration_s", "long"), ["duration_s"]),
    "seed text": (_with("seed", "seven"), ["seed"]),
    "links not a table": (_with("links", 5), ["links"]),
    "unknown link key": (_with("links.latencyy_ms", 3), ["links", "latencyy_ms"]),
    "loss above 1": (_with("links.loss", 1.5), ["links", "loss"]),
    "negative latency": (_with("links.latency_ms", -1), ["links", "latency_ms"]),
    "unknown preset": (_with("links.preset", "5g"), ["links.preset", "5g"]),
    "link dist": (_with("links.latency_dist", "cauchy"), ["latency_dist", "cauchy"]),
    "override without edges": (_with("link_overrides", [{"latency_ms": 5}]),
                               ["link_overrides[0].edges"]),
    "override edge out of range": (_with("link_overrides", [{"edges": [[0, 50]]}]),
                                   ["link_overrides[0].edges"]),
    "override bad key": (_with("link_overrides", [{"edges": [[0, 1]], "los": 0.1}]),
                         ["link_overrides[0]", "los"]),
    "overrides not tables": (_with("link_overrides", [[0, 1]]), ["link_overrides"]),
    "unknown overlay key": (_with("overlay.fanout", 3), ["overlay", "fanout"]),
    "bad overlay value": (_with("overlay.graft_timeout_s", "soon"),
                          ["overlay.graft_timeout_s"]),
    "negative overlay value": (_with("overlay.graft_timeout_s", -1),
                               ["overlay.graft_timeout_s"]),
    "unknown workload key": (_with("workload.typists", 3), ["workload", "typists"]),
    "too many editors": (_with("workload.editors", 51), ["workload.editors"]),
    "editors text": (_with("workload.editors", "ten"), ["workload.editors"]),
    "negative edit rate": (_with("workload.edits_per_s", -1), ["workload.edits_per_s"]),
    "presence text": (_with("workload.presence_hz", "often"), ["workload.presence_hz"]),
    "negative stop": (_with("workload.stop_s", -3), ["workload.stop_s"]),
    "bad mix kind": (_with("workload.mix", {"rotate": 1}), ["workload.mix"]),
    "negative mix weight": (_with("workload.mix", {"transform": -1}), ["workload.mix"]),
    "all-zero mix": (_with("workload.mix", {"transform": 0}), ["workload.mix"]),
    "sample interval zero": (_with("sample_interval_s", 0), ["sample_interval_s"]),
    "events not tables": (_with("events", {"at_s": 1}), ["events"]),
    "event without time": (_event(kind="heal"), ["events[0].at_s"]),
    "negative time": (_event(at_s=-1, kind="heal"), ["events[0].at_s"]),
    "unknown event kind": (_event(at_s=1, kind="explode"), ["events[0].kind", "explode"]),
    "partition without groups": (_event(at_s=1, kind="partition"), ["events[0].groups"]),
    "group node out of range": (_event(at_s=1, kind="partition", groups=[[0, 50], "rest"]),
                                ["events[0].groups[0]"]),
    "group not a list": (_event(at_s=1, kind="partition", groups=[3, "rest"]),
                         ["events[0].groups[0]"]),
    "node in two groups": (_event(at_s=1, kind="partition", groups=[[0, 1], [1, 2]]),
                           ["events[0].groups", "two groups"]),
    "rest twice": (_event(at_s=1, kind="partition", groups=["rest", [1], "rest"]),
                   ["events[0].groups", "rest"]),
    "crash without nodes": (_event(at_s=1, kind="crash"), ["events[0].nodes"]),
    "crash bad node": (_event(at_s=1, kind="crash", nodes=[-1]), ["events[0].nodes"]),
    "join node text": (_event(at_s=1, kind="join", nodes=["a"]), ["events[0].nodes"]),
    "degrade without link keys": (_event(at_s=1, kind="degrade"), ["events[0]", "loss"]),
    "degrade unknown link key": (_event(at_s=1, kind="degrade", lossy=0.2),
                                 ["events[0]", "lossy"]),
    "degrade bad value": (_event(at_s=1, kind="degrade", loss=2), ["events[0]", "loss"]),
    "degrade bad edge": (_event(at_s=1, kind="degrade", edges=[[1]], loss=0.1),
                         ["events[0].edges"]),
    "restore with link keys": (_event(at_s=1, kind="restore", loss=0.1),
                               ["events[0]", "loss"]),
    "heal with groups": (_event(at_s=1, kind="heal", groups=[[0]]), ["events[0]", "groups"]),
    "crash with a typo": (_event(at_s=1, kind="crash", nodes=[1], node=[2]),
                          ["events[0]", "node"]),
    "hostile bad behaviour": (_event(at_s=1, kind="hostile", nodes=[1], behaviour="sulk"),
                              ["events[0].behaviour", "sulk"]),
    "hostile without nodes": (_event(at_s=1, kind="hostile", behaviour="flood"),
                              ["events[0].nodes"]),
    "hostile zero rate": (_event(at_s=1, kind="hostile", nodes=[1], behaviour="flood",
                                 rate_per_s=0), ["events[0].rate_per_s"]),
    "hostile rate text": (_event(at_s=1, kind="hostile", nodes=[1], behaviour="flood",
                                 rate_per_s="fast"), ["events[0].rate_per_s"]),
}


@pytest.mark.parametrize("name", list(BAD))
def test_bad_scenarios_raise_scenario_error_naming_the_key(name: str) -> None:
    data, needles = BAD[name]
    with pytest.raises(ScenarioError) as err:
        parse(copy.deepcopy(data))
    for needle in needles:
        assert needle in str(err.value), f"{name}: {err.value!r} does not mention {needle!r}"


def test_scenario_error_is_a_value_error() -> None:
    assert issubclass(ScenarioError, ValueError)


def test_parse_does_not_modify_its_input() -> None:
    data = issue()
    before = copy.deepcopy(data)
    parse(data)
    assert data == before


def test_load_reports_invalid_toml(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("seed = = 3\n")
    with pytest.raises(ScenarioError, match="not valid TOML"):
        load(bad)


def test_load_reads_a_file(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text(ISSUE_EXAMPLE)
    assert load(path) == parse(issue())


def test_set_param_sets_nested_keys_for_sweeps() -> None:
    data = issue()
    set_param(data, "links.loss", 0.1)
    set_param(data, "workload.edits_per_s", 20)
    set_param(data, "topology.nodes", 12)
    set_param(data, "duration_s", 30)
    set_param(data, "overlay.graft_timeout_s", 1.5)  # creates the missing table
    sc = parse(data)
    assert sc.links.loss == 0.1
    assert sc.links.latency_ms == 40.0  # the rest of the table is kept
    assert sc.workload.edits_per_s == 20
    assert sc.nodes == 12
    assert sc.events[0].groups == [[0, 1, 2], list(range(3, 12))]  # "rest" follows nodes
    assert sc.duration_s == 30.0
    assert sc.overlay == {"graft_timeout_s": 1.5}


def test_set_param_through_a_value_is_an_error() -> None:
    data = issue()
    with pytest.raises(ScenarioError, match="duration_s"):
        set_param(data, "duration_s.x", 1)


def test_set_param_with_an_unknown_key_fails_at_parse() -> None:
    data = issue()
    set_param(data, "links.bogus", 1)
    with pytest.raises(ScenarioError, match="bogus"):
        parse(data)
