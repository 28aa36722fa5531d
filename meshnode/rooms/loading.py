"""Rebuilding a hosted room's replica at start-up from the node's own store.

The fast way: the latest snapshot the node wrote (signed by the node itself, the only signer
trusted here), then the bytes of the changes it covers taken back from the change log (so
the replica can serve its history to peers, which a snapshot alone cannot), then the changes
after it applied as usual. The snapshot is used only if it is this room's, verifies, and the
log holds every change it covers (a crash between a snapshot and the commit of the changes
it covers leaves it ahead of the log); otherwise the log is replayed in full, in the order
the changes were applied, so every dependency comes first. Either way the replica ends with
the same state, version vector, roles and clocks (``tests/unit/test_room_loading.py``).

The log is the node's own, validated when written, so it is replayed as trusted
(``SceneReplica.replay``): no wall clock can refuse a change of it (a Pi without a real-time
clock boots minutes behind), the replica's own-seq floor and clock come from it, and every
change that still fails is in the returned ``ReplayReport``, for the node to report.

Measured on one core, a room of 15,548 changes from two authors: full replay 2.16 s,
snapshot (1.0 MB) plus the tail 0.13 s.

With ``history`` (change IDs -> stored bytes), the replica keeps change bytes off the heap
(``SceneReplica.use_history``): the log is read to check that it holds what the snapshot
covers, but only recent bytes stay in memory. After a compaction (``compact_room``) the
stored snapshot's frontier summarises the changes deleted from the log, so start-up reads
the room's state and the log after the frontier: its cost follows the room and the
retention window, not the history's length.

A private room's snapshot is sealed (docs/protocol.md, "Sealed snapshots"): a reader node
opens its own (it wraps the key to itself), a blind host starts from the public part of its
own (no scene). One this node cannot open now that it reads the room (written while it was
blind) is ``snapshot_key_missing``: the log is replayed, whole since blind hosts never prune.

Blocking (SQLite reads, signature checks): the room host runs it in a worker thread.
"""

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from meshnode.crdt import ReplayReport, SceneReplica
from meshnode.crdt.clock import hlc_from_seconds
from meshnode.crdt.snapshot import decode_snapshot
from meshnode.identity import Identity
from protocol.errors import DecodeError
from protocol.limits import DEFAULT_LIMITS

__all__ = ["LoadedRoom", "compact_room", "frontier_for", "load_replica", "worth_compacting"]

History = Callable[[list[bytes]], Mapping[bytes, bytes]]


@dataclass(frozen=True, slots=True)
class LoadedRoom:
    """A rebuilt replica, and how: ``snapshot_problem`` says why a stored snapshot was not
    used (a stable label: ``bad_snapshot``, ``snapshot_key_missing``, ``other_room``,
    ``log_behind``), None if it was
    used or there was none."""

    replica: SceneReplica
    from_snapshot: bool
    snapshot_problem: str | None
    report: ReplayReport
    """What replaying the log (after the snapshot, if one was used) found."""
    foreign_snapshot: bool = False
    """The snapshot used is a reader's sealed one a blind host stored for its clients."""


def load_replica(genesis: bytes, identity: Identity, changes: Callable[[], Iterable[bytes]],
                 snapshot: bytes | None, history: History | None = None, *,
                 keep_unserved: bool = False) -> LoadedRoom:
    """Rebuild the replica of the room ``genesis`` founded, from ``snapshot`` (or None) and
    the change log ``changes()`` streams (called once, or twice on a fall back); with
    ``history``, keep change bytes off the heap (see the module docstring).
    ``keep_unserved``: use the snapshot even if the log lacks changes it covers (a node that
    joined a pruned room from another host's snapshot never held them: replaying its log
    cannot rebuild the room, ``meshnode.rooms.join_snapshot``)."""
    problem: str | None = None
    if snapshot is not None:
        loaded, problem = _from_snapshot(genesis, identity, changes, snapshot, history,
                                         keep_unserved)
        if loaded is not None:
            return loaded
    replica = SceneReplica.from_genesis(genesis, identity)
    report = replica.replay(changes())
    if history is not None:
        replica.use_history(history)
    return LoadedRoom(replica, False, problem, report)


def _from_snapshot(genesis: bytes, identity: Identity, changes: Callable[[], Iterable[bytes]],
                   snapshot: bytes, history: History | None, keep_unserved: bool,
                   ) -> tuple[LoadedRoom | None, str | None]:
    foreign = False
    try:
        try:
            replica = SceneReplica.from_snapshot(snapshot, identity,
                                                 trusted_signers=[identity.public_key])
        except DecodeError:
            # A blind host's stored snapshot may be a reader's sealed one, checked before it
            # was stored (meshnode.rooms.reader_snapshots): its signer must still be a member.
            if not _readers_snapshot(snapshot, identity):
                raise
            foreign = True
            replica = SceneReplica.from_snapshot(snapshot, identity)
    except DecodeError as err:
        # A private room's snapshot this node cannot open (it was blind when it wrote it, and
        # is a reader now): the log is whole (blind hosts never prune), so replay it.
        return None, "snapshot_key_missing" if err.reason == "snapshot_key_missing" \
            else "bad_snapshot"
    if replica.genesis != genesis:
        return None, "other_room"
    if history is not None:
        replica.use_history(history)
    rest = replica.restore_bytes(changes())
    if replica.unserved_count() and not keep_unserved:
        return None, "log_behind"
    return LoadedRoom(replica, True, None, replica.replay(rest), foreign), None


def _readers_snapshot(snapshot: bytes, identity: Identity) -> bool:
    """Whether ``snapshot`` is another member's sealed snapshot of a private room (what a
    blind host stores for its joining clients), by its header alone; the full checks follow
    in ``from_snapshot``."""
    try:
        snap = decode_snapshot(snapshot, DEFAULT_LIMITS, None)
    except DecodeError:
        return False
    return snap.sealed is not None and snap.signer != identity.public_key


def frontier_for(now: float, retention_s: float) -> int:
    """The pruning frontier (a hybrid clock stamp) for a history kept ``retention_s`` seconds:
    every change stamped before ``now - retention_s`` goes below it (docs/operators.md,
    "Pruning rule")."""
    return hlc_from_seconds(now - retention_s)


COMPACT_MIN = 10_000
"""Prune only when at least this many changes (and a tenth of those held) fell below the
frontier: ``compact`` re-imports the room's state and the changes after the frontier (in a
worker thread on a node, ``meshnode.crdt.compaction``), so its cost is spread over many
changes."""


def worth_compacting(replica: SceneReplica, keep_after_hlc: int) -> bool:
    """Whether pruning at ``keep_after_hlc`` now is worth it (see ``COMPACT_MIN``). A tenth
    of the changes *held*, not of the whole history: against the history, a room with 1M
    changes behind it would hold 100k more before each prune, and its memory and restart
    would grow with its age."""
    return replica.prunable(keep_after_hlc) >= max(COMPACT_MIN, replica.held_count() // 10)


def compact_room(replica: SceneReplica, keep_after_hlc: int,
                 save: Callable[[bytes, int, list[bytes]], object]) -> int:
    """Prune a hosted room's history below ``keep_after_hlc`` (``SceneReplica.compact``) and
    hand the signed frontier snapshot, the change count and the IDs of the changes it now
    summarises to ``save`` (e.g. ``ChangeStore.compact``, one transaction: the snapshot is
    stored before a change is deleted). Returns how many changes went below the frontier."""
    data, dropped = replica.compact(keep_after_hlc)
    save(data, replica.change_count(), dropped)
    return len(dropped)
