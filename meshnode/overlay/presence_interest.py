"""Interest management for presence: which participants' updates each recipient gets, and
how often. Pure and deterministic (``now`` in, decisions out); ``PresenceTable`` drives it.

Each recipient (a client of this node, or a neighbour node) has a **budget**, two token
buckets (updates per second and frame bytes per second), and a **plan**, recomputed every
``presence_plan_s``, that gives each participant a tier and a minimum interval between two
updates sent to this recipient:

    tier  who                                              min interval
    0     speaking                                         0 (every update, full rate)
    1     the ``presence_near_count`` nearest              0
    2     within the view radius                           (1 / presence_rate_per_s) * d / d_ref,
                                                           at most presence_floor_s
    3     beyond the view radius                           presence_floor_s
    2     position unknown (no ``position`` either side,   0 (the budget alone thins them,
          or a private room's sealed fields)               stalest first)

``d`` is the participant's distance from the recipient, ``d_ref`` the distance of the
``presence_near_count``-th nearest (at least 1): the rate halves each time the distance
doubles past the ring of the nearest. A client's position is its own participant's latest
``position``.

A **neighbour node** relays to clients we do not know, so it gets every participant at the
full rate while its (larger, per-link) budget lasts; when the budget binds, participants are
ranked by their distance to the nearest participant heard through that link (its own
clients, and whoever is behind it), else to this node's own participant. The floor applies
to it too.

At each flush a recipient gets, among the queued updates that are due (min interval
elapsed): first those whose participant it has not been sent for ``presence_floor_s``
(stalest first: nobody vanishes), then by tier and distance (stalest first among equals),
while both buckets hold enough and at most ``presence_per_flush``; the rest wait, coalesced
(latest wins). Guarantees (tests/overlay/test_presence_interest.py): the buckets are never
overdrawn; with a budget of at least ``presence_rate_per_s`` plus the floor load (number of
participants / ``presence_floor_s``) the nearest participant gets every update it sends, and
each participant is refreshed at least every ``presence_floor_s`` (plus a flush) once the
budget covers the floor load.
"""

import heapq
import math
from dataclasses import dataclass, field
from typing import Any

from meshnode.overlay.config import OverlayConfig
from meshnode.overlay.scoring import TokenBucket
from protocol.frames import Presence

TIER_SPEAKING = 0
TIER_NEAR = 1
TIER_VIEW = 2
TIER_FAR = 3
MAX_BEHIND = 64  # participants behind a neighbour whose positions rank its interest


@dataclass(frozen=True, slots=True)
class Interest:
    """A recipient's stated wishes; 0 in a field: the node's default for its kind."""

    msgs_per_s: float = 0.0
    bytes_per_s: float = 0.0
    view_radius: float = 0.0


@dataclass(frozen=True, slots=True)
class Budget:
    """What a recipient actually gets: its wishes within the node's caps."""

    msgs_per_s: float
    bytes_per_s: float
    view_radius: float


@dataclass(slots=True)
class Plan:
    """Per participant: the order key (tier, distance) and the minimum interval."""

    key: dict[bytes, tuple[int, float]] = field(default_factory=dict)
    interval: dict[bytes, float] = field(default_factory=dict)
    until: float = -math.inf


@dataclass(slots=True)
class Recipient:
    """One recipient's presence state: its queue, what was sent when, budget and plan.

    The queue is scheduled incrementally, so a flush costs what is due, not what is queued:
    each queued participant not yet due sits in ``heap`` at the time it becomes due (its last
    send plus its plan's interval; never sent: at once), and moves to ``ready`` when that
    time comes; ``ready`` holds the due ones the budget has not let out yet. ``due_at`` is
    the authority (a heap entry that disagrees with it is stale and skipped)."""

    leaf: bool
    participant: bytes | None  # the recipient's own participant key (a client), if known
    budget: Budget
    msgs: TokenBucket
    size: TokenBucket
    queue: dict[bytes, Presence] = field(default_factory=dict)
    last_sent: dict[bytes, float] = field(default_factory=dict)
    waiting: dict[bytes, float] = field(default_factory=dict)  # never sent: queued since
    plan: Plan = field(default_factory=Plan)
    heap: list[tuple[float, bytes]] = field(default_factory=list)
    due_at: dict[bytes, float] = field(default_factory=dict)
    ready: set[bytes] = field(default_factory=set)
    sent_msgs: int = 0
    sent_bytes: int = 0
    held_back: int = 0  # due updates left queued by the budget (they wait, coalesced)
    too_large: int = 0  # updates larger than the byte bucket: never sendable, dropped


def budget_for(config: OverlayConfig, leaf: bool, interest: Interest) -> Budget:
    """The budget a recipient gets: what it asked for, never above the node's cap for its
    kind (a client may ask for less, not more); 0 asks for the default (the cap)."""
    if leaf:
        msgs, size = config.presence_client_msgs_per_s, config.presence_client_bytes_per_s
        radius = config.presence_view_radius
    else:
        msgs, size = config.presence_link_msgs_per_s, config.presence_link_bytes_per_s
        radius = math.inf
    return Budget(min(interest.msgs_per_s, msgs) if interest.msgs_per_s > 0 else msgs,
                  min(interest.bytes_per_s, size) if interest.bytes_per_s > 0 else size,
                  interest.view_radius if interest.view_radius > 0 else radius)


def new_recipient(config: OverlayConfig, leaf: bool, participant: bytes | None,
                  interest: Interest, now: float) -> Recipient:
    """A recipient with full buckets."""
    b = budget_for(config, leaf, interest)
    msgs_burst, bytes_burst = _bursts(config, b)
    return Recipient(leaf, participant, b, TokenBucket(b.msgs_per_s, msgs_burst, msgs_burst, now),
                     TokenBucket(b.bytes_per_s, bytes_burst, bytes_burst, now))


def rebudget(config: OverlayConfig, r: Recipient, interest: Interest, now: float) -> None:
    """Apply a new stated interest: new bucket sizes (never more tokens than before), and a
    new plan at the next flush."""
    b = budget_for(config, r.leaf, interest)
    msgs_burst, bytes_burst = _bursts(config, b)
    for bucket, rate, burst in ((r.msgs, b.msgs_per_s, msgs_burst),
                                (r.size, b.bytes_per_s, bytes_burst)):
        bucket.take(0.0, now)  # refill at the old rate up to now
        bucket.rate, bucket.burst = rate, burst
        bucket.tokens = min(bucket.tokens, burst)
    r.budget = b
    r.plan.until = -math.inf  # a new plan, and so a new schedule, at the next flush


def _bursts(config: OverlayConfig, b: Budget) -> tuple[float, float]:
    s = config.presence_budget_burst_s
    return max(1.0, b.msgs_per_s * s), max(2_048.0, b.bytes_per_s * s)


def frame_size(msg: Presence) -> int:
    """Bytes of ``encode_frame(msg)``, without encoding it: ``[1, 8, room_id, body, sig]``."""
    return 3 + _bin_size(len(msg.room_id)) + _bin_size(len(msg.body)) + _bin_size(
        len(msg.signature))


def _bin_size(n: int) -> int:
    return n + (2 if n < 256 else 3 if n < 65_536 else 5)


def position(fields: dict[str, Any]) -> tuple[float, float, float] | None:
    """The ``position`` field as three floats, or None."""
    pos = fields.get("position")
    if (
        type(pos) is list
        and len(pos) == 3
        and all(type(x) in (int, float) for x in pos)
    ):
        return (float(pos[0]), float(pos[1]), float(pos[2]))
    return None


def speaking(fields: dict[str, Any]) -> bool:
    """Whether the fields say the participant is speaking."""
    return fields.get("speaking") is True


Spot = tuple[tuple[float, float, float] | None, bool]
"""What a plan needs of a participant's latest update: its position (None: unknown) and
whether it is speaking (``PresenceTable`` works both out once per update)."""


def make_plan(config: OverlayConfig, r: Recipient, latest: dict[bytes, Spot],
              centres: list[tuple[float, float, float]], now: float) -> Plan:
    """Tier, distance and minimum interval of every participant in ``latest`` (position
    and speaking by participant) for recipient ``r``, whose interest is centred on
    ``centres`` (a client: its own position; a neighbour: its participants'; [] if
    unknown)."""
    plan = Plan(until=now + config.presence_plan_s)
    dist: dict[bytes, float] = {}
    dist_to = math.dist
    for p, (there, _) in latest.items():
        if p == r.participant:
            continue
        d = math.inf
        if there is not None and centres:
            d = dist_to(centres[0], there) if len(centres) == 1 else min(
                dist_to(c, there) for c in centres)
        dist[p] = d
    key, interval = plan.key, plan.interval
    if not r.leaf:
        # A neighbour: full rate for everyone; distance only orders within its budget.
        for p, d in dist.items():
            key[p] = (TIER_SPEAKING if latest[p][1] else TIER_VIEW, d)
            interval[p] = 0.0
        return plan
    known = sorted((d, p) for p, d in dist.items() if d != math.inf)
    near = {p for _, p in known[: config.presence_near_count]}
    d_ref = 1.0
    if known:
        d_ref = max(1.0, known[min(config.presence_near_count, len(known)) - 1][0])
    full = 1.0 / config.presence_rate_per_s
    floor = config.presence_floor_s
    radius = r.budget.view_radius
    for p, d in dist.items():
        if latest[p][1]:
            key[p], interval[p] = (TIER_SPEAKING, d), 0.0
        elif p in near:
            key[p], interval[p] = (TIER_NEAR, d), 0.0
        elif d == math.inf:
            key[p], interval[p] = (TIER_VIEW, d), 0.0
        elif d <= radius:
            key[p], interval[p] = (TIER_VIEW, d), min(floor, full * d / d_ref)
        else:
            key[p], interval[p] = (TIER_FAR, d), floor
    return plan


# A heap entry this close to ``now`` is looked at (and put back if not yet due): the due test
# below is the exact one, so rounding in ``last + interval - tol`` never delays an update.
_EPSILON_S = 1e-6


def schedule(config: OverlayConfig, r: Recipient, p: bytes) -> None:
    """Participant ``p`` was just queued for ``r`` (nothing of it was queued): put it in the
    schedule at the time it becomes due under the current plan."""
    last = r.last_sent.get(p)
    at = -math.inf if last is None else (
        last + r.plan.interval.get(p, 0.0) - config.presence_interval_s / 2)
    r.due_at[p] = at
    heapq.heappush(r.heap, (at, p))


def reschedule(config: OverlayConfig, r: Recipient) -> None:
    """A new plan (new intervals): schedule everything queued afresh."""
    r.heap.clear()
    r.due_at.clear()
    r.ready.clear()
    for p in r.queue:
        schedule(config, r, p)


def unschedule(r: Recipient, p: bytes) -> None:
    """``p`` is no longer queued for ``r`` (its heap entry goes stale)."""
    r.due_at.pop(p, None)
    r.ready.discard(p)


def pick(config: OverlayConfig, r: Recipient, now: float) -> list[Presence]:
    """The queued updates ``r`` gets now (see the module docstring), removed from its queue
    and paid from its buckets."""
    heap, ready, due_at = r.heap, r.ready, r.due_at
    horizon = now + _EPSILON_S
    while heap and heap[0][0] <= horizon:
        at, p = heapq.heappop(heap)
        if due_at.get(p) == at:
            ready.add(p)
    if not ready:
        return []
    tol = config.presence_interval_s / 2
    floor = config.presence_floor_s
    plan = r.plan
    overdue: list[tuple[float, bytes]] = []
    due: list[tuple[tuple[int, float], float, bytes]] = []
    later: list[bytes] = []
    for p in ready:
        last = r.last_sent.get(p)
        if last is None:
            # Never sent: due now, in interest order; overdue once queued for the floor.
            since = r.waiting.setdefault(p, now)
            if now - since + tol >= floor:
                overdue.append((since, p))
            else:
                due.append((plan.key.get(p, (TIER_VIEW, math.inf)), -math.inf, p))
        elif now - last + tol >= floor:
            overdue.append((last, p))
        elif now >= last + plan.interval.get(p, 0.0) - tol:
            due.append((plan.key.get(p, (TIER_VIEW, math.inf)), last, p))
        else:
            later.append(p)  # within rounding of due: back in the heap
    for p in later:
        ready.discard(p)
        heapq.heappush(heap, (due_at[p], p))
    if not overdue and not due:
        return []
    overdue.sort()
    due.sort()
    order = [p for _, p in overdue] + [p for _, _, p in due]
    out: list[Presence] = []
    limit = config.presence_per_flush
    for k, p in enumerate(order):
        msg = r.queue[p]
        cost = frame_size(msg)
        if cost > r.size.burst:
            # Could never be paid for: dropped, or it would block this recipient for good.
            del r.queue[p]
            unschedule(r, p)
            r.too_large += 1
            continue
        if len(out) >= limit or r.msgs.wait_time(now) > 0 or r.size.wait_time(now, cost) > 0:
            r.held_back += len(order) - k
            break  # due ones stay ready: looked at again at the next flush
        r.msgs.take(1.0, now)
        r.size.take(float(cost), now)
        del r.queue[p]
        unschedule(r, p)
        r.last_sent[p] = now
        r.waiting.pop(p, None)
        r.sent_msgs += 1
        r.sent_bytes += cost
        out.append(msg)
    return out
