"""The pool of unfinished links: connections this node answered whose handshake (our signed
hello for peers, the ``client`` channel for browsers) has not completed. Sans-I/O.

Answering an offer is cheap for the asker and dear for the node (an ``RTCPeerConnection``,
its UDP sockets, DTLS keys), and a stranger can send offers that never complete. So
unfinished connections live in a small pool of their own, separate from the established ones:
however many offers arrive, they can never take an established slot, and they hold at most
``capacity`` connections' worth of resources.

When the pool is full, a new offer **evicts the oldest** unfinished connection (policy
``EVICT_OLDEST``, the default) rather than being refused (``REFUSE_NEW``). An honest peer
finishes its handshake in a fraction of a second, while a flooder's connections never finish:
with eviction, an honest connection is lost only if ``capacity`` newer offers arrive while it
completes, whereas with refusal every slot is held by the flood for the whole timeout and an
honest offer gets in only when it happens to arrive just as a slot frees (see
docs/operators.md, "Limits", for the measurement).

The pool decides; the caller acts: it admits a key and gets back an :data:`AdmitDecision`,
closes the victim named by :class:`Evict`, and calls :meth:`PendingPool.finish` when a
connection completes or fails. Timeouts are the connection's own (a hello or open timer).
"""

import enum
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)

__all__ = ["Admit", "AdmitDecision", "Evict", "EvictReason", "PendingPolicy", "PendingPool",
           "Refuse"]


class PendingPolicy(enum.Enum):
    """What a full pool does with a new connection."""

    EVICT_OLDEST = "evict_oldest"
    REFUSE_NEW = "refuse_new"


class EvictReason(enum.StrEnum):
    """Why an unfinished connection was closed by its pool's rules (a metric label)."""

    POOL_FULL = "pool_full"
    """The pool was full and a newer offer took its place."""
    HELLO_TIMEOUT = "hello_timeout"
    """It did not finish its handshake in time."""
    ESTABLISHED_FULL = "established_full"
    """It finished, but every established slot was taken."""


@dataclass(frozen=True, slots=True)
class Admit:
    """The new connection has a slot."""


@dataclass(frozen=True, slots=True)
class Evict(Generic[K]):
    """The new connection has a slot; close ``victim`` (already out of the pool)."""

    victim: K


@dataclass(frozen=True, slots=True)
class Refuse:
    """No slot: refuse the offer (``reason`` is a metric label)."""

    reason: str = "pending_full"


AdmitDecision = Admit | Evict[K] | Refuse


class PendingPool(Generic[K]):
    """At most ``capacity`` unfinished connections, oldest first (see the module docstring)."""

    def __init__(self, capacity: int,
                 policy: PendingPolicy = PendingPolicy.EVICT_OLDEST) -> None:
        if capacity < 1:
            raise ValueError(f"a pending pool needs at least 1 slot, not {capacity}")
        self.capacity = capacity
        self.policy = policy
        self._entries: OrderedDict[K, None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def keys(self) -> list[K]:
        """The unfinished connections, oldest first."""
        return list(self._entries)

    def admit(self, key: K) -> "AdmitDecision[K]":
        """Take ``key`` in, or say whom to evict for it, or refuse it. Admitting a key that is
        already in is a programming error (``ValueError``)."""
        if key in self._entries:
            raise ValueError(f"{key!r} is already pending")
        if len(self._entries) < self.capacity:
            self._entries[key] = None
            return Admit()
        if self.policy is PendingPolicy.REFUSE_NEW:
            return Refuse()
        victim, _ = self._entries.popitem(last=False)
        self._entries[key] = None
        return Evict(victim)

    def finish(self, key: K) -> bool:
        """``key`` completed, failed or was closed: free its slot. False if it held none
        (already evicted, or never admitted)."""
        if key not in self._entries:
            return False
        del self._entries[key]
        return True
