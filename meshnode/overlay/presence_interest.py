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


DueEntry = tuple[tuple[int, float], float, bytes]  # (plan key, last sent or -inf, who)
OverdueEntry = tuple[float, bytes]  # (last sent or queued since, who)


@dataclass(slots=True)
class Recipient:
    """One recipient's presence state: its queue, what was sent when, budget and plan.

    The queue is scheduled incrementally, so a flush costs what it sends, not what is
    queued. A queued participant not yet due waits in ``timers`` at the time it becomes due
    (its last send plus its plan's interval; never sent: at once); then it is *ready*, in
    ``due`` (ordered by plan key, stalest first) until it is overdue (``overdue_at``: its
    last send, or since when it was queued, plus the floor), then in ``overdue`` (stalest
    first). ``due_at`` and ``ready`` are the authority: a heap entry that disagrees is
    stale and skipped."""

    leaf: bool
    participant: bytes | None  # the recipient's own participant key (a client), if known
    budget: Budget
    msgs: TokenBucket
    size: TokenBucket
    queue: dict[bytes, Presence] = field(default_factory=dict)
    last_sent: dict[bytes, float] = field(default_factory=dict)
    waiting: dict[bytes, float] = field(default_factory=dict)  # never sent: queued since
    plan: Plan = field(default_factory=Plan)
    timers: list[tuple[float, bytes]] = field(default_factory=list)
    due_at: dict[bytes, float] = field(default_factory=dict)
    due: list[DueEntry] = field(default_factory=list)
    overdue_at: list[tuple[float, bytes, DueEntry]] = field(default_factory=list)
    overdue: list[OverdueEntry] = field(default_factory=list)
    ready: dict[bytes, DueEntry | OverdueEntry] = field(default_factory=dict)
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


# A timer this close to ``now`` is looked at (and put back if not yet due): the tests below
# are the exact ones, so rounding in ``last + interval - tol`` never delays an update.
_EPSILON_S = 1e-6


def schedule(config: OverlayConfig, r: Recipient, p: bytes) -> None:
    """Participant ``p`` was just queued for ``r`` (nothing of it was queued): set its
    timer to when it becomes due under the current plan."""
    last = r.last_sent.get(p)
    at = -math.inf if last is None else (
        last + r.plan.interval.get(p, 0.0) - config.presence_interval_s / 2)
    r.due_at[p] = at
    heapq.heappush(r.timers, (at, p))


def reschedule(config: OverlayConfig, r: Recipient) -> None:
    """A new plan (new intervals and keys): schedule everything queued afresh."""
    r.timers.clear()
    r.due_at.clear()
    r.due.clear()
    r.overdue_at.clear()
    r.overdue.clear()
    r.ready.clear()
    for p in r.queue:
        schedule(config, r, p)


def unschedule(r: Recipient, p: bytes) -> None:
    """``p`` is no longer queued for ``r`` (its heap entries go stale)."""
    r.due_at.pop(p, None)
    r.ready.pop(p, None)


def _make_ready(config: OverlayConfig, r: Recipient, now: float,
                fresh: list[tuple[float, bytes, DueEntry]]) -> None:
    """Move what has become due to ``due`` or ``overdue``, and what has become overdue from
    ``due`` to ``overdue``: the very tests of the module docstring, at ``now``. Those newly
    due go to ``fresh`` with the time they become overdue (``pick`` adds the ones it leaves
    ready to ``overdue_at``; the rest are sent at once and never need it)."""
    tol = config.presence_interval_s / 2
    floor = config.presence_floor_s
    horizon = now + _EPSILON_S
    timers, due_at, ready = r.timers, r.due_at, r.ready
    later: list[tuple[float, bytes]] = []
    while timers and timers[0][0] <= horizon:
        at, p = heapq.heappop(timers)
        if due_at.get(p) != at:
            continue
        last = r.last_sent.get(p)
        if last is None:
            # Never sent: due now, in interest order; overdue once queued for the floor.
            since = r.waiting.setdefault(p, now)
            if now - since + tol >= floor:
                _to_overdue(r, (since, p))
            else:
                entry: DueEntry = (r.plan.key.get(p, (TIER_VIEW, math.inf)), -math.inf, p)
                _to_due(r, entry)
                fresh.append((since + floor - tol, p, entry))
        elif now - last + tol >= floor:
            _to_overdue(r, (last, p))
        elif now >= last + r.plan.interval.get(p, 0.0) - tol:
            entry = (r.plan.key.get(p, (TIER_VIEW, math.inf)), last, p)
            _to_due(r, entry)
            fresh.append((last + floor - tol, p, entry))
        else:
            later.append((at, p))  # within rounding of due: not yet
            continue
        del due_at[p]
    for timer in later:
        heapq.heappush(timers, timer)
    pending = r.overdue_at
    again: list[tuple[float, bytes, DueEntry]] = []
    while pending and pending[0][0] <= horizon:
        item = heapq.heappop(pending)
        entry = item[2]
        p = entry[2]
        if ready.get(p) is not entry:
            continue
        since = entry[1] if entry[1] != -math.inf else r.waiting[p]
        if now - since + tol >= floor:
            _to_overdue(r, (since, p))
        else:
            again.append(item)
    for item in again:
        heapq.heappush(pending, item)


def _to_due(r: Recipient, entry: DueEntry) -> None:
    r.ready[entry[2]] = entry
    heapq.heappush(r.due, entry)


def _to_overdue(r: Recipient, entry: OverdueEntry) -> None:
    r.ready[entry[1]] = entry
    heapq.heappush(r.overdue, entry)


def _first_ready(r: Recipient) -> bytes | None:
    """The participant ``r`` gets next: the stalest overdue, else the first due (stale heap
    entries dropped on the way)."""
    ready, overdue, due = r.ready, r.overdue, r.due
    while overdue:
        late = overdue[0]
        if ready.get(late[1]) is late:
            return late[1]
        heapq.heappop(overdue)
    while due:
        entry = due[0]
        if ready.get(entry[2]) is entry:
            return entry[2]
        heapq.heappop(due)
    return None


def pick(config: OverlayConfig, r: Recipient, now: float) -> list[Presence]:
    """The queued updates ``r`` gets now (see the module docstring), removed from its queue
    and paid from its buckets."""
    fresh: list[tuple[float, bytes, DueEntry]] = []
    _make_ready(config, r, now, fresh)
    out: list[Presence] = []
    ready = r.ready
    if ready:
        limit = config.presence_per_flush
        msgs, size = r.msgs, r.size
        while ready:
            p = _first_ready(r)
            assert p is not None  # every ready participant has its heap entry
            msg = r.queue[p]
            cost = frame_size(msg)
            if cost > size.burst:
                # Could never be paid for: dropped, or it would block this recipient.
                del r.queue[p]
                unschedule(r, p)
                r.too_large += 1
                continue
            # ``TokenBucket.wait_time(now, n) > 0``, inline: this runs for every update sent.
            if len(out) >= limit or _tokens(msgs, now) < 1.0 or _tokens(size, now) < cost:
                r.held_back += len(ready)
                break  # the ready ones stay ready, in order, for the next flush
            msgs.take(1.0, now)
            size.take(float(cost), now)
            del r.queue[p]
            r.due_at.pop(p, None)
            del ready[p]
            r.last_sent[p] = now
            r.waiting.pop(p, None)
            r.sent_msgs += 1
            r.sent_bytes += cost
            out.append(msg)
    for item in fresh:
        if ready.get(item[1]) is item[2]:
            heapq.heappush(r.overdue_at, item)
    return out


def _tokens(bucket: TokenBucket, now: float) -> float:
    """The tokens ``bucket`` holds at ``now`` (as ``TokenBucket.wait_time`` counts them)."""
    if now > bucket.at:
        return min(bucket.burst, bucket.tokens + (now - bucket.at) * bucket.rate)
    return min(bucket.burst, bucket.tokens)
