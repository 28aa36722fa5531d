"""Reading old change bytes for sync without blocking the event loop.

A node keeps only recent change bytes in memory (``SceneReplica.use_history``); a peer far
behind needs older ones, which live in the store. The overlay asks for them
(``HistoryWanted``, ``RoomOverlay.defer_history_reads``) and :class:`HistoryReader` reads them
on its own thread, with its own read-only SQLite connection, so that:

* the event loop never waits on SQLite (nor on the store's lock while the durable log's
  worker fsyncs a commit);
* a read never blocks a write: in WAL mode a reader sees the last committed state while
  the writer goes on.

Batching: reads asked while one is under way are all done in the next hop to the thread
(one thread round trip for many), each as a few ``IN (...)`` queries.

Freshness: a change applied in memory and not yet committed is not visible here; the
overlay skips what the store lacks, and anti-entropy brings it later (as with
``ChangeStore.change_bytes``).
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from meshnode.store.sqlite import StoreError, StoreErrorReason

__all__ = ["HistoryReader"]

_IN_BATCH = 500  # SQLite's default limit on ``?`` parameters is 999 (older builds)

Request = tuple[bytes, Sequence[bytes], "asyncio.Future[dict[bytes, bytes]]"]


class HistoryReader:
    """Reads rooms' change bytes by ID on one worker thread (see the module docstring).

    Use from one event loop: ``await read(room_id, ids)``; ``await aclose()`` at the end.
    """

    def __init__(self, path: Path) -> None:
        """``path``: the node's database file (``ChangeStore.path``); opened read-only, on
        the worker thread, at the first read."""
        self._path = Path(path)
        self._conn: sqlite3.Connection | None = None
        self._executor = ThreadPoolExecutor(max_workers=1,
                                            thread_name_prefix="meshnode-history")
        self._queue: list[Request] = []
        self._draining = False
        self._drainer: asyncio.Task[None] | None = None
        self._closed = False
        self.reads = 0
        """Thread round trips made (each serving every request queued meanwhile)."""
        self.requests = 0

    async def read(self, room_id: bytes, change_ids: Sequence[bytes]) -> dict[bytes, bytes]:
        """The stored bytes of these changes of the room, by ID (those not stored are
        absent). Raises ``StoreError`` (reason ``closed``) after ``aclose``."""
        if self._closed:
            raise StoreError(f"reading history: the reader of {self._path} is closed",
                             StoreErrorReason.CLOSED)
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[dict[bytes, bytes]] = loop.create_future()
        self._queue.append((room_id, list(change_ids), fut))
        self.requests += 1
        if not self._draining:
            self._draining = True
            self._drainer = loop.create_task(self._drain())  # kept: tasks are weakly held
        return await fut

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._queue:
                batch, self._queue = self._queue, []
                asks = [(room, ids) for room, ids, _ in batch]
                self.reads += 1
                try:
                    results = await loop.run_in_executor(self._executor, self._read_all, asks)
                except Exception as err:
                    for _, _, fut in batch:
                        if not fut.done():
                            fut.set_exception(err)
                    continue
                for (_, _, fut), result in zip(batch, results, strict=True):
                    if not fut.done():
                        fut.set_result(result)
        finally:
            self._draining = False

    def _read_all(self, asks: list[tuple[bytes, Sequence[bytes]]]) -> list[dict[bytes, bytes]]:
        """On the worker thread: every request of one batch."""
        conn = self._conn
        if conn is None:
            try:
                conn = self._conn = sqlite3.connect(
                    self._path.absolute().as_uri() + "?mode=ro", uri=True,
                    check_same_thread=False, isolation_level=None)
            except sqlite3.Error as exc:
                raise StoreError(f"cannot open {self._path} to read history: {exc}") from exc
        out = []
        try:
            for room, ids in asks:
                got: dict[bytes, bytes] = {}
                for i in range(0, len(ids), _IN_BATCH):
                    part = list(ids[i:i + _IN_BATCH])
                    marks = ",".join("?" * len(part))
                    for cid, data in conn.execute(
                            f"SELECT change_id, data FROM changes WHERE room_id = ? AND "
                            f"change_id IN ({marks})", (room, *part)):
                        got[bytes(cid)] = bytes(data)
                out.append(got)
        except sqlite3.Error as exc:
            raise StoreError(f"reading history from {self._path}: {exc}") from exc
        return out

    def _close_conn(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    async def aclose(self) -> None:
        """Refuse further reads, close the connection (on its thread) and stop the thread.
        Reads under way complete first."""
        if self._closed:
            return
        self._closed = True
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._close_conn)
        self._executor.shutdown(wait=False)
