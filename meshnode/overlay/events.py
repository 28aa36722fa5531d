"""What a ``RoomOverlay`` tells its driver and application (``next_event()``)."""

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class ChangeApplied:
    """A change was applied to the replica. ``peer`` sent it (None: submitted locally)."""

    change_id: bytes
    peer: str | None
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


Event = (
    ChangeApplied
    | PresenceUpdated
    | PresenceExpired
    | PeerMisbehaved
    | EquivocationDetected
    | ConnectRequest
    | DisconnectRequest
)
