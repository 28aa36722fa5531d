"""Readers' sealed snapshots on blind hosts (docs/protocol.md, "Readers' sealed snapshots on
blind hosts"; docs/operators.md, "Private rooms").

A blind host cannot write a private room's scene into its own snapshot, so without help a
client joining through it replays the whole history. Here:

* a **reader node**, after it stores a sealed snapshot of a private room, sends it in parts
  (``SnapshotPart``) to each linked node that holds the room's ``host`` role and shares the
  room with it (once per snapshot and host);
* a **blind host** puts the parts together (in order, one unfinished snapshot per peer and
  room, the digest checked), checks the snapshot against its own DAG
  (``meshnode.crdt.snapshot_check``: signer a reader, public part equal to its own for the
  same changes, scene sealed under the right epoch to exactly the readers, size bounded) and,
  if it passes, stores it as the room's snapshot: that is what it serves to joining clients
  (``GET /api/rooms/{id}/snapshot``) and starts from after a restart. It then stops writing
  its own blind snapshot of that room (which would replace the reader's).

A refusal is logged, counted (``meshnode_rejections{reason="reader_snapshot_<reason>"}``) and,
for a snapshot that cannot be honest (forged public part, wrong wraps, bad bytes), counted
against the link like any garbage. A refused snapshot changes nothing: the host keeps what it
had (its whole history, and any earlier reader snapshot).
"""

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

from meshnode.crdt.snapshot_check import (
    ReaderSnapshotRefusal,
    SnapshotAccepted,
    SnapshotRefused,
    decode_reader_snapshot,
    judge_reader_snapshot,
)
from meshnode.metrics import NodeMetrics
from meshnode.rooms.hosted import HostedRoom
from meshnode.runtime.links import Established, LinkManager, LinkService
from protocol.link import LinkMessage
from protocol.snapshot_offer import PartAssembler, SnapshotPart, snapshot_parts

log = logging.getLogger("meshnode.node")

__all__ = ["MAX_READER_SNAPSHOT_BYTES", "WAIT_TICKS", "ReaderSnapshots"]

MAX_READER_SNAPSHOT_BYTES = 64 * 1024 * 1024
"""The largest reader snapshot a blind host accepts (a sealed scene it cannot size
otherwise); larger ones are refused as ``oversized`` and the host keeps serving history."""

WAIT_TICKS = 40
"""How many key ticks (0.5 s each) a blind host waits for the changes a reader's snapshot
names before it refuses it as ``unknown_changes``."""

# Not the sender's fault (it is ahead of us, or we are busy): no garbage count.
_BENIGN = frozenset({ReaderSnapshotRefusal.UNKNOWN_CHANGES})


class ReaderSnapshots(LinkService):
    """Both ends of the hand-over (see the module docstring). ``store`` saves a room's
    snapshot (``ChangeStore.save_snapshot``, called in a worker thread)."""

    link_messages = (SnapshotPart,)

    def __init__(self, rooms: dict[bytes, HostedRoom], links: LinkManager,
                 metrics: NodeMetrics, me: str,
                 store: Callable[[bytes, bytes, int], None],
                 spawn: Callable[[Coroutine[Any, Any, None], str], object],
                 max_bytes: int = MAX_READER_SNAPSHOT_BYTES) -> None:
        self.rooms = rooms
        self.links = links
        self.metrics = metrics
        self.me = me
        self._store = store
        self._spawn = spawn
        self.max_bytes = max_bytes
        self._parts: dict[str, PartAssembler] = {}  # per peer
        self._sent: dict[tuple[str, bytes], bytes] = {}  # (host, room) -> digest sent
        self._latest: dict[bytes, bytes] = {}  # room -> this reader's latest sealed one
        # room -> (peer, snapshot, ticks left): one that named changes not applied here yet
        self._waiting: dict[bytes, tuple[str, bytes, int]] = {}
        links.register(self)

    # ------------------------------------------------------------------ reader side

    def offer(self, hosted: HostedRoom, data: bytes) -> int:
        """Send ``data`` (this reader's sealed snapshot of ``hosted``) to every linked blind
        host of the room that has not had it; returns to how many."""
        replica = hosted.runtime.replica
        if not (replica.private and replica.is_reader()) or len(data) > self.max_bytes:
            return 0
        room_id = replica.room_id
        self._latest[room_id] = data
        digest = hashlib.sha256(data).digest()
        sent = 0
        for peer in sorted(hosted.runtime.peers()):
            est = self.links.links.get(peer)
            if est is None or est.hello.kind != "node" or replica.role_of(peer) != "host" \
                    or self._sent.get((peer, room_id)) == digest:
                continue
            for part in snapshot_parts(room_id, data, digest):
                if not self.links.send_link(peer, part):
                    break
            else:
                self._sent[(peer, room_id)] = digest
                sent += 1
        if sent:
            self.metrics.reader_snapshots.labels("sent").inc(sent)
            log.info("room %s: sealed snapshot (%d bytes) sent to %d blind host(s)",
                     room_id.hex()[:16], len(data), sent)
        return sent

    def tick(self, hosted: HostedRoom) -> None:
        """Called on every key tick for each private room: a reader sends its latest sealed
        snapshot (if it wrote one since it started) to the blind hosts linked since (cheap
        when every host has it); a blind host checks again a snapshot that was ahead of it."""
        room_id = hosted.runtime.room_id
        data = self._latest.get(room_id)
        if data is not None:
            self.offer(hosted, data)
        waiting = self._waiting.pop(room_id, None)
        if waiting is not None:
            peer, data, left = waiting
            est = self.links.links.get(peer)
            if est is not None:
                self._judge(est, hosted, data, left - 1)

    def link_down(self, est: Established, reason: str) -> None:
        """Forget what was sent to and received from the peer."""
        for key in [k for k in self._sent if k[0] == est.peer]:
            del self._sent[key]
        self._parts.pop(est.peer, None)

    # ------------------------------------------------------------------ blind host side

    def link_message(self, est: Established, msg: LinkMessage) -> None:
        """A part of a reader's snapshot: put it with the others; check the whole."""
        if not isinstance(msg, SnapshotPart):
            return
        hosted = self.rooms.get(msg.room_id)
        replica = None if hosted is None else hosted.runtime.replica
        if hosted is None or replica is None or est.peer not in hosted.runtime.peers() \
                or not replica.private or replica.role_of(self.me) != "host":
            # Only a blind host of a room the link carries takes readers' snapshots.
            self.links.count_garbage(est, "reader_snapshot_unwanted")
            return
        got = self._parts.setdefault(est.peer, PartAssembler(self.max_bytes)).feed(msg)
        if got is None:
            return
        if got == "oversized":
            self._refuse(est, msg.room_id, ReaderSnapshotRefusal.OVERSIZED,
                         f"{msg.total} bytes > the {self.max_bytes} accepted")
            return
        if got == "bad_part":
            self.links.count_garbage(est, "reader_snapshot_bad_part")
            return
        if not isinstance(got, bytes):  # bad_digest
            self._refuse(est, msg.room_id, ReaderSnapshotRefusal.BAD_SNAPSHOT,
                         "the parts do not hash to the announced digest")
            return
        data = got
        self._judge(est, hosted, data, WAIT_TICKS)

    def _judge(self, est: Established, hosted: HostedRoom, data: bytes, left: int) -> None:
        self._spawn(self._judge_async(est, hosted, data, left),
                    f"reader snapshot {hosted.runtime.room_id.hex()[:12]}")

    async def _judge_async(self, est: Established, hosted: HostedRoom, data: bytes,
                           left: int) -> None:
        room_id = hosted.runtime.room_id
        replica = hosted.runtime.replica
        # Decoding and the signature check (a large snapshot: a while) off the loop; the
        # comparison with the replica on it (the replica changes only there).
        decoded = await asyncio.to_thread(decode_reader_snapshot, data, replica.limits,
                                          self.max_bytes)
        verdict = decoded if isinstance(decoded, SnapshotRefused) \
            else judge_reader_snapshot(hosted.runtime.replica, decoded)
        if isinstance(verdict, SnapshotRefused):
            if verdict.reason in _BENIGN and left > 0:
                # Its changes are on their way (gossip, anti-entropy): check again later.
                self._waiting[room_id] = (est.peer, data, left)
                return
            self._refuse(est, room_id, verdict.reason, verdict.detail)
            return
        await self._keep(hosted, data, verdict, est.peer)

    def _refuse(self, est: Established, room_id: bytes, reason: ReaderSnapshotRefusal,
                detail: str) -> None:
        label = f"reader_snapshot_{reason.value}"
        log.warning("room %s: sealed snapshot from %s refused (%s): %s", room_id.hex()[:16],
                    est.peer, reason.value, detail)
        if reason in _BENIGN:
            self.metrics.rejections.labels(label).inc()
        else:
            self.links.count_garbage(est, label)

    async def _keep(self, hosted: HostedRoom, data: bytes, verdict: SnapshotAccepted,
                    peer: str) -> None:
        """Store an accepted snapshot as the room's (never while the host writes its own)."""
        hosted.reader_snapshot = True  # from now on the host's own snapshot would shadow it
        while hosted.saving_snapshot:
            await asyncio.sleep(0.05)
        hosted.saving_snapshot = True
        started = time.perf_counter()
        try:
            room_id = hosted.runtime.room_id
            await asyncio.to_thread(self._store, room_id, data, verdict.change_count)
            hosted.stored_since_snapshot = 0
            self.metrics.reader_snapshots.labels("stored").inc()
            log.info("room %s: stored a reader's sealed snapshot from %s (%d bytes, frontier "
                     "%d, signer %s) in %.2f s: joining clients start from it",
                     room_id.hex()[:16], peer, len(data), verdict.frontier_hlc,
                     verdict.signer.hex()[:12], time.perf_counter() - started)
        except Exception:
            log.exception("room %s: storing a reader's snapshot failed",
                          hosted.runtime.room_id.hex()[:16])
        finally:
            hosted.saving_snapshot = False
