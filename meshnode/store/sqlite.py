"""The node's durable store: one SQLite database file per node, in WAL mode.

It holds, per room, the append-only log of signed change bytes and the latest snapshot; the
address book of peers; and a small key/value table for node state. :class:`ChangeStore` is
synchronous; :class:`meshnode.store.durable.DurableLog` drives it from the event loop.

Durability: with ``synchronous="full"`` (the default) a write method returns only after SQLite
has fsynced the WAL, so the data survives a process crash *and* a power loss. With
``synchronous="normal"`` it survives a process crash (``kill -9``) but the last transactions may
be lost on power loss or an OS crash; it is several times faster on slow disks.

The connection is opened with ``check_same_thread=False`` and every method takes an internal lock,
so the store may be called from a worker thread and from the event loop thread, never at the same
moment. From the event loop prefer ``await asyncio.to_thread(...)``: a call that waits on the lock
while a commit fsyncs blocks the loop for that long.

This module holds the store's tables and their queries; how it fails is in
``meshnode.store.errors``, and its file (creation, schema, migration, connection settings) in
``meshnode.store.schema``.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

from meshnode.store.errors import _SQLITE_BUSY as _SQLITE_BUSY
from meshnode.store.errors import _SQLITE_CANTOPEN as _SQLITE_CANTOPEN
from meshnode.store.errors import _SQLITE_CORRUPT as _SQLITE_CORRUPT
from meshnode.store.errors import _SQLITE_FULL as _SQLITE_FULL
from meshnode.store.errors import _SQLITE_IOERR as _SQLITE_IOERR
from meshnode.store.errors import _SQLITE_LOCKED as _SQLITE_LOCKED
from meshnode.store.errors import _SQLITE_NOTADB as _SQLITE_NOTADB
from meshnode.store.errors import _SQLITE_PERM as _SQLITE_PERM
from meshnode.store.errors import _SQLITE_READONLY as _SQLITE_READONLY
from meshnode.store.errors import StoreError, StoreErrorReason, UnknownRoom
from meshnode.store.errors import _corrupt as _corrupt
from meshnode.store.errors import _corrupt_message as _corrupt_message
from meshnode.store.errors import _translate as _translate
from meshnode.store.schema import _JOURNAL_SIZE_LIMIT as _JOURNAL_SIZE_LIMIT
from meshnode.store.schema import _SCHEMA as _SCHEMA
from meshnode.store.schema import _SQLITE_MAGIC as _SQLITE_MAGIC
from meshnode.store.schema import SCHEMA_VERSION, _configure, _schema_version
from meshnode.store.schema import _check_header as _check_header
from meshnode.store.schema import _create_private_file as _create_private_file

__all__ = [
    "DB_FILENAME",
    "SCHEMA_VERSION",
    "ChangeStore",
    "RoomRecord",
    "StoreError",
    "StoreErrorReason",
    "UnknownRoom",
]

DB_FILENAME = "meshnode.db"
"""Conventional name of the database file inside a node's data directory."""

# Rows fetched per query when streaming a room's log: big enough to amortise the query, small
# enough that a huge room never sits in memory.
_STREAM_BATCH = 256


@dataclass(frozen=True, slots=True)
class RoomRecord:
    """A room this node hosts, as stored."""

    room_id: bytes
    genesis: bytes
    name: str
    settings: dict[str, object]
    created_at: float


class ChangeStore:
    """The node's SQLite store: rooms, their change logs and snapshots, peers, node state.

    Create it with :meth:`open`; close it with :meth:`close` or use it as a context manager.
    Storage failures raise :class:`StoreError` (or its subclass :class:`UnknownRoom`); invalid
    arguments raise ``ValueError`` or ``TypeError``.
    """

    def __init__(self, conn: sqlite3.Connection, path: Path, *, max_peers: int) -> None:
        """Wrap an open, configured connection; use :meth:`open` instead."""
        self._conn: sqlite3.Connection | None = conn
        self._path = path
        self._max_peers = max_peers
        # RLock: a subclass (or a test double) may call one public method from another.
        self._lock = threading.RLock()

    # ------------------------------------------------------------------ lifecycle

    # The steps of ``open`` that check and set up the file (``meshnode.store.schema``).
    _configure = staticmethod(_configure)
    _schema_version = staticmethod(_schema_version)

    @classmethod
    def open(
        cls,
        path: Path,
        *,
        synchronous: str = "full",
        max_peers: int = 10_000,
        quick_check: bool = True,
    ) -> Self:
        """Open (creating if needed, mode 0600) the database at ``path``.

        ``synchronous`` is ``"full"`` (durable across power loss) or ``"normal"`` (durable
        across a process crash only). ``max_peers`` bounds the address book: the least recently
        seen peers are forgotten beyond it. ``quick_check`` runs SQLite's ``quick_check`` over
        the whole file (about 1 ms per MB when cached) so that a damaged store is refused at
        startup rather than half-served.

        Raises :class:`StoreError` if the file is not a meshnode database, is corrupt, or was
        written by a newer meshnode; the file is then left untouched.
        """
        mode = synchronous.upper()
        if mode not in ("FULL", "NORMAL"):
            raise ValueError(f"synchronous must be 'full' or 'normal', not {synchronous!r}")
        if max_peers < 1:
            raise ValueError("max_peers must be at least 1")
        path = Path(path)
        try:
            if not _create_private_file(path):
                _check_header(path)
        except OSError as exc:
            raise StoreError(f"cannot open the store {path}: {exc}") from exc
        try:
            # isolation_level=None: no implicit transactions; the write methods BEGIN IMMEDIATE
            # themselves so that a write never has to upgrade a read lock (which can fail).
            conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        except sqlite3.Error as exc:
            raise _translate(exc, path, "opening the store") from exc
        try:
            cls._configure(conn, path, mode, quick_check)
        except BaseException:
            conn.close()
            raise
        return cls(conn, path, max_peers=max_peers)

    @property
    def path(self) -> Path:
        """The database file."""
        return self._path

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._conn is None

    def close(self) -> None:
        """Close the database; safe to call twice. Other methods then raise StoreError."""
        with self._lock:
            conn, self._conn = self._conn, None
            if conn is not None:
                conn.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @contextmanager
    def _read(self, action: str) -> Iterator[sqlite3.Connection]:
        with self._lock:
            conn = self._conn
            if conn is None:
                raise StoreError(
                    f"{action}: the store at {self._path} is closed", StoreErrorReason.CLOSED
                )
            try:
                yield conn
            except sqlite3.Error as exc:
                raise _translate(exc, self._path, action) from exc

    @contextmanager
    def _write(self, action: str) -> Iterator[sqlite3.Connection]:
        with self._read(action) as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                # A failed COMMIT (disk full, I/O error) can leave the transaction open.
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

    def check_integrity(self) -> None:
        """Run SQLite's full ``integrity_check``; raise :class:`StoreError` if it finds damage.

        It reads the whole file, so call it at startup or from a maintenance command, not on a
        hot path.
        """
        with self._read("checking integrity") as conn:
            rows = [str(r[0]) for r in conn.execute("PRAGMA integrity_check")]
        if rows != ["ok"]:
            raise _corrupt(self._path, "; ".join(rows[:5]))

    # ------------------------------------------------------------------ rooms

    def add_room(
        self, room_id: bytes, genesis: bytes, name: str, settings: dict[str, object]
    ) -> None:
        """Record a room; a no-op if it is already there with the same genesis.

        ``settings`` must be JSON-serialisable. Adding an existing room keeps its stored name
        and settings (use :meth:`update_room_settings`); a different genesis for the same
        ``room_id`` raises :class:`StoreError`, as it means two different rooms collide.
        """
        encoded = json.dumps(settings, sort_keys=True, separators=(",", ":"))
        with self._write("adding a room") as conn:
            row = conn.execute("SELECT genesis FROM rooms WHERE room_id = ?", (room_id,)).fetchone()
            if row is None:
                conn.execute(
                    "INSERT INTO rooms (room_id, genesis, name, settings, created_at)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (room_id, genesis, name, encoded, time.time()),
                )
            elif bytes(row[0]) != genesis:
                raise StoreError(f"room {room_id.hex()} is already stored with a different genesis")

    def update_room_settings(self, room_id: bytes, settings: dict[str, object]) -> None:
        """Replace a room's settings; raises :class:`UnknownRoom` if it is not stored."""
        encoded = json.dumps(settings, sort_keys=True, separators=(",", ":"))
        with self._write("updating room settings") as conn:
            cur = conn.execute(
                "UPDATE rooms SET settings = ? WHERE room_id = ?", (encoded, room_id)
            )
            if cur.rowcount == 0:
                raise UnknownRoom([room_id])

    def rooms(self) -> list[RoomRecord]:
        """All stored rooms, oldest first."""
        with self._read("listing rooms") as conn:
            rows = conn.execute(
                "SELECT room_id, genesis, name, settings, created_at FROM rooms"
                " ORDER BY created_at, room_id"
            ).fetchall()
        out = []
        for room_id, genesis, name, settings, created_at in rows:
            decoded = json.loads(settings)
            if not isinstance(decoded, dict):
                raise _corrupt(self._path, "room settings are not an object")
            out.append(RoomRecord(bytes(room_id), bytes(genesis), name, decoded, created_at))
        return out

    def remove_room(self, room_id: bytes) -> None:
        """Delete a room with its whole change log and snapshot; a no-op if it is not stored."""
        with self._write("removing a room") as conn:
            # foreign_keys=ON cascades to changes and snapshots in the same transaction.
            conn.execute("DELETE FROM rooms WHERE room_id = ?", (room_id,))

    # ------------------------------------------------------------------ change log

    def append_changes(self, room_id: bytes, items: Sequence[tuple[bytes, bytes]]) -> int:
        """Append ``(change_id, change_bytes)`` items to a room's log in one transaction.

        Items whose ``change_id`` is already in the room (or earlier in ``items``) are ignored;
        the stored bytes of a change never change. Returns how many were new. Raises
        :class:`UnknownRoom` (writing nothing) if the room is not stored.
        """
        return self.append_many([(room_id, cid, data) for cid, data in items])

    def append_many(self, items: Sequence[tuple[bytes, bytes, bytes]]) -> int:
        """Append ``(room_id, change_id, change_bytes)`` items, any rooms, in one transaction.

        All or nothing: if one room is unknown, :class:`UnknownRoom` lists every unknown room
        and nothing is written. Duplicates are ignored as in :meth:`append_changes`. Returns
        how many changes were new. When this returns, the changes are durable.
        """
        if not items:
            return 0
        with self._write("appending changes") as conn:
            room_ids = {item[0] for item in items}
            missing = [
                r
                for r in room_ids
                if conn.execute("SELECT 1 FROM rooms WHERE room_id = ?", (r,)).fetchone() is None
            ]
            if missing:
                raise UnknownRoom(missing)
            before = conn.total_changes
            conn.executemany(
                "INSERT OR IGNORE INTO changes (room_id, change_id, data) VALUES (?, ?, ?)",
                items,
            )
            return conn.total_changes - before

    def changes(self, room_id: bytes) -> Iterator[bytes]:
        """Stream a room's change bytes in insertion order.

        Rows are fetched in small batches, each in its own short read, so a slow consumer
        neither holds the store's lock nor keeps a read transaction open (which would stop WAL
        checkpoints and let the WAL file grow). Changes appended while iterating may appear at
        the end.
        """
        last_seq = -1
        while True:
            with self._read("reading changes") as conn:
                rows = conn.execute(
                    "SELECT seq, data FROM changes WHERE room_id = ? AND seq > ?"
                    " ORDER BY seq LIMIT ?",
                    (room_id, last_seq, _STREAM_BATCH),
                ).fetchall()
            for seq, data in rows:
                last_seq = seq
                yield bytes(data)
            if len(rows) < _STREAM_BATCH:
                return

    def change_count(self, room_id: bytes) -> int:
        """How many changes a room's log holds (0 for an unknown room)."""
        with self._read("counting changes") as conn:
            row = conn.execute(
                "SELECT count(*) FROM changes WHERE room_id = ?", (room_id,)
            ).fetchone()
        return int(row[0])

    def has_change(self, room_id: bytes, change_id: bytes) -> bool:
        """Whether a room's log holds this change."""
        with self._read("looking up a change") as conn:
            row = conn.execute(
                "SELECT 1 FROM changes WHERE room_id = ? AND change_id = ?", (room_id, change_id)
            ).fetchone()
        return row is not None

    def change_bytes(self, room_id: bytes, change_ids: Sequence[bytes]) -> dict[bytes, bytes]:
        """The stored bytes of some of a room's changes, by ID (those not stored are absent):
        how a replica that keeps history off the heap serves old changes."""
        out: dict[bytes, bytes] = {}
        with self._read("reading changes by ID") as conn:
            for i in range(0, len(change_ids), 500):
                part = list(change_ids[i:i + 500])
                marks = ",".join("?" * len(part))
                for cid, data in conn.execute(
                    f"SELECT change_id, data FROM changes WHERE room_id = ? AND change_id IN "
                    f"({marks})", (room_id, *part)):
                    out[bytes(cid)] = bytes(data)
        return out

    def compact(self, room_id: bytes, snapshot: bytes, change_count: int,
                drop: Sequence[bytes]) -> int:
        """Store a room's snapshot and delete the changes it summarises (``drop``: their IDs)
        in one transaction, so a crash leaves either the old snapshot and every change or
        the new snapshot and the rest. Returns how many changes were deleted. The file does
        not shrink: SQLite reuses the freed pages for later changes."""
        if change_count < 0:
            raise ValueError("change_count must not be negative")
        with self._write("compacting a room") as conn:
            _put_snapshot(conn, room_id, snapshot, change_count)
            before = conn.total_changes
            conn.executemany("DELETE FROM changes WHERE room_id = ? AND change_id = ?",
                             [(room_id, c) for c in drop])
            return conn.total_changes - before

    # ------------------------------------------------------------------ snapshots

    def save_snapshot(self, room_id: bytes, data: bytes, change_count: int) -> None:
        """Store a room's snapshot, replacing the previous one.

        ``change_count`` is how many log changes the snapshot covers. Raises
        :class:`UnknownRoom` if the room is not stored.
        """
        if change_count < 0:
            raise ValueError("change_count must not be negative")
        with self._write("saving a snapshot") as conn:
            _put_snapshot(conn, room_id, data, change_count)

    def latest_snapshot(self, room_id: bytes) -> tuple[bytes, int] | None:
        """The room's latest snapshot as ``(data, change_count)``, or None."""
        with self._read("reading a snapshot") as conn:
            row = conn.execute(
                "SELECT data, change_count FROM snapshots WHERE room_id = ?", (room_id,)
            ).fetchone()
        return None if row is None else (bytes(row[0]), int(row[1]))

    # ------------------------------------------------------------------ address book

    def remember_peer(self, peer_id: str, url: str, seen_at: float) -> None:
        """Record where a peer was seen; an older sighting than the stored one is ignored.

        Beyond ``max_peers`` the least recently seen peers are forgotten, so gossip about many
        peers cannot grow the file without bound.
        """
        with self._write("remembering a peer") as conn:
            conn.execute(
                "INSERT INTO peers (peer_id, url, seen_at) VALUES (?, ?, ?)"
                " ON CONFLICT (peer_id) DO UPDATE SET url = excluded.url,"
                " seen_at = excluded.seen_at WHERE excluded.seen_at >= peers.seen_at",
                (peer_id, url, seen_at),
            )
            (count,) = conn.execute("SELECT count(*) FROM peers").fetchone()
            if count > self._max_peers:
                conn.execute(
                    "DELETE FROM peers WHERE peer_id IN (SELECT peer_id FROM peers"
                    " ORDER BY seen_at, peer_id LIMIT ?)",
                    (count - self._max_peers,),
                )

    def known_peers(self, limit: int = 100) -> list[tuple[str, str, float]]:
        """Up to ``limit`` peers as ``(peer_id, url, seen_at)``, most recently seen first."""
        if limit < 0:
            raise ValueError("limit must not be negative")
        with self._read("listing peers") as conn:
            rows = conn.execute(
                "SELECT peer_id, url, seen_at FROM peers ORDER BY seen_at DESC, peer_id LIMIT ?",
                (limit,),
            ).fetchall()
        return [(str(p), str(u), float(s)) for p, u, s in rows]

    def forget_peer(self, peer_id: str) -> None:
        """Remove a peer from the address book; a no-op if it is not there."""
        with self._write("forgetting a peer") as conn:
            conn.execute("DELETE FROM peers WHERE peer_id = ?", (peer_id,))

    def remember_dht_peers(self, peers: Sequence[tuple[str, Sequence[str], float]],
                           limit: int = 512) -> None:
        """Record DHT peers ``(peer_id, multiaddrs, seen_at)`` (the discovery routing table);
        beyond ``limit`` the least recently seen are forgotten."""
        rows = [(p, json.dumps(list(a)), s) for p, a, s in peers]
        with self._write("remembering DHT peers") as conn:
            conn.executemany(
                "INSERT INTO dht_peers (peer_id, addrs, seen_at) VALUES (?, ?, ?)"
                " ON CONFLICT (peer_id) DO UPDATE SET addrs = excluded.addrs,"
                " seen_at = excluded.seen_at WHERE excluded.seen_at >= dht_peers.seen_at",
                rows,
            )
            conn.execute(
                "DELETE FROM dht_peers WHERE peer_id NOT IN (SELECT peer_id FROM dht_peers"
                " ORDER BY seen_at DESC, peer_id LIMIT ?)",
                (limit,),
            )

    def known_dht_peers(self, limit: int = 64) -> list[tuple[str, tuple[str, ...], float]]:
        """Up to ``limit`` DHT peers as ``(peer_id, multiaddrs, seen_at)``, most recent
        first (rows whose addresses do not parse are skipped)."""
        with self._read("listing DHT peers") as conn:
            rows = conn.execute(
                "SELECT peer_id, addrs, seen_at FROM dht_peers ORDER BY seen_at DESC,"
                " peer_id LIMIT ?", (max(0, limit),)).fetchall()
        out = []
        for peer, addrs, seen in rows:
            try:
                parsed = json.loads(addrs)
            except ValueError:
                continue
            if isinstance(parsed, list) and all(isinstance(a, str) for a in parsed):
                out.append((str(peer), tuple(parsed), float(seen)))
        return out

    # ------------------------------------------------------------------ node state

    def get_value(self, key: str) -> str | None:
        """A node-state value, or None if unset."""
        with self._read("reading node state") as conn:
            row = conn.execute("SELECT value FROM kv WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_value(self, key: str, value: str) -> None:
        """Set a node-state value (durably, like every write)."""
        with self._write("writing node state") as conn:
            conn.execute("INSERT OR REPLACE INTO kv (key, value) VALUES (?, ?)", (key, value))


def _put_snapshot(conn: sqlite3.Connection, room_id: bytes, data: bytes,
                  change_count: int) -> None:
    """Store a room's snapshot in place of the previous one (within the caller's write);
    :class:`UnknownRoom` if the room is not stored."""
    if conn.execute("SELECT 1 FROM rooms WHERE room_id = ?", (room_id,)).fetchone() is None:
        raise UnknownRoom([room_id])
    conn.execute(
        "INSERT INTO snapshots (room_id, data, change_count, saved_at)"
        " VALUES (?, ?, ?, ?)"
        " ON CONFLICT (room_id) DO UPDATE SET data = excluded.data,"
        " change_count = excluded.change_count, saved_at = excluded.saved_at",
        (room_id, data, change_count, time.time()),
    )
