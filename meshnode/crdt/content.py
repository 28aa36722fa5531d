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
class EpochRecord:
    """One epoch of a private room's public epoch book (``meshnode.crdt.epochs.Epoch``)."""

    epoch_id: bytes
    author: bytes
    seq: int
    hlc: int
    recipients: tuple[bytes, ...]
    commitment: bytes
    back_nonce: bytes
    back: bytes


@dataclass(frozen=True, slots=True)
class PrivateContent:
    """A private room's epoch book as plain data.

    Public (every replica, blind or not, holds and checks it): ``epochs``, ``lowering``
    (member, grant author, grant seq), ``shared`` (member, epoch IDs) and ``sealed`` (the
    changes carrying a ``SEALED`` op, among those the content lists).

    Readers only (a snapshot seals it; ``opened`` is False when it is absent, e.g. in a blind
    replica's export): ``name`` (the change that set the sealed room name, and the name),
    ``voided`` (change ID, reason) and ``secrets`` (epoch ID, secret) held by the writer.
    The scene sections of ``SceneContent`` (entities, moves, fields, dead entities) are
    reader content too."""

    epochs: tuple[EpochRecord, ...]
    lowering: tuple[tuple[bytes, bytes, int], ...]
    shared: tuple[tuple[bytes, tuple[bytes, ...]], ...]
    sealed: tuple[bytes, ...]
    opened: bool = False
    name: tuple[bytes, str] | None = None
    voided: tuple[tuple[bytes, str], ...] = ()
    secrets: tuple[tuple[bytes, bytes], ...] = ()


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
    private: PrivateContent | None = None
    """A private room's epoch book (None for other rooms)."""


__all__ = [
    "ChangeRecord",
    "EntityRecord",
    "EpochRecord",
    "FieldRecord",
    "FrontierContent",
    "GrantRecord",
    "MoveRecord",
    "PrivateContent",
    "SceneContent",
]
