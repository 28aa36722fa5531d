"""A bootstrap dial over a cut path waits for its TCP SYN retransmissions (issue 12).

Deterministic: node 1 of a 2-node line dials node 0 (``bootstrap = "lower"``) on a loop whose
phase is fixed (``bootstrap_phases_s``), the links have no jitter, so the link's close, the
dial's start and every SYN fall at known times.
"""

from typing import Any

import pytest

from netsim.liveness import syn_offsets, timer_lateness
from netsim.scenario import parse
from netsim.simulation import Simulation

PHASE_S = 0.5  # the loop wakes at 0.5, 5.5, 10.5, 15.5, ...
CUT_AT_S = 1.0  # the link closes between 6 and 10.5 s; the redial starts at 10.5 s
DIAL_AT_S = 10.5


def test_linux_syn_schedule() -> None:
    # Initial RTO 1 s; the first 4 retransmissions keep it (tcp_syn_linear_timeouts = 4, Linux
    # >= 6.5), later ones double it; each fires half a timer-wheel granule late on average
    # (250 Hz: 16 ms for the 1 and 2 s timers, 128 ms for 4 and 8 s). The emulation measured
    # SYNs at 0, 1.02, 2.05, 3.07, 4.10, 5.12, 7.14 and 11.4 s.
    assert timer_lateness(1.0) == timer_lateness(2.0) == pytest.approx(0.016)
    assert timer_lateness(4.0) == timer_lateness(8.0) == pytest.approx(0.128)
    assert timer_lateness(0.1) == pytest.approx(0.002)  # one 4 ms tick
    assert syn_offsets(15.0, 4) == pytest.approx(
        (0.0, 1.016, 2.032, 3.048, 4.064, 5.080, 7.096, 11.224))
    # A SYN due at (or after) the dial's timeout is never sent (aiohttp's total timeout of
    # 15 s cancels the connect first); Linux itself stops after 127 s.
    assert len(syn_offsets(1000.0, 4)) == 11 and syn_offsets(1000.0, 4)[-1] < 127.0
    # Older kernels (no linear timeouts): 1, 3, 7, 15 s (and the wheel's lateness).
    assert syn_offsets(15.0, 0) == pytest.approx((0.0, 1.016, 3.032, 7.16))
    assert syn_offsets(7.0, 0) == pytest.approx((0.0, 1.016, 3.032))


def scenario(heal_at_s: float) -> dict[str, Any]:
    return {
        "seed": 2, "duration_s": 45,
        "topology": {"kind": "line", "nodes": 2},
        "links": {"latency_ms": 40},
        "workload": {"editors": 0},
        "liveness": {"bootstrap_phases_s": {"1-0": PHASE_S}},
        "events": [{"at_s": CUT_AT_S, "kind": "partition", "groups": [[1], "rest"]},
                   {"at_s": heal_at_s, "kind": "heal"}],
    }


def link_ups(data: dict[str, Any]) -> tuple[Simulation, list[float], list[float]]:
    sim = Simulation(parse(data))
    ups: list[float] = []
    downs: list[float] = []
    up, down = sim._link_up, sim._link_down

    def link_up(a: int, b: int) -> None:
        if (a, b) not in sim.connected and sim.engine.now > 0:
            ups.append(sim.engine.now)
        up(a, b)

    def link_down(a: int, b: int) -> None:
        if (a, b) in sim.connected:
            downs.append(sim.engine.now)
        down(a, b)

    sim._link_up = link_up  # type: ignore[method-assign]
    sim._link_down = link_down  # type: ignore[method-assign]
    sim.run()
    return sim, ups, downs


SYNS = syn_offsets(15.0, 4)


@pytest.mark.parametrize(("heal_at_s", "syn_at_s"), [
    (11.2, DIAL_AT_S + SYNS[1]),  # healed between the first SYN (10.5 s) and its first retry
    (12.7, DIAL_AT_S + SYNS[3]),  # ... the third retry (4 retries 1 s apart)
    (15.8, DIAL_AT_S + SYNS[6]),  # ... the sixth (the RTO doubles after the fifth: +7 s)
    (18.0, DIAL_AT_S + SYNS[7]),  # ... the seventh (+11 s)
    (22.0, DIAL_AT_S + 20.0),  # no SYN left before the timeout (25.5 s): the next dial
    (30.0, DIAL_AT_S + 20.0),  # the redial itself, after the loop's 5 s sleep
])
def test_the_dial_completes_at_the_first_syn_after_the_heal(heal_at_s: float,
                                                            syn_at_s: float) -> None:
    sim, ups, downs = link_ups(scenario(heal_at_s))
    assert len(downs) == 1 and CUT_AT_S + 5.0 < downs[0] < DIAL_AT_S  # silence close
    setup = sim.liveness.setup_time(1, 0)
    assert setup == pytest.approx(0.06 + 8 * 0.080)  # 8 round trips of 2 x 40 ms, + CPU
    assert ups == [pytest.approx(syn_at_s + setup)]


def test_a_path_that_works_dials_at_once() -> None:
    # Never cut: the link set up at time 0 stays; no redial.
    data = scenario(2.0)
    data["events"] = []
    _, ups, downs = link_ups(data)
    assert ups == [] and downs == []
