"""Interest management for presence (meshnode/overlay/presence_interest.py): each recipient
gets, within its budget, its nearest and speaking participants at the full rate, farther ones
less often, everyone at least every ``presence_floor_s``; a client states its own budget and
view radius with a ``PresenceInterest`` frame."""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meshnode.identity import Identity
from meshnode.overlay import OverlayConfig, PresenceUpdated
from meshnode.overlay.presence import PresenceTable
from meshnode.overlay.presence_interest import Interest, frame_size
from protocol.errors import BadPresenceInterest
from protocol.frames import Presence, encode_frame, make_presence

from .harness import Network

ROOM = b"R" * 32
CFG = OverlayConfig(presence_interval_s=0.01, presence_rate_per_s=20.0, presence_burst=40.0,
                    presence_ttl_s=10.0, presence_floor_s=2.0, presence_near_count=3,
                    presence_view_radius=20.0, presence_client_msgs_per_s=400.0)
KEYS = [Identity.from_private_bytes(hashlib.sha256(b"p%d" % k).digest()) for k in range(40)]
RECIPIENT = "client"
SIG = b"\x00" * 64


def update(k: int, seq: int, pos: tuple[float, float, float] | None, *,
           speaking: bool = False, pad: int = 0) -> Presence:
    """A presence update of participant ``k`` (unsigned: the table never checks)."""
    fields: dict[str, object] = {}
    if pos is not None:
        fields["position"] = [float(x) for x in pos]
    if speaking:
        fields["speaking"] = True
    if pad:
        fields["pad"] = "x" * pad
    return make_presence(ROOM, KEYS[k].public_key, seq, fields, lambda _: SIG)


def run(config: OverlayConfig, spots: list[tuple[float, float, float] | None], seconds: float,
        *, interest: Interest | None = None, speaking: frozenset[int] = frozenset(),
        hz: float = 20.0, me: tuple[float, float, float] | None = (0.0, 0.0, 0.0),
        pad: int = 0) -> list[tuple[float, int, int]]:
    """Participants 1.. at ``spots`` publish at ``hz``; participant 0 is the client
    (at ``me``). Returns what the client was sent: (time, participant index, bytes)."""
    table = PresenceTable(config, b"N" * 32)
    table.set_leaf(RECIPIENT, KEYS[0].public_key)
    if interest is not None:
        table.set_interest(RECIPIENT, interest, 0.0)
    index = {KEYS[k].public_key: k for k in range(len(spots) + 1)}
    sent: list[tuple[float, int, int]] = []
    step = config.presence_interval_s
    ticks = round(seconds / step)
    every = max(1, round(1.0 / hz / step))
    for t in range(ticks):
        now = t * step
        if me is not None and t % 20 == 0:
            own = update(0, t + 1, me)
            table.accept(own, now, "peer0")
        if t % every == 0:
            for k, pos in enumerate(spots, start=1):
                msg = update(k, t + 1, pos, speaking=k in speaking, pad=pad)
                if table.accept(msg, now, "peer0"):
                    table.enqueue(msg, lambda: {RECIPIENT}, f"peer{k}", now)
        for _, msg in table.flush(now):
            sent.append((now, index[msg.participant], frame_size(msg)))
    return sent


def counts(sent: list[tuple[float, int, int]]) -> dict[int, int]:
    out: dict[int, int] = {}
    for _, k, _ in sent:
        out[k] = out.get(k, 0) + 1
    return out


def gaps(sent: list[tuple[float, int, int]], k: int, end: float) -> float:
    times = [t for t, j, _ in sent if j == k]
    if not times:
        return math.inf
    return max([b - a for a, b in itertools.pairwise(times)] + [end - times[-1]])


def test_frame_size_is_the_encoded_size() -> None:
    for pad in (0, 10, 200, 300, 70_000):
        msg = update(1, 5, (1.0, 2.0, 3.0), pad=pad)
        assert frame_size(msg) == len(encode_frame(msg))


def test_an_update_is_encoded_once_for_all_its_recipients() -> None:
    table = PresenceTable(CFG, b"N" * 32)
    first = update(1, 5, (1.0, 2.0, 3.0))
    assert table.accept(first, 0.0, "peer1")
    frame = table.frame_of(first)
    assert frame == encode_frame(first)
    assert table.frame_of(first) is frame  # the same bytes, not encoded again
    newer = update(1, 6, (2.0, 2.0, 3.0))
    assert table.accept(newer, 0.1, "peer1")
    # A recipient may still hold the older one: it is encoded as itself, never as the newer.
    assert table.frame_of(first) == encode_frame(first)
    assert table.frame_of(newer) == encode_frame(newer)
    assert table.frame_of(update(2, 1, None)) == encode_frame(update(2, 1, None))  # unknown


def test_waits_from_arrival_to_send_are_counted() -> None:
    """``waited``: each update sent, by how long it waited in the table (the node's
    ``meshnode_presence_waited`` metric). Within the budget, no longer than a flush."""
    table = PresenceTable(CFG, b"N" * 32)
    table.set_leaf(RECIPIENT, KEYS[0].public_key)
    sent = 0
    for t in range(100):
        now = t * 0.01
        if t % 5 == 2:
            for k in (1, 2, 3):
                msg = update(k, t + 1, (float(k), 0.0, 0.0))
                assert table.accept(msg, now + 0.003, "peer")
                table.enqueue(msg, lambda: {RECIPIENT}, "peer", now + 0.003)
        sent += len(table.flush(now))
    assert sent > 0 and sum(table.waited) == sent
    # Each arrives 3 ms after a tick and leaves at the first flush a full interval (10 ms)
    # later, on the tick after: 17 ms, in the bucket of at most 20 ms.
    assert table.waited[2] == sent
    assert 0.016 * sent <= table.waited_s <= 0.018 * sent


def test_a_flush_sends_what_is_due_in_order_after_budget_waits() -> None:
    """Held back by the budget, due updates wait in order and leave as tokens come: the
    schedule kept between flushes gives what a full rescan would (speaking, then nearest,
    then by distance; never one not yet due)."""
    spots = [(float(x), 0.0, 0.0) for x in range(1, 9)]
    sent = run(CFG, spots, 3.0, interest=Interest(msgs_per_s=30.0), speaking=frozenset({8}))
    got = counts(sent)
    # The speaker (farthest) and the 3 nearest fill most of the 30/s budget.
    assert got[8] >= got[4] and got[1] >= got[5]
    assert got[1] + got[2] + got[3] + got[8] >= 0.6 * len(sent)
    # Everyone is refreshed within the floor (2 s), plus the flushes it takes the budget to
    # reach everyone overdue at once.
    slack = CFG.presence_interval_s * 2 + len(spots) / 30.0
    for k in range(1, 9):
        assert gaps(sent, k, 3.0) <= CFG.presence_floor_s + slack


def test_nearest_full_rate_farther_less_often_far_at_the_floor() -> None:
    # On a line: 1..3 nearest (full rate), 4..8 in view at growing distances, 9 beyond.
    spots = [(float(x), 0.0, 0.0) for x in (1, 2, 3, 6, 9, 12, 15, 18, 40)]
    sent = run(CFG, spots, 10.0)
    got = counts(sent)
    assert all(got[k] >= 195 for k in (1, 2, 3))  # 200 published: every one
    in_view = [got[k] for k in range(4, 9)]
    assert in_view == sorted(in_view, reverse=True) and in_view[0] < 195
    assert in_view[0] > 2 * in_view[-1]  # the rate falls with distance
    assert got[9] == pytest.approx(10.0 / CFG.presence_floor_s, abs=1)
    assert gaps(sent, 9, 10.0) <= CFG.presence_floor_s + CFG.presence_interval_s


def test_speaking_is_full_rate_however_far() -> None:
    spots = [(float(x), 0.0, 0.0) for x in (1, 2, 3, 50)]
    got = counts(run(CFG, spots, 5.0, speaking=frozenset({4})))
    assert got[4] >= 98


def test_a_client_states_a_small_budget_and_radius() -> None:
    spots = [(float(x), 0.0, 0.0) for x in range(1, 21)]
    asked = Interest(msgs_per_s=90.0, bytes_per_s=0.0, view_radius=5.0)
    sent = run(CFG, spots, 10.0, interest=asked)
    # 3 nearest at 20/s, plus the floor load (20 / 2 s), plus 20 to spare.
    assert len(sent) <= 90.0 * 10.0 + max(1.0, 90.0 * CFG.presence_budget_burst_s)
    got = counts(sent)
    assert got[1] >= 195  # the nearest keeps its full rate
    assert all(got.get(k, 0) >= 10.0 / CFG.presence_floor_s - 1 for k in range(1, 21))
    assert max(got[k] for k in range(6, 21)) <= 10.0 / CFG.presence_floor_s + 1
    # Asking for more than the node's cap gets the cap.
    big = run(CFG, spots, 2.0, interest=Interest(msgs_per_s=10_000.0))
    table = PresenceTable(CFG, b"N" * 32)
    table.set_leaf(RECIPIENT, KEYS[0].public_key)
    table.set_interest(RECIPIENT, Interest(msgs_per_s=10_000.0), 0.0)
    assert table.recipient(RECIPIENT, 0.0).budget.msgs_per_s == CFG.presence_client_msgs_per_s
    assert len(big) <= CFG.presence_client_msgs_per_s * 2.0 + 100


def test_byte_budget_and_an_oversized_update() -> None:
    spots = [(float(x), 0.0, 0.0) for x in range(1, 11)]
    sent = run(CFG, spots, 5.0, interest=Interest(bytes_per_s=8_192.0), pad=100)
    assert sum(b for _, _, b in sent) <= 8_192.0 * 5.0 + max(2_048.0, 8_192.0 * 0.25)
    got = counts(sent)
    assert got[1] >= 85 and got[1] == max(got.values())  # ~28 fit a second: nearest first
    # An update larger than the byte bucket could never be paid for: dropped, not blocking.
    table = PresenceTable(CFG, b"N" * 32)
    table.set_leaf(RECIPIENT, None)
    table.set_interest(RECIPIENT, Interest(bytes_per_s=1_024.0), 0.0)
    huge, small = update(1, 1, None, pad=5_000), update(2, 1, None)
    for msg in (huge, small):
        table.accept(msg, 0.0)
        table.enqueue(msg, lambda: {RECIPIENT}, None, 0.0)
    out = table.flush(1.0)
    assert [m.participant for _, m in out] == [small.participant]
    assert table.recipients[RECIPIENT].too_large == 1


def test_unfiltered_sends_everything() -> None:
    spots = [(float(x), 0.0, 0.0) for x in range(1, 21)]
    got = counts(run(dataclasses.replace(CFG, presence_filter=False), spots, 5.0))
    assert all(got[k] >= 98 for k in range(1, 21))


def test_unknown_positions_share_the_budget_stalest_first() -> None:
    # A private room's sealed fields: no positions. The budget is shared round robin.
    spots: list[tuple[float, float, float] | None] = [None] * 20
    got = counts(run(CFG, spots, 10.0, interest=Interest(msgs_per_s=40.0), me=None))
    assert min(got.values()) >= 0.8 * max(got.values())


SPOT = st.tuples(*[st.floats(-50.0, 50.0, allow_nan=False)] * 3)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spots=st.lists(SPOT, min_size=1, max_size=25),
       msgs=st.floats(1.0, 600.0), size=st.floats(1_024.0, 200_000.0),
       radius=st.floats(0.5, 100.0), speaking=st.frozensets(st.integers(1, 25), max_size=3))
def test_budget_never_exceeded(spots: list[tuple[float, float, float]], msgs: float,
                               size: float, radius: float, speaking: frozenset[int]) -> None:
    sent = run(CFG, spots, 4.0, interest=Interest(msgs, size, radius), speaking=speaking)
    burst_m = max(1.0, msgs * CFG.presence_budget_burst_s)
    burst_b = max(2_048.0, size * CFG.presence_budget_burst_s)
    times = [t for t, _, _ in sent]
    sizes = [b for _, _, b in sent]
    # Every window [times[i], times[j]]: at most rate * length + burst.
    for i in range(len(sent)):
        total = 0
        for j in range(i, len(sent)):
            total += sizes[j]
            span = times[j] - times[i]
            assert j - i + 1 <= msgs * span + burst_m + 1e-6
            assert total <= size * span + burst_b + 1e-6


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spots=st.lists(SPOT, min_size=2, max_size=25, unique=True), radius=st.floats(0.5, 100.0),
       spare=st.floats(0.0, 200.0))
def test_nearest_never_starved_and_everyone_refreshed(
        spots: list[tuple[float, float, float]], radius: float, spare: float) -> None:
    """With a budget of at least the near set at full rate plus the floor load, the nearest
    gets (almost) every update and each participant is refreshed at the floor rate."""
    n = len(spots)
    msgs = CFG.presence_near_count * CFG.presence_rate_per_s + n / CFG.presence_floor_s + spare
    seconds = 8.0
    sent = run(CFG, spots, seconds, interest=Interest(msgs, 0.0, radius))
    origin = (0.0, 0.0, 0.0)
    nearest = 1 + min(range(n), key=lambda k: (math.dist(origin, spots[k]), k))
    got = counts(sent)
    assert got[nearest] >= 0.9 * seconds * CFG.presence_rate_per_s
    assert gaps(sent, nearest, seconds) <= 0.5
    slack = CFG.presence_interval_s * 2 + n / msgs
    for k in range(1, n + 1):
        assert gaps(sent, k, seconds) <= CFG.presence_floor_s + slack


@settings(max_examples=10, deadline=None)
@given(spots=st.lists(SPOT, min_size=1, max_size=15), msgs=st.floats(1.0, 300.0))
def test_deterministic(spots: list[tuple[float, float, float]], msgs: float) -> None:
    a = run(CFG, spots, 2.0, interest=Interest(msgs_per_s=msgs))
    b = run(CFG, spots, 2.0, interest=Interest(msgs_per_s=msgs))
    assert a == b


def test_a_client_states_its_interest_to_its_node() -> None:
    """Over the overlay: the client's ``set_presence_interest`` reaches its node, which
    thins what it forwards; bad values are refused locally with a typed error."""
    config = OverlayConfig(presence_interval_s=0.01, presence_floor_s=2.0, presence_near_count=1,
                           active_view_size=8)
    net = Network(seed=41, config=config)
    room = net.add_room(6)
    hub, client, *others = room.nodes
    net.link(hub, client, leaf=True, latency=0.005)
    for o in others:
        net.link(hub, o, latency=0.005)
    net.run_for(0.5)
    ov = net.nodes[client].overlay
    assert ov is not None
    with pytest.raises(BadPresenceInterest) as err:
        ov.set_presence_interest(msgs_per_s=-1.0)
    assert err.value.reason == "bad_presence_interest"
    with pytest.raises(BadPresenceInterest):
        ov.set_presence_interest(view_radius=math.nan)
    ov.set_presence_interest(msgs_per_s=30.0, view_radius=3.0)
    net.presence(client, {"position": [0.0, 0.0, 0.0]})
    net.run_for(0.2)
    hub_ov = net.nodes[hub].overlay
    assert hub_ov is not None
    assert hub_ov.presence.recipient(net.nodes[client].peer_id, net.now).budget.msgs_per_s == 30
    t0 = net.now
    for k, o in enumerate(others):
        x = 1.0 + 10.0 * k  # one near, the rest beyond the radius of 3
        net.every(0.05, lambda n, o=o, x=x: n.presence(o, {"position": [x, 0.0, 0.0]}),
                  start=t0, until=t0 + 4.0)
    net.run_for(4.0)
    heard = [e for e in net.nodes[client].events_of(PresenceUpdated) if e.at > t0]
    by = {net.nodes[o].peer_id: 0 for o in others}
    for e in heard:
        if e.participant in by:
            by[e.participant] += 1
    near, *far = (by[net.nodes[o].peer_id] for o in others)
    assert near >= 60  # ~80 published in 4 s: nearly all
    assert all(1 <= f <= 4 for f in far)  # ~one per floor_s
    assert len(heard) <= 30 * 4.0 + 30 * config.presence_budget_burst_s + 1
