"""How the store fails: :class:`StoreError` with a stable :class:`StoreErrorReason`, and the
translation of SQLite's errors into messages that tell the operator what to do."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from enum import StrEnum
from pathlib import Path

# Primary SQLite result codes (sqlite3.SQLITE_* exists only from Python 3.11's stubs onwards and
# the extended codes carry the primary code in their low byte).
_SQLITE_PERM = 3
_SQLITE_BUSY = 5
_SQLITE_LOCKED = 6
_SQLITE_READONLY = 8
_SQLITE_IOERR = 10
_SQLITE_CORRUPT = 11
_SQLITE_FULL = 13
_SQLITE_CANTOPEN = 14
_SQLITE_NOTADB = 26


class StoreErrorReason(StrEnum):
    """Why the store failed, as a stable label (metrics, ``/healthz``, ``Nack`` messages)."""

    DISK_FULL = "disk_full"
    """The file system holding the database is full: free space, nothing is lost."""
    IO_ERROR = "io_error"
    """The operating system reported an I/O error (a failing disk, a vanished mount)."""
    LOCKED = "locked"
    """Another process held a lock on the database for longer than the busy timeout."""
    READ_ONLY = "read_only"
    """The database file or its directory cannot be written (permissions, a read-only mount)."""
    CORRUPT = "corrupt"
    """The file is damaged or is not a meshnode database."""
    CLOSED = "closed"
    """The store (or its writer) was closed."""
    BUSY = "busy"
    """Backpressure: too many changes wait for the disk."""
    UNKNOWN_ROOM = "unknown_room"
    """A write named a room the store does not hold (a caller's mistake, not the disk's)."""
    OTHER = "other"
    """Anything else SQLite reported; the message says what."""


class StoreError(Exception):
    """The store cannot do what was asked: corrupt or foreign file, disk full, I/O error, closed.

    The message names the file and says what the operator should do; :attr:`reason` is the
    stable label of the kind of failure.
    """

    def __init__(self, message: str, reason: StoreErrorReason = StoreErrorReason.OTHER) -> None:
        super().__init__(message)
        self.reason = reason


class UnknownRoom(StoreError):
    """A write referred to rooms that were never added (or were removed).

    :attr:`room_ids` lists them, so a batch writer can drop just those items and retry the rest.
    """

    def __init__(self, room_ids: Iterable[bytes]) -> None:
        self.room_ids: frozenset[bytes] = frozenset(room_ids)
        shown = ", ".join(sorted(r.hex() for r in self.room_ids))
        super().__init__(
            f"unknown room(s): {shown}; add_room() them first", StoreErrorReason.UNKNOWN_ROOM
        )


def _corrupt_message(path: Path, detail: object) -> str:
    detail = " ".join(str(detail).split())  # integrity_check reports span several lines
    return (
        f"{path} is corrupt or is not a meshnode database ({detail}). meshnode will not "
        f"overwrite it. Stop the node, move {path.name} and any {path.name}-wal and "
        f"{path.name}-shm files next to it aside, then restore them from a backup or start "
        f"the node with an empty data directory (it will have to rejoin its rooms)."
    )


def _corrupt(path: Path, detail: object) -> StoreError:
    return StoreError(_corrupt_message(path, detail), StoreErrorReason.CORRUPT)


def _translate(exc: sqlite3.Error, path: Path, action: str) -> StoreError:
    code = getattr(exc, "sqlite_errorcode", None)
    primary = code & 0xFF if isinstance(code, int) else None
    text = str(exc)
    if primary in (_SQLITE_CORRUPT, _SQLITE_NOTADB) or (
        "malformed" in text or "not a database" in text
    ):
        return _corrupt(path, text)
    if primary == _SQLITE_FULL:
        return StoreError(
            f"{action} failed: the disk holding {path} is full ({text}). Free some space; "
            f"nothing that was acknowledged has been lost.",
            StoreErrorReason.DISK_FULL,
        )
    if primary in (_SQLITE_IOERR, _SQLITE_CANTOPEN):
        return StoreError(
            f"{action} failed: I/O error on {path} ({text}). Stop the node and check the "
            f"disk and the file system (dmesg) before restarting it.",
            StoreErrorReason.IO_ERROR,
        )
    if primary in (_SQLITE_BUSY, _SQLITE_LOCKED):
        return StoreError(
            f"{action} failed: another process holds a lock on {path} ({text}). Stop the "
            f"program that has it open (a backup, an sqlite3 shell) or make it finish sooner.",
            StoreErrorReason.LOCKED,
        )
    if primary in (_SQLITE_READONLY, _SQLITE_PERM):
        return StoreError(
            f"{action} failed: {path} cannot be written ({text}). Check the permissions of "
            f"the file and its directory, and that the file system is mounted read-write.",
            StoreErrorReason.READ_ONLY,
        )
    return StoreError(f"{action} failed on {path}: {text}")
