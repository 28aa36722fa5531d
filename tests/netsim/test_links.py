"""netsim.links: spec validation and statistical behaviour of the link model (fixed seeds)."""

from __future__ import annotations

import itertools
import math
import random
import statistics
from typing import Any

import pytest

from netsim.links import MAX_MESSAGE_BYTES, PRESETS, Link, LinkSpec

# --- LinkSpec -------------------------------------------------------------------------------------


def test_defaults_and_presets() -> None:
    s = LinkSpec()
    assert s.latency_ms == 20.0 and s.latency_dist == "fixed" and s.mtu == 1160
    assert s.overhead_bytes == 93  # IP 20 + UDP 8 + DTLS 37 + SCTP 12 + DATA 16
    assert s.queue_bytes == 256 * 1024 and s.rto_min_ms == 1000.0 and s.max_retransmits == 10
    assert set(PRESETS) == {"lan", "wan", "3g", "satellite"}
    assert PRESETS["lan"].latency_ms == 1.0 and PRESETS["lan"].bandwidth_kbps == 100_000
    assert PRESETS["wan"].loss == 0.001 and PRESETS["wan"].jitter_ms == 5.0
    assert PRESETS["3g"].queue_bytes == 64 * 1024 and PRESETS["3g"].bandwidth_kbps == 2_000
    sat = PRESETS["satellite"]
    assert 2 * sat.latency_ms == pytest.approx(600.0) and sat.loss == 0.02
    assert sat.initial_rto_s() == 1.0


def test_from_dict_strict() -> None:
    s = LinkSpec.from_dict({"latency_ms": 50, "loss": 0.1, "latency_dist": "pareto"})
    assert s.latency_ms == 50.0 and isinstance(s.latency_ms, float) and s.loss == 0.1
    assert LinkSpec.from_dict({"preset": "3g", "loss": 0.05}) == PRESETS["3g"].replace(loss=0.05)
    assert LinkSpec.from_dict({}, base=PRESETS["wan"]) == PRESETS["wan"]
    bad: list[tuple[dict[str, Any], str]] = [
        ({"latncy_ms": 5}, "latncy_ms"),
        ({"loss": 1.5}, "loss"),
        ({"loss": -0.1}, "loss"),
        ({"latency_dist": "lognormal"}, "latency_dist"),
        ({"queue_bytes": 1.5}, "queue_bytes"),
        ({"mtu": 0}, "mtu"),
        ({"mtu": True}, "mtu"),
        ({"latency_ms": "20"}, "latency_ms"),
        ({"latency_ms": float("nan")}, "latency_ms"),
        ({"bandwidth_kbps": -1}, "bandwidth_kbps"),
        ({"pareto_shape": 1.0}, "pareto_shape"),
        ({"ge_p_good_bad": 0.1, "ge_p_bad_good": 0.0}, "ge_p_bad_good"),
        ({"max_retransmits": -1}, "max_retransmits"),
        ({"rto_min_ms": 0}, "rto_min_ms"),
        ({"preset": "dialup"}, "preset"),
    ]
    for d, key in bad:
        with pytest.raises(ValueError, match=key):
            LinkSpec.from_dict(d)
    with pytest.raises(ValueError, match="nope"):
        LinkSpec().replace(nope=1)
    with pytest.raises(ValueError, match="loss"):
        LinkSpec(loss=2.0)
    assert LinkSpec.from_dict(LinkSpec(loss=0.3).to_dict()) == LinkSpec(loss=0.3)


def test_packets_and_wire_bytes() -> None:
    s = LinkSpec(mtu=1200, overhead_bytes=48)
    assert [s.packets(x) for x in (0, 1, 1200, 1201, 6000)] == [1, 1, 1, 2, 5]
    assert s.wire_bytes(6000) == 6000 + 5 * 48
    assert LinkSpec(latency_ms=500).initial_rto_s() == 1.5


def test_size_validation() -> None:
    link = Link(LinkSpec(), random.Random(1))
    with pytest.raises(ValueError, match="size"):
        link.send(MAX_MESSAGE_BYTES + 1, 0.0, True)
    with pytest.raises(ValueError, match="size"):
        link.send(-1, 0.0, False)
    assert link.send(MAX_MESSAGE_BYTES, 0.0, True) is not None


# --- latency --------------------------------------------------------------------------------------


def _delays(spec: LinkSpec, n: int, seed: int = 7) -> list[float]:
    link = Link(spec, random.Random(seed))
    out = []
    for i in range(n):
        now = i * 10.0
        t = link.send(100, now, False)
        assert t is not None
        out.append((t - now) * 1000.0)
    return out


def test_fixed_latency_exact() -> None:
    assert _delays(LinkSpec(latency_ms=42.0), 100) == pytest.approx([42.0] * 100)


def test_normal_latency_mean_and_sd() -> None:
    d = _delays(LinkSpec(latency_ms=50.0, latency_dist="normal", latency_sd_ms=10.0), 20_000)
    assert statistics.fmean(d) == pytest.approx(50.0, rel=0.01)
    assert statistics.pstdev(d) == pytest.approx(10.0, rel=0.03)
    assert min(d) >= 0.0
    # Truncated at zero.
    wide = LinkSpec(latency_ms=1.0, latency_dist="normal", latency_sd_ms=5.0)
    assert min(_delays(wide, 500)) == 0.0


def test_pareto_latency_mean() -> None:
    d = _delays(LinkSpec(latency_ms=80.0, latency_dist="pareto", pareto_shape=2.5), 50_000)
    assert statistics.fmean(d) == pytest.approx(80.0, rel=0.03)
    assert min(d) >= 80.0 * 1.5 / 2.5 - 1e-9  # the scale x_m
    assert max(d) > 3 * 80.0  # heavy tail


def test_jitter_bounds_and_mean() -> None:
    d = _delays(LinkSpec(latency_ms=40.0, jitter_ms=5.0), 20_000)
    assert min(d) >= 35.0 - 1e-9 and max(d) <= 45.0 + 1e-9
    assert statistics.fmean(d) == pytest.approx(40.0, rel=0.005)
    assert min(_delays(LinkSpec(latency_ms=1.0, jitter_ms=5.0), 500)) == 0.0  # floored


def test_reorder_extra_delay() -> None:
    d = _delays(LinkSpec(latency_ms=10.0, reorder=0.2, reorder_ms=30.0), 20_000)
    late = sum(1 for x in d if x > 20.0) / len(d)
    assert late == pytest.approx(0.2, abs=0.01)
    assert all(x == pytest.approx(10.0) or x == pytest.approx(40.0) for x in d)


# --- loss -----------------------------------------------------------------------------------------


def _loss_pattern(spec: LinkSpec, n: int, size: int = 100, seed: int = 3) -> list[bool]:
    link = Link(spec, random.Random(seed))
    return [link.send(size, i * 1.0, False) is None for i in range(n)]


def test_independent_loss_rate() -> None:
    lost = _loss_pattern(LinkSpec(loss=0.1), 50_000)
    assert sum(lost) / len(lost) == pytest.approx(0.1, abs=0.005)
    assert not any(_loss_pattern(LinkSpec(), 1000))


def _bursts(lost: list[bool]) -> list[int]:
    runs, cur = [], 0
    for x in lost:
        if x:
            cur += 1
        elif cur:
            runs.append(cur)
            cur = 0
    return runs


def test_gilbert_elliott_bursts_and_stationary_loss() -> None:
    p_gb, p_bg = 0.05, 0.25
    lost = _loss_pattern(LinkSpec(ge_p_good_bad=p_gb, ge_p_bad_good=p_bg), 200_000)
    assert sum(lost) / len(lost) == pytest.approx(p_gb / (p_gb + p_bg), rel=0.03)
    assert statistics.fmean(_bursts(lost)) == pytest.approx(1 / p_bg, rel=0.03)
    # Partial loss in the bad state scales the stationary loss.
    lost = _loss_pattern(
        LinkSpec(ge_p_good_bad=p_gb, ge_p_bad_good=p_bg, ge_loss_bad=0.5), 200_000
    )
    assert sum(lost) / len(lost) == pytest.approx(0.5 * p_gb / (p_gb + p_bg), rel=0.04)


def test_mtu_frame_loss_probability() -> None:
    p = 0.05
    lost = _loss_pattern(LinkSpec(loss=p, mtu=1200), 40_000, size=6000)  # 5 packets
    assert sum(lost) / len(lost) == pytest.approx(1 - (1 - p) ** 5, abs=0.008)
    lost = _loss_pattern(LinkSpec(loss=p, mtu=1200), 40_000, size=1200)  # 1 packet
    assert sum(lost) / len(lost) == pytest.approx(p, abs=0.004)


# --- bandwidth and queue --------------------------------------------------------------------------


def test_saturated_throughput_equals_bandwidth() -> None:
    spec = LinkSpec(latency_ms=30.0, bandwidth_kbps=1000.0, queue_bytes=64 * 1024)
    link = Link(spec, random.Random(5))
    rate = spec.rate_bytes_per_s
    size, wire = 1000, spec.wire_bytes(1000)
    offered_per_tick = 20  # 20 kB per 10 ms = 16 Mbit/s offered, 16x the capacity
    delivered: list[tuple[float, int]] = []
    for tick in range(1000):  # 10 s
        now = tick * 0.01
        for _ in range(offered_per_tick):
            t = link.send(size, now, False)
            if t is not None:
                delivered.append((t, wire))
            assert link.backlog_bytes(now) <= spec.queue_bytes
    assert link.frames_dropped_queue > 0
    arrivals = [t for t, _ in delivered]
    assert arrivals == sorted(arrivals)  # FIFO, fixed latency
    span = arrivals[-1] - arrivals[0]
    throughput = sum(w for _, w in delivered[1:]) / span
    assert throughput == pytest.approx(rate, rel=0.02)
    assert link.busy_s == pytest.approx(len(delivered) * wire / rate)
    assert link.bytes_sent == len(delivered) * wire


def test_serialisation_delay_and_tail_drop() -> None:
    spec = LinkSpec(latency_ms=10.0, bandwidth_kbps=80.0, queue_bytes=10_000)  # 10 kB/s
    link = Link(spec, random.Random(1))
    wire = spec.wire_bytes(1000)  # 1048
    results = [link.send(1000, 0.0, False) for _ in range(20)]
    accepted = [t for t in results if t is not None]
    assert len(accepted) == 10_000 // wire  # 9
    assert accepted == pytest.approx([(k + 1) * wire / 10_000 + 0.010 for k in range(9)])
    assert link.frames_dropped_queue == 11
    # Once drained, the queue accepts again.
    assert link.send(1000, 5.0, False) == pytest.approx(5.0 + wire / 10_000 + 0.010)
    # An empty queue accepts a frame bigger than itself (slowly).
    big = Link(spec, random.Random(1))
    assert big.send(50_000, 0.0, False) is not None
    assert big.send(10, 0.0, False) is None


def test_unlimited_bandwidth_has_no_queue() -> None:
    link = Link(LinkSpec(latency_ms=5.0, queue_bytes=1), random.Random(1))
    assert all(link.send(100_000, 0.0, False) == pytest.approx(0.005) for _ in range(100))
    assert link.busy_s == 0.0


# --- reliable delivery ----------------------------------------------------------------------------


def _expected_rto_delay(p: float, spec: LinkSpec) -> float:
    """Mean extra delay of a reliable frame with per-attempt loss p (no queueing)."""
    rto0, rto_max, k_max = spec.initial_rto_s(), spec.rto_max_ms / 1000, spec.max_retransmits
    total = 0.0
    for k in range(k_max + 1):  # k failed attempts before the delivered one
        prob = p**k * ((1 - p) if k < k_max else 1.0)
        total += prob * sum(min(rto0 * 2**i, rto_max) for i in range(k))
    return total


def test_reliable_never_lost_and_delayed_by_rto() -> None:
    p = 0.15
    spec = LinkSpec(latency_ms=20.0, loss=p)
    link = Link(spec, random.Random(11))
    n = 40_000
    extra = []
    for i in range(n):
        now = i * 1000.0  # far apart: no ordering interference
        t = link.send(500, now, True)
        assert t is not None
        extra.append(t - now - 0.020)
    assert min(extra) == pytest.approx(0.0, abs=1e-9)
    # Every extra delay is a sum of doubling RTOs: 0, 1, 3, 7, ... seconds.
    assert {round(x, 6) for x in extra} <= {float(2**k - 1) for k in range(11)}
    assert statistics.fmean(extra) == pytest.approx(_expected_rto_delay(p, spec), rel=0.05)
    assert link.retransmissions / n == pytest.approx(p / (1 - p), rel=0.04)
    assert link.frames_delivered == n and link.frames_lost == link.retransmissions


def test_reliable_forced_delivery_after_max_retransmits() -> None:
    spec = LinkSpec(latency_ms=10.0, loss=1.0, max_retransmits=3, rto_max_ms=3000.0)
    link = Link(spec, random.Random(2))
    t = link.send(100, 0.0, True)
    assert t == pytest.approx(1 + 2 + 3 + 0.010)  # RTO 1, 2, then capped at 3
    assert link.retransmissions == 3 and link.forced_deliveries == 1
    assert link.send(100, 100.0, False) is None


def test_reliable_in_order_unreliable_may_reorder() -> None:
    spec = LinkSpec(latency_ms=50.0, jitter_ms=20.0, reorder=0.1, reorder_ms=40.0, loss=0.05)
    rel = Link(spec, random.Random(4))
    unrel = Link(spec, random.Random(4))
    r = [rel.send(200, i * 0.001, True) for i in range(5000)]
    u = [unrel.send(200, i * 0.001, False) for i in range(5000)]
    arrivals = [t for t in r if t is not None]
    assert len(arrivals) == 5000
    assert all(a <= b for a, b in itertools.pairwise(arrivals))
    got = [t for t in u if t is not None]
    assert any(a > b for a, b in itertools.pairwise(got))


def test_reliable_tail_drop_is_retried() -> None:
    spec = LinkSpec(latency_ms=10.0, bandwidth_kbps=80.0, queue_bytes=5_000)
    link = Link(spec, random.Random(1))
    results = [link.send(1000, 0.0, True) for _ in range(10)]
    assert all(t is not None for t in results)
    assert link.frames_dropped_queue > 0 and link.retransmissions == link.frames_dropped_queue
    ts = [t for t in results if t is not None]
    assert ts == sorted(ts) and ts[-1] >= 1.0  # the dropped ones waited at least one RTO


# --- partitions, degradation, determinism --------------------------------------------------------


def test_down_link_refuses_everything() -> None:
    link = Link(LinkSpec(), random.Random(1))
    link.set_up(False)
    assert link.send(100, 0.0, True) is None and link.send(100, 0.0, False) is None
    assert link.frames_dropped_down == 2 and link.frames_sent == 0
    link.up = True
    assert link.send(100, 1.0, True) == pytest.approx(1.020)


def test_set_spec_mid_run() -> None:
    spec = LinkSpec(latency_ms=10.0, bandwidth_kbps=80.0, overhead_bytes=0)
    link = Link(spec, random.Random(1))
    link.send(10_000, 0.0, False)  # 10,000 B on the wire: busy for 1 s at 10 kB/s
    assert link.busy_until == pytest.approx(1.0)
    link.set_spec(link.spec.replace(bandwidth_kbps=160.0), now=0.5)  # 5 kB left, now at 20 kB/s
    assert link.busy_until == pytest.approx(0.75)
    link.set_spec(link.spec.replace(loss=1.0))
    assert link.send(10, 2.0, False) is None


def _trace(seed: int) -> list[float | None]:
    spec = LinkSpec(
        latency_ms=30.0, latency_dist="pareto", jitter_ms=5.0, loss=0.05, ge_p_good_bad=0.02,
        ge_p_bad_good=0.3, bandwidth_kbps=500.0, queue_bytes=20_000, reorder=0.05,
    )
    link = Link(spec, random.Random(seed))
    return [link.send(300 + (i % 7) * 500, i * 0.004, i % 3 == 0) for i in range(3000)]


def test_determinism() -> None:
    assert _trace(99) == _trace(99)
    assert _trace(99) != _trace(100)


def test_counters_dict() -> None:
    link = Link(LinkSpec(loss=0.5), random.Random(8))
    for i in range(100):
        link.send(10, float(i), False)
    c = link.counters()
    assert c["frames_sent"] == 100 and c["frames_lost"] + c["frames_delivered"] == 100
    assert c["bytes_sent"] == 100 * (12 + 93)  # padded to 4 bytes, plus the headers
    assert math.isclose(c["busy_s"], 0.0)
