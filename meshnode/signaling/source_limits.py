"""Offers per source address: one token bucket per address, shared by every way in.

Each answered offer costs the node a peer connection (UDP sockets, a link slot until the hello
times out), so ``POST /signal/offer``, every offer on ``/signal/ws`` (whatever the socket) and
``POST /api/browser/offer`` all draw from the same bucket of the sender's address. IPv6
senders are bucketed by their /64 (one host usually owns a whole /64). The table is bounded:
when it is full, the address whose bucket has been untouched longest is forgotten (it would
have refilled anyway, so forgetting costs an attacker nothing it did not already have).

Pure: the caller passes ``now`` (monotonic seconds).
"""

import ipaddress
from collections import OrderedDict

from meshnode.overlay.scoring import TokenBucket

__all__ = ["SourceBuckets", "source_key"]


def source_key(remote: str | None) -> str:
    """The bucket an address draws from: the IPv4 address, or the IPv6 /64."""
    text = (remote or "").split("%")[0]
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        return text or "unknown"
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is not None:
            return str(addr.ipv4_mapped)
        return str(ipaddress.IPv6Network((addr, 64), strict=False))
    return str(addr)


class SourceBuckets:
    """``rate`` offers per second per source, ``burst`` at once, ``max_sources`` remembered."""

    def __init__(self, rate: float, burst: float, max_sources: int = 4096) -> None:
        if rate <= 0 or burst < 1 or max_sources < 1:
            raise ValueError("rate must be > 0, burst >= 1, max_sources >= 1")
        self.rate = rate
        self.burst = burst
        self.max_sources = max_sources
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def take(self, remote: str | None, now: float) -> float:
        """Spend one token of ``remote``'s bucket: 0.0 if it had one, else the seconds to
        wait before the next offer is accepted (for ``Retry-After``)."""
        key = source_key(remote)
        bucket = self._buckets.get(key)
        if bucket is None:
            while len(self._buckets) >= self.max_sources:
                self._buckets.popitem(last=False)
            bucket = TokenBucket(self.rate, self.burst, self.burst, now)
            self._buckets[key] = bucket
        self._buckets.move_to_end(key)
        if bucket.take(1.0, now):
            return 0.0
        return max(bucket.wait_time(now), 1e-3)

    def __len__(self) -> int:
        return len(self._buckets)
