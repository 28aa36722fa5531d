"""DurableLog while the store fails: failed commits are kept, in order, retried with backoff,
never dropped; health and events say why; close() gives up only after its grace period.

Real SQLite files throughout; the failures are injected in front of a real ``append_many``
(the real-disk-full case is tests/integration/test_durability_faults.py).
"""

from __future__ import annotations

import asyncio
import sqlite3
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meshnode.store import (
    ChangeStore,
    CommitFailed,
    CommitRetried,
    DurableLog,
    DurableLogEvent,
    StoreBusy,
    StoreClosed,
    StoreError,
    StoreErrorReason,
    StoreRecovered,
    UnknownRoom,
)
from meshnode.store.sqlite import _translate

pytestmark = pytest.mark.timeout(60)

ROOM = b"\x01" * 32
OTHER = b"\x02" * 32


class ScriptedStore(ChangeStore):
    """A real store whose commit attempts fail as ``script`` says (True: fail), then work."""

    script: list[bool]
    reason: StoreErrorReason
    attempts: int

    def append_many(self, items: Sequence[tuple[bytes, bytes, bytes]]) -> int:
        self.attempts += 1
        if self.script and self.script.pop(0):
            raise StoreError(f"appending changes failed ({self.reason})", self.reason)
        return super().append_many(items)


def scripted(db: Path, script: list[bool],
             reason: StoreErrorReason = StoreErrorReason.DISK_FULL) -> ScriptedStore:
    store = ScriptedStore.open(db)
    store.add_room(ROOM, b"g", "lab", {})
    store.add_room(OTHER, b"g2", "other", {})
    store.script, store.reason, store.attempts = list(script), reason, 0
    return store


async def test_failed_commits_are_kept_in_order_and_retried(tmp_path: Path) -> None:
    with scripted(tmp_path / "db", [True, True, True]) as store:
        events: list[DurableLogEvent] = []
        log = DurableLog(store, retry_initial_s=0.001, retry_max_s=0.01,
                         on_event=events.append)
        await log.start()
        futures = [log.append(ROOM, b"c%02d" % i, b"d%02d" % i) for i in range(10)]
        await asyncio.gather(*futures)
        # Never failed, never dropped; stored in append order.
        assert all(f.exception() is None for f in futures)
        assert list(store.changes(ROOM)) == [b"d%02d" % i for i in range(10)]
        assert (log.failed_commits, log.retries, log.commits) == (3, 3, 1)
        assert log.failing is None
        kinds = [type(e) for e in events]
        assert kinds == [CommitFailed, CommitRetried, CommitFailed, CommitRetried,
                         CommitFailed, CommitRetried, StoreRecovered]
        attempts = [e.failure.attempts for e in events if isinstance(e, CommitFailed)]
        assert attempts == [1, 2, 3]
        recovered = events[-1]
        assert isinstance(recovered, StoreRecovered) and recovered.committed == 10
        assert recovered.failure.reason is StoreErrorReason.DISK_FULL
        await log.close()


async def test_health_names_the_reason_while_failing_and_clears_after(tmp_path: Path) -> None:
    with scripted(tmp_path / "db", [True] * 1000, StoreErrorReason.IO_ERROR) as store:
        log = DurableLog(store, retry_initial_s=0.001, retry_max_s=0.005)
        await log.start()
        assert log.failing is None
        future = log.append(ROOM, b"a", b"A")
        while log.failed_commits < 3:
            await asyncio.sleep(0.001)
        failure = log.failing
        assert failure is not None
        assert failure.reason is StoreErrorReason.IO_ERROR
        assert failure.attempts >= 3
        assert "io_error" in failure.message
        assert not future.done()  # delayed, not failed
        while log.failed_commits < failure.attempts + 2:
            await asyncio.sleep(0.001)
        later = log.failing
        assert later is not None and later.since == failure.since  # one episode
        store.script.clear()  # the disk works again
        await asyncio.wait_for(future, 10)
        assert log.failing is None
        assert store.has_change(ROOM, b"a")
        await log.close()


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    script=st.lists(st.booleans(), max_size=12),
    appends=st.lists(st.tuples(st.sampled_from([ROOM, OTHER]), st.integers(0, 3)),
                     min_size=1, max_size=40),
)
def test_no_append_resolves_before_an_earlier_one(
    script: list[bool], appends: list[tuple[bytes, int]]
) -> None:
    """Any failure pattern, any interleaving of appends and loop turns: appends resolve in
    append order (per room, and in fact overall), all of them, and all are stored."""

    async def run(db: Path) -> None:
        with scripted(db, script) as store:
            log = DurableLog(store, retry_initial_s=0.0005, retry_max_s=0.002)
            await log.start()
            resolved: list[int] = []
            futures = []
            for i, (room, pause) in enumerate(appends):
                fut = log.append(room, b"c%03d" % i, b"d%03d" % i)
                fut.add_done_callback(lambda f, i=i: resolved.append(i))
                futures.append(fut)
                for _ in range(pause):  # let some commits (and failures) happen meanwhile
                    await asyncio.sleep(0.0005 if pause == 3 else 0)
            await asyncio.wait_for(asyncio.gather(*futures), 20)
            assert resolved == sorted(resolved) == list(range(len(appends)))
            for room in (ROOM, OTHER):
                expected = [b"d%03d" % i for i, (r, _) in enumerate(appends) if r == room]
                assert list(store.changes(room)) == expected
            await log.close()

    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(run(Path(tmp) / "db"))


async def test_unknown_room_fails_only_its_own_appends_even_after_a_failure(
    tmp_path: Path
) -> None:
    with scripted(tmp_path / "db", [True]) as store:
        log = DurableLog(store, retry_initial_s=0.001)
        await log.start()
        good = log.append(ROOM, b"g", b"G")
        bad = log.append(b"\x09" * 32, b"b", b"B")
        results = await asyncio.gather(good, bad, return_exceptions=True)
        assert results[0] is None
        assert isinstance(results[1], UnknownRoom)
        assert results[1].reason is StoreErrorReason.UNKNOWN_ROOM
        await log.close()


async def test_close_retries_within_its_grace_then_gives_up(tmp_path: Path) -> None:
    with scripted(tmp_path / "db", [True] * 10_000) as store:
        log = DurableLog(store, retry_initial_s=0.001, retry_max_s=0.01)
        await log.start()
        futures = [log.append(ROOM, b"%d" % i, b"x") for i in range(3)]
        await asyncio.wait_for(log.close(grace_s=0.1), 10)
        for fut in futures:
            with pytest.raises(StoreClosed, match="disk_full"):
                fut.result()
        assert store.change_count(ROOM) == 0
        assert log.failed_commits >= 2  # it did retry before giving up


async def test_close_flushes_what_failed_once_the_store_works(tmp_path: Path) -> None:
    with scripted(tmp_path / "db", [True, True]) as store:
        log = DurableLog(store, retry_initial_s=0.001)
        await log.start()
        futures = [log.append(ROOM, b"%d" % i, b"x") for i in range(5)]
        await log.close(grace_s=10)
        assert all(f.done() and f.exception() is None for f in futures)
        assert store.change_count(ROOM) == 5


async def test_applied_changes_are_kept_beyond_max_pending(tmp_path: Path) -> None:
    with scripted(tmp_path / "db", [True] * 5) as store:
        log = DurableLog(store, max_pending=2, retry_initial_s=0.001)
        await log.start()
        futures = [log.append(ROOM, b"%d" % i, b"x") for i in range(2)]
        with pytest.raises(StoreBusy) as busy:
            log.append(ROOM, b"bounded", b"x")
        assert busy.value.reason is StoreErrorReason.BUSY
        # A change the replica already applied must not be dropped: no StoreBusy for it.
        futures += [log.append(ROOM, b"a%d" % i, b"x", applied=True) for i in range(5)]
        assert log.pending == 7
        await asyncio.gather(*futures)
        assert store.change_count(ROOM) == 7
        await log.close()


async def test_append_refuses_what_could_never_be_written(tmp_path: Path) -> None:
    with scripted(tmp_path / "db", []) as store:
        log = DurableLog(store)
        await log.start()
        with pytest.raises(TypeError):
            log.append(ROOM, b"c", "not bytes")  # type: ignore[arg-type]
        await log.close()


async def test_aio_runs_store_calls_in_the_worker_thread(tmp_path: Path) -> None:
    with scripted(tmp_path / "db", []) as store:
        log = DurableLog(store)
        await log.start()
        name = await log.run(lambda: threading.current_thread().name)
        assert name.startswith("meshnode-store")
        assert name != threading.current_thread().name
        assert [r.name for r in await log.aio.rooms()] == ["lab", "other"]
        await log.aio.add_room(b"\x03" * 32, b"g3", "third", {"admit": "open"})
        await log.aio.update_room_settings(b"\x03" * 32, {"admit": "invite"})
        await log.aio.remember_peer("peer", "http://x", 1.0)
        assert await log.aio.known_peers() == [("peer", "http://x", 1.0)]
        await log.aio.set_value("k", "v")
        assert await log.aio.get_value("k") == "v"
        await log.append(ROOM, b"c", b"C")
        assert await log.aio.has_change(ROOM, b"c")
        assert await log.aio.changes(ROOM) == [b"C"]
        assert await log.aio.change_count(ROOM) == 1
        await log.aio.save_snapshot(ROOM, b"snap", 1)
        assert await log.aio.latest_snapshot(ROOM) == (b"snap", 1)
        await log.aio.forget_peer("peer")
        await log.aio.remove_room(b"\x03" * 32)
        await log.close()
        with pytest.raises(StoreClosed):
            await log.aio.rooms()


def _sqlite_error(code: int) -> sqlite3.Error:
    err = sqlite3.OperationalError("simulated")
    err.sqlite_errorcode = code  # as the sqlite3 module sets it
    return err


@pytest.mark.parametrize(("code", "reason"), [
    (13, StoreErrorReason.DISK_FULL),
    (10, StoreErrorReason.IO_ERROR),
    (10 | (3 << 8), StoreErrorReason.IO_ERROR),  # SQLITE_IOERR_WRITE: the low byte counts
    (5, StoreErrorReason.LOCKED),
    (6, StoreErrorReason.LOCKED),
    (8, StoreErrorReason.READ_ONLY),
    (11, StoreErrorReason.CORRUPT),
    (1, StoreErrorReason.OTHER),
])
def test_sqlite_errors_get_a_typed_reason(code: int, reason: StoreErrorReason) -> None:
    err = _translate(_sqlite_error(code), Path("/data/meshnode.db"), "appending changes")
    assert err.reason is reason
    assert "/data/meshnode.db" in str(err)
