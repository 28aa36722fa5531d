"""What a ``RoomOverlay`` tells its driver and application (``next_event()``).

Every ``at`` is the monotonic ``now`` the driver passed in (never wall time)."""

from dataclasses import dataclass
from enum import StrEnum
from typing import Any


@dataclass(frozen=True, slots=True)
class ChangeApplied:
    """A change was applied to the replica. ``peer`` sent it (None: submitted locally)."""

    change_id: bytes
    peer: str | None
    at: float


@dataclass(frozen=True, slots=True)
class ChangeRedelivered:
    """A leaf (a client of this node) sent a change this replica already holds: a client
    that failed over redelivers the changes no node has acknowledged to it yet. The driver
    acknowledges it again once it is durable here (nothing is applied twice)."""

    change_id: bytes
    peer: str
    at: float


@dataclass(frozen=True, slots=True)
class PresenceUpdated:
    """A participant's presence changed (``participant`` is their PeerID)."""

    participant: str
    fields: dict[str, Any]
    at: float


@dataclass(frozen=True, slots=True)
class PresenceExpired:
    """No presence from ``participant`` for ``presence_ttl_s``: they are gone."""

    participant: str
    at: float


@dataclass(frozen=True, slots=True)
class PeerMisbehaved:
    """``peer`` broke a rule; ``score`` is its score after the penalty."""

    peer: str
    reason: str
    score: float
    at: float


class RefusalReason(StrEnum):
    """Why the overlay refused a peer's request or change (a stable metric label)."""

    NOT_A_MEMBER = "not_a_member"
    """The peer holds no role in the room: it gets no changes, heads or presence."""
    QUOTA = "quota"
    """The change's author is over its ingress quota; anti-entropy brings it later."""
    REPLY_BUDGET = "reply_budget"
    """The peer asked for more than its reply budget allows; the rest comes later."""
    HISTORY_BUSY = "history_busy"
    """A reply that reads old history from the store is already under way for this peer;
    the next anti-entropy round (or Want) asks again."""
    COMPACT_MALFORMED = "compact_malformed"
    """A compact change (``protocol.compact``) whose envelope is malformed; scored as an
    invalid change."""
    COMPACT_TOO_AMBIGUOUS = "compact_too_ambiguous"
    """A compact change whose dep prefixes match too many combinations of known changes
    (or more than the frame's signature checks allow); not scored: only a 2^32-hash
    collision makes one, and anti-entropy brings the change again."""
    COMPACT_NO_SIGNATURE_MATCH = "compact_no_signature_match"
    """A compact change none of whose dep combinations its author signed (the true dep
    shares a prefix with one we hold and we lack it); not scored, as above."""
    COMPACT_HOLD_FULL = "compact_hold_full"
    """A held compact change evicted, the hold being full; anti-entropy brings it again."""


@dataclass(frozen=True, slots=True)
class RequestRefused:
    """The overlay refused something ``peer`` sent (``count`` items of one frame).

    ``NOT_A_MEMBER`` costs the peer score; ``QUOTA`` and ``REPLY_BUDGET`` do not (an honest
    relay or a peer far behind hits them too): they only slow things down."""

    peer: str
    reason: RefusalReason
    count: int
    at: float


@dataclass(frozen=True, slots=True)
class EquivocationDetected:
    """``author`` (PeerID) signed two changes with one sequence number."""

    author: str
    seq: int
    change_ids: tuple[bytes, bytes]
    at: float


@dataclass(frozen=True, slots=True)
class ConnectRequest:
    """The overlay wants a link to ``peer`` (view repair, joins). The driver opens it and
    calls ``connect`` or, on failure, ``connect_failed``."""

    peer: str


@dataclass(frozen=True, slots=True)
class DisconnectRequest:
    """The overlay wants the link to ``peer`` closed (``reason`` says why)."""

    peer: str
    reason: str


@dataclass(frozen=True, slots=True)
class HistoryWanted:
    """The overlay needs the bytes of old changes that are not in memory (history off the
    heap, ``RoomOverlay.defer_history_reads``) to answer a peer. The driver reads them from
    its store, off its event loop, and hands them back with ``RoomOverlay.history_loaded``
    (``read`` names this request; IDs the store lacks are simply left out)."""

    read: int
    change_ids: tuple[bytes, ...]


Event = (
    ChangeApplied
    | ChangeRedelivered
    | PresenceUpdated
    | PresenceExpired
    | PeerMisbehaved
    | RequestRefused
    | EquivocationDetected
    | ConnectRequest
    | DisconnectRequest
    | HistoryWanted
)
