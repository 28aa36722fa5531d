"""The room overlay: gossip of signed changes and presence, with anti-entropy, sans-I/O.

See ``meshnode.overlay.overlay`` for the driver surface and ``docs/architecture.md``.
"""

from meshnode.overlay.config import OverlayConfig
from meshnode.overlay.events import (
    ChangeApplied,
    ChangeRedelivered,
    ConnectRequest,
    DisconnectRequest,
    EquivocationDetected,
    Event,
    PeerMisbehaved,
    PresenceExpired,
    PresenceUpdated,
    RefusalReason,
    RequestRefused,
)
from meshnode.overlay.overlay import PRESENCE, SYNC, OverlayStats, RoomOverlay

__all__ = [
    "PRESENCE",
    "SYNC",
    "ChangeApplied",
    "ChangeRedelivered",
    "ConnectRequest",
    "DisconnectRequest",
    "EquivocationDetected",
    "Event",
    "OverlayConfig",
    "OverlayStats",
    "PeerMisbehaved",
    "PresenceExpired",
    "PresenceUpdated",
    "RefusalReason",
    "RequestRefused",
    "RoomOverlay",
]
