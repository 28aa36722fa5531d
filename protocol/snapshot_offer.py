"""The ``SnapshotPart`` link message (type 76): a reader node hands its sealed snapshot of a
private room to a blind host it is linked to (docs/protocol.md, "Readers' sealed snapshots
on blind hosts").

A snapshot is larger than one link message, so it travels in parts, in order, on the link's
reliable ``sync`` channel: ``[room_id, digest, total, offset, chunk]``; ``digest`` is the
SHA-256 of the whole snapshot, ``total`` its length, ``offset`` where ``chunk`` starts. A part
at offset 0 starts a new snapshot (dropping any unfinished one of that room from that peer);
each later part must continue exactly where the previous one ended. The receiver checks the
digest once ``total`` bytes arrived, then the snapshot itself (``meshnode.crdt.
snapshot_check``). Same layout and rules as ``protocol.link``: every field checked, only
``DecodeError`` subclasses raised.
"""

import hashlib
from dataclasses import dataclass, field
from typing import Any, ClassVar

from protocol.errors import LimitExceeded, SchemaError
from protocol.limits import Limits
from protocol.link_fields import LinkExtension, _arity, _room_id, register_link_type

__all__ = ["DIGEST_BYTES", "MAX_PART_BYTES", "PartAssembler", "SnapshotPart", "snapshot_parts"]

DIGEST_BYTES = 32
MAX_PART_BYTES = 196_608
"""A part's chunk, at most: a part fits a link message (262,144 B) with room to spare."""


@dataclass(frozen=True, slots=True)
class SnapshotPart(LinkExtension):
    """``chunk`` = bytes ``offset .. offset + len(chunk)`` of a sealed snapshot of
    ``room_id`` that is ``total`` bytes long and hashes (SHA-256) to ``digest``."""

    TYPE: ClassVar[int] = 76
    room_id: bytes
    digest: bytes
    total: int
    offset: int
    chunk: bytes

    def fields(self) -> list[Any]:
        return [self.room_id, self.digest, self.total, self.offset, self.chunk]

    @classmethod
    def from_fields(cls, fields: list[Any], limits: Limits) -> "SnapshotPart":
        _arity(fields, 5, "room_id, digest, total, offset, chunk")
        room = _room_id(fields[0], "snapshot part")
        digest, total, offset, chunk = fields[1:]
        if type(digest) is not bytes or len(digest) != DIGEST_BYTES:
            raise SchemaError(f"snapshot part digest must be {DIGEST_BYTES} bytes")
        if type(total) is not int or type(offset) is not int or type(chunk) is not bytes:
            raise SchemaError("snapshot part total and offset are integers, chunk bytes")
        if not 0 < total <= limits.max_snapshot_bytes:
            raise LimitExceeded(f"snapshot part total must be 1..{limits.max_snapshot_bytes}")
        if len(chunk) > MAX_PART_BYTES:
            raise LimitExceeded(f"snapshot part chunk over {MAX_PART_BYTES} bytes")
        if not chunk or offset < 0 or offset + len(chunk) > total:
            raise SchemaError("snapshot part chunk must be non-empty and inside 0..total")
        return cls(room, digest, total, offset, chunk)


def snapshot_parts(room_id: bytes, data: bytes, digest: bytes,
                   part_bytes: int = MAX_PART_BYTES) -> list[SnapshotPart]:
    """``data`` cut into the parts that carry it (``digest``: its SHA-256)."""
    return [SnapshotPart(room_id, digest, len(data), at, data[at: at + part_bytes])
            for at in range(0, len(data), part_bytes)]


@dataclass(slots=True)
class PartAssembler:
    """Puts one peer's ``SnapshotPart`` messages back together, per room (pure: no I/O).

    :meth:`feed` returns the whole snapshot once its last part arrived and its digest
    matches, ``None`` while parts are missing, or a refusal label: ``bad_part`` (a part that
    does not continue the snapshot under way), ``oversized`` (``total`` over ``max_bytes``),
    ``bad_digest`` (the bytes do not hash to ``digest``). After a refusal or a whole
    snapshot nothing of it is kept; at most one unfinished snapshot per room is held."""

    max_bytes: int
    _under_way: dict[bytes, tuple[bytes, int, bytearray]] = field(default_factory=dict)

    def feed(self, part: SnapshotPart) -> bytes | str | None:
        """Take ``part`` (see the class docstring for what comes back)."""
        room = part.room_id
        if part.total > self.max_bytes:
            self._under_way.pop(room, None)
            return "oversized"
        if part.offset == 0:
            self._under_way[room] = (part.digest, part.total, bytearray())
        held = self._under_way.get(room)
        if held is None or held[0] != part.digest or held[1] != part.total \
                or len(held[2]) != part.offset:
            self._under_way.pop(room, None)
            return "bad_part"
        held[2].extend(part.chunk)
        if len(held[2]) < part.total:
            return None
        del self._under_way[room]
        data = bytes(held[2])
        if hashlib.sha256(data).digest() != part.digest:
            return "bad_digest"
        return data

    def pending(self) -> int:
        """How many rooms have a snapshot under way."""
        return len(self._under_way)


register_link_type(SnapshotPart)
