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
    CommitRefused,
    Equivocation,
    OwnHistoryMissing,
    PermissionDenied,
    QuotaExceeded,
    ReplayFailure,
    ReplayReport,
)

__all__ = [
    "APPLIED",
    "BUFFERED",
    "DUPLICATE",
    "REJECTED",
    "ROOT",
    "ApplyResult",
    "BatchFull",
    "CommitRefused",
    "EntityId",
    "Equivocation",
    "OwnHistoryMissing",
    "PermissionDenied",
    "QuotaExceeded",
    "ReplayFailure",
    "ReplayReport",
    "SceneReplica",
]
