"""The Python client: ``async with meshnode.client.connect(url, room_id, identity) as room``."""

from meshnode.client.room import ClientError, RoomClient, StoreUnavailable, connect

__all__ = ["ClientError", "RoomClient", "StoreUnavailable", "connect"]
