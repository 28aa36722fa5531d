"""Group commit: the event loop's durable, non-blocking way to append changes.

The node acknowledges an edit to a client only once the change is durable. One fsync per change
would cap a node at a few hundred changes per second on an ordinary disk, so :class:`DurableLog`
queues appends and a single writer task commits everything queued in one transaction (in the
log's one worker thread, so the loop never waits on the disk). While one commit runs, the next
batch accumulates: under load batches grow and the fsync cost is shared; when idle a change is
committed as soon as the loop gets to it.

What this module guarantees (and the tests in ``tests/store/test_durability.py`` check):

1. **Durable before resolved.** An append's future resolves without error only once the change
   is committed, to the store's ``synchronous`` level.
2. **Never dropped, in order.** Appends are committed in the order they were made. A commit that
   fails (disk full, I/O error, a lock held too long) is *kept* at the head of the queue, in
   order, and retried with backoff (``retry_initial_s`` doubling up to ``retry_max_s``)
   together with everything appended since. So a later append never resolves before an earlier
   one, in the same room or any other.
3. **Causal past first.** The node appends each change when its replica applies it, and a
   replica applies a change only after all of its dependencies (``ChangeApplied`` events come
   in causal order). With (2), when a change's future resolves, its whole causal past is
   durable too: that is what makes the node's ``Ack`` to a client safe, and a node restarted
   from its store never holds a change whose history it lost.
4. **What fails a future.** Only :class:`~meshnode.store.sqlite.UnknownRoom` (a caller's
   mistake: that room's appends alone) and :class:`StoreClosed` (the writer was cancelled, or
   :meth:`DurableLog.close` gave up after its grace period while the store was failing). A
   failing disk never fails a future; it delays it.
5. **Visible failure.** While commits fail, :attr:`DurableLog.failing` is a
   :class:`StoreFailure` (a typed reason such as ``disk_full``, since when, how many attempts);
   the next successful commit clears it. ``on_event`` sees :class:`CommitFailed`,
   :class:`CommitRetried` and :class:`StoreRecovered` for metrics; failures are logged
   (throttled) with what the operator should do.

All SQLite work of the node runs in the log's worker thread: :attr:`DurableLog.aio` gives the
store's other methods as coroutines that run there.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import ParamSpec, TypeVar

from meshnode.store.aio import AsyncChangeStore
from meshnode.store.sqlite import ChangeStore, StoreError, StoreErrorReason, UnknownRoom

__all__ = [
    "CommitFailed",
    "CommitRetried",
    "DurableLog",
    "DurableLogEvent",
    "StoreBusy",
    "StoreClosed",
    "StoreFailure",
    "StoreRecovered",
]

log = logging.getLogger("meshnode.store")

P = ParamSpec("P")
T = TypeVar("T")


class StoreBusy(StoreError):
    """Too many appends are waiting for a commit; retry later or slow the sender down.

    Transient, unlike other :class:`StoreError`\\ s: it is backpressure, the disk is just slower
    than the changes arrive.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message, StoreErrorReason.BUSY)


class StoreClosed(StoreError):
    """The :class:`DurableLog` was closed; it accepts no more appends."""

    def __init__(self, message: str) -> None:
        super().__init__(message, StoreErrorReason.CLOSED)


@dataclass(frozen=True, slots=True)
class StoreFailure:
    """The store has been failing to commit since :attr:`since`.

    ``reason`` is the last failure's label, ``since`` the wall-clock time (``time.time()``) of
    the first failed commit of this episode, ``attempts`` how many commits failed in it, and
    ``message`` the last error's text (it says what to do).
    """

    reason: StoreErrorReason
    since: float
    attempts: int
    message: str


@dataclass(frozen=True, slots=True)
class CommitFailed:
    """A commit failed; its ``pending`` changes are kept and will be retried."""

    failure: StoreFailure
    pending: int


@dataclass(frozen=True, slots=True)
class CommitRetried:
    """A commit that failed before is being tried again (with ``pending`` changes)."""

    failure: StoreFailure
    pending: int


@dataclass(frozen=True, slots=True)
class StoreRecovered:
    """A commit succeeded after ``failure``; the ``committed`` changes it held are durable."""

    failure: StoreFailure
    committed: int


DurableLogEvent = CommitFailed | CommitRetried | StoreRecovered


@dataclass(slots=True)
class _Entry:
    room_id: bytes
    change_id: bytes
    data: bytes
    future: asyncio.Future[None]


_Key = tuple[bytes, bytes]


class DurableLog:
    """Asyncio group-commit writer around a :class:`ChangeStore` (see the module docstring).

    Use from one event loop. :meth:`append` returns a future that resolves once the change is
    committed. At most ``max_pending`` bounded appends wait for a commit, including the batch
    being committed; beyond that :meth:`append` raises :class:`StoreBusy`.

    Counters for metrics: :attr:`committed_changes` (changes newly written, duplicates not
    counted), :attr:`commits` (successful transactions), :attr:`failed_commits`,
    :attr:`retries` (commit attempts that retried a failed one), :attr:`last_commit_s`
    (seconds the last successful transaction took, fsync included).
    """

    def __init__(
        self,
        store: ChangeStore,
        *,
        max_pending: int = 10_000,
        retry_initial_s: float = 0.05,
        retry_max_s: float = 2.0,
        on_event: Callable[[DurableLogEvent], None] | None = None,
    ) -> None:
        """Wrap ``store``; call :meth:`start` before appending, :meth:`close` at the end.

        ``retry_initial_s`` and ``retry_max_s`` bound the backoff between attempts while the
        store fails; ``on_event`` is called (on the loop) with every :data:`DurableLogEvent`.
        """
        if max_pending < 1:
            raise ValueError("max_pending must be at least 1")
        if not 0 < retry_initial_s <= retry_max_s:
            raise ValueError("need 0 < retry_initial_s <= retry_max_s")
        self._store = store
        self._max_pending = max_pending
        self._retry_initial_s = retry_initial_s
        self._retry_max_s = retry_max_s
        self._on_event = on_event
        # Appends not yet resolved, oldest first. The writer commits a prefix of it and removes
        # that prefix only once committed: a failed prefix stays at the head (guarantee 2).
        self._queue: list[_Entry] = []
        # Appends not yet resolved per change key: wait_durable() uses it.
        self._outstanding: dict[_Key, int] = {}
        self._waiters: dict[_Key, list[asyncio.Future[None]]] = {}
        self._wakeup = asyncio.Event()
        self._retry_now = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._close_deadline = float("inf")
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="meshnode-store")
        self._executor_closed = False
        self._failing: StoreFailure | None = None
        self.committed_changes = 0
        self.commits = 0
        self.failed_commits = 0
        self.retries = 0
        self.last_commit_s = 0.0
        self.aio = AsyncChangeStore(store, self.run)
        """The store's methods as coroutines that run in this log's worker thread."""

    @property
    def store(self) -> ChangeStore:
        """The wrapped store (its methods block: from the loop, use :attr:`aio`)."""
        return self._store

    @property
    def pending(self) -> int:
        """Appends waiting for a commit, the batch being committed (or retried) included."""
        return len(self._queue)

    @property
    def failing(self) -> StoreFailure | None:
        """Why commits are failing, or None while the store works (see guarantee 5)."""
        return self._failing

    async def run(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``fn(*args, **kwargs)`` in the log's worker thread (where SQLite work belongs)
        and return its result. Raises :class:`StoreClosed` once the log is closed."""
        if self._executor_closed:
            raise StoreClosed("this DurableLog is closed; its worker thread is gone")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(fn, *args, **kwargs))

    async def start(self) -> None:
        """Start the writer task; a no-op if it is running."""
        if self._closing:
            raise StoreClosed("this DurableLog was closed; make a new one")
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name="meshnode-durable-log"
            )

    async def close(self, grace_s: float = 10.0) -> None:
        """Commit everything queued, then stop the writer; safe to call twice.

        While the store fails, keep retrying for up to ``grace_s`` seconds; then fail what is
        left with :class:`StoreClosed` (those changes were never acknowledged, so no promise is
        broken; peers and clients still hold them and resend them after a restart). Does not
        close the store, which the caller owns.
        """
        if not self._closing:
            self._closing = True
            self._close_deadline = time.monotonic() + grace_s
        if self._task is None and self._queue:
            # Never started but holding appends: run the writer just to flush them.
            self._task = asyncio.get_running_loop().create_task(self._run())
        self._wakeup.set()
        self._retry_now.set()
        task = self._task
        try:
            if task is not None:
                # asyncio.wait: neither cancels the writer if close() itself is cancelled, nor
                # raises if the writer was cancelled earlier (its futures have failed already).
                await asyncio.wait([task])
                error = None if task.cancelled() else task.exception()
                if error is not None:
                    raise error
        finally:
            if not self._executor_closed and (task is None or task.done()):
                self._executor_closed = True
                # wait=False: a commit the cancelled writer left in the thread finishes on its
                # own; closing the store waits for it (the store's lock).
                self._executor.shutdown(wait=False)

    def append(
        self, room_id: bytes, change_id: bytes, data: bytes, *, applied: bool = False
    ) -> asyncio.Future[None]:
        """Queue a change; the returned future resolves once it is committed.

        Never blocks. Raises :class:`StoreClosed` after :meth:`close`, and :class:`StoreBusy`
        when ``max_pending`` appends are already waiting, unless ``applied``: a change already
        applied in memory (the replica holds its bytes anyway) must be stored whatever the
        backlog, since dropping it would leave a hole in the causal past of every later change.
        The future fails only as guarantee 4 of the module docstring says.
        """
        if self._closing:
            raise StoreClosed("this DurableLog is closed")
        if not all(type(b) is bytes for b in (room_id, change_id, data)):
            # A poison entry would fail every retry of its batch for ever: refuse it here.
            raise TypeError("room_id, change_id and data must be bytes")
        if not applied and len(self._queue) >= self._max_pending:
            raise StoreBusy(
                f"{len(self._queue)} changes are already waiting for the disk"
                f" (max_pending={self._max_pending})"
            )
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        key = (room_id, change_id)
        self._queue.append(_Entry(room_id, change_id, data, future))
        self._outstanding[key] = self._outstanding.get(key, 0) + 1
        self._wakeup.set()
        return future

    async def wait_durable(self, room_id: bytes, change_id: bytes) -> None:
        """Return once this change is committed; at once if it already is.

        Raises :class:`KeyError` if it is neither stored nor waiting for a commit, and the
        error of the last pending append of it if that fails (guarantee 4).
        """
        key = (room_id, change_id)
        if key not in self._outstanding:
            if await self.run(self._store.has_change, room_id, change_id):
                return
            # It may have been appended while the lookup ran in the thread.
            if key not in self._outstanding:
                raise KeyError(f"change {change_id.hex()} of room {room_id.hex()} is unknown")
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(key, []).append(waiter)
        await waiter

    # ------------------------------------------------------------------ writer

    async def _run(self) -> None:
        delay = self._retry_initial_s
        try:
            while True:
                if not self._queue:
                    if self._closing:
                        return
                    await self._wakeup.wait()
                    self._wakeup.clear()
                    continue
                # Everything queued: appended in this loop tick, during the last commit, or
                # kept from a failed one (at the head).
                n = len(self._queue)
                if self._failing is not None:
                    self.retries += 1
                    self._emit(CommitRetried(self._failing, n))
                if await self._commit(n):
                    delay = self._retry_initial_s
                    continue
                if self._closing and time.monotonic() >= self._close_deadline:
                    self._give_up()
                    return
                await self._backoff(delay)
                delay = min(self._retry_max_s, delay * 2)
        finally:
            # Only reached with a non-empty queue if the task was cancelled (loop shutdown):
            # nobody must wait for ever on an ack that will not come.
            self._closing = True
            self._fail_all(StoreClosed("the DurableLog writer was cancelled"))

    async def _backoff(self, delay: float) -> None:
        if self._closing:
            delay = min(delay, max(0.0, self._close_deadline - time.monotonic()))
        self._retry_now.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._retry_now.wait(), delay)

    async def _commit(self, n: int) -> bool:
        """Try to commit the first ``n`` queued entries; True if they are resolved."""
        batch = self._queue[:n]
        try:
            # Cancelled (loop shutdown): the thread may still commit, but the changes cannot
            # be reported durable; _run's finally fails them.
            new, elapsed, rejected = await self.run(self._write, batch)
        except Exception as exc:
            self._record_failure(exc, n)
            return False
        del self._queue[:n]
        self.committed_changes += new
        if any(entry.room_id not in rejected.room_ids for entry in batch):
            self.commits += 1
            self.last_commit_s = elapsed
        recovered, self._failing = self._failing, None
        if recovered is not None:
            log.warning(
                "the store works again: %d change(s) kept through %d failed commit(s) (%s, "
                "%.1f s) are now durable",
                n, recovered.attempts, recovered.reason, time.time() - recovered.since,
            )
            self._emit(StoreRecovered(recovered, n))
        for entry in batch:
            self._resolve(entry, rejected if entry.room_id in rejected.room_ids else None)
        return True

    def _record_failure(self, exc: Exception, pending: int) -> None:
        self.failed_commits += 1
        reason = exc.reason if isinstance(exc, StoreError) else StoreErrorReason.OTHER
        previous = self._failing
        attempts = 1 if previous is None else previous.attempts + 1
        since = time.time() if previous is None else previous.since
        self._failing = failure = StoreFailure(reason, since, attempts, str(exc))
        # Attempts 1, 2, 4, 8, ...: the first failure at once, then ever more rarely.
        if attempts & (attempts - 1) == 0:
            log.error(
                "store commit failed (%s, attempt %d): %s; %d change(s) are kept and retried, "
                "none is acknowledged until it is durable",
                reason, attempts, exc, pending,
            )
        self._emit(CommitFailed(failure, pending))

    def _give_up(self) -> None:
        failure = self._failing
        reason = failure.reason if failure is not None else StoreErrorReason.OTHER
        log.error(
            "closing while the store fails (%s): %d change(s) were never acknowledged and are "
            "not stored; peers and clients that hold them resend them after a restart",
            reason, len(self._queue),
        )
        self._fail_all(
            StoreClosed(f"closed while the store was failing ({reason}); the change is not stored")
        )

    def _fail_all(self, error: StoreError) -> None:
        batch, self._queue = self._queue, []
        for entry in batch:
            self._resolve(entry, error)

    def _write(self, batch: list[_Entry]) -> tuple[int, float, UnknownRoom]:
        """Runs in the worker thread: one transaction for the batch (minus unknown rooms)."""
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

    def _emit(self, event: DurableLogEvent) -> None:
        if self._on_event is not None:
            try:
                self._on_event(event)
            except Exception:  # a metrics bug must not stop the writer
                log.exception("DurableLog on_event callback failed")

    def __repr__(self) -> str:
        state = "closed" if self._closing else ("running" if self._task else "not started")
        failing = f" failing={self._failing.reason}" if self._failing else ""
        return f"<DurableLog {state} pending={len(self._queue)} commits={self.commits}{failing}>"
