"""The Python client: ``async with meshnode.client.connect(url, room_id, identity) as room``."""

from meshnode.client.media import MediaRefusedError, Publication
from meshnode.client.room import (
    AdmissionRefused,
    ClientError,
    RoomClient,
    StoreUnavailable,
    connect,
)

__all__ = ["AdmissionRefused", "ClientError", "MediaRefusedError", "Publication", "RoomClient",
           "StoreUnavailable", "connect"]
