"""One simulated host of :class:`netsim.simulation.Simulation` (its own module, so that the
simulation's parts, such as ``netsim.liveness``, can name it without importing the simulation)."""

from __future__ import annotations

from dataclasses import dataclass, field

from meshnode.crdt import EntityId, SceneReplica
from meshnode.identity import Identity
from meshnode.overlay import OverlayStats, RoomOverlay

Pair = tuple[int, int]
"""A directed link: (from node index, to node index)."""


@dataclass
class SimNode:
    """One simulated host: identity, durable replica, and (while up) an overlay."""

    index: int
    identity: Identity
    peer_id: str
    replica: SceneReplica
    overlay: RoomOverlay | None = None
    alive: bool = True
    departed: bool = False
    removed: bool = False  # removed from the room (a "remove" event): served nothing more
    hostile: str = ""
    timer_at: float | None = None
    editor: bool = False
    own_entities: list[EntityId] = field(default_factory=list)
    old_stats: list[OverlayStats] = field(default_factory=list)
