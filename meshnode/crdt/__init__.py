"""The signed scene CRDT: ``SceneReplica`` and its entity IDs.

See ``docs/architecture.md`` (why and how) and ``docs/protocol.md`` (the bytes).
"""

from meshnode.crdt.ids import ROOT, EntityId
from meshnode.crdt.replica import SceneReplica
from meshnode.crdt.results import (
    APPLIED,
    BUFFERED,
    DUPLICATE,
    REJECTED,
    ApplyResult,
    BatchFull,
    Equivocation,
    PermissionDenied,
)

__all__ = [
    "APPLIED",
    "BUFFERED",
    "DUPLICATE",
    "REJECTED",
    "ROOT",
    "ApplyResult",
    "BatchFull",
    "EntityId",
    "Equivocation",
    "PermissionDenied",
    "SceneReplica",
]
