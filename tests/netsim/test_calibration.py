"""netsim calibrated against the real stack (issue 12): the SCTP model's recovery, link
liveness in simulated time, determinism, and the issue's three measured rows.

The real figures come from the issue: real ``meshnode up`` processes and aiortc links through a
seeded user-space fabric (line of 3, 40 +-10 ms per link, 20 edits/s for 40 s from one end;
a ring of 4 with one node cut off for 20 s). Tolerances are the issue's.
"""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from meshnode.runtime.bootstrap import BOOTSTRAP_RETRY_S
from meshnode.runtime.links import DEAD_AFTER_S, KEEPALIVE_S
from meshnode.runtime.room import LIVE_OVERLAY
from netsim.engine import Engine
from netsim.links import Link, LinkSpec
from netsim.metrics import percentile, results
from netsim.scenario import parse
from netsim.simulation import Simulation

# ---------------------------------------------------------------------------------- SCTP model


class Channel:
    """One link direction with the SCTP model on its own engine, recording deliveries."""

    def __init__(self, **spec: Any) -> None:
        self.engine = Engine()
        self.link = Link(LinkSpec(latency_ms=40.0, **spec), random.Random(1))
        self.back = Link(LinkSpec(latency_ms=40.0, **spec), random.Random(2))
        self.got: list[tuple[Any, float]] = []
        self.ch = self.link.bind(self.engine.at, lambda: self.engine.now,
                                 lambda p: self.got.append((p, self.engine.now)))
        self.ch.reverse = self.back

    def send(self, at: float, name: str, *, lost: bool = False) -> None:
        def go() -> None:
            if lost:
                self.link.cut = True
            self.link.send_reliable(200, self.engine.now, name)
            if lost:
                self.link.cut = False
        self.engine.at(at, go)

    def cut(self, start: float, end: float) -> None:
        for link in (self.link, self.back):
            self.engine.at(start, setattr, link, "cut", True)
            self.engine.at(end, setattr, link, "cut", False)

    def times(self) -> dict[str, float]:
        return {p: round(t, 6) for p, t in self.got}


def test_fast_retransmit_after_three_gap_reports() -> None:
    c = Channel()
    c.send(0.0, "warm")  # gives an RTT sample: RTO = max(1 s, SRTT + 4 RTTVAR) = 1 s
    c.send(1.0, "lost", lost=True)
    for k, t in enumerate((1.01, 1.02, 1.03)):
        c.send(t, f"m{k}")
    c.engine.run_until(10.0)
    # The third SACK reporting the gap (m2's, back at 1.03 + 0.08) triggers the retransmit,
    # which arrives one way later; m0..m2 waited for it (in order).
    assert c.times() == {"warm": 0.04, "lost": 1.15, "m0": 1.15, "m1": 1.15, "m2": 1.15}
    assert [p for p, _ in c.got] == ["warm", "lost", "m0", "m1", "m2"]
    assert c.ch.fast_retransmits == 1 and c.ch.t3_expiries == 0
    assert c.ch.rto == pytest.approx(1.0)


def test_two_gap_reports_are_not_enough_t3_recovers() -> None:
    c = Channel()
    c.send(0.0, "warm")
    c.send(1.0, "lost", lost=True)
    c.send(1.01, "m0")
    c.send(1.02, "m1")
    c.engine.run_until(10.0)
    # T3 started at 1.0 (nothing outstanding before); no cumulative ack advanced since, so it
    # expires at 1.0 + RTO (1 s) and the retransmission arrives at 2.04.
    assert c.times()["lost"] == 2.04 and c.times()["m1"] == 2.04
    assert c.ch.fast_retransmits == 0 and c.ch.t3_expiries == 1


def test_t3_is_not_doubled_on_expiry() -> None:
    c = Channel()
    c.send(0.0, "warm")
    c.cut(1.0, 4.5)  # both directions: data and SACKs lost
    c.send(1.0, "x")
    c.engine.run_until(20.0)
    # aiortc's _t3_expired leaves the RTO alone: retransmissions at 2, 3, 4 (lost) and 5 s,
    # arriving at 5.04. A doubling timer would have retried at 2, 4 and 8 s.
    assert c.times()["x"] == 5.04
    assert c.ch.t3_expiries == 4
    assert c.link.retransmissions == 4


def test_lost_sacks_cost_gap_reports() -> None:
    c = Channel()
    c.send(0.0, "warm")
    c.send(1.0, "lost", lost=True)
    for k, t in enumerate((1.01, 1.02, 1.03)):
        c.send(t, f"m{k}")
    c.engine.at(1.05, setattr, c.back, "cut", True)  # the three SACKs are lost on the way
    c.engine.at(1.2, setattr, c.back, "cut", False)
    c.engine.run_until(10.0)
    assert c.ch.fast_retransmits == 0 and c.ch.t3_expiries == 1
    assert c.times()["lost"] == 2.04


def test_initial_rto_before_any_sample_is_aiortcs() -> None:
    c = Channel(loss=0.0)
    c.send(0.0, "first", lost=True)
    c.engine.run_until(10.0)
    assert c.times()["first"] == 3.04  # SCTP_RTO_INITIAL = 3 s


def test_association_reset_drops_what_was_in_flight() -> None:
    c = Channel()
    c.send(0.0, "a")
    c.engine.at(0.01, c.ch.reset)
    c.send(0.02, "b")
    c.engine.run_until(5.0)
    assert c.times() == {"b": 0.06}


def test_sctp_recovery_is_deterministic_per_seed() -> None:
    def run(seed: int) -> list[tuple[Any, float]]:
        c = Channel(loss=0.1, jitter_ms=10.0)
        c.link = Link(c.link.spec, random.Random(seed))
        c.ch = c.link.bind(c.engine.at, lambda: c.engine.now,
                           lambda p: c.got.append((p, c.engine.now)))
        c.ch.reverse = c.back
        for k in range(200):
            c.send(k * 0.05, str(k))
        c.engine.run_until(30.0)
        return c.got

    a, b = run(5), run(5)
    assert a == b and len(a) == 200
    assert [p for p, _ in a] == [str(k) for k in range(200)]  # in order, nothing lost
    assert run(6) != a


# ---------------------------------------------------------------------------------- liveness


def ring(cut_s: float, **over: Any) -> dict[str, Any]:
    """The issue's partition case: ring of 4, node 2 cut off at 10 s for ``cut_s``."""
    data: dict[str, Any] = {
        "seed": 1, "duration_s": 20 + cut_s + 15,
        "topology": {"kind": "ring", "nodes": 4},
        "links": {"latency_ms": 40, "jitter_ms": 10},
        "workload": {"editors": 1, "edits_per_s": 20, "start_s": 1, "stop_s": 10 + cut_s + 5},
        "events": [{"at_s": 10, "kind": "partition", "groups": [[2], "rest"]},
                   {"at_s": 10 + cut_s, "kind": "heal"}],
    }
    data.update(over)
    return data


def _link_log(sim: Simulation) -> list[tuple[float, str, int, int]]:
    log: list[tuple[float, str, int, int]] = []
    up, down = sim._link_up, sim._link_down

    def link_up(a: int, b: int) -> None:
        if (a, b) not in sim.connected and sim.engine.now > 0:  # not the initial links
            log.append((sim.engine.now, "up", a, b))
        up(a, b)

    def link_down(a: int, b: int) -> None:
        if (a, b) in sim.connected:
            log.append((sim.engine.now, "down", a, b))
        down(a, b)

    sim._link_up = link_up  # type: ignore[method-assign]
    sim._link_down = link_down  # type: ignore[method-assign]
    return log


def test_defaults_are_the_live_nodes() -> None:
    sim = Simulation(parse(ring(20)))
    spec = sim.scenario.liveness
    assert (spec.keepalive_s, spec.dead_after_s) == (KEEPALIVE_S, DEAD_AFTER_S) == (2.0, 8.0)
    assert spec.bootstrap_retry_s == BOOTSTRAP_RETRY_S == 5.0
    assert sim.config.presence_interval_s == LIVE_OVERLAY.presence_interval_s
    assert sim.config.rewire_interval_s == LIVE_OVERLAY.rewire_interval_s


def test_silent_links_close_after_the_real_silence_and_redial_after_the_heal() -> None:
    sim = Simulation(parse(ring(20)))
    log = _link_log(sim)
    sim.run()
    downs = [(t, a, b) for t, kind, a, b in log if kind == "down"]
    ups = [(t, a, b) for t, kind, a, b in log if kind == "up"]
    # Both links of node 2 close when silent for more than 8 s (checked every keepalive/2;
    # an idle end last spoke up to keepalive_s before the cut, with its last ping).
    assert {(min(a, b), max(a, b)) for _, a, b in downs} == {(1, 2), (2, 3)}
    for t, _, _ in downs:
        assert 10 + DEAD_AFTER_S - KEEPALIVE_S <= t <= 10 + DEAD_AFTER_S + KEEPALIVE_S / 2 + 0.1
    # The redials come back only after the heal, each at one of its dial's SYNs plus the
    # set-up (tests/netsim/test_syn_redial.py pins the schedule).
    setup = sim.liveness.setup_time(1, 2)
    assert all(t >= 30.0 + setup for t, _, _ in ups)
    assert {(min(a, b), max(a, b)) for _, a, b in ups} == {(1, 2), (2, 3)}


def test_a_short_cut_keeps_the_links_and_sctp_recovers() -> None:
    sim = Simulation(parse(ring(3)))
    log = _link_log(sim)
    sim.run()
    r = results(sim, 0.0)
    assert log == []  # 3 s of silence is below the 8 s limit
    # Held data crosses at the next T3 expiry after the heal (RTO 1 s, not doubled).
    assert 0.0 < r["convergence_time_after_heal_s"] <= 1.5
    assert r["converged"] and r["delivery_ratio"] == 1.0


def test_relayed_dial_timing() -> None:
    sim = Simulation(parse(ring(20)))
    live = sim.liveness
    got: dict[tuple[int, int], tuple[bool, float]] = {}

    def probe() -> None:
        for a, b in ((2, 0), (1, 2), (1, 3), (0, 1)):
            got[(a, b)] = live.relayed_outcome(a, b)

    sim.engine.at(25.0, probe)  # node 2 cut off since 10 s; its links closed at ~18 s
    sim.run()
    spec = sim.scenario.liveness
    assert got[(2, 0)] == (False, 0.0)  # node 2 is alone: no route, fails at once
    assert got[(1, 2)] == (False, spec.relayed_timeout_s) == (False, 15.0)  # no answer
    assert got[(1, 3)] == (False, spec.hello_timeout_s) == (False, 10.0)  # not an edge
    assert got[(0, 1)] == (True, live.setup_time(0, 1))
    assert live.setup_time(0, 1) == pytest.approx(spec.setup_s + spec.setup_round_trips * 0.080)


def test_liveness_off_is_the_old_model() -> None:
    sim = Simulation(parse(ring(20, liveness={"enabled": False})))
    log = _link_log(sim)
    sim.run()
    assert log == []  # links stay up through the partition; held frames go at the heal
    assert results(sim, 0.0)["convergence_time_after_heal_s"] < 0.5


def test_bad_liveness_and_node_keys_are_refused() -> None:
    for bad, text in (({"liveness": {"keepalive": 2}}, "unknown key"),
                      ({"liveness": {"bootstrap": "all"}}, "bootstrap"),
                      ({"liveness": {"dead_after_s": 0}}, "dead_after_s"),
                      ({"node": {"processing_ms": -1}}, "processing_ms"),
                      ({"liveness": {"enabled": 1}}, "enabled")):
        with pytest.raises(ValueError, match=text):
            parse(ring(20, **bad))


# ------------------------------------------------------------------------------ the rows


def line(loss: float, seed: int) -> dict[str, Any]:
    return {"seed": seed, "duration_s": 45, "topology": {"kind": "line", "nodes": 3},
            "links": {"latency_ms": 40, "jitter_ms": 10, "loss": loss},
            "workload": {"editors": 1, "edits_per_s": 20, "start_s": 1, "stop_s": 41}}


def end_to_end_ms(loss: float, seeds: tuple[int, ...] = (1, 2, 3)) -> list[float]:
    """p50/p90/p99 of node 0 -> node 2 latency, pooled over seeds."""
    lat: list[float] = []
    for seed in seeds:
        sim = Simulation(parse(line(loss, seed)))
        sim.run()
        for cid, (_, t0) in sim.obs.submitted.items():
            lat.append((sim.obs.delivered[cid][2] - t0) * 1000.0)
    return [float(percentile(lat, q) or 0.0) for q in (50, 90, 99)]


def test_row_no_loss_within_10_percent_or_5_ms_per_hop() -> None:
    real = (85.7, 96.6, 103.8)
    for got, want in zip(end_to_end_ms(0.0), real, strict=True):
        assert abs(got - want) <= max(0.10 * want, 2 * 5.0), (got, want)


def test_row_five_percent_loss() -> None:
    p50, p90, p99 = end_to_end_ms(0.05)
    assert abs(p50 - 112) <= 0.25 * 112, p50
    assert abs(p90 - 369) <= 0.25 * 369, p90
    assert abs(p99 - 798) <= 0.40 * 798, p99


def test_row_convergence_after_heal() -> None:
    # Real convergence after the heal depends on the phase of the cut-off node's bootstrap
    # dials (which SYN retransmission meets the heal). One emulation run of this ring
    # (netsim emulate, kernel 6.18, load average 10.7): 1.95 s, with the dials' first SYNs at
    # phases 2.60 s (node 2 -> 1) and 4.07 s (3 -> 2) of their 5 s loops. With those phases:
    real = 1.95
    phases = {"bootstrap_phases_s": {"2-1": 2.5998, "3-2": 4.0746}}
    for seed in (1, 2):
        sim = Simulation(parse(ring(20, seed=seed, liveness=phases)))
        sim.run()
        got = results(sim, 0.0)["convergence_time_after_heal_s"]
        assert abs(got - real) <= max(1.0, 0.3 * real), (got, real)
    # Over the phases, anything from about one set-up (a SYN just after the heal) to a whole
    # failed dial and the loop's sleep (no SYN left before the 15 s timeout): the two
    # runs (2.67 and 3.33 s, phases unknown) lie inside.
    spread = []
    for k in range(10):
        sim = Simulation(parse(ring(20, seed=1, liveness={"bootstrap_phases_s": {
            "2-1": k * 0.5, "3-2": k * 0.5}})))
        sim.run()
        spread.append(results(sim, 0.0)["convergence_time_after_heal_s"])
    assert min(spread) < 2.67 < 3.33 < max(spread)
    assert min(spread) >= sim.liveness.setup_time(2, 1)


def test_results_are_identical_per_seed() -> None:
    def run(seed: int) -> str:
        sim = Simulation(parse(line(0.05, seed) | {"duration_s": 15,
                                                   "workload": {"edits_per_s": 20,
                                                                "stop_s": 10}}))
        sim.run()
        r = results(sim, 0.0)
        r.pop("wall_time_s")
        return json.dumps(r, sort_keys=True)

    assert run(3) == run(3)
    assert run(3) != run(4)


def test_a_message_sent_on_a_clean_path_and_cut_on_the_wire_is_recovered_by_t3() -> None:
    # Sent with nothing outstanding on a lossless link (the clean path: no SACK bookkeeping,
    # kept as in flight only); the partition begins before it arrives, so the sender learns
    # of the loss at its arrival time (1.04), starts T3 (RTO 1 s after the warm-up's sample)
    # and retransmits the very message at 2.04: it arrives one way later, once, in order.
    c = Channel()
    c.send(0.0, "warm")
    c.send(1.0, "x")
    c.engine.at(1.02, setattr, c.link, "cut", True)
    c.engine.at(1.5, setattr, c.link, "cut", False)
    c.send(1.6, "y")
    c.engine.run_until(10.0)
    assert [p for p, _ in c.got] == ["warm", "x", "y"]
    assert c.times() == {"warm": 0.04, "x": 2.08, "y": 2.08}
    assert c.link.frames_lost == 1 and c.link.retransmissions == 1
    assert c.ch.t3_expiries == 1 and not c.ch.outstanding and not c.ch.in_flight
