"""Presence: avatar poses, pointers, who is speaking. Ephemeral, so not in the CRDT.

Each participant signs its own updates, numbered by a growing ``seq``; a node keeps only the
latest per participant (older or repeated ones are dropped), limits each participant's rate,
forgets participants silent for ``presence_ttl_s``, and forwards updates to its neighbours over
the unreliable ``presence`` channel. What is queued for a neighbour is coalesced (latest wins)
and sent in order of interest, a bounded number per flush: speaking participants first, then by
distance from the local participant's position.
"""

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from meshnode.overlay.config import OverlayConfig
from meshnode.overlay.scoring import TokenBucket
from protocol.frames import Presence


@dataclass(slots=True)
class Seen:
    """The latest update from one participant."""

    msg: Presence
    at: float
    bucket: TokenBucket


def _position(fields: dict[str, Any]) -> tuple[float, float, float] | None:
    pos = fields.get("position")
    if (
        type(pos) is list
        and len(pos) == 3
        and all(type(x) in (int, float) for x in pos)
    ):
        return (float(pos[0]), float(pos[1]), float(pos[2]))
    return None


class PresenceTable:
    """Latest presence per participant, plus per-neighbour send queues."""

    def __init__(self, config: OverlayConfig, me: bytes) -> None:
        self.config = config
        self.me = me
        self.seen: dict[bytes, Seen] = {}
        self.queues: dict[str, dict[bytes, Presence]] = {}
        self.next_flush: float | None = None
        self.dropped_rate = 0

    def accept(self, msg: Presence, now: float) -> bool:
        """Take an update if it is newer than what we have and within the sender's rate."""
        old = self.seen.get(msg.participant)
        if old is not None:
            if msg.seq <= old.msg.seq:
                return False
            if not old.bucket.take(1.0, now):
                self.dropped_rate += 1
                return False
            old.msg, old.at = msg, now
            return True
        if len(self.seen) >= self.config.max_participants:
            oldest = min(self.seen, key=lambda k: self.seen[k].at)
            del self.seen[oldest]
        c = self.config
        bucket = TokenBucket(c.presence_rate_per_s, c.presence_burst, c.presence_burst - 1, now)
        self.seen[msg.participant] = Seen(msg, now, bucket)
        return True

    def enqueue(self, msg: Presence, peers: Callable[[], set[str]], source: str | None,
                now: float) -> None:
        """Queue an update for every neighbour but its source (replacing an older one)."""
        for peer in sorted(peers()):
            if peer != source:
                self.queues.setdefault(peer, {})[msg.participant] = msg
        if self.queues and self.next_flush is None:
            self.next_flush = now + self.config.presence_interval_s

    def _interest(self, msg: Presence) -> tuple[int, float]:
        speaking = 0 if msg.fields.get("speaking") is True else 1
        mine = self.seen.get(self.me)
        here = _position(mine.msg.fields) if mine is not None else None
        there = _position(msg.fields)
        if here is None or there is None:
            return (speaking, math.inf)
        return (speaking, math.dist(here, there))

    def flush(self, now: float) -> list[tuple[str, Presence]]:
        """The updates to send now: at most ``presence_per_flush`` per neighbour, most
        interesting first; the rest stay queued (and may be replaced by newer ones)."""
        if self.next_flush is None or now < self.next_flush:
            return []
        out: list[tuple[str, Presence]] = []
        for peer, queue in self.queues.items():
            ranked = sorted(queue.values(), key=self._interest)
            for msg in ranked[: self.config.presence_per_flush]:
                out.append((peer, msg))
                del queue[msg.participant]
        self.queues = {p: q for p, q in self.queues.items() if q}
        self.next_flush = now + self.config.presence_interval_s if self.queues else None
        return out

    def expire(self, now: float) -> list[bytes]:
        """Forget participants silent for ``presence_ttl_s``; return who they were."""
        ttl = self.config.presence_ttl_s
        # ``s.at + ttl <= now``, the very sum ``next_deadline`` reports: ``now - s.at >= ttl``
        # can round the other way and leave the timer due forever.
        gone = [k for k, s in self.seen.items() if s.at + ttl <= now and k != self.me]
        for k in gone:
            del self.seen[k]
            for q in self.queues.values():
                q.pop(k, None)
        return gone

    def forget_peer(self, peer: str) -> None:
        """A neighbour left: drop its queue."""
        self.queues.pop(peer, None)

    def next_deadline(self) -> float | None:
        """When the next flush or expiry is due."""
        if not self.seen:
            return self.next_flush
        times = [s.at + self.config.presence_ttl_s for k, s in self.seen.items() if k != self.me]
        if self.next_flush is not None:
            times.append(self.next_flush)
        return min(times) if times else None
