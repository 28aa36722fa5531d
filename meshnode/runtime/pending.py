"""The pool of unfinished links: connections this node answered whose handshake (our signed
hello for peers, the ``client`` channel for browsers) has not completed. Sans-I/O.

Answering an offer is cheap for the asker and dear for the node (an ``RTCPeerConnection``,
its UDP sockets, DTLS keys), and a stranger can send offers that never complete. So
unfinished connections live in a small pool of their own, separate from the established ones:
however many offers arrive, they can never take an established slot, and they hold at most
``capacity`` connections' worth of resources.

When the pool is full, a new offer **evicts** an unfinished connection (policy
``EVICT_LEAST_ADVANCED``, the default) rather than being refused (``REFUSE_NEW``): the one
that has made the least progress through its handshake (:class:`Stage`), the oldest among
equals. An honest peer passes ICE within milliseconds of getting the answer and finishes in a
fraction of a second; an offer sent only to cost the node never passes ICE unless its sender
runs a real ICE agent for it. So a flood of cheap offers evicts itself, as long as an honest
connection passes ICE before ``capacity`` newer offers arrive (per-source rate limits keep the
arrival rate there), and a flood that does pay for ICE still evicts its own older connections
before an honest one that is further along. With refusal, by contrast, the flood holds every
slot for the whole timeout and an honest offer gets in only when it happens to arrive just as
a slot frees (see
docs/operators.md, "Limits", for the measurement).

The pool decides; the caller acts: it admits a key and gets back an :data:`AdmitDecision`,
reports progress with :meth:`PendingPool.advance`, closes the victim named by
:class:`Evict`, and calls :meth:`PendingPool.finish` when a connection completes or fails.
Timeouts are the connection's own (a hello or open timer).
"""

import enum
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)

__all__ = ["Admit", "AdmitDecision", "Evict", "EvictReason", "PendingPolicy", "PendingPool",
           "Refuse", "Stage"]


class PendingPolicy(enum.Enum):
    """What a full pool does with a new connection."""

    EVICT_LEAST_ADVANCED = "evict_least_advanced"
    REFUSE_NEW = "refuse_new"


class Stage(enum.IntEnum):
    """How far an unfinished connection got (each implies the ones before)."""

    ANSWERED = 0
    """We answered (or are answering) its offer."""
    ICE_CONNECTED = 1
    """A connectivity check succeeded: the peer runs ICE with the credentials we gave it."""
    SECURED = 2
    """DTLS is up: only the last step (the hello, the channel opening) is missing."""


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
    """At most ``capacity`` unfinished connections (see the module docstring)."""

    def __init__(self, capacity: int,
                 policy: PendingPolicy = PendingPolicy.EVICT_LEAST_ADVANCED) -> None:
        if capacity < 1:
            raise ValueError(f"a pending pool needs at least 1 slot, not {capacity}")
        self.capacity = capacity
        self.policy = policy
        self._entries: OrderedDict[K, Stage] = OrderedDict()  # oldest first

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def keys(self) -> list[K]:
        """The unfinished connections, oldest first."""
        return list(self._entries)

    def stage(self, key: K) -> Stage | None:
        """How far ``key`` got (None if it is not in the pool)."""
        return self._entries.get(key)

    def advance(self, key: K, stage: Stage) -> None:
        """``key`` reached ``stage`` (a stage it passed already, or a key not in the pool,
        changes nothing)."""
        current = self._entries.get(key)
        if current is not None and stage > current:
            self._entries[key] = stage

    def admit(self, key: K) -> "AdmitDecision[K]":
        """Take ``key`` in, or say whom to evict for it, or refuse it. Admitting a key that is
        already in is a programming error (``ValueError``)."""
        if key in self._entries:
            raise ValueError(f"{key!r} is already pending")
        if len(self._entries) < self.capacity:
            self._entries[key] = Stage.ANSWERED
            return Admit()
        if self.policy is PendingPolicy.REFUSE_NEW:
            return Refuse()
        # min() keeps the first of equals, and the entries are oldest first.
        victim = min(self._entries, key=self._entries.__getitem__)
        del self._entries[victim]
        self._entries[key] = Stage.ANSWERED
        return Evict(victim)

    def finish(self, key: K) -> bool:
        """``key`` completed, failed or was closed: free its slot. False if it held none
        (already evicted, or never admitted)."""
        if key not in self._entries:
            return False
        del self._entries[key]
        return True
