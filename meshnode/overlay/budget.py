"""What a peer may make this node send, and how fast one member may write. Sans-I/O.

``ReplyBudget``: answers (changes sent for a ``Heads``, ``Want`` or ``Graft``, and the
``Heads`` sent back in reply) are paid from a per-peer byte budget that the peer fills by
sending: every byte received from it credits ``reply_factor`` bytes, a slow refill
(``reply_refill_bytes_per_s``) lets an honest peer that is far behind catch up, and the
budget starts at (and never holds more than) ``reply_allowance_bytes`` plus what the peer
sent. So over any run, the replies to one peer are at most::

    reply_factor * bytes received from it + reply_allowance_bytes
        + reply_refill_bytes_per_s * seconds linked

A request costs a few bytes and an answer may cost megabytes: without this a peer could make
the node send arbitrarily more than it sent (amplification). Pushes of new changes along the
broadcast tree are not replies and are never charged.

``IngressQuota``: a per-author limit on new changes accepted (changes and bytes per minute,
``TokenBucket``s), whoever relays them. A change over its author's quota is refused for now
(reason ``quota``), not penalised (the relay is not at fault), and anti-entropy brings it
again later: an author that writes too fast is slowed down, never loses a change.
"""

from meshnode.overlay.config import OverlayConfig
from meshnode.overlay.scoring import TokenBucket


class ReplyBudget:
    """Per-peer reply budgets (see the module docstring)."""

    __slots__ = ("config", "peers")

    def __init__(self, config: OverlayConfig) -> None:
        self.config = config
        self.peers: dict[str, TokenBucket] = {}

    def _bucket(self, peer: str, now: float) -> TokenBucket:
        bucket = self.peers.get(peer)
        if bucket is None:
            c = self.config
            allowance = float(c.reply_allowance_bytes)
            bucket = self.peers[peer] = TokenBucket(c.reply_refill_bytes_per_s, allowance,
                                                    allowance, now)
        return bucket

    def credit(self, peer: str, received: int, now: float) -> None:
        """``peer`` sent ``received`` bytes: it may be answered with ``reply_factor`` times
        as much. The cap grows by the same amount, so that what a peer sent is never lost to
        the cap (only the time-based refill is capped at the allowance)."""
        bucket = self._bucket(peer, now)
        bucket.take(0.0, now)  # bring the refill up to ``now`` before crediting
        extra = received * self.config.reply_factor
        bucket.tokens += extra
        bucket.burst = max(bucket.burst, bucket.tokens)

    def take(self, peer: str, size: int, now: float) -> bool:
        """Pay ``size`` bytes of reply to ``peer``; False (nothing paid) if over budget."""
        bucket = self._bucket(peer, now)
        ok = bucket.take(float(size), now)
        if ok:
            # Spent credit shrinks the cap back toward the allowance.
            bucket.burst = max(float(self.config.reply_allowance_bytes), bucket.tokens)
        return ok

    def forget(self, peer: str) -> None:
        """The link to ``peer`` is gone."""
        self.peers.pop(peer, None)


class IngressQuota:
    """Per-author token buckets for new changes (see the module docstring)."""

    __slots__ = ("authors", "config")

    def __init__(self, config: OverlayConfig) -> None:
        self.config = config
        # author key -> (changes bucket, bytes bucket); only members get one (the caller
        # checks), so the table is bounded by the room's member list.
        self.authors: dict[bytes, tuple[TokenBucket, TokenBucket]] = {}

    def admit(self, author: bytes, size: int, now: float) -> bool:
        """Charge one new change of ``size`` bytes to ``author``; False if over quota (then
        nothing is charged)."""
        buckets = self.authors.get(author)
        c = self.config
        if buckets is None:
            per_s = c.author_changes_per_min / 60.0
            bytes_per_s = c.author_bytes_per_min / 60.0
            buckets = self.authors[author] = (
                TokenBucket(per_s, c.author_change_burst, c.author_change_burst, now),
                TokenBucket(bytes_per_s, c.author_byte_burst, c.author_byte_burst, now),
            )
        changes, sizes = buckets
        # Bring both up to date, then spend only if both can pay.
        changes.take(0.0, now)
        sizes.take(0.0, now)
        if changes.tokens < 1.0 or sizes.tokens < size:
            return False
        changes.tokens -= 1.0
        sizes.tokens -= size
        return True

    def forget_idle(self, now: float) -> int:
        """Drop the buckets of authors who are back to a full allowance: a full bucket says
        nothing a fresh one would not, so this is exact, and the table holds only authors
        who wrote recently, not everyone who ever wrote (rooms with churn). Returns how
        many were dropped."""
        idle = [
            author for author, (changes, sizes) in self.authors.items()
            if changes.wait_time(now, changes.burst) == 0.0
            and sizes.wait_time(now, sizes.burst) == 0.0
        ]
        for author in idle:
            del self.authors[author]
        return len(idle)
