"""Durable storage of a node: rooms, change logs, snapshots, peers, node state (SQLite, WAL).

:class:`ChangeStore` is the synchronous store; :class:`DurableLog` is the event loop's
group-commit writer in front of it, whose futures resolve when a change (and its causal past)
is durable, and which retries failed commits instead of dropping them; :class:`DataDirLock`
keeps a data directory to one process.
"""

from meshnode.store.aio import AsyncChangeStore
from meshnode.store.durable import (
    CommitFailed,
    CommitRetried,
    DurableLog,
    DurableLogEvent,
    StoreBusy,
    StoreClosed,
    StoreFailure,
    StoreRecovered,
)
from meshnode.store.history_reader import HistoryReader
from meshnode.store.lock import LOCK_FILENAME, DataDirInUse, DataDirLock
from meshnode.store.sqlite import (
    DB_FILENAME,
    SCHEMA_VERSION,
    ChangeStore,
    RoomRecord,
    StoreError,
    StoreErrorReason,
    UnknownRoom,
)

__all__ = [
    "DB_FILENAME",
    "LOCK_FILENAME",
    "SCHEMA_VERSION",
    "AsyncChangeStore",
    "ChangeStore",
    "CommitFailed",
    "CommitRetried",
    "DataDirInUse",
    "DataDirLock",
    "DurableLog",
    "DurableLogEvent",
    "HistoryReader",
    "RoomRecord",
    "StoreBusy",
    "StoreClosed",
    "StoreError",
    "StoreErrorReason",
    "StoreFailure",
    "StoreRecovered",
    "UnknownRoom",
]
