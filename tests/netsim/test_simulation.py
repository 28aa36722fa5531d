"""netsim.simulation: determinism, partitions, convergence, churn, hostile nodes, latency.

Every scenario here is small (at most 16 nodes, tens of simulated seconds) so the file runs in
seconds; the full-size examples are exercised (scaled down) by ``test_examples.py``.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from meshnode.overlay import RoomOverlay
from netsim.links import LinkSpec
from netsim.metrics import results
from netsim.scenario import ScenarioError, parse
from netsim.simulation import Simulation

REPO = Path(__file__).resolve().parents[2]


def scenario(**over: Any) -> dict[str, Any]:
    """A small lossy room: 12 nodes, random graph, 20 s."""
    data: dict[str, Any] = {
        "seed": 4,
        "duration_s": 20,
        "topology": {"kind": "random", "nodes": 12, "degree": 4},
        "links": {"latency_ms": 20, "jitter_ms": 3, "loss": 0.01, "bandwidth_kbps": 5000},
        "workload": {"editors": 6, "edits_per_s": 4},
    }
    data.update(copy.deepcopy(over))
    return data


def run(data: dict[str, Any], seed: int | None = None) -> tuple[Simulation, dict[str, Any]]:
    sim = Simulation(parse(data, seed=seed))
    sim.run()
    return sim, results(sim, 0.0)


def strip_wall(result: dict[str, Any]) -> str:
    return json.dumps({k: v for k, v in result.items() if k != "wall_time_s"}, sort_keys=True)


PARTITION = [
    {"at_s": 5, "kind": "partition", "groups": [[0, 1, 2, 3], "rest"]},
    {"at_s": 11, "kind": "heal"},
]
GROUP_A = {0, 1, 2, 3}


# ---------------------------------------------------------------------------------- determinism

RICH = scenario(
    links={"latency_ms": 20, "jitter_ms": 5, "loss": 0.02, "bandwidth_kbps": 2000,
           "ge_p_good_bad": 0.02, "ge_p_bad_good": 0.3, "latency_dist": "normal",
           "latency_sd_ms": 4},
    workload={"editors": 6, "edits_per_s": 5, "presence_hz": 2},
    events=[
        *PARTITION,
        {"at_s": 3, "kind": "crash", "nodes": [7]},
        {"at_s": 9, "kind": "restart", "nodes": [7]},
        {"at_s": 4, "kind": "degrade", "loss": 0.1},
        {"at_s": 8, "kind": "restore"},
        {"at_s": 6, "kind": "hostile", "nodes": [11], "behaviour": "garbage", "rate_per_s": 20},
    ],
)


def test_same_scenario_and_seed_give_identical_results() -> None:
    _, a = run(RICH)
    _, b = run(RICH)
    assert a["changes_submitted"] > 20
    assert a["frames_cut_by_partitions"] > 0
    assert strip_wall(a) == strip_wall(b)


def test_identical_across_processes_with_different_hash_seeds(tmp_path: Path) -> None:
    """Set iteration order depends on PYTHONHASHSEED: it must never reach the results."""
    _, here = run(RICH)
    (tmp_path / "s.json").write_text(json.dumps(RICH))
    code = (
        "import json, sys; from netsim.cli import run_scenario; "
        "r = run_scenario(json.load(open(sys.argv[1]))); r.pop('wall_time_s'); "
        "print(json.dumps(r, sort_keys=True))"
    )
    outs = []
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "s.json")], cwd=REPO,
                              env=env, capture_output=True, text=True, timeout=120, check=True)
        outs.append(proc.stdout.strip())
    assert outs[0] == outs[1] == strip_wall(here)


def test_different_seed_gives_different_results() -> None:
    _, a = run(RICH, seed=1)
    _, b = run(RICH, seed=2)
    assert a["seed"] == 1 and b["seed"] == 2
    assert a["series"]["latency_ms"] != b["series"]["latency_ms"]
    assert a["series"]["bytes_sent_per_node"] != b["series"]["bytes_sent_per_node"]


# ---------------------------------------------------------------------------------- partitions


def _record_receipts(monkeypatch: pytest.MonkeyPatch, sim: Simulation
                     ) -> list[tuple[float, int, int]]:
    """Log (time, from, to) of every frame a core receives, independently of the driver."""
    log: list[tuple[float, int, int]] = []
    real = RoomOverlay.receive

    def receive(self: RoomOverlay, peer: str, channel: str, frame: bytes, now: float) -> None:
        log.append((now, sim.by_peer[peer], sim.by_peer[self.me]))
        real(self, peer, channel, frame, now)

    monkeypatch.setattr(RoomOverlay, "receive", receive)
    return log


def test_partition_cuts_all_traffic_until_the_heal(monkeypatch: pytest.MonkeyPatch) -> None:
    # Lossy links: SCTP retransmissions keep frames on the wire for seconds, so this also
    # checks that frames sent before the cut do not arrive across it afterwards.
    sim = Simulation(parse(scenario(
        links={"latency_ms": 30, "loss": 0.05, "bandwidth_kbps": 2000}, events=PARTITION)))
    log = _record_receipts(monkeypatch, sim)
    cut_links = [p for p in sim.links if (p[0] in GROUP_A) != (p[1] in GROUP_A)]
    assert cut_links
    snapshots: dict[str, int] = {}

    def snap(name: str) -> None:
        snapshots[name] = sum(sim.links[p].bytes_sent for p in cut_links)

    sim.engine.at(5.0001, snap, "cut")
    sim.engine.at(10.9999, snap, "before_heal")
    sim.engine.at(12.0, snap, "after_heal")
    sim.run()
    r = results(sim, 0.0)

    crossing = [(t, a, b) for t, a, b in log
                if 5.0 <= t < 11.0 and (a in GROUP_A) != (b in GROUP_A)]
    assert crossing == []
    assert sim.obs.crossing_after_cut == 0
    assert sim.obs.frames_cut > 0 and r["frames_cut_by_partitions"] == sim.obs.frames_cut
    # SCTP keeps retransmitting (and the keepalive pinging) into the cut: bytes leave, none
    # arrive (crossing == [] above); after the heal traffic crosses again.
    assert snapshots["before_heal"] > snapshots["cut"]
    assert snapshots["after_heal"] > snapshots["before_heal"]
    assert any(t >= 11.0 and (a in GROUP_A) != (b in GROUP_A) for t, a, b in log)
    assert any(5.0 <= t < 11.0 and (a in GROUP_A) == (b in GROUP_A) for t, a, b in log)
    assert sim.obs.partitions == [5.0] and sim.obs.heals == [11.0]


def test_partition_converges_after_the_heal() -> None:
    _, r = run(scenario(events=PARTITION))
    assert r["converged"] is True
    assert r["delivery_ratio"] == 1.0
    assert r["changes_delivered"] == r["changes_submitted"] > 0
    t = r["convergence_time_after_heal_s"]
    assert t is not None and 0.0 < t < 9.0
    # While split, the two sides held different states; at the end, one.
    during = [s for s in r["series"]["samples"] if 6.0 <= s["t"] < 11.0]
    assert max(s["distinct_heads"] for s in during) >= 2
    assert r["series"]["samples"][-1]["distinct_heads"] == 1.0
    assert r["series"]["samples"][-1]["delivered_fraction"] == 1.0
    assert r["series"]["heals"] == [11.0] and r["series"]["partitions"] == [5.0]


def test_edits_during_a_partition_cross_only_after_the_heal() -> None:
    sim, r = run(scenario(events=PARTITION))
    during = {cid: origin for cid, (origin, t0) in sim.obs.submitted.items() if 5.0 < t0 < 11.0}
    crossed = 0
    for cid, origin in during.items():
        for j, t in sim.obs.delivered[cid].items():
            if (j in GROUP_A) != (origin in GROUP_A):
                assert t >= 11.0, f"change from {origin} reached {j} at {t}, before the heal"
                crossed += 1
    assert {o in GROUP_A for o in during.values()} == {True, False}  # both sides edited
    assert crossed == sum(
        1 for cid, o in during.items() for j in range(12) if (j in GROUP_A) != (o in GROUP_A)
    )  # and every such change did reach the other side afterwards
    assert r["converged"]


def test_edits_reach_their_own_side_during_a_partition() -> None:
    # On a ring, both sides of the cut stay connected inside.
    sim, _ = run(scenario(topology={"kind": "ring", "nodes": 12}, links={"latency_ms": 20},
                          events=PARTITION))
    inside = [(cid, o) for cid, (o, t0) in sim.obs.submitted.items() if 5.5 < t0 < 9.0]
    assert inside
    for cid, origin in inside:
        same_side = [j for j in range(12) if (j in GROUP_A) == (origin in GROUP_A) and j != origin]
        got = sim.obs.delivered[cid]
        assert all(got[j] < 11.0 for j in same_side)


# ---------------------------------------------------------------------------------- churn


def test_crash_and_restart_keep_the_replica_and_converge() -> None:
    # Neighbours notice the crash by the keepalive (8 s of silence), so the restart comes
    # after that.
    data = scenario(duration_s=25, events=[{"at_s": 4, "kind": "crash", "nodes": [2]},
                                           {"at_s": 15, "kind": "restart", "nodes": [2]}])
    sim = Simulation(parse(data))
    replica = sim.nodes[2].replica
    seen: dict[str, Any] = {}

    def before_crash() -> None:
        seen["heads"] = set(sim.nodes[2].replica.heads())
        seen["applied"] = {cid for cid, got in sim.obs.delivered.items() if 2 in got}

    def while_down() -> None:
        seen["alive"] = sim.nodes[2].alive
        seen["links"] = [y for y in sim.adj[2] if (2, y) in sim.connected]

    sim.engine.at(3.999, before_crash)
    sim.engine.at(14.0, while_down)
    sim.run()
    r = results(sim, 0.0)
    assert seen["applied"]  # it had received changes before crashing
    assert seen["alive"] is False and seen["links"] == []
    assert sim.nodes[2].replica is replica  # the durable replica survives the crash
    assert sim.nodes[2].alive
    assert len(sim.overlay_stats(sim.nodes[2])) == 2  # two overlays: before and after
    missed = [cid for cid, (o, t0) in sim.obs.submitted.items() if 4.0 < t0 < 15.0 and o != 2]
    assert missed
    for cid in missed:  # what it missed while down arrives after the restart
        assert sim.obs.delivered[cid][2] >= 15.0
    assert r["converged"] and r["delivery_ratio"] == 1.0
    assert r["honest_live_nodes"] == 12


def test_join_and_leave() -> None:
    data = scenario(events=[{"at_s": 6, "kind": "join", "nodes": [10, 11]},
                            {"at_s": 8, "kind": "leave", "nodes": [9]},
                            {"at_s": 12, "kind": "restart", "nodes": [9]}])
    sim = Simulation(parse(data))
    assert not sim.nodes[10].alive and not sim.nodes[11].alive  # offline until they join
    sim.run()
    r = results(sim, 0.0)
    assert sim.nodes[10].alive and sim.nodes[11].alive
    assert not sim.nodes[9].alive and sim.nodes[9].departed  # "leave" is for good
    early = [cid for cid, (_, t0) in sim.obs.submitted.items() if t0 < 6.0]
    assert early
    for cid in early:  # joiners catch up on history from before they came
        assert sim.obs.delivered[cid][10] >= 6.0 and sim.obs.delivered[cid][11] >= 6.0
    assert r["honest_live_nodes"] == 11
    assert r["converged"] and r["delivery_ratio"] == 1.0


# ---------------------------------------------------------------------------------- hostile


@pytest.mark.parametrize("behaviour", ["flood", "garbage", "equivocate"])
def test_hostile_node_is_cut_off_and_honest_nodes_converge(behaviour: str) -> None:
    data = scenario(
        topology={"kind": "random", "nodes": 12, "degree": 5},
        events=[{"at_s": 3, "kind": "hostile", "nodes": [4], "behaviour": behaviour,
                 "rate_per_s": 50 if behaviour != "equivocate" else 2}],
    )
    sim, r = run(data)
    assert r["hostile"] == {"4": {"behaviour": behaviour, "cut_off": True}}
    assert r["converged"] and r["delivery_ratio"] == 1.0
    assert r["honest_live_nodes"] == 11
    if behaviour == "equivocate":  # node 4 is an editor: its forks are kept as evidence
        assert any(n.replica.equivocations for n in sim.honest_live())


def test_all_four_behaviours_at_once() -> None:
    data = scenario(
        topology={"kind": "random", "nodes": 14, "degree": 5},
        events=[{"at_s": 3, "kind": "hostile", "nodes": [x], "behaviour": b}
                for x, b in ((1, "flood"), (2, "garbage"), (3, "withhold"), (4, "equivocate"))],
    )
    sim, r = run(data)
    assert set(r["hostile"]) == {"1", "2", "3", "4"}
    for index in ("1", "2", "4"):
        assert r["hostile"][index]["cut_off"], r["hostile"][index]
    # A withholder next to other paths is harmless (its neighbours get every change from
    # elsewhere first) and is not necessarily detected; the honest nodes must still converge.
    assert r["hostile"]["3"]["behaviour"] == "withhold"
    assert r["honest_live_nodes"] == 10
    assert r["converged"] and r["delivery_ratio"] == 1.0
    late = [o for o, t0 in sim.obs.submitted.values() if t0 > 3.0]
    assert late and not {1, 2, 3, 4} & set(late)  # hostile nodes no longer edit honestly


# ---------------------------------------------------------------------------------- latency


def test_latency_on_a_lossless_line_is_the_sum_of_hop_latencies() -> None:
    data = scenario(
        topology={"kind": "line", "nodes": 6},
        links={"latency_ms": 10},
        workload={"editors": 1, "edits_per_s": 2, "start_s": 3},
        duration_s=10,
        node={"processing_ms": 0, "processing_ms_per_kb": 0,
              "processing_quantiles_ms": [0] * 9},  # links only
    )
    sim, r = run(data)
    first = min(sim.obs.submitted, key=lambda cid: sim.obs.submitted[cid][1])
    origin, t0 = sim.obs.submitted[first]
    assert origin == 0
    for j, t in sim.obs.delivered[first].items():
        assert (t - t0) * 1000 == pytest.approx(10.0 * j, abs=1e-6)
    assert r["latency_ms"]["p50"] == pytest.approx(r["shortest_path_latency_ms"]["p50"], rel=0.05)
    assert r["latency_ms"]["max"] == pytest.approx(50.0, abs=1e-6)
    assert r["latency_stretch_p99"] == pytest.approx(1.0, abs=0.05)
    assert r["converged"] and r["delivery_ratio"] == 1.0


def test_latency_tracks_the_shortest_path_on_a_clean_random_graph() -> None:
    _, r = run(scenario(links={"latency_ms": 15}, workload={"editors": 6, "edits_per_s": 2}))
    assert r["latency_ms"]["p50"] == pytest.approx(r["shortest_path_latency_ms"]["p50"], rel=0.25)
    assert r["latency_ms"]["p50"] >= r["shortest_path_latency_ms"]["p50"] - 1e-6


# ---------------------------------------------------------------------------------- links, errors


def test_degrade_and_restore_change_the_links() -> None:
    data = scenario(events=[{"at_s": 3, "kind": "degrade", "loss": 0.2, "latency_ms": 100},
                            {"at_s": 6, "kind": "restore"}])
    sim = Simulation(parse(data))
    specs: dict[str, list[LinkSpec]] = {}
    sim.engine.at(4.0, lambda: specs.setdefault("during", [lk.spec for lk in sim.links.values()]))
    sim.engine.at(7.0, lambda: specs.setdefault("after", [lk.spec for lk in sim.links.values()]))
    sim.run()
    base = parse(data).links
    assert all(s == base.replace(loss=0.2, latency_ms=100.0) for s in specs["during"])
    assert all(s == base for s in specs["after"])
    assert results(sim, 0.0)["converged"]


def test_degrade_named_edges_only() -> None:
    data = scenario(topology={"kind": "ring", "nodes": 6},
                    events=[{"at_s": 1, "kind": "degrade", "edges": [[0, 1]], "loss": 0.5}])
    sim, _ = run(data)
    assert sim.links[(0, 1)].spec.loss == 0.5 and sim.links[(1, 0)].spec.loss == 0.5
    assert all(lk.spec.loss == 0.01 for p, lk in sim.links.items() if set(p) != {0, 1})


def test_link_overrides_apply_to_both_directions() -> None:
    data = scenario(topology={"kind": "ring", "nodes": 6},
                    link_overrides=[{"edges": [[1, 2]], "preset": "satellite"}])
    sim = Simulation(parse(data))
    assert sim.links[(1, 2)].spec.latency_ms == 300.0 == sim.links[(2, 1)].spec.latency_ms
    assert sim.links[(2, 3)].spec.latency_ms == 20.0


def test_link_override_on_a_missing_edge_is_a_scenario_error() -> None:
    data = scenario(topology={"kind": "ring", "nodes": 6},
                    link_overrides=[{"edges": [[0, 3]], "latency_ms": 5}])
    with pytest.raises(ScenarioError, match="link_overrides"):
        Simulation(parse(data))


def test_bad_topology_value_is_a_scenario_error() -> None:
    data = scenario(topology={"kind": "random", "nodes": 12, "degree": -2})
    with pytest.raises(ScenarioError, match="degree"):
        Simulation(parse(data))


# ---------------------------------------------------------------------------------- liveness


class Stalled(AssertionError):
    """The virtual clock stopped advancing: some core keeps asking for a timer at ``now``."""


def _run_with_stall_guard(sim: Simulation, max_ticks_at_one_instant: int = 50_000) -> None:
    state = {"t": -1.0, "n": 0}

    def progress(t: float) -> None:  # called every 5,000 events
        if t != state["t"]:
            state.update(t=t, n=0)
            return
        state["n"] += 5_000
        if state["n"] >= max_ticks_at_one_instant:
            raise Stalled(f"{state['n']} events at t = {t!r} without the clock moving")

    sim.progress = progress
    sim.run()


def test_presence_expiry_does_not_stall_the_clock() -> None:
    """Regression: presence asked for a timer at ``at + ttl`` but expired on
    ``now - at >= ttl``, which rounding can make false at that instant, so the timer fired
    forever at one virtual time (a hang)."""
    # Presence stops at 57 s; entries last heard in [54, 64) s expire in the next binade,
    # where (at + 10) - at < 10 for about half of all floats.
    data = scenario(
        seed=1, duration_s=70, topology={"kind": "ring", "nodes": 4},
        links={"latency_ms": 20, "jitter_ms": 5},
        workload={"editors": 2, "edits_per_s": 0.2, "presence_hz": 1, "start_s": 50,
                  "stop_s": 57},
    )
    sim = Simulation(parse(data))
    _run_with_stall_guard(sim)
    assert sim.engine.now == 70.0
    assert all(not n.overlay.presence.seen.keys() - {n.overlay.presence.me}
               for n in sim.nodes if n.overlay is not None)  # everyone silent has expired


# ---------------------------------------------------------------------------------- presence


def test_presence_bytes_per_recipient_are_reported_and_follow_the_budget() -> None:
    """results.json reports presence per recipient; a small per-link budget (an [overlay]
    key) thins it, deterministically."""
    data = scenario(duration_s=8, workload={"editors": 8, "edits_per_s": 1, "presence_hz": 10})
    sim, full = run(data)
    sent = sum(st.bytes_out_by_kind.get("Presence", 0)
               for n in sim.nodes for st in sim.overlay_stats(n))
    per_node = full["presence"]["per_node"]
    assert sum(v["bytes"] for v in per_node.values()) == sent > 0
    assert full["presence"]["messages_per_recipient"]["max"] > 0
    thin = scenario(duration_s=8, workload={"editors": 8, "edits_per_s": 1, "presence_hz": 10},
                    overlay={"presence_link_msgs_per_s": 5.0})
    thin_sim, low = run(thin)
    for i, got in low["presence"]["per_node"].items():
        # Each neighbour sends it at most 5 a second (bucket depth: 1).
        assert got["messages"] <= len(thin_sim.adj[int(i)]) * (5.0 * 8 + 1)
    assert (low["presence"]["bytes_per_recipient"]["mean"]
            < full["presence"]["bytes_per_recipient"]["mean"] / 2)
    assert strip_wall(run(thin)[1]) == strip_wall(low)
