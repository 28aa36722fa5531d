"""Per-peer defence, after gossipsub v1.1: rate limits, a score, and backoff.

Every frame spends tokens from two buckets (frames and bytes per second); a frame without
tokens is dropped and penalised. Misbehaviour lowers the score (garbage frames, invalid
changes, promises announced by IHAVE and not kept, equivocation); below
``score_disconnect`` the peer is cut off and refused for ``backoff_s``. Negative scores
recover slowly, so a single hiccup is forgiven.
"""

from dataclasses import dataclass

from meshnode.overlay.config import OverlayConfig

PENALTIES = {
    "garbage": 20.0,
    "wrong_room": 5.0,
    "invalid_change": 10.0,
    "broken_promise": 10.0,
    "flood": 2.0,
    "bad_presence": 5.0,
    # Asking for a room's content without a role in it. Small: a peer just admitted can ask
    # before its grant has reached this node; a stranger that keeps asking is cut off.
    "not_a_member": 2.0,
    "equivocation": 1_000.0,
}


@dataclass(slots=True)
class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` saved up."""

    rate: float
    burst: float
    tokens: float
    at: float

    def take(self, amount: float, now: float) -> bool:
        """Spend ``amount`` tokens if there are enough."""
        if now > self.at:
            self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
            self.at = now
        if self.tokens >= amount:
            self.tokens -= amount
            return True
        return False

    def wait_time(self, now: float, amount: float = 1.0) -> float:
        """Seconds from ``now`` until ``amount`` tokens are saved up (0 if they are)."""
        tokens = min(self.burst, self.tokens + max(0.0, now - self.at) * self.rate)
        return 0.0 if tokens >= amount else (amount - tokens) / self.rate


@dataclass(slots=True)
class PeerRecord:
    """What the overlay knows of one connected peer's behaviour."""

    frames: TokenBucket
    bytes: TokenBucket
    score: float = 0.0
    at: float = 0.0


class PeerScores:
    """Scores, buckets and bans of peers."""

    __slots__ = ("banned", "config", "peers")

    def __init__(self, config: OverlayConfig) -> None:
        self.config = config
        self.peers: dict[str, PeerRecord] = {}
        self.banned: dict[str, float] = {}

    def add(self, peer: str, now: float) -> None:
        """Start tracking a newly connected peer (a returning peer keeps its score)."""
        if peer not in self.peers:
            c = self.config
            self.peers[peer] = PeerRecord(
                TokenBucket(c.peer_frames_per_s, c.peer_frame_burst, c.peer_frame_burst, now),
                TokenBucket(c.peer_bytes_per_s, c.peer_byte_burst, c.peer_byte_burst, now),
                0.0,
                now,
            )

    def is_banned(self, peer: str, now: float) -> bool:
        """True while ``peer`` is within its backoff."""
        until = self.banned.get(peer)
        if until is None:
            return False
        if now >= until:
            del self.banned[peer]
            return False
        return True

    def expire_bans(self, now: float) -> None:
        """Forget bans (and the records of banned peers) whose backoff is over."""
        for peer, until in list(self.banned.items()):
            if now >= until:
                del self.banned[peer]
                self.peers.pop(peer, None)

    def admit(self, peer: str, size: int, now: float) -> bool:
        """Charge one frame of ``size`` bytes; False if it is over the peer's rate."""
        rec = self.peers.get(peer)
        if rec is None:
            return False
        return rec.frames.take(1.0, now) and rec.bytes.take(float(size), now)

    def score(self, peer: str, now: float) -> float:
        """The current score (recovered toward zero since the last penalty)."""
        rec = self.peers.get(peer)
        if rec is None:
            return 0.0
        if rec.score < 0.0 and now > rec.at:
            rec.score = min(0.0, rec.score + (now - rec.at) * self.config.score_recovery_per_s)
        rec.at = max(rec.at, now)
        return rec.score

    def penalize(self, peer: str, reason: str, now: float) -> tuple[float, bool]:
        """Lower the score; return it and whether the peer must now be cut off (and banned)."""
        rec = self.peers.get(peer)
        if rec is None:
            return 0.0, False
        score = self.score(peer, now) - PENALTIES[reason]
        rec.score = score
        if score <= self.config.score_disconnect:
            self.banned[peer] = now + self.config.backoff_s
            return score, True
        return score, False

    def remove(self, peer: str) -> None:
        """Forget a disconnected peer that is not banned (a banned one keeps its record)."""
        if peer not in self.banned:
            self.peers.pop(peer, None)
