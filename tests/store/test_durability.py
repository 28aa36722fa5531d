"""DurableLog: group commit, ack only after commit, failures, backpressure, close; kill -9."""

from __future__ import annotations

import asyncio
import functools
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path

import pytest

from meshnode.store import (
    ChangeStore,
    DurableLog,
    StoreBusy,
    StoreClosed,
    StoreError,
    UnknownRoom,
)

from ._writer_process import ROOM as WRITER_ROOM
from ._writer_process import change_bytes

# A hang is a bug here; fail fast instead of waiting for the suite-wide timeout.
pytestmark = pytest.mark.timeout(60)

ROOM = b"\x01" * 32
OTHER = b"\x02" * 32
HELPER = Path(__file__).with_name("_writer_process.py")


class GatedStore(ChangeStore):
    """A real store whose commits wait for the test to open a gate."""

    entered: threading.Event
    gate: threading.Event

    def append_many(self, items: Sequence[tuple[bytes, bytes, bytes]]) -> int:
        self.entered.set()
        assert self.gate.wait(10), "test never opened the gate"
        return super().append_many(items)


class FlakyStore(ChangeStore):
    """A real store whose next ``failures`` commits raise, as a full or failing disk would."""

    failures: int

    def append_many(self, items: Sequence[tuple[bytes, bytes, bytes]]) -> int:
        if self.failures:
            self.failures -= 1
            raise StoreError("appending changes failed: disk on fire")
        return super().append_many(items)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "meshnode.db"


@pytest.fixture
def store(db: Path) -> Iterator[ChangeStore]:
    with ChangeStore.open(db) as s:
        s.add_room(ROOM, b"g", "lab", {})
        yield s


@pytest.fixture
async def log(store: ChangeStore) -> AsyncIterator[DurableLog]:
    log = DurableLog(store)
    await log.start()
    yield log
    await log.close()


def visible(db: Path, room_id: bytes, change_id: bytes) -> bytes | None:
    """The change's bytes as a brand-new connection sees them (i.e. committed), or None."""
    conn = sqlite3.connect(db)
    try:
        row = conn.execute(
            "SELECT data FROM changes WHERE room_id = ? AND change_id = ?", (room_id, change_id)
        ).fetchone()
    finally:
        conn.close()
    return None if row is None else bytes(row[0])


# --------------------------------------------------------------------------- group commit


async def test_appends_in_one_tick_are_one_commit(log: DurableLog, store: ChangeStore) -> None:
    futures = [log.append(ROOM, b"c%03d" % i, b"data%d" % i) for i in range(100)]
    assert log.pending == 100
    await asyncio.gather(*futures)
    assert log.commits == 1
    assert log.committed_changes == 100
    assert log.last_commit_s > 0
    assert log.pending == 0
    assert list(store.changes(ROOM)) == [b"data%d" % i for i in range(100)]


async def test_appends_during_a_commit_form_the_next_batch(db: Path) -> None:
    with GatedStore.open(db) as store:
        store.add_room(ROOM, b"g", "lab", {})
        store.entered, store.gate = threading.Event(), threading.Event()
        log = DurableLog(store)
        await log.start()
        first = log.append(ROOM, b"first", b"1")
        assert await asyncio.to_thread(store.entered.wait, 10)
        # The commit is in progress in the worker thread: these queue up behind it.
        later = [log.append(ROOM, b"later%d" % i, b"x") for i in range(50)]
        assert not first.done()
        assert visible(db, ROOM, b"first") is None
        store.gate.set()
        await asyncio.gather(first, *later)
        assert log.commits == 2
        assert log.committed_changes == 51
        await log.close()


async def test_future_resolves_only_once_visible_to_a_new_connection(
    log: DurableLog, db: Path
) -> None:
    seen: list[bytes | None] = []

    def record_visibility(cid: bytes, _future: asyncio.Future[None]) -> None:
        seen.append(visible(db, ROOM, cid))

    futures = []
    for i in range(20):
        cid = b"v%d" % i
        future = log.append(ROOM, cid, b"bytes-" + cid)
        # Runs as soon as the future is resolved, before anything else can commit.
        future.add_done_callback(functools.partial(record_visibility, cid))
        futures.append(future)
        if i % 5 == 4:
            await asyncio.sleep(0)  # several batches
    await asyncio.gather(*futures)
    await asyncio.sleep(0)  # let the last done-callbacks run
    assert seen == [b"bytes-v%d" % i for i in range(20)]


async def test_duplicates_resolve_and_count_once(log: DurableLog, store: ChangeStore) -> None:
    store.append_changes(ROOM, [(b"old", b"stored before")])
    futures = [log.append(ROOM, b"dup", b"1"), log.append(ROOM, b"dup", b"2")]
    futures.append(log.append(ROOM, b"old", b"again"))
    await asyncio.gather(*futures)
    assert log.committed_changes == 1
    assert list(store.changes(ROOM)) == [b"stored before", b"1"]


# --------------------------------------------------------------------------- failures


async def test_failed_commit_is_kept_and_the_writer_goes_on(db: Path) -> None:
    with FlakyStore.open(db) as store:
        store.add_room(ROOM, b"g", "lab", {})
        store.failures = 1
        log = DurableLog(store, retry_initial_s=0.001)
        await log.start()
        batch = [log.append(ROOM, b"kept%d" % i, b"x") for i in range(10)]
        await asyncio.gather(*batch)  # resolved by the retry, none failed
        assert (log.commits, log.failed_commits, log.retries, log.pending) == (1, 1, 1, 0)
        assert store.change_count(ROOM) == 10
        await log.append(ROOM, b"next", b"y")
        assert (log.commits, log.committed_changes) == (2, 11)
        await log.close()


async def test_unknown_room_fails_only_its_own_changes(log: DurableLog, store: ChangeStore) -> None:
    good = [log.append(ROOM, b"g%d" % i, b"x") for i in range(5)]
    bad = log.append(OTHER, b"b", b"y")
    results = await asyncio.gather(*good, bad, return_exceptions=True)
    assert results[:5] == [None] * 5
    assert isinstance(results[5], UnknownRoom)
    assert store.change_count(ROOM) == 5
    assert log.commits == 1
    with pytest.raises(UnknownRoom):
        await log.append(OTHER, b"alone", b"z")
    assert log.commits == 1  # nothing left to write: no transaction


async def test_cancelled_future_does_not_disturb_the_writer(
    log: DurableLog, store: ChangeStore
) -> None:
    a = log.append(ROOM, b"a", b"A")
    b = log.append(ROOM, b"b", b"B")
    a.cancel()
    await b
    assert store.has_change(ROOM, b"a")  # cancelling the wait does not cancel the write


async def test_cancelled_writer_fails_what_it_holds(db: Path) -> None:
    with GatedStore.open(db) as store:
        store.add_room(ROOM, b"g", "lab", {})
        store.entered, store.gate = threading.Event(), threading.Event()
        log = DurableLog(store)
        await log.start()
        in_flight = log.append(ROOM, b"a", b"A")
        assert await asyncio.to_thread(store.entered.wait, 10)
        queued = log.append(ROOM, b"b", b"B")
        assert log._task is not None
        log._task.cancel()
        try:
            for future in (in_flight, queued):
                with pytest.raises(StoreClosed):
                    await future
            with pytest.raises(StoreClosed):
                log.append(ROOM, b"c", b"C")
            await log.close()  # returns; the cancellation was already reported
        finally:
            store.gate.set()
            await asyncio.sleep(0.05)  # let the worker thread finish before closing the store


# --------------------------------------------------------------------------- backpressure


async def test_store_busy_beyond_max_pending(store: ChangeStore) -> None:
    log = DurableLog(store, max_pending=5)
    await log.start()
    futures = [log.append(ROOM, b"%d" % i, b"x") for i in range(5)]
    with pytest.raises(StoreBusy, match="max_pending=5"):
        log.append(ROOM, b"one too many", b"x")
    assert log.pending == 5
    await asyncio.gather(*futures)
    await log.append(ROOM, b"room again", b"x")
    assert not store.has_change(ROOM, b"one too many")
    await log.close()


def test_max_pending_must_be_positive(store: ChangeStore) -> None:
    with pytest.raises(ValueError):
        DurableLog(store, max_pending=0)


# --------------------------------------------------------------------------- close, wait_durable


async def test_close_flushes_and_is_idempotent(store: ChangeStore, db: Path) -> None:
    log = DurableLog(store)
    await log.start()
    futures = [log.append(ROOM, b"%d" % i, b"x") for i in range(30)]
    await log.close()
    assert all(f.done() and f.exception() is None for f in futures)
    assert all(visible(db, ROOM, b"%d" % i) == b"x" for i in range(30))
    await log.close()
    with pytest.raises(StoreClosed):
        log.append(ROOM, b"late", b"x")
    with pytest.raises(StoreClosed):
        await log.start()


async def test_close_without_start_flushes(store: ChangeStore) -> None:
    log = DurableLog(store)
    future = log.append(ROOM, b"a", b"A")
    await log.close()
    assert future.done()
    assert store.has_change(ROOM, b"a")


async def test_wait_durable(db: Path) -> None:
    with GatedStore.open(db) as store:
        store.add_room(ROOM, b"g", "lab", {})
        store.entered, store.gate = threading.Event(), threading.Event()
        store.gate.set()
        store.append_changes(ROOM, [(b"old", b"O")])
        store.gate.clear()
        log = DurableLog(store)
        await log.start()
        await asyncio.wait_for(log.wait_durable(ROOM, b"old"), 5)  # already stored
        with pytest.raises(KeyError):
            await log.wait_durable(ROOM, b"never appended")
        log.append(ROOM, b"new", b"N")
        waiter = asyncio.ensure_future(log.wait_durable(ROOM, b"new"))
        assert await asyncio.to_thread(store.entered.wait, 10)
        await asyncio.sleep(0.01)
        assert not waiter.done()
        store.gate.set()
        await asyncio.wait_for(waiter, 5)
        assert visible(db, ROOM, b"new") == b"N"
        await log.close()


async def test_wait_durable_waits_through_failed_commits(db: Path) -> None:
    with FlakyStore.open(db) as store:
        store.add_room(ROOM, b"g", "lab", {})
        store.failures = 2
        log = DurableLog(store, retry_initial_s=0.001)
        await log.start()
        future = log.append(ROOM, b"x", b"X")
        await asyncio.wait_for(log.wait_durable(ROOM, b"x"), 10)
        assert future.done() and future.exception() is None
        assert log.failed_commits == 2
        await log.close()


# --------------------------------------------------------------------------- kill -9


def _run_writer_and_kill(db: Path, acks_before_kill: int, delay_s: float) -> list[bytes]:
    """Start the writer process, SIGKILL it after some acks; return every acked change_id."""
    proc = subprocess.Popen(
        [sys.executable, str(HELPER), str(db)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None
    lines: list[bytes] = []
    enough = threading.Event()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if len(lines) > acks_before_kill:
                enough.set()
        enough.set()  # EOF: the process died on its own

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        enough.wait(timeout=30)  # only a guard against hangs
        # Vary where the kill lands: inside a commit's fsync, between commit and ack, ...
        time.sleep(delay_s)
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL, proc.stderr.read() if proc.stderr else ""
        reader.join(timeout=30)  # drain what was printed before the kill: also acked
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()
    assert lines[0] == b"ready\n"
    # A line cut by the kill mid-write was never a complete ack.
    acked = [bytes.fromhex(line.decode()) for line in lines[1:] if line.endswith(b"\n")]
    assert len(acked) >= acks_before_kill
    return acked


def test_acked_changes_survive_kill_9(db: Path) -> None:
    acked: list[bytes] = []
    # Three lives of the same database: each restart recovers the WAL left by the kill.
    for acks_before_kill, delay_s in ((300, 0.0), (50, 0.003), (700, 0.011)):
        acked += _run_writer_and_kill(db, acks_before_kill, delay_s)

    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        stored = dict(
            conn.execute(
                "SELECT change_id, data FROM changes WHERE room_id = ?", (WRITER_ROOM,)
            ).fetchall()
        )
    finally:
        conn.close()
    missing = [cid.hex() for cid in acked if cid not in stored]
    assert not missing, f"{len(missing)} acknowledged changes lost, e.g. {missing[:3]}"
    assert all(stored[cid] == change_bytes(cid) for cid in acked)
    with ChangeStore.open(db) as store:  # and the store itself accepts the file again
        store.check_integrity()
        assert store.change_count(WRITER_ROOM) == len(stored) >= len(acked)
