"""Presence: avatar poses, pointers, who is speaking. Ephemeral, so not in the CRDT.

Each participant signs its own updates, numbered by a growing ``seq``; a node keeps only the
latest per participant (older or repeated ones are dropped), limits each participant's rate,
forgets participants silent for ``presence_ttl_s``, and forwards updates to its neighbours
and clients over the unreliable ``presence`` channel. What is queued for a recipient is
coalesced (latest wins) and filtered by interest within the recipient's budget: nearest and
speaking participants at the full rate, farther ones less often, everyone at least every
``presence_floor_s`` (``meshnode.overlay.presence_interest``). ``presence_filter = False``
turns the filter off: every update goes to every recipient, in order of interest, at most
``presence_per_flush`` per flush (the behaviour before interest management).

Cost: a flush does work for what it sends, not for what waits (each recipient's schedule,
``Recipient``); an update is encoded once for all its recipients (``frame_of``); expiry
times sit in a heap. ``waited`` counts how long updates sent waited here (a node metric).
"""

import heapq
import math
from bisect import bisect_left
from collections.abc import Callable
from dataclasses import dataclass

from meshnode.overlay.config import OverlayConfig
from meshnode.overlay.presence_interest import (
    MAX_BEHIND,
    Interest,
    Recipient,
    Spot,
    make_plan,
    new_recipient,
    pick,
    position,
    rebudget,
    reschedule,
    schedule,
    speaking,
    unschedule,
)
from meshnode.overlay.scoring import TokenBucket
from protocol.frames import Presence, encode_frame

_position = position  # the name meshnode.media imports

WAIT_BUCKETS_S = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, math.inf)
"""Upper bounds of ``PresenceTable.waited``: how long updates sent waited here."""


def _spot(msg: Presence) -> Spot:
    return position(msg.fields), speaking(msg.fields)


@dataclass(slots=True)
class Seen:
    """The latest update from one participant, and the peer it came from (None: ours);
    ``spot``: its position and speaking, read once per update (every plan uses them);
    ``frame``: its encoded frame, made once for all recipients (``frame_of``)."""

    msg: Presence
    at: float
    bucket: TokenBucket
    via: str | None = None
    spot: Spot = (None, False)
    frame: bytes | None = None


class PresenceTable:
    """Latest presence per participant, plus per-recipient queues, budgets and plans."""

    def __init__(self, config: OverlayConfig, me: bytes) -> None:
        self.config = config
        self.me = me
        self.seen: dict[bytes, Seen] = {}
        self.recipients: dict[str, Recipient] = {}
        # Clients of this node (leaves) and their participant keys; stated interests.
        self._leaves: dict[str, bytes | None] = {}
        self._interests: dict[str, Interest] = {}
        self.next_flush: float | None = None
        self.dropped_rate = 0
        # (expiry time, participant) for everyone heard but us; stale entries skipped.
        self._expiry: list[tuple[float, bytes]] = []
        # Updates sent, by how long each waited here from its arrival (``accept``) to the
        # flush that sent it (bucket k: at most WAIT_BUCKETS_S[k]), and the sum of waits:
        # the node's own queueing delay (flush interval, budgets), a metric.
        self.waited = [0] * len(WAIT_BUCKETS_S)
        self.waited_s = 0.0

    @property
    def queues(self) -> dict[str, dict[bytes, Presence]]:
        """What waits for each recipient (recipients with nothing queued left out)."""
        return {peer: r.queue for peer, r in self.recipients.items() if r.queue}

    def set_leaf(self, peer: str, participant: bytes | None) -> None:
        """``peer`` is a client of this node, publishing as ``participant``: its interest is
        centred on its own position and its budget is a client's."""
        self._leaves[peer] = participant
        r = self.recipients.get(peer)
        if r is not None and not r.leaf:
            del self.recipients[peer]  # rebuilt as a client's at the next enqueue

    def set_interest(self, peer: str, interest: Interest, now: float) -> None:
        """``peer`` stated its budget and view radius (a ``PresenceInterest`` frame)."""
        self._interests[peer] = interest
        r = self.recipients.get(peer)
        if r is not None:
            rebudget(self.config, r, interest, now)

    def recipient(self, peer: str, now: float) -> Recipient:
        """The state of recipient ``peer`` (made on first use)."""
        r = self.recipients.get(peer)
        if r is None:
            leaf = peer in self._leaves
            r = self.recipients[peer] = new_recipient(
                self.config, leaf, self._leaves.get(peer), self._interests.get(peer, Interest()),
                now)
        return r

    def accept(self, msg: Presence, now: float, via: str | None = None) -> bool:
        """Take an update if it is newer than what we have and within the sender's rate;
        ``via``: the peer it came from (None: published here)."""
        old = self.seen.get(msg.participant)
        if old is not None:
            if msg.seq <= old.msg.seq:
                return False
            if not old.bucket.take(1.0, now):
                self.dropped_rate += 1
                return False
            old.msg, old.at, old.via = msg, now, via
            old.spot, old.frame = _spot(msg), None
            self._expires(msg.participant, now)
            return True
        if len(self.seen) >= self.config.max_participants:
            oldest = min(self.seen, key=lambda k: self.seen[k].at)
            del self.seen[oldest]
        c = self.config
        bucket = TokenBucket(c.presence_rate_per_s, c.presence_burst, c.presence_burst - 1, now)
        self.seen[msg.participant] = Seen(msg, now, bucket, via, _spot(msg))
        self._expires(msg.participant, now)
        return True

    def _expires(self, participant: bytes, at: float) -> None:
        """``participant`` was heard at ``at``: it expires at ``at + ttl`` (its earlier
        entries in the heap go stale; ``_next_expiry`` skips them)."""
        if participant != self.me:
            heapq.heappush(self._expiry, (at + self.config.presence_ttl_s, participant))

    def _next_expiry(self) -> float | None:
        """The earliest ``at + ttl`` of the participants heard (us excepted), or None."""
        heap, seen, ttl = self._expiry, self.seen, self.config.presence_ttl_s
        while heap:
            when, p = heap[0]
            s = seen.get(p)
            if s is not None and s.at + ttl == when:
                return when
            heapq.heappop(heap)  # stale: heard since, expired or evicted
        return None

    def frame_of(self, msg: Presence) -> bytes:
        """``encode_frame(msg)``, encoded once per update however many recipients get it."""
        seen = self.seen.get(msg.participant)
        if seen is None or seen.msg is not msg:
            return encode_frame(msg)  # an update replaced (or expired) since it was queued
        if seen.frame is None:
            seen.frame = encode_frame(msg)
        return seen.frame

    def enqueue(self, msg: Presence, peers: Callable[[], set[str]], source: str | None,
                now: float) -> None:
        """Queue an update for every recipient but its source (replacing an older one)."""
        queued = False
        recipients = self.recipients
        targets = peers()
        if not targets.issubset(recipients):
            for peer in sorted(targets):  # made in a fixed order: flushes follow it
                if peer != source:
                    self.recipient(peer, now)
        p = msg.participant
        for peer in targets:
            if peer != source:
                r = recipients[peer]  # made above
                if p not in r.queue and self.config.presence_filter:
                    schedule(self.config, r, p)
                r.queue[p] = msg
                queued = True
        if queued and self.next_flush is None:
            self.next_flush = now + self.config.presence_interval_s

    def _interest(self, here: tuple[float, float, float] | None,
                  msg: Presence) -> tuple[int, float]:
        seen = self.seen.get(msg.participant)
        there, talking = seen.spot if seen is not None and seen.msg is msg else _spot(msg)
        if here is None or there is None:
            return (0 if talking else 1, math.inf)
        return (0 if talking else 1, math.dist(here, there))

    def _centres(self, peer: str, r: Recipient) -> list[tuple[float, float, float]]:
        """Where recipient ``peer``'s interest is centred: a client's own position; for a
        neighbour, the positions of the participants heard through it, else our own."""
        if r.leaf:
            own = self.seen.get(r.participant) if r.participant is not None else None
            pos = own.spot[0] if own is not None else None
            return [pos] if pos is not None else []
        centres: list[tuple[float, float, float]] = []
        for p in sorted(k for k, s in self.seen.items() if s.via == peer)[:MAX_BEHIND]:
            pos = self.seen[p].spot[0]
            if pos is not None:
                centres.append(pos)
        if not centres:
            mine = self.seen.get(self.me)
            pos = mine.spot[0] if mine is not None else None
            if pos is not None:
                centres.append(pos)
        return centres

    def flush(self, now: float) -> list[tuple[str, Presence]]:
        """The updates to send now, by recipient (see the module docstring); the rest stay
        queued (and may be replaced by newer ones)."""
        if self.next_flush is None or now < self.next_flush:
            return []
        out: list[tuple[str, Presence]] = []
        if not self.config.presence_filter:
            mine = self.seen.get(self.me)
            here = mine.spot[0] if mine is not None else None
            for peer, r in self.recipients.items():
                if not r.queue:
                    continue
                ranked = sorted(r.queue.values(), key=lambda m: self._interest(here, m))
                for msg in ranked[: self.config.presence_per_flush]:
                    out.append((peer, msg))
                    del r.queue[msg.participant]
                    r.sent_msgs += 1
        else:
            latest: dict[bytes, Spot] | None = None
            for peer, r in self.recipients.items():
                if not r.queue:
                    continue
                if now >= r.plan.until:
                    if latest is None:
                        latest = {k: s.spot for k, s in self.seen.items()}
                    r.plan = make_plan(self.config, r, latest, self._centres(peer, r), now)
                    reschedule(self.config, r)
                for msg in pick(self.config, r, now):
                    out.append((peer, msg))
        queued = any(r.queue for r in self.recipients.values())
        self.next_flush = now + self.config.presence_interval_s if queued else None
        self._count_waits(out, now)
        return out

    def _count_waits(self, out: list[tuple[str, Presence]], now: float) -> None:
        seen, waited, total = self.seen, self.waited, 0.0
        for _, msg in out:
            s = seen.get(msg.participant)
            if s is not None and s.msg is msg:
                wait = now - s.at
                waited[bisect_left(WAIT_BUCKETS_S, wait)] += 1
                total += wait
        self.waited_s += total

    def expire(self, now: float) -> list[bytes]:
        """Forget participants silent for ``presence_ttl_s``; return who they were."""
        ttl = self.config.presence_ttl_s
        # ``s.at + ttl <= now``, the very sum ``next_deadline`` reports: ``now - s.at >= ttl``
        # can round the other way and leave the timer due forever.
        first = self._next_expiry()
        if first is None or first > now:
            return []
        gone = [k for k, s in self.seen.items() if s.at + ttl <= now and k != self.me]
        for k in gone:
            del self.seen[k]
            for r in self.recipients.values():
                r.queue.pop(k, None)
                unschedule(r, k)
                r.last_sent.pop(k, None)
                r.waiting.pop(k, None)
        return gone

    def forget_peer(self, peer: str) -> None:
        """A recipient is no longer served: drop its queue and budget."""
        self.recipients.pop(peer, None)

    def forget_link(self, peer: str) -> None:
        """A neighbour or client left: drop all that is kept about it, stated interest
        included."""
        self.recipients.pop(peer, None)
        self._leaves.pop(peer, None)
        self._interests.pop(peer, None)

    def next_deadline(self) -> float | None:
        """When the next flush or expiry is due."""
        expiry = self._next_expiry()
        if expiry is None:
            return self.next_flush
        return expiry if self.next_flush is None else min(expiry, self.next_flush)
