"""Group commit: the event loop's durable, non-blocking way to append changes.

The node acknowledges an edit to a client only once the change is durable. One fsync per change
would cap a node at a few hundred changes per second on an ordinary disk, so :class:`DurableLog`
queues appends and a single writer task commits everything queued in one transaction (in a
worker thread, so the loop never waits on the disk). While one commit runs, the next batch
accumulates: under load batches grow and the fsync cost is shared; when idle a change is
committed as soon as the loop gets to it.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from meshnode.store.sqlite import ChangeStore, StoreError, UnknownRoom

__all__ = ["DurableLog", "StoreBusy", "StoreClosed"]


class StoreBusy(StoreError):
    """Too many appends are waiting for a commit; retry later or slow the sender down.

    Transient, unlike other :class:`StoreError`\\ s: it is backpressure, the disk is just slower
    than the changes arrive.
    """


class StoreClosed(StoreError):
    """The :class:`DurableLog` was closed; it accepts no more appends."""


@dataclass(slots=True)
class _Entry:
    room_id: bytes
    change_id: bytes
    data: bytes
    future: asyncio.Future[None]


_Key = tuple[bytes, bytes]


class DurableLog:
    """Asyncio group-commit writer around a :class:`ChangeStore`.

    Use from one event loop. :meth:`append` returns a future that resolves once the change is
    committed (durable to the store's ``synchronous`` level) or fails with the commit's error.
    At most ``max_pending`` changes wait for a commit, including the batch being committed;
    beyond that :meth:`append` raises :class:`StoreBusy`.

    Counters for metrics: :attr:`committed_changes` (changes newly written, duplicates not
    counted), :attr:`commits` (successful transactions), :attr:`failed_commits`,
    :attr:`last_commit_s` (seconds the last successful transaction took, fsync included).
    """

    def __init__(self, store: ChangeStore, *, max_pending: int = 10_000) -> None:
        """Wrap ``store``; call :meth:`start` before appending, :meth:`close` at the end."""
        if max_pending < 1:
            raise ValueError("max_pending must be at least 1")
        self._store = store
        self._max_pending = max_pending
        self._queue: list[_Entry] = []
        # Appends not yet resolved (queued or in the batch being committed), per change key:
        # wait_durable() uses it, and it is what max_pending bounds.
        self._outstanding: dict[_Key, int] = {}
        self._n_outstanding = 0
        self._waiters: dict[_Key, list[asyncio.Future[None]]] = {}
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.committed_changes = 0
        self.commits = 0
        self.failed_commits = 0
        self.last_commit_s = 0.0

    @property
    def store(self) -> ChangeStore:
        """The wrapped store (its methods block; call them through ``asyncio.to_thread``)."""
        return self._store

    @property
    def pending(self) -> int:
        """Appends waiting for a commit, the batch being committed included."""
        return self._n_outstanding

    async def start(self) -> None:
        """Start the writer task; a no-op if it is running."""
        if self._closing:
            raise StoreClosed("this DurableLog was closed; make a new one")
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name="meshnode-durable-log"
            )

    async def close(self) -> None:
        """Commit everything queued, then stop the writer; safe to call twice.

        Does not close the store, which the caller owns.
        """
        self._closing = True
        if self._task is None and self._queue:
            # Never started but holding appends: run the writer just to flush them.
            self._task = asyncio.get_running_loop().create_task(self._run())
        self._wakeup.set()
        task = self._task
        if task is not None:
            # asyncio.wait: neither cancels the writer if close() itself is cancelled, nor
            # raises if the writer was cancelled earlier (its futures have failed already).
            await asyncio.wait([task])
            error = None if task.cancelled() else task.exception()
            if error is not None:
                raise error

    def append(self, room_id: bytes, change_id: bytes, data: bytes) -> asyncio.Future[None]:
        """Queue a change; the returned future resolves once it is committed.

        Never blocks. Raises :class:`StoreBusy` when ``max_pending`` appends are already
        waiting and :class:`StoreClosed` after :meth:`close`. The future fails with
        :class:`UnknownRoom` if the room is not stored, or with the commit's error (every
        future of that batch gets it; later batches are tried again).
        """
        if self._closing:
            raise StoreClosed("this DurableLog is closed")
        if self._n_outstanding >= self._max_pending:
            raise StoreBusy(
                f"{self._n_outstanding} changes are already waiting for the disk"
                f" (max_pending={self._max_pending})"
            )
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        key = (room_id, change_id)
        self._queue.append(_Entry(room_id, change_id, data, future))
        self._outstanding[key] = self._outstanding.get(key, 0) + 1
        self._n_outstanding += 1
        self._wakeup.set()
        return future

    async def wait_durable(self, room_id: bytes, change_id: bytes) -> None:
        """Return once this change is committed; at once if it already is.

        Raises :class:`KeyError` if it is neither stored nor waiting for a commit, and the
        commit's error if the last pending append of it fails.
        """
        key = (room_id, change_id)
        if key not in self._outstanding:
            if await asyncio.to_thread(self._store.has_change, room_id, change_id):
                return
            # It may have been appended while the lookup ran in the thread.
            if key not in self._outstanding:
                raise KeyError(f"change {change_id.hex()} of room {room_id.hex()} is unknown")
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(key, []).append(waiter)
        await waiter

    # ------------------------------------------------------------------ writer

    async def _run(self) -> None:
        try:
            while True:
                if not self._queue:
                    if self._closing:
                        return
                    await self._wakeup.wait()
                    self._wakeup.clear()
                    continue
                # Take everything queued: appended in this loop tick or during the last commit.
                batch, self._queue = self._queue, []
                await self._commit(batch)
        finally:
            # Only reached with a non-empty queue if the task was cancelled (loop shutdown):
            # nobody must wait for ever on an ack that will not come.
            self._closing = True
            batch, self._queue = self._queue, []
            for entry in batch:
                self._resolve(entry, StoreClosed("the DurableLog writer was cancelled"))

    async def _commit(self, batch: list[_Entry]) -> None:
        try:
            new, elapsed, rejected = await asyncio.to_thread(self._write, batch)
        except asyncio.CancelledError:
            # The thread may still commit, but the change cannot be reported durable.
            for entry in batch:
                self._resolve(entry, StoreClosed("the DurableLog writer was cancelled"))
            raise
        except Exception as exc:
            self.failed_commits += 1
            for entry in batch:
                self._resolve(entry, exc)
            return
        self.committed_changes += new
        if any(entry.room_id not in rejected.room_ids for entry in batch):
            self.commits += 1
            self.last_commit_s = elapsed
        for entry in batch:
            self._resolve(entry, rejected if entry.room_id in rejected.room_ids else None)

    def _write(self, batch: list[_Entry]) -> tuple[int, float, UnknownRoom]:
        """Runs in a worker thread: one transaction for the batch (minus unknown rooms)."""
        items = [(e.room_id, e.change_id, e.data) for e in batch]
        rejected = UnknownRoom([])
        start = time.perf_counter()
        try:
            new = self._store.append_many(items)
        except UnknownRoom as exc:
            # One caller's mistake must not fail everyone else's changes: drop its rooms and
            # commit the rest.
            rejected = exc
            start = time.perf_counter()
            new = self._store.append_many([i for i in items if i[0] not in exc.room_ids])
        return new, time.perf_counter() - start, rejected

    def _resolve(self, entry: _Entry, error: BaseException | None) -> None:
        if not entry.future.done():  # the caller may have cancelled it
            if error is None:
                entry.future.set_result(None)
            else:
                entry.future.set_exception(error)
        key = (entry.room_id, entry.change_id)
        self._n_outstanding -= 1
        left = self._outstanding[key] - 1
        if left:
            self._outstanding[key] = left
        else:
            del self._outstanding[key]
        if error is None or not left:
            # Success of any append of the change makes it durable; failure only matters to
            # waiters once no other append of it is still pending.
            for waiter in self._waiters.pop(key, ()):
                if not waiter.done():
                    if error is None:
                        waiter.set_result(None)
                    else:
                        waiter.set_exception(error)

    def __repr__(self) -> str:
        state = "closed" if self._closing else ("running" if self._task else "not started")
        return f"<DurableLog {state} pending={self._n_outstanding} commits={self.commits}>"
