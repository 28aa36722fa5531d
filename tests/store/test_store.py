"""ChangeStore: every method, persistence across reopen, refusal of foreign/corrupt/newer files."""

from __future__ import annotations

import os
import sqlite3
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meshnode.store import SCHEMA_VERSION, ChangeStore, RoomRecord, StoreError, UnknownRoom
from meshnode.store import sqlite as store_sqlite

# A hang is a bug here; fail fast instead of waiting for the suite-wide timeout.
pytestmark = pytest.mark.timeout(60)

ROOM = b"\x01" * 32
OTHER = b"\x02" * 32


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "data" / "meshnode.db"


@pytest.fixture
def store(db: Path) -> Iterator[ChangeStore]:
    with ChangeStore.open(db) as s:
        s.add_room(ROOM, b"genesis-1", "lab", {"max_users": 20})
        yield s


def raw(db: Path) -> sqlite3.Connection:
    """An independent connection, to see only what was committed."""
    return sqlite3.connect(db)


# --------------------------------------------------------------------------- open / close


def test_open_creates_wal_database_with_private_mode(db: Path) -> None:
    with ChangeStore.open(db) as s:
        s.set_value("k", "v")  # makes SQLite create the -wal and -shm files
        assert stat.S_IMODE(db.stat().st_mode) == 0o600
        for suffix in ("-wal", "-shm"):
            side = db.with_name(db.name + suffix)
            assert side.exists()
            assert stat.S_IMODE(side.stat().st_mode) & 0o077 == 0, suffix
        with raw(db) as c:
            assert c.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
            assert c.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[
                0
            ] == str(SCHEMA_VERSION)


def test_private_mode_despite_permissive_umask(db: Path) -> None:
    old = os.umask(0)
    try:
        ChangeStore.open(db).close()
    finally:
        os.umask(old)
    assert stat.S_IMODE(db.stat().st_mode) == 0o600


@pytest.mark.parametrize(("mode", "expected"), [("full", 2), ("NORMAL", 1)])
def test_pragmas(db: Path, mode: str, expected: int) -> None:
    with ChangeStore.open(db, synchronous=mode) as s:
        conn = s._conn
        assert conn is not None
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == expected
        assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_bad_synchronous_mode(db: Path) -> None:
    with pytest.raises(ValueError, match="synchronous"):
        ChangeStore.open(db, synchronous="off")


def test_close_twice_and_use_after_close(db: Path) -> None:
    s = ChangeStore.open(db)
    s.close()
    s.close()
    assert s.closed
    with pytest.raises(StoreError, match="closed"):
        s.rooms()
    with pytest.raises(StoreError, match="closed"):
        s.set_value("a", "b")


def test_reopen_keeps_everything(db: Path) -> None:
    with ChangeStore.open(db) as s:
        s.add_room(ROOM, b"g", "lab", {"a": [1, 2], "b": None})
        s.append_changes(ROOM, [(b"c1", b"one"), (b"c2", b"two")])
        s.save_snapshot(ROOM, b"snap", 2)
        s.remember_peer("12D3KooWA", "wss://a.example", 10.0)
        s.set_value("identity", "x")
    with ChangeStore.open(db, synchronous="normal") as s:
        [room] = s.rooms()
        assert (room.room_id, room.genesis, room.name, room.settings) == (
            ROOM,
            b"g",
            "lab",
            {"a": [1, 2], "b": None},
        )
        assert list(s.changes(ROOM)) == [b"one", b"two"]
        assert s.latest_snapshot(ROOM) == (b"snap", 2)
        assert s.known_peers() == [("12D3KooWA", "wss://a.example", 10.0)]
        assert s.get_value("identity") == "x"


# --------------------------------------------------------------------------- refusals


def test_refuses_newer_schema_and_leaves_file_alone(db: Path) -> None:
    ChangeStore.open(db).close()
    with raw(db) as c:
        c.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(99),))
    before = db.read_bytes()
    with pytest.raises(StoreError, match=r"schema version 99.*newer meshnode.*Upgrade"):
        ChangeStore.open(db)
    assert db.read_bytes() == before


def test_refuses_text_file(db: Path) -> None:
    db.parent.mkdir(parents=True)
    db.write_text("this is my shopping list\n" * 100)
    before = db.read_bytes()
    with pytest.raises(StoreError, match=r"not a meshnode database.*will not overwrite.*backup"):
        ChangeStore.open(db)
    assert db.read_bytes() == before


def test_refuses_garbage_after_sqlite_header(db: Path) -> None:
    db.parent.mkdir(parents=True)
    db.write_bytes(b"SQLite format 3\x00" + os.urandom(8192))
    with pytest.raises(StoreError, match="corrupt"):
        ChangeStore.open(db)


def test_refuses_foreign_sqlite_database_untouched(db: Path) -> None:
    db.parent.mkdir(parents=True)
    with raw(db) as c:
        c.execute("CREATE TABLE photos (id INTEGER PRIMARY KEY)")
    c.close()
    before = db.read_bytes()
    with pytest.raises(StoreError, match="not a meshnode one"):
        ChangeStore.open(db)
    assert db.read_bytes() == before  # not even switched to WAL


def test_corrupt_page_is_refused_at_open_and_found_by_reads(db: Path) -> None:
    with ChangeStore.open(db) as s:
        s.add_room(ROOM, b"g", "lab", {})
        s.append_changes(ROOM, [(os.urandom(16), os.urandom(500)) for _ in range(2000)])
    page = 4096
    assert db.stat().st_size > 20 * page
    # Damage the second half of the file, which holds rows and index pages the reads below
    # must touch; page 1 (the schema) stays intact, so only a check or a read can notice.
    pages = db.stat().st_size // page
    with db.open("r+b") as f:
        f.seek(pages // 2 * page)
        f.write(b"\xa5" * page * (pages - pages // 2))
    with pytest.raises(StoreError, match=r"corrupt.*restore them from a backup"):
        ChangeStore.open(db)
    # Without the startup check the damage still surfaces as a StoreError, never silently.
    with ChangeStore.open(db, quick_check=False) as s:
        with pytest.raises(StoreError, match="corrupt"):
            s.check_integrity()
        with pytest.raises(StoreError, match="corrupt"):
            list(s.changes(ROOM))


def test_unreadable_path_is_a_store_error(tmp_path: Path) -> None:
    (tmp_path / "meshnode.db").mkdir()
    with pytest.raises(StoreError, match="cannot open"):
        ChangeStore.open(tmp_path / "meshnode.db")


def test_zero_byte_file_is_initialised(db: Path) -> None:
    # What a crash right after creating the file leaves behind.
    db.parent.mkdir(parents=True)
    db.touch()
    with ChangeStore.open(db) as s:
        assert s.rooms() == []


# --------------------------------------------------------------------------- rooms


def test_add_room_is_idempotent(store: ChangeStore) -> None:
    store.add_room(ROOM, b"genesis-1", "renamed?", {"other": 1})
    [room] = store.rooms()
    assert isinstance(room, RoomRecord)
    assert room.name == "lab"
    assert room.settings == {"max_users": 20}
    assert room.created_at > 0


def test_add_room_with_other_genesis_conflicts(store: ChangeStore) -> None:
    with pytest.raises(StoreError, match="different genesis"):
        store.add_room(ROOM, b"genesis-2", "lab", {})


def test_rooms_listed_oldest_first(store: ChangeStore) -> None:
    store.add_room(OTHER, b"g2", "classroom", {})
    assert [r.room_id for r in store.rooms()] == [ROOM, OTHER]


def test_update_room_settings(store: ChangeStore) -> None:
    store.update_room_settings(ROOM, {"max_users": 5, "public": True})
    assert store.rooms()[0].settings == {"max_users": 5, "public": True}
    with pytest.raises(UnknownRoom) as info:
        store.update_room_settings(OTHER, {})
    assert info.value.room_ids == {OTHER}


def test_settings_must_be_json(store: ChangeStore) -> None:
    with pytest.raises(TypeError):
        store.add_room(OTHER, b"g", "x", {"bad": object()})
    assert len(store.rooms()) == 1


def test_remove_room_cascades(store: ChangeStore, db: Path) -> None:
    store.add_room(OTHER, b"g2", "other", {})
    store.append_changes(ROOM, [(b"a", b"A"), (b"b", b"B")])
    store.append_changes(OTHER, [(b"a", b"OA")])
    store.save_snapshot(ROOM, b"s", 2)
    store.remove_room(ROOM)
    store.remove_room(ROOM)  # no-op
    assert [r.room_id for r in store.rooms()] == [OTHER]
    assert store.change_count(ROOM) == 0
    assert list(store.changes(ROOM)) == []
    assert store.latest_snapshot(ROOM) is None
    assert list(store.changes(OTHER)) == [b"OA"]
    with raw(db) as c:
        assert c.execute("SELECT count(*) FROM changes WHERE room_id=?", (ROOM,)).fetchone() == (0,)
        assert c.execute("SELECT count(*) FROM snapshots").fetchone() == (0,)
    # The room can come back, with an empty log.
    store.add_room(ROOM, b"genesis-1", "lab", {})
    assert store.change_count(ROOM) == 0


# --------------------------------------------------------------------------- change log


def test_append_counts_new_and_ignores_duplicates(store: ChangeStore) -> None:
    assert store.append_changes(ROOM, [(b"a", b"A"), (b"b", b"B"), (b"a", b"A2")]) == 2
    assert store.append_changes(ROOM, [(b"b", b"B-again"), (b"c", b"C")]) == 1
    assert store.append_changes(ROOM, []) == 0
    assert list(store.changes(ROOM)) == [b"A", b"B", b"C"]  # first bytes win
    assert store.change_count(ROOM) == 3


def test_change_ids_are_per_room(store: ChangeStore) -> None:
    store.add_room(OTHER, b"g2", "other", {})
    assert store.append_changes(ROOM, [(b"x", b"1")]) == 1
    assert store.append_changes(OTHER, [(b"x", b"2")]) == 1
    assert store.has_change(ROOM, b"x")
    assert store.has_change(OTHER, b"x")
    assert not store.has_change(ROOM, b"y")
    assert not store.has_change(b"nope", b"x")


def test_insertion_order_interleaved_rooms(store: ChangeStore) -> None:
    store.add_room(OTHER, b"g2", "other", {})
    for i in range(10):
        store.append_changes(ROOM if i % 2 else OTHER, [(bytes([i]), bytes([100 - i]))])
    assert list(store.changes(ROOM)) == [bytes([100 - i]) for i in range(1, 10, 2)]
    assert list(store.changes(OTHER)) == [bytes([100 - i]) for i in range(0, 10, 2)]


def test_changes_streams_in_batches(store: ChangeStore) -> None:
    n = store_sqlite._STREAM_BATCH * 3 + 7
    store.append_changes(ROOM, [(i.to_bytes(4, "big"), i.to_bytes(4, "big")) for i in range(n)])
    it = store.changes(ROOM)
    assert next(it) == (0).to_bytes(4, "big")
    # A writer can get in between batches: the iterator holds no lock or read transaction.
    store.append_changes(ROOM, [(b"late", b"late")])
    rest = list(it)
    assert rest[-1] == b"late"
    assert [int.from_bytes(x, "big") for x in rest[:-1]] == list(range(1, n))
    assert store.change_count(ROOM) == n + 1


def test_append_to_unknown_room_writes_nothing(store: ChangeStore) -> None:
    with pytest.raises(UnknownRoom) as info:
        store.append_many([(ROOM, b"a", b"A"), (OTHER, b"b", b"B")])
    assert info.value.room_ids == {OTHER}
    assert store.change_count(ROOM) == 0


def test_append_many_spans_rooms(store: ChangeStore) -> None:
    store.add_room(OTHER, b"g2", "other", {})
    assert store.append_many([(ROOM, b"a", b"A"), (OTHER, b"a", b"OA"), (ROOM, b"a", b"X")]) == 2
    assert list(store.changes(ROOM)) == [b"A"]
    assert list(store.changes(OTHER)) == [b"OA"]


def test_append_is_committed_on_return(store: ChangeStore, db: Path) -> None:
    store.append_changes(ROOM, [(b"a", b"A")])
    with raw(db) as c:
        assert c.execute("SELECT data FROM changes").fetchall() == [(b"A",)]


def test_failed_transaction_rolls_back(store: ChangeStore) -> None:
    # An item that is not bytes makes executemany fail after earlier rows were inserted.
    with pytest.raises(StoreError, match="appending changes failed"):
        store.append_many([(ROOM, b"a", b"A"), (ROOM, b"b", object())])  # type: ignore[list-item]
    assert store.change_count(ROOM) == 0
    assert store.append_changes(ROOM, [(b"a", b"A")]) == 1


# --------------------------------------------------------------------------- snapshots


def test_snapshot_keeps_only_latest(store: ChangeStore, db: Path) -> None:
    assert store.latest_snapshot(ROOM) is None
    store.save_snapshot(ROOM, b"s1", 10)
    store.save_snapshot(ROOM, b"s2", 25)
    assert store.latest_snapshot(ROOM) == (b"s2", 25)
    with raw(db) as c:
        assert c.execute("SELECT count(*) FROM snapshots").fetchone() == (1,)
    with pytest.raises(UnknownRoom):
        store.save_snapshot(OTHER, b"s", 0)
    with pytest.raises(ValueError):
        store.save_snapshot(ROOM, b"s", -1)


# --------------------------------------------------------------------------- peers


def test_peers_upsert_order_limit_forget(store: ChangeStore) -> None:
    store.remember_peer("p1", "wss://1", 100.0)
    store.remember_peer("p2", "wss://2", 300.0)
    store.remember_peer("p3", "wss://3", 200.0)
    assert [p for p, _, _ in store.known_peers()] == ["p2", "p3", "p1"]
    assert store.known_peers(limit=1) == [("p2", "wss://2", 300.0)]
    assert store.known_peers(limit=0) == []
    store.remember_peer("p1", "wss://1b", 400.0)  # upsert: new address, seen later
    assert store.known_peers()[0] == ("p1", "wss://1b", 400.0)
    store.remember_peer("p1", "wss://stale", 50.0)  # an older sighting changes nothing
    assert store.known_peers()[0] == ("p1", "wss://1b", 400.0)
    store.forget_peer("p1")
    store.forget_peer("p1")
    assert [p for p, _, _ in store.known_peers()] == ["p2", "p3"]


def test_address_book_is_bounded(tmp_path: Path) -> None:
    with ChangeStore.open(tmp_path / "m.db", max_peers=3) as s:
        for i in range(10):
            s.remember_peer(f"p{i}", "wss://x", float(i))
        assert [p for p, _, _ in s.known_peers()] == ["p9", "p8", "p7"]


# --------------------------------------------------------------------------- node state


def test_key_value(store: ChangeStore) -> None:
    assert store.get_value("missing") is None
    store.set_value("k", "v1")
    store.set_value("k", "v2")
    store.set_value("empty", "")
    assert store.get_value("k") == "v2"
    assert store.get_value("empty") == ""


# --------------------------------------------------------------------------- property


_ids = st.binary(min_size=1, max_size=3)
_ops = st.lists(
    st.lists(st.tuples(st.sampled_from([ROOM, OTHER]), _ids, st.binary(max_size=8)), max_size=8),
    max_size=12,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches=_ops)
def test_appends_with_duplicates_keep_unique_first_seen_order(
    batches: list[list[tuple[bytes, bytes, bytes]]],
) -> None:
    expected: dict[bytes, dict[bytes, bytes]] = {ROOM: {}, OTHER: {}}
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "m.db"
        with ChangeStore.open(path, synchronous="normal") as s:
            s.add_room(ROOM, b"g1", "a", {})
            s.add_room(OTHER, b"g2", "b", {})
            for batch in batches:
                new = 0
                for room, cid, data in batch:
                    if cid not in expected[room]:
                        expected[room][cid] = data  # dicts keep first insertion order
                        new += 1
                if len({r for r, _, _ in batch}) == 1:
                    room = batch[0][0]
                    got = s.append_changes(room, [(c, x) for _, c, x in batch])
                else:
                    got = s.append_many(batch)
                assert got == new
        with ChangeStore.open(path) as s:
            for room in (ROOM, OTHER):
                assert list(s.changes(room)) == list(expected[room].values())
                assert s.change_count(room) == len(expected[room])
                for cid in expected[room]:
                    assert s.has_change(room, cid)
