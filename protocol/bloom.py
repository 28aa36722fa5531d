"""A salted Bloom filter of change IDs, for anti-entropy (Kleppmann & Howard, *Byzantine
Eventual Consistency*, 2020).

A peer sends a filter of its recent change IDs with its heads; the receiver does not send the
changes the filter says the peer has. A false positive only delays a change: each filter uses
a fresh salt, so the next round's false positives are different ones.

Wire form: ``salt (4 bytes) || k (1 byte) || bit array`` (bit ``i`` is bit ``i % 8`` of byte
``i // 8``). Bit positions for an ID are four-byte big-endian slices of
``SHA-256(salt || id)``, modulo the number of bits.
"""

import hashlib
import math
from collections.abc import Iterable

from protocol.errors import LimitExceeded, SchemaError

MAX_BLOOM_BYTES = 16 * 1024
MAX_HASHES = 8


class BloomFilter:
    """Set membership with false positives and no false negatives."""

    __slots__ = ("bits", "k", "salt")

    def __init__(self, salt: bytes, k: int, bits: bytearray) -> None:
        self.salt = salt
        self.k = k
        self.bits = bits

    @classmethod
    def build(cls, ids: Iterable[bytes], salt: bytes, fp_rate: float = 0.01) -> "BloomFilter":
        """A filter sized for ``ids`` at about ``fp_rate`` false positives."""
        items = list(ids)
        n = max(1, len(items))
        m_bits = max(64, int(-n * math.log(fp_rate) / (math.log(2) ** 2)))
        m_bits = min(m_bits, MAX_BLOOM_BYTES * 8)
        k = max(1, min(MAX_HASHES, round(m_bits / n * math.log(2))))
        bloom = cls(salt, k, bytearray((m_bits + 7) // 8))
        for item in items:
            bloom.add(item)
        return bloom

    def _positions(self, item: bytes) -> list[int]:
        digest = hashlib.sha256(self.salt + item).digest()
        m = len(self.bits) * 8
        return [int.from_bytes(digest[4 * i : 4 * i + 4], "big") % m for i in range(self.k)]

    def add(self, item: bytes) -> None:
        """Insert one ID."""
        for pos in self._positions(item):
            self.bits[pos >> 3] |= 1 << (pos & 7)

    def __contains__(self, item: bytes) -> bool:
        bits = self.bits
        return all(bits[pos >> 3] & (1 << (pos & 7)) for pos in self._positions(item))

    def encode(self) -> bytes:
        """Wire form (see the module docstring)."""
        return self.salt + bytes([self.k]) + bytes(self.bits)

    @classmethod
    def decode(cls, data: bytes) -> "BloomFilter":
        """Parse the wire form; raise a ``DecodeError`` subclass if malformed."""
        if type(data) is not bytes or len(data) < 6:
            raise SchemaError("bloom filter too short")
        if len(data) - 5 > MAX_BLOOM_BYTES:
            raise LimitExceeded("bloom filter too large")
        k = data[4]
        if not 1 <= k <= MAX_HASHES:
            raise SchemaError("bloom filter hash count out of range")
        return cls(data[:4], k, bytearray(data[5:]))
