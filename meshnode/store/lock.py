"""One process per data directory: an exclusive lock held for the node's whole lifetime.

Two ``meshnode up`` on one data directory would run one identity twice: both sign changes with
the same key and the same next seq, which every peer sees as equivocation (and cuts the node
off for). SQLite's own locking does not prevent it (WAL lets both processes write in turn), so
:class:`DataDirLock` takes ``fcntl.flock(LOCK_EX | LOCK_NB)`` on ``<data_dir>/lock``. The kernel
releases a flock when its process exits, however it exits (``kill -9`` included), so a crash
never leaves a stale lock behind; the PID written in the file only serves the error message.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from types import TracebackType
from typing import Self

from meshnode.store.sqlite import StoreError, StoreErrorReason

__all__ = ["LOCK_FILENAME", "DataDirInUse", "DataDirLock"]

LOCK_FILENAME = "lock"
"""Name of the lock file inside a node's data directory."""


class DataDirInUse(StoreError):
    """Another running process holds the data directory's lock; :attr:`pid` is its PID (or None
    if it could not be read)."""

    def __init__(self, data_dir: Path, pid: int | None) -> None:
        holder = f"process {pid}" if pid is not None else "another process"
        super().__init__(
            f"the data directory {data_dir} is in use by {holder} (another meshnode?); "
            f"running one identity twice would make it equivocate. Stop that node first, "
            f"or give this one another --data-dir",
            StoreErrorReason.LOCKED,
        )
        self.data_dir = data_dir
        self.pid = pid


class DataDirLock:
    """The exclusive lock of one data directory (see the module docstring).

    ``DataDirLock(data_dir).acquire()`` raises :class:`DataDirInUse` if another process holds
    it; :meth:`release` (or leaving the ``with`` block) gives it back.
    """

    def __init__(self, data_dir: Path) -> None:
        """Prepare the lock of ``data_dir``; nothing is locked before :meth:`acquire`."""
        self.data_dir = Path(data_dir)
        self.path = self.data_dir / LOCK_FILENAME
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        """Whether this object holds the lock."""
        return self._fd is not None

    def acquire(self) -> Self:
        """Take the lock without waiting and write our PID in the file.

        Raises :class:`DataDirInUse` if another process holds it, :class:`StoreError` if the
        file cannot be opened. A no-op if this object already holds it.
        """
        if self._fd is not None:
            return self
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise StoreError(
                f"cannot open the lock file {self.path}: {exc}", StoreErrorReason.READ_ONLY
            ) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _read_pid(fd)
            os.close(fd)
            raise DataDirInUse(self.data_dir, pid) from None
        except OSError as exc:
            os.close(fd)
            raise StoreError(
                f"cannot lock {self.path}: {exc}", StoreErrorReason.IO_ERROR
            ) from exc
        try:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        except OSError:
            pass  # the PID only improves another process's error message (a full disk?)
        self._fd = fd
        return self

    def release(self) -> None:
        """Give the lock back; safe to call twice. The file stays (removing it would race
        with a process that has just opened it)."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # closing the descriptor releases the flock

    def __enter__(self) -> Self:
        return self.acquire()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None
