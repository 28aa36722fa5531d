"""The Python client: ``async with meshnode.client.connect(url, room_id, identity) as room``."""

from meshnode.client.failover import Connected, ConnectionEvent, FailoverSettings, Reconnecting
from meshnode.client.media import MediaRefusedError, Publication
from meshnode.client.room import (
    AdmissionRefused,
    ClientError,
    RoomClient,
    StoreUnavailable,
    connect,
)

__all__ = [
    "AdmissionRefused",
    "ClientError",
    "Connected",
    "ConnectionEvent",
    "FailoverSettings",
    "MediaRefusedError",
    "Publication",
    "Reconnecting",
    "RoomClient",
    "StoreUnavailable",
    "connect",
]
