"""The SCTP model's congestion window (``netsim/sctp.py``), as aiortc's: a new association
starts at three chunks per round trip and doubles per full round (slow start), so the burst
that resyncs a node after a partition takes several round trips; scene traffic, which never
fills the window, is not delayed; a T3 expiry collapses the window to one chunk."""

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from netsim.links import Link, LinkSpec
from netsim.sctp import INITIAL_CWND, ReliableChannel

CHUNK = 1160  # aiortc's USERDATA_MAX_LENGTH


class Clock:
    """A tiny event loop: the channel's ``schedule`` and ``clock``."""

    def __init__(self) -> None:
        self.now = 0.0
        self.events: list[tuple[float, int, Any, tuple[Any, ...]]] = []
        self.seq = 0

    def schedule(self, when: float, fn: Any, *args: Any) -> None:
        self.seq += 1
        self.events.append((when, self.seq, fn, args))

    def run(self) -> None:
        while self.events:
            self.events.sort(key=lambda e: (e[0], e[1]))
            when, _, fn, args = self.events.pop(0)
            self.now = max(self.now, when)
            fn(*args)


def channel(**spec: Any) -> tuple[Clock, ReliableChannel, list[tuple[float, Any]]]:
    import random

    clock = Clock()
    got: list[tuple[float, Any]] = []
    link = Link(LinkSpec(latency_ms=40, **spec), random.Random(1))
    back = Link(LinkSpec(latency_ms=40, **spec), random.Random(2))
    ch = ReliableChannel(link, clock.schedule, lambda: clock.now,
                         lambda payload: got.append((clock.now, payload)))
    ch.reverse = back
    return clock, ch, got


def test_a_resync_burst_leaves_in_slow_start_rounds() -> None:
    clock, ch, got = channel()
    for k in range(21):  # 21 full chunks at once: 3, then 6, then 12 per round trip
        ch.send(CHUNK, 0.0, k)
    clock.run()
    assert [p for _, p in got] == list(range(21))  # in order, all of them
    rounds = sorted({round(t, 6) for t, _ in got})
    assert rounds == pytest.approx([0.04, 0.12, 0.20])  # one round trip (80 ms) apart
    per_round = [sum(1 for t, _ in got if t == pytest.approx(r)) for r in rounds]
    assert per_round == [3, 6, 12]
    assert INITIAL_CWND == 3 * CHUNK


def test_scene_traffic_never_waits_for_the_window() -> None:
    clock, ch, got = channel()
    for k in range(40):  # a 300 B change every 50 ms: about 500 B per round trip
        clock.now = k * 0.05
        ch.send(300, clock.now, k)
        clock.run()
    assert [t for t, _ in got] == pytest.approx([k * 0.05 + 0.04 for k in range(40)])


def test_a_t3_expiry_collapses_the_window_to_one_chunk() -> None:
    clock, ch, got = channel()
    link = ch.link
    link.cut = True  # everything lost until the heal: T3 expires (RTO 3 s before a sample)
    ch.send(CHUNK, 0.0, "lost")
    clock.schedule(3.5, lambda: setattr(link, "cut", False))
    clock.run()
    assert ch.t3_expiries >= 1 and got and got[0][1] == "lost"
    assert ch.cwnd <= 2 * CHUNK  # one chunk, grown by at most one full round since


def test_an_associations_packets_keep_their_order_under_jitter() -> None:
    # The emulation's fabric keeps a direction FIFO; so does the SCTP model's link: with
    # reordering, a later SACK overtook earlier ones, and the earlier ones then acked nothing
    # new and struck nothing (a fast retransmit 0.25 s late in the bursty case).
    import random

    link = Link(LinkSpec(latency_ms=40, jitter_ms=10), random.Random(3))
    data = [link.attempt(200, k * 0.002) for k in range(200)]
    sacks = [link.ack(0.4 + k * 0.002) for k in range(200)]
    for seq in (data, sacks):
        times = [t for t in seq if t is not None]
        assert times == sorted(times) and len(times) == 200
    assert data[-1] is not None and sacks[0] is not None and data[-1] <= sacks[0]
    # Only `reorder` reorders them.
    shuffled = Link(LinkSpec(latency_ms=40, jitter_ms=10, reorder=0.3), random.Random(3))
    times = [shuffled.attempt(200, k * 0.002) for k in range(200)]
    assert [t for t in times if t is not None] != sorted(t for t in times if t is not None)


def _depart_by_rounds(ch: ReliableChannel, size: int, now: float) -> float:
    """The congestion window's departure rule, chunk by chunk with no fast path (what
    ``ReliableChannel._depart`` computed before its one-chunk shortcut; issue 15)."""
    spec = ch.link.spec
    reverse = ch.reverse if ch.reverse is not None else ch.link
    rtt = ch.srtt if ch.srtt is not None else (
        spec.latency_ms + reverse.spec.latency_ms) / 1000.0
    t = max(now, ch.last_departure)
    left = max(1, size)
    while left > 0:
        if t >= ch.round_end:
            if ch.round_full:
                ch.cwnd += ch.cwnd if ch.cwnd < ch.ssthresh else float(spec.mtu)
            ch.round_end = t + max(rtt, 1e-6)
            ch.round_bytes = 0.0
            ch.round_full = False
        if ch.round_bytes < ch.cwnd:
            chunk = min(left, spec.mtu)
            ch.round_bytes += chunk
            left -= chunk
            if ch.round_bytes >= ch.cwnd:
                ch.round_full = True
        else:
            ch.round_full = True
            t = ch.round_end
    ch.last_departure = t
    return t


def _window(ch: ReliableChannel) -> tuple[float, ...]:
    return (ch.cwnd, ch.round_end, ch.round_bytes, float(ch.round_full), ch.last_departure)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([0.0, 0.0, 1e-4, 0.01, 0.05, 0.2]),
                          # sizes that fill the window exactly, and any others
                          st.one_of(st.sampled_from([CHUNK, CHUNK // 2, CHUNK // 4]),
                                    st.integers(0, 4 * CHUNK))),
                min_size=1, max_size=60),
       st.sampled_from([None, 0.001, 0.08]))
def test_the_one_chunk_shortcut_departs_as_the_rounds_do(
        offers: list[tuple[float, int]], srtt: float | None) -> None:
    # Same offers to two channels: one through _depart, one through the rounds rule above;
    # every departure time and the window's whole state stay equal, bit for bit.
    _, fast, _ = channel()
    _, slow, _ = channel()
    fast.srtt = slow.srtt = srtt
    now = 0.0
    for dt, size in offers:
        now += dt
        assert fast._depart(size, now) == _depart_by_rounds(slow, size, now)
        assert _window(fast) == _window(slow)
