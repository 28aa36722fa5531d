"""``SceneContent``: a replica's committed state as plain, immutable data.

``SceneReplica.export_content()`` produces it and ``SceneReplica`` imports it (from a snapshot,
or as the base a rebuild starts from). The snapshot codec (``meshnode.crdt.snapshot``) turns it
into signed bytes and back, and knows nothing of the replica's internals. Records refer to
changes by ID and to entities by ``(creator key, counter)``; ``ROOT`` is ``(b"", 0)`` and
``TRASH`` ``(b"", 1)``.
"""

from dataclasses import dataclass

from meshnode.crdt.graph import BaseEntry
from meshnode.crdt.revocation import Cut, InviteRevocation, InviteUse
from protocol.values import Value

Node = tuple[bytes, int]


@dataclass(frozen=True, slots=True)
class ChangeRecord:
    """An applied change, without its ops."""

    change_id: bytes
    author: bytes
    seq: int
    hlc: int
    deps: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class EntityRecord:
    """An entity ever created: the creator's seq that made it and the creating changes (two
    if an equivocator made it twice)."""

    creator: bytes
    counter: int
    creation_seq: int
    makers: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class MoveRecord:
    """One entry of the tree's move log (create, move and delete are all moves)."""

    change_id: bytes
    op_index: int
    child: Node
    parent: Node


@dataclass(frozen=True, slots=True)
class FieldRecord:
    """The winning write of one field register."""

    entity: Node
    component: str
    field: str
    change_id: bytes
    value: Value


@dataclass(frozen=True, slots=True)
class GrantRecord:
    """A role grant; ``inert`` ones count for acceptance only (``meshnode.crdt.roles``)."""

    member: bytes
    change_id: bytes
    role: int
    inert: bool = False


@dataclass(frozen=True, slots=True)
class FrontierContent:
    """The changes below a snapshot's frontier, summarised (``ChangeGraph.cut``): its clock,
    per author ``(key, seq count, last change)``, how many changes below it are not listed,
    and the listed ones (the genesis first)."""

    hlc: int
    authors: tuple[tuple[bytes, int, bytes], ...]
    pruned: int
    entries: tuple[BaseEntry, ...]


@dataclass(frozen=True, slots=True)
class SceneContent:
    """Everything a replica needs to carry on from a committed state (see module docstring).

    ``changes`` are in causal order; ``moves`` in log order. Without ``frontier`` (a version
    2 snapshot) ``changes`` holds every change, the genesis first; with it, only the changes
    after the frontier, whose deps are frontier entries or earlier changes.
    """

    genesis: bytes
    clock: int
    changes: tuple[ChangeRecord, ...]
    entities: tuple[EntityRecord, ...]
    moves: tuple[MoveRecord, ...]
    fields: tuple[FieldRecord, ...]
    grants: tuple[GrantRecord, ...]
    equivocations: tuple[tuple[bytes, bytes], ...] = ()
    retracted: tuple[tuple[bytes, str], ...] = ()
    dead_entities: tuple[Node, ...] = ()
    cuts: tuple[Cut, ...] = ()
    invite_uses: tuple[InviteUse, ...] = ()
    invite_revocations: tuple[InviteRevocation, ...] = ()
    frontier: FrontierContent | None = None


__all__ = [
    "ChangeRecord",
    "EntityRecord",
    "FieldRecord",
    "FrontierContent",
    "GrantRecord",
    "MoveRecord",
    "SceneContent",
]
