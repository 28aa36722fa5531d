"""Join snapshots: what a joining client starts from, with its frontier near the room's heads.

A node's stored snapshot (``[store] snapshot_every``) has its frontier at the retention
frontier (``[store] history_days``): below it the room is summarised, above it every kept
change is listed, so that the node itself can restart from it plus its log and still serve
the whole retention window to other nodes. For a joining client that list is dead weight
(5.4 MB and 1.6 s at 100,000 kept changes, docs/performance.md): a client never serves
history, it only needs the room's state and enough of the graph to validate what comes next.

So ``JoinSnapshots`` keeps, per room, a separate signed snapshot whose frontier sits
``SETTLE_S`` behind the node's clock, or closer to the heads if more than ``MAX_LISTED``
changes are stamped after that (:func:`join_frontier`; ``SceneReplica.snapshot_job``): it
summarises the room below and lists at most about ``MAX_LISTED`` recent changes. It is what
``GET /api/rooms/{room}/snapshot`` serves (``?history=kept`` serves the stored one, which
joining nodes use). Guarantees:

* **Bounded cost.** A build exports the state on the loop (one pass over the changes'
  metadata, about 0.25 s at 100,000 unpruned changes) and encodes and signs it in a worker
  thread. It is rebuilt in the background when the room moved ``REFRESH_CHANGES`` changes,
  or any change and ``REFRESH_S`` seconds passed, never more often than every ``MIN_GAP_S``
  (:func:`refresh_due`, a pure decider); one build per room at a time.
* **Never wrong, at worst old.** A change the node applies stamped at or before the cached
  snapshot's frontier (an author that was offline, a slow path through the mesh) is one the
  snapshot's summary lacks: the cached snapshot is then *stale* and the next request waits
  for a fresh build rather than serve it. A client already started from the stale one
  refuses that change as ``behind_frontier`` and starts again from the node's next snapshot
  (``meshnode.client.room``). ``SETTLE_S`` makes that rare: changes reach a node within
  seconds of their stamp (in a burst of more than ``MAX_LISTED`` changes in ``SETTLE_S``,
  the frontier follows the burst: concurrent late changes then cost a client a restart).
* **The history stays.** Nothing is pruned: the node's replica, its store and its stored
  snapshot are untouched, so sync with other nodes, restarts and ``full_history`` audits
  work as before.
* **Signed by a member.** A node that is not a member by its own replica (its grant not
  applied yet) builds none: clients would refuse it.
* **Short histories** (under ``MIN_HISTORY`` changes) get none: replaying them costs a client
  less than a snapshot costs the node, and the endpoint serves the stored snapshot (or none)
  as it always did.
* **Private rooms** are sealed like every reader's snapshot (``meshnode.crdt.snapshot_seal``):
  a node that cannot seal now (a blind host; a reader waiting for a key) builds none, and the
  endpoint serves the stored snapshot (for a blind host, a reader's sealed one,
  ``meshnode.rooms.reader_snapshots``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from meshnode.crdt import SceneReplica
from meshnode.crdt.clock import hlc_from_seconds

__all__ = ["MAX_LISTED", "MIN_GAP_S", "MIN_HISTORY", "REFRESH_CHANGES", "REFRESH_S", "SETTLE_S",
           "JoinSnapshot", "JoinSnapshots", "join_frontier", "refresh_due"]

log = logging.getLogger("meshnode.node")

SETTLE_S = 30.0
"""The join snapshot's frontier lies this far behind the node's clock when it is built..."""
MAX_LISTED = 256
"""...or closer to the heads, so that it lists about this many changes at most."""
REFRESH_CHANGES = 1_000
"""Rebuild once the room moved this many changes past the cached join snapshot..."""
REFRESH_S = 60.0
"""...or moved at all and the cached one is this old..."""
MIN_GAP_S = 5.0
"""...but never two builds of one room closer than this (a busy room's bound on CPU)."""
MIN_HISTORY = 1_000
"""A room with fewer changes than this gets no join snapshot (its clients replay it)."""

Spawn = Callable[[Coroutine[Any, Any, None], str], object]


def refresh_due(moved: int, age_s: float | None) -> bool:
    """Whether to rebuild a room's join snapshot in the background: ``moved`` changes were
    applied since the cached one's export, which is ``age_s`` seconds old (None: none yet)."""
    if age_s is None:
        return True
    if age_s < MIN_GAP_S or moved == 0:
        return False
    return moved >= REFRESH_CHANGES or age_s >= REFRESH_S


def join_frontier(replica: SceneReplica, now: float) -> int:
    """The frontier (a hybrid clock stamp) of a join snapshot of ``replica`` built at wall
    clock ``now``: ``SETTLE_S`` before it, raised to the stamp of the ``MAX_LISTED``-th latest
    applied change if that is later (a burst of changes)."""
    frontier = hlc_from_seconds(now - SETTLE_S)
    recent = replica.recent_changes(MAX_LISTED + 1)
    if len(recent) > MAX_LISTED:
        stamp = replica.change_stamp(recent[0])
        if stamp is not None and stamp > frontier:
            frontier = stamp
    return frontier


@dataclass(frozen=True, slots=True)
class JoinSnapshot:
    """A built join snapshot: signed bytes, its frontier (a hybrid clock stamp) and when its
    export ran (monotonic seconds)."""

    data: bytes
    frontier: int
    exported_at: float


@dataclass(slots=True)
class _Room:
    snap: JoinSnapshot | None = None
    moved: int = 0
    stale: bool = False
    building: asyncio.Future[None] | None = None
    building_frontier: int | None = None
    declined_at: float | None = None  # when a background start last found it could not build


class JoinSnapshots:
    """The join snapshot of each hosted room (see the module docstring). ``spawn`` runs
    background builds (a ``TaskSet``'s); ``clock`` is the wall clock the frontier is taken
    from and ``mono`` the clock refreshes are paced by; ``min_history``: see
    ``MIN_HISTORY``."""

    def __init__(self, spawn: Spawn, *, clock: Callable[[], float] = time.time,
                 mono: Callable[[], float] = time.monotonic,
                 min_history: int = MIN_HISTORY) -> None:
        self._spawn = spawn
        self.min_history = min_history
        self._clock = clock
        self._mono = mono
        self._rooms: dict[bytes, _Room] = {}

    def cached(self, room_id: bytes) -> JoinSnapshot | None:
        """The room's cached join snapshot (None if none, or stale)."""
        room = self._rooms.get(room_id)
        return None if room is None or room.stale else room.snap

    def moved(self, replica: SceneReplica, change_id: bytes) -> None:
        """The node applied ``change_id`` to the room: count it, note a late change (stamped
        at or before the cached or building snapshot's frontier) and refresh when due."""
        room = self._rooms.setdefault(replica.room_id, _Room())
        room.moved += 1
        stamp = replica.change_stamp(change_id)
        if stamp is not None:
            frontiers = (room.building_frontier,
                         None if room.snap is None else room.snap.frontier)
            if any(f is not None and stamp <= f for f in frontiers):
                room.stale = True
        now = self._mono()
        if room.declined_at is not None and now - room.declined_at < MIN_GAP_S:
            return  # it could not build a moment ago (short history, not a member...)
        age = None if room.snap is None else now - room.snap.exported_at
        if room.building is None and refresh_due(room.moved, age):
            room.declined_at = None if self._start(replica, room) else now

    def warm(self, replica: SceneReplica) -> None:
        """Build the room's first join snapshot in the background (a node that starts or
        starts hosting a room), so the first client does not wait for it."""
        room = self._rooms.setdefault(replica.room_id, _Room())
        if room.building is None and room.snap is None:
            self._start(replica, room)

    async def get(self, replica: SceneReplica) -> bytes | None:
        """The room's join snapshot, built now if there is none fresh (waiting for a build
        under way); None if it has none to give (a short history, a private room it cannot
        seal now, a local batch open): serve the stored snapshot instead."""
        room = self._rooms.setdefault(replica.room_id, _Room())
        for _ in range(3):  # a change that goes stale mid-build: build once more, bounded
            if room.snap is not None and not room.stale:
                return room.snap.data
            if room.building is None and not self._start(replica, room):
                return None
            assert room.building is not None
            await asyncio.shield(room.building)
        return None if room.stale or room.snap is None else room.snap.data

    def _start(self, replica: SceneReplica, room: _Room) -> bool:
        """Export now and encode in a worker thread (``_build``); False if this replica
        cannot write a join snapshot now."""
        if replica.change_count() < self.min_history:
            return False
        if replica.role_of(replica.identity.public_key) == "none":
            # Not (yet) a member by its own replica (a node that joined by invite, its grant
            # on the way): clients refuse a snapshot signed by a non-member.
            return False
        if replica.private and not replica.snapshot_sealed:
            return False
        frontier = join_frontier(replica, self._clock())
        try:
            job = replica.snapshot_job(frontier)
        except RuntimeError:  # a local batch is open: next time
            return False
        exported_at = self._mono()
        moved, room.moved = room.moved, 0
        if room.stale:
            room.snap = None  # never served again, even while its successor is built
        room.stale = False
        room.building_frontier = frontier
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        room.building = done
        build = self._build(replica.room_id, room, job, frontier, exported_at, moved, done)
        if self._spawn(build, f"join snapshot {replica.room_id.hex()[:12]}") is None:
            build.close()  # the node is closing: no build, nobody waits
            room.building = room.building_frontier = None
            done.set_result(None)
            return False
        return True

    async def _build(self, room_id: bytes, room: _Room, job: Callable[[], bytes],
                     frontier: int, exported_at: float, moved: int,
                     done: asyncio.Future[None]) -> None:
        try:
            data = await asyncio.to_thread(job)
        except Exception:
            log.exception("room %s: the join snapshot could not be built", room_id.hex()[:16])
            room.moved += moved
        else:
            room.snap = JoinSnapshot(data, frontier, exported_at)
        finally:
            room.building = None
            room.building_frontier = None
            if not done.done():
                done.set_result(None)
