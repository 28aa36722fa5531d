"""Pruning a replica's history in three phases, so a host can keep the heavy part off its
event loop.

``SceneReplica.compact`` re-imports the room's state and the changes after the frontier,
and encodes and signs the frontier snapshot: seconds for a large retention window. A host
that must stay responsive splits it (``meshnode.rooms.host``):

1. ``SceneReplica.prepare_compaction(hlc)`` (on the loop, with the replica): exports the
   committed state as immutable plain data (``SceneContent``) and notes where the live
   history stands. Cost: one pass over the changes' metadata, no crypto.
2. ``CompactionJob.build()`` (anywhere, e.g. a worker thread): encodes and signs the snapshot
   and imports it into a fresh, private replica. It touches only the job's own data, never
   the live replica, so it may run while the live replica goes on applying changes.
3. ``SceneReplica.finish_compaction(job)`` (on the loop again): adopts the built state and
   re-applies the changes applied meanwhile (the *tail*, a few seconds' worth). If anything
   happened that the built state cannot absorb (a rebuild replaced the history, a local
   batch is open, a tail change no longer applies on the pruned history), it changes nothing
   and returns None: the host simply tries again at its next snapshot. Only after it returns
   the snapshot and the pruned IDs may a store delete those changes, the snapshot stored
   first or in the same transaction (``ChangeStore.compact``).

Sans-I/O like the replica: no threads here, the caller chooses where ``build`` runs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from meshnode.crdt.content import SceneContent
from meshnode.crdt.graph import ChangeGraph
from meshnode.crdt.snapshot import encode_snapshot
from meshnode.crdt.snapshot_seal import SnapshotSeal


class BlankReplica(Protocol):
    """What a build needs of the fresh ``SceneReplica`` it imports into (a protocol, so that
    the replica, which makes jobs, and this module do not import each other)."""

    _base: SceneContent | None
    _graph: ChangeGraph

    def _reset_content(self) -> None: ...

__all__ = ["MAX_TAIL", "CompactionJob"]

MAX_TAIL = 4_096
"""At most this many changes applied between ``prepare`` and ``finish`` are re-applied on the
loop (each is verified again); a longer tail abandons this compaction (the next try starts
later, from a fresh export)."""


@dataclass(slots=True)
class CompactionJob:
    """One compaction in progress (see the module docstring). ``snapshot``, ``pruned`` and
    ``built`` are set by :meth:`build`."""

    content: SceneContent
    """The committed state at ``prepare`` time, the history below the frontier summarised."""
    graph: ChangeGraph
    """The live replica's history object at ``prepare`` (a rebuild replaces it)."""
    mark: int
    """How many changes that history had applied at ``prepare``: the tail starts there."""
    held: list[bytes]
    """The IDs of every change the live replica held at ``prepare``."""
    room_id: bytes
    sign: Callable[[bytes], bytes]
    signer: bytes
    blank: Callable[[], BlankReplica]
    """A fresh replica with the live one's identity and limits, to import into."""
    seal: SnapshotSeal | None = None
    """How a private room's snapshot is sealed (None for other rooms)."""
    snapshot: bytes = b""
    pruned: list[bytes] = field(default_factory=list)
    built: Any = None  # the fresh replica holding the pruned state, once built

    def build(self) -> None:
        """Encode and sign the frontier snapshot and import it into a fresh replica; list the
        held changes it summarises (``pruned``). Pure: safe to run in a worker thread."""
        self.snapshot = encode_snapshot(self.content, self.signer, self.room_id, self.sign,
                                        self.seal)
        fresh = self.blank()
        fresh._base = self.content
        fresh._reset_content()
        index = fresh._graph.index
        room = self.room_id  # the genesis stays (it names the room)
        self.pruned = [c for c in self.held if c != room and index.get(c, -1) < 0]
        self.built = fresh
