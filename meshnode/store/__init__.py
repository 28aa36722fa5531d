"""Durable storage of a node: rooms, change logs, snapshots, peers, node state (SQLite, WAL).

:class:`ChangeStore` is the synchronous store; :class:`DurableLog` is the event loop's
group-commit writer in front of it, whose futures resolve when a change is durable.
"""

from meshnode.store.durable import DurableLog, StoreBusy, StoreClosed
from meshnode.store.sqlite import (
    DB_FILENAME,
    SCHEMA_VERSION,
    ChangeStore,
    RoomRecord,
    StoreError,
    UnknownRoom,
)

__all__ = [
    "DB_FILENAME",
    "SCHEMA_VERSION",
    "ChangeStore",
    "DurableLog",
    "RoomRecord",
    "StoreBusy",
    "StoreClosed",
    "StoreError",
    "UnknownRoom",
]
