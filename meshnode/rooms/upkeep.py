"""The hosted rooms' state and their upkeep in the background: each room's snapshot, saved
every ``snapshot_every`` stored changes and at shutdown (pruning the history below the
retention frontier off the loop), and, in each private room this node reads, the keys
(shared with readers who lack them, rotated on schedule).

``RoomHost`` is one chain of classes, a file each: ``RoomUpkeep`` (``upkeep``: the hosted
rooms' state, snapshots and keys), ``RoomEvents`` (``room_events``: what each room's runtime
reports, stores and acknowledges), ``RoomLinks`` (``room_links``: the rooms on the links,
invites and admission) and ``RoomHost`` (``host``: hosting, creating and joining rooms, and
their members).
"""

import asyncio
import logging
import os
import random
import time
from collections.abc import Callable

from meshnode.config import NodeConfig
from meshnode.crdt import PermissionDenied, SceneReplica
from meshnode.identity import Identity
from meshnode.metrics import NodeMetrics
from meshnode.rooms.acks import AckBatcher
from meshnode.rooms.head_snapshots import JoinSnapshots
from meshnode.rooms.hosted import HostedRoom
from meshnode.rooms.key_upkeep import KeyUpkeep
from meshnode.rooms.loading import frontier_for, worth_compacting
from meshnode.rooms.reader_snapshots import ReaderSnapshots
from meshnode.rooms.sharing import RoomSharing
from meshnode.runtime.links import LinkManager, LinkService
from meshnode.runtime.tasks import TaskSet
from meshnode.store import ChangeStore, DurableLog, HistoryReader, StoreError

log = logging.getLogger("meshnode.node")

KEY_TICK_S = 0.5  # how often private rooms' key upkeep (auto-SHARE, rotation) looks


class RoomUpkeep(LinkService):
    """The state of a ``RoomHost`` and the upkeep of its rooms (see the module docstring)."""

    def __init__(self, identity: Identity, config: NodeConfig, store: ChangeStore,
                 durable: DurableLog, links: LinkManager, metrics: NodeMetrics, *,
                 url: Callable[[], str],
                 on_crash: Callable[[str, BaseException], None] | None = None) -> None:
        self.identity = identity
        self.peer_id = identity.public_id
        self.config = config
        self.store = store
        self.durable = durable
        self.links = links
        self.metrics = metrics
        self._url = url
        self.rooms: dict[bytes, HostedRoom] = {}
        self._tasks = TaskSet("rooms", on_crash)
        # One Ack per (client, room) per loop turn, for every change that became durable.
        self._acks = AckBatcher(links.send_link,
                                lambda flush: asyncio.get_running_loop().call_soon(flush))
        self.sharing = RoomSharing(self.rooms, links, metrics)
        self._members: dict[bytes, dict[str, str]] = {}  # per room, to notice role changes
        # Told the room ID of each invite redeemed (discovery dials the room's other hosts).
        self.on_join: Callable[[bytes], None] | None = None
        self._keys: dict[bytes, KeyUpkeep] = {}  # private rooms this node reads
        self._key_rng = random.Random(os.urandom(16))
        self._key_writing: set[bytes] = set()
        # Old history a peer asks for is read on this reader's own thread and connection,
        # never on the loop (meshnode.overlay.history_reads).
        self.history_reader = HistoryReader(store.path)
        links.register(self)
        # Readers' sealed snapshots handed to blind hosts (docs/protocol.md).
        self.reader_snapshots = ReaderSnapshots(self.rooms, links, metrics, self.peer_id,
                                                store.save_snapshot, self._tasks.spawn)
        # What joining clients start from: frontier near the heads (meshnode.rooms.
        # head_snapshots); the stored snapshot keeps the retention window for nodes.
        self.join_snapshots = JoinSnapshots(self._tasks.spawn)

    @property
    def url(self) -> str:
        """Where this node serves (known once HTTP is up)."""
        return self._url()

    # ------------------------------------------------------------------ private rooms' keys

    async def _key_loop(self) -> None:
        """Every ``KEY_TICK_S``: in each private room this node reads, share the keys with
        readers who lack them (after a jitter, unless another reader does first) and rotate
        on schedule (``meshnode.rooms.key_upkeep``). Blind hosts do nothing here."""
        while True:
            await asyncio.sleep(KEY_TICK_S)
            for room_id, hosted in list(self.rooms.items()):
                if hosted.runtime.replica.private and room_id not in self._key_writing:
                    self._key_tick(room_id, hosted)
                if hosted.runtime.replica.private:
                    self.reader_snapshots.tick(hosted)

    def _key_tick(self, room_id: bytes, hosted: HostedRoom) -> None:
        upkeep = self._keys.setdefault(room_id, KeyUpkeep(
            share_jitter_s=self.config.share_jitter_s,
            rotate_every_s=self.config.rotate_every_s))
        work = upkeep.plan(hosted.runtime.replica, self.identity.public_key,
                           time.monotonic(), self._key_rng, time.time())
        if work.empty:
            return
        self._key_writing.add(room_id)
        self._tasks.spawn(self._write_keys(room_id, hosted, work.shares, work.rotate),
                          f"keys {room_id.hex()[:12]}")

    async def _write_keys(self, room_id: bytes, hosted: HostedRoom, shares: tuple[bytes, ...],
                          rotate: bool) -> None:
        label = room_id.hex()[:16]

        def write(replica: SceneReplica) -> None:
            for member in shares:
                if member in replica.keyless_readers():
                    replica.share(member)
            if rotate:
                replica.rotate()

        started = time.perf_counter()
        try:
            await hosted.runtime.edit(write)
        except (PermissionDenied, ValueError, StoreError, ConnectionError) as err:
            log.warning("room %s: could not write keys: %s", label, err)
            return
        finally:
            self._key_writing.discard(room_id)
        if rotate:
            self.metrics.rotation_seconds.labels(label).observe(time.perf_counter() - started)
            log.info("room %s: keys rotated (scheduled)", label)
        if shares:
            self.metrics.key_shares.labels(label).inc(len(shares))
            log.info("room %s: keys shared with %d reader(s)", label, len(shares))

    def _snapshot(self, hosted: HostedRoom) -> None:
        """Save the room's snapshot in the background, unless a save is under way."""
        if hosted.stored_since_snapshot and not hosted.saving_snapshot:
            self._tasks.spawn(self._save_snapshot(hosted),
                              f"snapshot {hosted.runtime.room_id.hex()[:12]}")

    async def _save_snapshot(self, hosted: HostedRoom) -> None:
        # Encoded here, on the loop (the replica changes only there), written in a thread.
        replica = hosted.runtime.replica
        if hosted.stored_since_snapshot == 0 or hosted.saving_snapshot:
            return
        if replica.private and replica.is_reader() and not replica.snapshot_sealed:
            # A reader that cannot seal now (content waiting for a key, the next commit
            # rotates): keep the last sealed snapshot rather than write one it cannot open.
            return
        if hosted.reader_snapshot and not replica.is_reader():
            # A blind host serving a reader's sealed snapshot: its own (public part only)
            # would replace it; restarts replay the log after the reader's snapshot.
            hosted.stored_since_snapshot = 0
            return
        hosted.saving_snapshot = True
        try:
            covered = hosted.stored_since_snapshot
            retention = self.config.history_days * 86_400.0
            frontier = frontier_for(time.time(), retention)
            # A private room's scene is sealed in its snapshot (docs/protocol.md, "Sealed
            # snapshots"); only a reader that seals prunes it. A blind host writes the public
            # part only and keeps the whole history: the scene below a frontier would be
            # lost to the members who later join through it.
            prunable = not replica.private or replica.snapshot_sealed
            if retention > 0 and prunable and worth_compacting(replica, frontier):
                # Prune below the retention frontier (docs/operators.md, "Pruning rule").
                data = await self._compact(replica, frontier)
            else:
                data, count = replica.snapshot(), replica.change_count()
                await asyncio.to_thread(self.store.save_snapshot, replica.room_id, data, count)
            hosted.stored_since_snapshot -= covered  # those stored meanwhile count on
            if data is not None and replica.private and replica.snapshot_sealed:
                self.reader_snapshots.offer(hosted, data)
        except Exception:
            log.exception("snapshot of room %s failed", replica.room_id.hex()[:16])
        finally:
            hosted.saving_snapshot = False

    async def _compact(self, replica: SceneReplica, frontier: int) -> bytes | None:
        """Prune a room's history below ``frontier`` without stalling the loop: the export
        runs here, the signing and re-import in a worker thread, the adoption (and the few
        changes applied meanwhile) back here, then the store's one transaction (snapshot
        stored, covered changes deleted) in a thread (``meshnode.crdt.compaction``). Nothing
        is deleted unless the replica adopted the snapshot that covers it. Returns the
        stored snapshot (None if the compaction was abandoned)."""
        job = replica.prepare_compaction(frontier)
        await asyncio.to_thread(job.build)
        done = replica.finish_compaction(job)
        if done is None:
            log.info("room %s: compaction abandoned (history changed meanwhile); next time",
                     replica.room_id.hex()[:16])
            return None
        data, dropped = done
        count = replica.change_count()
        await asyncio.to_thread(self.store.compact, replica.room_id, data, count, dropped)
        log.info("room %s: %d changes pruned below the retention frontier",
                 replica.room_id.hex()[:16], len(dropped))
        return data
