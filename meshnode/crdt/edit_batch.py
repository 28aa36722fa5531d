"""The uncommitted local batch as data: ``EditBatch``, ``PrivateBatch`` and the byte bounds.

``EditBatch`` holds a batch's ops in wire form and what rolls it back; the ``*_BYTES``
constants bound each op's encoded size, so that a batch within its byte budget always encodes
within ``max_change_bytes``. ``meshnode.crdt.editing`` (``LocalEdits``) fills and signs it.
"""

import dataclasses

from meshnode.crdt.roles import ROLE_VIEWER
from meshnode.crdt.tree import Stamp
from protocol.change import Op
from protocol.values import Value

INF_HLC = 1 << 64
"""Clock value of an uncommitted local batch: later than any real stamp."""

# Upper bounds of the msgpack size of each op, its value excluded, so that a batch that fits
# its byte budget always encodes within ``max_change_bytes``. A reference is at most
# ``[actor index, counter]``: array header 1 + uint16 3 + uint64 9.
_REF_BYTES = 13
SET_OP_BYTES = 1 + 1 + _REF_BYTES + 3 + 3
CREATE_OP_BYTES = 1 + 1 + 9 + _REF_BYTES
MOVE_OP_BYTES = 1 + 1 + 2 * _REF_BYTES
DELETE_OP_BYTES = 1 + 1 + _REF_BYTES
ROLE_OP_BYTES = 1 + 1 + 3 + 1 + 9  # with the cut-off seq (uint64 at most)
INVITE_EXTRA_BYTES = 2 + 32 + 9  # the invite ID and max_uses
ACTOR_BYTES = 2 + 32
DEP_BYTES = 2 + 32
ENVELOPE_BYTES = 256
"""Array headers, author, seq, hlc and the 64-byte signature, rounded up (deps apart)."""

Node = tuple[bytes, int]
Register = tuple[Stamp, Value]
Fields = dict[str, dict[str, Register]]


@dataclasses.dataclass(slots=True)
class PrivateBatch:
    """What a commit adds to a private room's change besides the batch's ops."""

    rotate: bool = False
    shares: list[bytes] = dataclasses.field(default_factory=list)


class EditBatch:
    """The uncommitted local batch: ops in wire form plus what is needed to roll it back."""

    __slots__ = (
        "actor_index",
        "actors",
        "bytes",
        "counter_before",
        "creates",
        "field_undo",
        "has_role_ops",
        "name_index",
        "names",
        "ops",
        "required",
        "revokes",
        "role_ops",
        "set_index",
        "shadowed",
        "stamp",
    )

    def __init__(self, me: bytes, counter: int) -> None:
        self.stamp: Stamp = [INF_HLC, me, b""]
        self.ops: list[Op] = []
        self.actors: list[bytes] = []
        self.actor_index: dict[bytes, int] = {}
        self.names: list[str] = []
        self.name_index: dict[str, int] = {}
        self.set_index: dict[tuple[Node, str, str], Op] = {}
        self.creates: list[Node] = []
        self.field_undo: list[tuple[dict[str, Register], str, Register | None]] = []
        self.shadowed: list[tuple[dict[str, Register], str, Register]] = []
        self.role_ops: list[tuple[bytes, int]] = []
        self.has_role_ops = False  # any OP_ROLE in ``ops`` (``grant`` or ``admit``)
        self.revokes: list[bytes] = []
        self.required = ROLE_VIEWER
        self.counter_before = counter
        self.bytes = 0  # an upper bound of the encoded ops, actors and names
