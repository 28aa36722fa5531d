"""Framed messages between peers: ``msgpack([version, type, *fields])``.

Each message type is a small dataclass with a fixed field layout; :func:`decode_frame` checks
the version, the type and every field before it returns, and raises only
``protocol.errors.DecodeError`` subclasses. The overlay adds its message types here.
"""

from dataclasses import dataclass
from typing import Any, ClassVar

from protocol.errors import LimitExceeded, SchemaError, UnknownMessageType, UnknownVersion
from protocol.limits import DEFAULT_LIMITS, Limits
from protocol.msgpack_io import pack, unpack

PROTOCOL_VERSION = 1
SUPPORTED_VERSIONS = frozenset({PROTOCOL_VERSION})
ROOM_ID_BYTES = 32
HASH_BYTES = 32


@dataclass(frozen=True, slots=True)
class Changes:
    """Signed change bytes for one room, in causal order where the sender knows it."""

    TYPE: ClassVar[int] = 1
    room_id: bytes
    changes: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class Heads:
    """The sender's current heads of a room's change graph (for sync)."""

    TYPE: ClassVar[int] = 2
    room_id: bytes
    heads: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A signed snapshot of a room (see ``meshnode.crdt.snapshot``)."""

    TYPE: ClassVar[int] = 3
    room_id: bytes
    data: bytes


Message = Changes | Heads | Snapshot


def encode_frame(msg: Message) -> bytes:
    """Encode one message as a frame of the current protocol version."""
    if isinstance(msg, Changes):
        fields: list[Any] = [msg.room_id, list(msg.changes)]
    elif isinstance(msg, Heads):
        fields = [msg.room_id, sorted(msg.heads)]
    else:
        fields = [msg.room_id, msg.data]
    return pack([PROTOCOL_VERSION, msg.TYPE, *fields])


def _room_id(value: object) -> bytes:
    if type(value) is not bytes or len(value) != ROOM_ID_BYTES:
        raise SchemaError("room_id must be 32 bytes")
    return value


def _bytes_list(value: object, limit: int, exact: int | None, what: str) -> tuple[bytes, ...]:
    if type(value) is not list:
        raise SchemaError(f"{what} must be an array")
    if len(value) > limit:
        raise LimitExceeded(f"too many {what}: {len(value)} > {limit}")
    for item in value:
        if type(item) is not bytes or (exact is not None and len(item) != exact):
            raise SchemaError(f"malformed entry in {what}")
    return tuple(value)


def decode_frame(data: bytes, limits: Limits = DEFAULT_LIMITS) -> Message:
    """Decode one frame; raise a ``DecodeError`` subclass for anything malformed."""
    obj = unpack(data, limits, limits.max_frame_bytes, "frame")
    if type(obj) is not list or len(obj) < 2:
        raise SchemaError("frame is not [version, type, ...]")
    version, mtype = obj[0], obj[1]
    if type(version) is not int:
        raise SchemaError("frame version is not an integer")
    if version not in SUPPORTED_VERSIONS:
        raise UnknownVersion(f"protocol version {version} is not supported")
    if type(mtype) is not int:
        raise SchemaError("frame type is not an integer")
    fields = obj[2:]
    if mtype == Changes.TYPE:
        if len(fields) != 2:
            raise SchemaError("changes frame is [room_id, [change...]]")
        return Changes(
            _room_id(fields[0]),
            _bytes_list(fields[1], limits.max_changes_per_frame, None, "changes"),
        )
    if mtype == Heads.TYPE:
        if len(fields) != 2:
            raise SchemaError("heads frame is [room_id, [hash...]]")
        heads = _bytes_list(fields[1], limits.max_deps, HASH_BYTES, "heads")
        if len(set(heads)) != len(heads):
            raise SchemaError("duplicate head")
        return Heads(_room_id(fields[0]), heads)
    if mtype == Snapshot.TYPE:
        if len(fields) != 2 or type(fields[1]) is not bytes:
            raise SchemaError("snapshot frame is [room_id, data]")
        return Snapshot(_room_id(fields[0]), fields[1])
    raise UnknownMessageType(f"message type {mtype} is not defined in version {version}")
