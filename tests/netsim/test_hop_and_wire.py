"""The per-hop, wire and burst models that close issue 12's fidelity gaps, and the packet
trace they are measured from (``netsim/emulate/trace.py``)."""

from __future__ import annotations

import random
import string
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from netsim.emulate import trace
from netsim.engine import Engine
from netsim.links import DATA_PACKET_OVERHEAD, SACK_PACKET_BYTES, Link, LinkSpec
from netsim.node_model import PROCESSING_QUANTILES, NodeSpec, parse_section
from netsim.scenario import parse
from netsim.simulation import Simulation

# ------------------------------------------------------------------------------ wire bytes


def test_a_data_packet_carries_the_real_stacks_headers() -> None:
    # IPv4 20 + UDP 8 + DTLS record 13 + AES-GCM nonce 8 and tag 16 + SCTP 12 + DATA 16;
    # the fabric's trace shows 93 B SACKs and 337 B packets for 244 B frames.
    assert DATA_PACKET_OVERHEAD == 93 and SACK_PACKET_BYTES == 93
    spec = LinkSpec()
    assert spec.mtu == 1160  # aiortc's USERDATA_MAX_LENGTH
    assert spec.wire_bytes(244) == 337
    assert spec.wire_bytes(241) == 337  # the chunk is padded to 4 bytes
    assert spec.wire_bytes(2000) == 2000 + 2 * 93


def test_sacks_wait_in_the_reverse_queue_behind_data() -> None:
    rate = 32_000.0  # 256 kbit/s in bytes per second
    link = Link(LinkSpec(latency_ms=20.0, bandwidth_kbps=256.0), random.Random(1))
    data_arrival = link.attempt(1000, 0.0)
    assert data_arrival == pytest.approx((1000 + 93) / rate + 0.02)
    sack = link.ack(0.0)
    assert sack == pytest.approx((1000 + 93 + 93) / rate + 0.02)
    assert link.ack(1.0, gaps=2) == pytest.approx(1.0 + (93 + 8) / rate + 0.02)
    assert link.bytes_sent == 1093 + 93 + 101 and link.packets_sent == 3


def test_sacks_on_a_slow_reverse_path_delay_the_senders_recovery() -> None:
    """A SACK is a packet on the reverse direction: a busy reverse queue delays it."""
    def first_sack_back(reverse_backlog: int) -> float:
        engine = Engine()
        fwd = Link(LinkSpec(latency_ms=10.0, loss=0.01), random.Random(3))
        back = Link(LinkSpec(latency_ms=10.0, bandwidth_kbps=64.0, loss=0.01),
                    random.Random(4))
        ch = fwd.bind(engine.at, lambda: engine.now, lambda p: None)
        ch.reverse = back
        if reverse_backlog:
            back.attempt(reverse_backlog, 0.0)
        fwd.send_reliable(200, 0.0, "x")
        engine.run_until(5.0)
        assert ch.srtt is not None
        return ch.srtt

    assert first_sack_back(0) == pytest.approx(0.02 + 93 / 8000.0)
    # 4000 B of data (4 packets) queued on the reverse path: the SACK, sent when the data
    # arrives (10 ms), leaves after them and travels 10 ms back.
    assert first_sack_back(4000) == pytest.approx((4000 + 4 * 93 + 93) / 8000.0 + 0.01)


# ------------------------------------------------------------------------------ bursts


def test_the_burst_chain_advances_once_per_packet() -> None:
    """A k-packet frame meets the chain exactly as k one-packet frames would (the emulation
    fabric advances it per IP packet): lost if any of them is, same state afterwards."""
    spec = LinkSpec(ge_p_good_bad=0.3, ge_p_bad_good=0.4, ge_loss_bad=0.7, loss=0.05)
    for seed in range(40):
        frames = Link(spec, random.Random(seed))
        packets = Link(spec, random.Random(seed))
        for k in (3, 1, 5, 2):
            assert frames._lost(k) == any([packets._lost(1) for _ in range(k)])
            assert frames.ge_bad == packets.ge_bad


def test_burst_loss_rate_per_packet_matches_the_chain() -> None:
    spec = LinkSpec(ge_p_good_bad=0.02, ge_p_bad_good=0.25, ge_loss_bad=0.5)
    link = Link(spec, random.Random(11))
    lost = sum(link._lost(1) for _ in range(200_000))
    stationary_bad = 0.02 / (0.02 + 0.25)
    assert lost / 200_000 == pytest.approx(stationary_bad * 0.5, rel=0.05)


# ------------------------------------------------------------------------------ per hop


def test_processing_quantiles_are_an_inverse_cdf() -> None:
    spec = NodeSpec(processing_quantiles_ms=(1, 2, 3, 4, 5, 6, 7, 8, 20))
    assert spec.draw_ms(0.0) == 1 and spec.draw_ms(0.5) == 4
    assert spec.draw_ms(0.995) == pytest.approx(14.0)
    assert spec.draw_ms(0.3) == pytest.approx(3 + (0.05 / 0.25))
    assert len(PROCESSING_QUANTILES) == 9


@pytest.mark.parametrize(("value", "why"), [
    ([1, 2, 3], "9 values"),
    ([3, 2, 1, 1, 1, 1, 1, 1, 1], "must not decrease"),
    ([1, 2, 3, 4, 5, 6, 7, 8, -1], "finite numbers >= 0"),
    ("fast", "list of finite numbers"),
])
def test_bad_processing_quantiles_are_refused_by_name(value: object, why: str) -> None:
    with pytest.raises(ValueError, match=why) as err:
        parse_section(NodeSpec, {"processing_quantiles_ms": value}, "node")
    assert "node.processing_quantiles_ms" in str(err.value)


def _line(node: dict[str, object]) -> Simulation:
    return Simulation(parse({
        "name": "hop", "seed": 3, "duration_s": 6, "topology": {"kind": "line", "nodes": 3},
        "links": {"latency_ms": 10}, "node": node,
        "workload": {"editors": 1, "edits_per_s": 20, "stop_s": 5},
    }))


def test_every_hop_adds_a_draw_from_the_measured_distribution() -> None:
    flat = {"processing_ms": 0, "processing_ms_per_kb": 0}
    sim = _line({**flat, "processing_quantiles_ms": [4] * 9})
    sim.run()
    for cid, (origin, t0) in sim.obs.submitted.items():
        got = sim.obs.delivered[cid]
        assert origin == 0
        assert (got[1] - t0) * 1000 == pytest.approx(14.0)
        assert (got[2] - t0) * 1000 == pytest.approx(28.0)


def test_a_burst_is_paced_by_the_cpu_not_by_the_hop_time() -> None:
    sim = _line({"processing_ms": 1.0, "processing_ms_per_kb": 0,
                 "processing_quantiles_ms": [3] * 9})
    sim.cpu_free_at[1] = 0.0
    times: list[float] = []
    sim._deliver = lambda src, dst, ch, frame, epoch: times.append(sim.engine.now)  # type: ignore[method-assign]
    for _ in range(5):  # five frames reach node 1 at once
        sim.engine.at(1.0, sim._arrive, 0, 1, "sync", (("sync", b"x" * 10, 0)))
    sim.engine.run_until(1.1)
    # each waits 3 ms (the hop) or for the loop (1 ms of CPU each), whichever is later
    assert [round((t - 1.0) * 1000, 6) for t in times] == [3.0, 3.0, 3.0, 4.0, 5.0]


def test_the_per_hop_draws_leave_the_runs_other_choices_alone() -> None:
    a = _line({"processing_quantiles_ms": [0] * 9})
    b = _line({})
    a.run()
    b.run()
    assert list(a.obs.submitted) == list(b.obs.submitted)


# ------------------------------------------------------------------------------ the trace


def _trace(tmp_path: Path, lines: list[str]) -> list[trace.Packet]:
    path = tmp_path / "packets.trace"
    path.write_text("\n".join(lines) + "\n", encoding="ascii")
    return trace.read(path)


def test_relay_time_is_packet_in_to_the_same_frame_out(tmp_path: Path) -> None:
    packets = _trace(tmp_path, [
        "r 0.000000 0 1 337 17",
        "w 0.040000 0 1 337 0.000500",   # into node 1, half a ms late
        "r 0.042000 1 0 93 17",          # its SACK
        "r 0.043000 1 2 337 17",         # the copy, 3 ms later
        "w 0.083000 1 2 337 0.000500",
        "w 0.100000 0 1 309 0.000000",   # never relayed as 309 B (merged):
        "w 0.120000 0 1 309 0.000000",   # and the next 309 B frame...
        "r 0.121000 1 2 309 17",         # ...whose copy this is: only it counts
        "garbage line",
        "w x 1 2 3 4",
    ])
    assert len(packets) == 8
    relays = trace.relay_samples(packets)
    assert [(round(t, 6), s) for t, s in relays] == [(0.003, 337), (0.001, 309)]
    assert [round(x, 6) for x in trace.hop_samples(packets)] == [3.5, 1.0]
    summary = trace.summary(packets)
    assert summary["wire"]["1-0"] == {"packets": 1, "bytes": 93, "control_packets": 1,
                                      "data_packets": 0, "data_bytes": 0}
    assert summary["node_section"]["processing_quantiles_ms"][0] == 1.0
    assert summary["node_section"]["processing_quantiles_ms"][-1] == 3.5
    NodeSpec(processing_quantiles_ms=tuple(summary["node_section"]["processing_quantiles_ms"]))


def test_no_trace_no_samples(tmp_path: Path) -> None:
    packets = trace.read(tmp_path / "missing.trace")
    assert packets == []
    assert trace.summary(packets)["node_section"] == {}


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(alphabet=string.printable, max_size=60), max_size=30))
def test_any_trace_file_parses_without_raising(lines: list[str]) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "t"
        path.write_text("\n".join(lines), encoding="utf-8", errors="replace")
        packets = trace.read(path)
    summary = trace.summary(packets)
    assert set(summary) >= {"hop_ms", "node_section", "wire"}


# ------------------------------------------------------------------------------ measurement


def test_latency_is_reported_per_hop_count() -> None:
    """A line's latencies split by hop count: each hop count's median near its path length,
    the pooled figures made of the same samples (the per-hop series is what compare reads)."""
    from netsim.cli import run_scenario

    raw = {"name": "hops", "seed": 3, "duration_s": 8,
           "topology": {"kind": "line", "nodes": 4}, "links": {"latency_ms": 30},
           "workload": {"editors": 1, "edits_per_s": 10, "stop_s": 6}}
    result = run_scenario(raw, seed=3)
    by = result["latency_ms_by_hops"]
    series = result["series"]["latency_ms_by_hops"]
    assert set(by) == set(series) and set(by) <= {"1", "2", "3"} and "1" in by and "3" in by
    assert sorted(x for v in series.values() for x in v) == result["series"]["latency_ms"]
    medians = [by[h]["p50"] for h in sorted(by)]
    assert medians == sorted(medians)  # farther receivers later
    assert by["1"]["p50"] >= 30.0 and by["3"]["p50"] >= 90.0
