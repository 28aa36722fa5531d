"""The store's file: created private (0600), checked before SQLite touches it, its schema
written or migrated (``SCHEMA_VERSION``) and its connection configured (WAL, synchronous,
foreign keys, busy timeout). A foreign, corrupt or newer file is refused untouched."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from meshnode.store.errors import StoreError, _corrupt, _translate

SCHEMA_VERSION = 2
"""The schema this code writes; older schemas are migrated, newer ones are refused.
2: adds ``dht_peers`` (the DHT routing table kept across restarts)."""

_SQLITE_MAGIC = b"SQLite format 3\x00"

# After a checkpoint SQLite truncates the WAL file back to this size, so a burst of writes does
# not leave a huge file behind for ever.
_JOURNAL_SIZE_LIMIT = 64 * 1024 * 1024

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS rooms (
    room_id    BLOB PRIMARY KEY,
    genesis    BLOB NOT NULL,
    name       TEXT NOT NULL,
    settings   TEXT NOT NULL,
    created_at REAL NOT NULL
);

-- seq is the rowid: it only grows within a room, so ORDER BY seq is insertion order.
CREATE TABLE IF NOT EXISTS changes (
    seq       INTEGER PRIMARY KEY,
    room_id   BLOB NOT NULL REFERENCES rooms(room_id) ON DELETE CASCADE,
    change_id BLOB NOT NULL,
    data      BLOB NOT NULL,
    UNIQUE (room_id, change_id)
);
CREATE INDEX IF NOT EXISTS changes_by_room ON changes(room_id, seq);

CREATE TABLE IF NOT EXISTS snapshots (
    room_id      BLOB PRIMARY KEY REFERENCES rooms(room_id) ON DELETE CASCADE,
    data         BLOB NOT NULL,
    change_count INTEGER NOT NULL,
    saved_at     REAL NOT NULL
);

CREATE TABLE IF NOT EXISTS peers (
    peer_id TEXT PRIMARY KEY,
    url     TEXT NOT NULL,
    seen_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS peers_by_seen ON peers(seen_at);

-- The DHT's routing table (meshnode.discovery), kept across restarts: libp2p multiaddrs as a
-- JSON list of strings.
CREATE TABLE IF NOT EXISTS dht_peers (
    peer_id TEXT PRIMARY KEY,
    addrs   TEXT NOT NULL,
    seen_at REAL NOT NULL
);

CREATE TABLE IF NOT EXISTS kv (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;
"""


def _create_private_file(path: Path) -> bool:
    """Create ``path`` empty with mode 0600; False if it already existed."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    try:
        # The umask can only remove bits, but be exact. SQLite gives the -wal and -shm files the
        # mode of the database file, so they are private too.
        os.fchmod(fd, 0o600)
        os.fsync(fd)
    finally:
        os.close(fd)
    # Make the new directory entry itself durable; SQLite only syncs the directory for the files
    # it creates (journal, WAL).
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return True


def _check_header(path: Path) -> None:
    """Refuse a non-empty file that is not SQLite before SQLite gets a chance to touch it."""
    with path.open("rb") as f:
        head = f.read(len(_SQLITE_MAGIC))
    if head and head != _SQLITE_MAGIC:
        raise _corrupt(path, "no SQLite header")


def _configure(conn: sqlite3.Connection, path: Path, mode: str, quick_check: bool) -> None:
    """Check a freshly opened connection's file, configure it, and write or migrate its schema
    (``ChangeStore.open``)."""
    try:
        # Everything that can refuse the file runs before the first write (journal_mode=WAL
        # rewrites the header of a rollback-journal database), so a refused file is left
        # exactly as it was.
        _schema_version(conn, path)
        if quick_check:
            rows = [str(r[0]) for r in conn.execute("PRAGMA quick_check")]
            if rows != ["ok"]:
                raise _corrupt(path, "; ".join(rows[:5]))
        journal = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(journal).lower() != "wal":
            raise StoreError(
                f"cannot put {path} in WAL mode (SQLite answered {journal!r}); put the "
                f"data directory on a local file system that supports shared memory"
            )
        conn.execute(f"PRAGMA synchronous={mode}")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute(f"PRAGMA journal_size_limit={_JOURNAL_SIZE_LIMIT}")
        # Another process (a backup, the sqlite3 shell) may hold a lock briefly.
        conn.execute("PRAGMA busy_timeout=5000")
        conn.execute("BEGIN IMMEDIATE")
        try:
            # Read again under the write lock: another process may have created it since.
            if _schema_version(conn, path) < SCHEMA_VERSION:
                # Version 0 is a new file; 1 -> 2 adds a table. Every statement is
                # CREATE ... IF NOT EXISTS, so rerunning them is the migration.
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute(
                    "INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', ?)",
                    (str(SCHEMA_VERSION),),
                )
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
    except sqlite3.Error as exc:
        raise _translate(exc, path, "opening the store") from exc


def _schema_version(conn: sqlite3.Connection, path: Path) -> int:
    """The file's schema version (0 if empty); refuses foreign and newer databases."""
    # Reading sqlite_master makes SQLite parse page 1: a damaged header fails here.
    tables = {
        row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
    }
    if not tables:
        return 0
    if "meta" not in tables:
        raise StoreError(
            f"{path} is an SQLite database but not a meshnode one (tables: "
            f"{', '.join(sorted(tables))}); point the node at another data directory"
        )
    row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    if row is None or not str(row[0]).isdigit():
        raise _corrupt(path, "missing or invalid schema_version")
    version = int(row[0])
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"{path} has schema version {version}, written by a newer meshnode; this one "
            f"understands up to version {SCHEMA_VERSION}. Upgrade meshnode (downgrading "
            f"would lose data), or restore a backup made by this version."
        )
    return version
