"""Framed messages between peers: ``msgpack([version, type, room_id, *fields])``.

Every message belongs to one room (a link carries many rooms). Each type is a small frozen
dataclass; :func:`decode_frame` checks the version, the type and every field before it
returns, and raises only ``protocol.errors.DecodeError`` subclasses. The field layout of
each type is in ``docs/protocol.md``.
"""

import math
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, ClassVar

from protocol.errors import (
    BadPresenceInterest,
    LimitExceeded,
    SchemaError,
    UnknownMessageType,
    UnknownVersion,
)
from protocol.limits import DEFAULT_LIMITS, Limits
from protocol.msgpack_io import pack, unpack
from protocol.scoped import ScopedHook
from protocol.values import check_value

PROTOCOL_VERSION = 1
SUPPORTED_VERSIONS = frozenset({PROTOCOL_VERSION})
COMPACT_VERSION = 2
"""Listed in a hello's ``versions``: the sender reads compact changes in ``Changes`` frames
(``protocol.compact``) and answers ``WantPrefix``. A capability of the link, not a frame
envelope: frames keep version 1 (their layouts are unchanged), and a peer sends compact
changes and ``WantPrefix`` only to a peer whose hello lists it."""
ROOM_ID_BYTES = 32
HASH_BYTES = 32
KEY_BYTES = 32
SIGNATURE_BYTES = 64
MAX_PEER_ID_CHARS = 64
MAX_PEERS_PER_MESSAGE = 64
MAX_TTL = 16
_BASE58 = frozenset("123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz")


@dataclass(frozen=True, slots=True)
class Changes:
    """Signed change bytes for one room. ``push`` is true for an unsolicited eager push
    (a duplicate then prunes the link) and false for answers to grafts, wants and heads."""

    TYPE: ClassVar[int] = 1
    room_id: bytes
    changes: tuple[bytes, ...]
    push: bool = True


@dataclass(frozen=True, slots=True)
class Heads:
    """The sender's heads and version vector, for anti-entropy.

    ``vv`` maps each author (public key) to the highest seq the sender holds; it lets the
    receiver send exactly what the sender lacks even when it does not know all of its heads.
    ``bloom`` (may be empty) holds the sender's recent change IDs (see ``protocol.bloom``), for
    rooms where version vectors are ambiguous (equivocation). ``reply`` asks the receiver to
    answer with its own heads if it lacks some of these."""

    TYPE: ClassVar[int] = 2
    room_id: bytes
    heads: tuple[bytes, ...]
    vv: tuple[tuple[bytes, int], ...] = ()
    bloom: bytes = b""
    reply: bool = False


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A signed snapshot of a room (see ``meshnode.crdt.snapshot``)."""

    TYPE: ClassVar[int] = 3
    room_id: bytes
    data: bytes


@dataclass(frozen=True, slots=True)
class IHave:
    """Lazy push: the sender has these changes (Plumtree's IHAVE)."""

    TYPE: ClassVar[int] = 4
    room_id: bytes
    ids: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class Graft:
    """Send me these changes, and push eagerly to me again for their authors."""

    TYPE: ClassVar[int] = 5
    room_id: bytes
    ids: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class Prune:
    """Stop pushing eagerly to me the changes of these authors (public keys)."""

    TYPE: ClassVar[int] = 6
    room_id: bytes
    origins: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class Want:
    """Send me these changes (missing dependencies); no change to the tree."""

    TYPE: ClassVar[int] = 7
    room_id: bytes
    ids: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class Presence:
    """A participant's ephemeral state (pose, pointer, speaking), signed by them.

    On the wire: ``body`` (bytes: ``msgpack([participant, seq, fields])``) and the signature
    of ``PRESENCE_DOMAIN || room_id || body``; the signature covers the exact bytes sent, so
    no re-encoding is needed to check it. ``seq`` grows with every update from that
    participant; ``fields`` is a map of values. Build one with :func:`make_presence`.
    """

    TYPE: ClassVar[int] = 8
    room_id: bytes
    participant: bytes
    seq: int
    fields: dict[str, Any]
    signature: bytes
    body: bytes


@dataclass(frozen=True, slots=True)
class ForwardJoin:
    """HyParView: ``peer`` joined; walk ``ttl`` more hops, then link to it."""

    TYPE: ClassVar[int] = 9
    room_id: bytes
    peer: str
    ttl: int


@dataclass(frozen=True, slots=True)
class Shuffle:
    """HyParView: ``origin``'s sample of known peers, walking ``ttl`` more hops."""

    TYPE: ClassVar[int] = 10
    room_id: bytes
    origin: str
    ttl: int
    peers: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ShuffleReply:
    """HyParView: the answer to a shuffle, a sample of the receiver's known peers."""

    TYPE: ClassVar[int] = 11
    room_id: bytes
    peers: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Disconnect:
    """The sender drops this link (its view is full, or it is leaving); try ``peers``."""

    TYPE: ClassVar[int] = 12
    room_id: bytes
    peers: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class PresenceInterest:
    """What presence the sender wants from the receiver in this room (a client to its node,
    or a node on a thin link): at most ``msgs_per_s`` updates and ``bytes_per_s`` frame
    bytes a second, and full detail only within ``view_radius`` (metres, in the units of the
    ``position`` field) of its own position. 0 in any field: the receiver's default. The
    receiver never sends more than its own cap for the link, whatever is asked
    (``meshnode.overlay.presence``). Ranges: :func:`check_presence_interest`."""

    TYPE: ClassVar[int] = 13
    room_id: bytes
    msgs_per_s: float
    bytes_per_s: float
    view_radius: float


@dataclass(frozen=True, slots=True)
class WantPrefix:
    """Send me every change whose ID starts with one of these 8-byte prefixes: the deps of
    a compact change (``protocol.compact``) that I cannot resolve. Sent only to a peer whose
    hello lists ``COMPACT_VERSION``."""

    TYPE: ClassVar[int] = 16
    room_id: bytes
    prefixes: tuple[bytes, ...]


PREFIX_BYTES = 8

Message = (
    Changes | Heads | Snapshot | IHave | Graft | Prune | Want | Presence | ForwardJoin | Shuffle
    | ShuffleReply | Disconnect | PresenceInterest | WantPrefix
)

INTEREST_MSGS_PER_S = (1.0, 10_000.0)
INTEREST_BYTES_PER_S = (1_024.0, 100_000_000.0)
INTEREST_VIEW_RADIUS = (0.01, 1_000_000.0)


def check_presence_interest(msgs_per_s: object, bytes_per_s: object,
                            view_radius: object) -> tuple[float, float, float]:
    """The three values of a ``PresenceInterest`` as floats, or ``BadPresenceInterest``
    (``reason`` ``bad_presence_interest``) naming the first bad one. Each is 0 (the
    receiver's default) or a finite number in its range: ``msgs_per_s`` 1..10,000,
    ``bytes_per_s`` 1,024..100,000,000, ``view_radius`` 0.01..1,000,000."""
    out: list[float] = []
    for name, value, (low, high) in (("msgs_per_s", msgs_per_s, INTEREST_MSGS_PER_S),
                                     ("bytes_per_s", bytes_per_s, INTEREST_BYTES_PER_S),
                                     ("view_radius", view_radius, INTEREST_VIEW_RADIUS)):
        if type(value) not in (int, float):
            raise BadPresenceInterest(f"presence interest {name} must be a number, not "
                                      f"{type(value).__name__}")
        x = float(value)  # type: ignore[arg-type]
        if not math.isfinite(x) or not (x == 0.0 or low <= x <= high):
            raise BadPresenceInterest(f"presence interest {name} must be 0 (the node's "
                                      f"default) or {low:g} to {high:g}; got {value!r}")
        out.append(x)
    return out[0], out[1], out[2]

PRESENCE_DOMAIN = b"meshnode/presence/v1\x00"


def presence_payload(room_id: bytes, body: bytes) -> bytes:
    """The bytes a participant signs for a presence update."""
    return PRESENCE_DOMAIN + room_id + body


def make_presence(
    room_id: bytes, participant: bytes, seq: int, fields: dict[str, Any],
    sign: Callable[[bytes], bytes],
) -> Presence:
    """Encode and sign a presence update (``fields`` should be canonical: sorted keys)."""
    body = pack([participant, seq, fields])
    return Presence(room_id, participant, seq, fields, sign(presence_payload(room_id, body)), body)


def _fields_of(msg: Message) -> list[Any]:
    if isinstance(msg, Changes):
        return [list(msg.changes), msg.push]
    if isinstance(msg, Heads):
        return [sorted(msg.heads), [list(e) for e in sorted(msg.vv)], msg.bloom, msg.reply]
    if isinstance(msg, Snapshot):
        return [msg.data]
    if isinstance(msg, IHave | Graft | Want):
        return [list(msg.ids)]
    if isinstance(msg, Prune):
        return [list(msg.origins)]
    if isinstance(msg, Presence):
        return [msg.body, msg.signature]
    if isinstance(msg, ForwardJoin):
        return [msg.peer, msg.ttl]
    if isinstance(msg, Shuffle):
        return [msg.origin, msg.ttl, list(msg.peers)]
    if isinstance(msg, PresenceInterest):
        return [msg.msgs_per_s, msg.bytes_per_s, msg.view_radius]
    if isinstance(msg, WantPrefix):
        return [list(msg.prefixes)]
    return [list(msg.peers)]  # ShuffleReply, Disconnect


def encode_frame(msg: Message) -> bytes:
    """Encode one message as a frame of the current protocol version."""
    return pack([PROTOCOL_VERSION, msg.TYPE, msg.room_id, *_fields_of(msg)])


def _bytes_list(value: object, limit: int, exact: int | None, what: str) -> tuple[bytes, ...]:
    if type(value) is not list:
        raise SchemaError(f"{what} must be an array")
    if len(value) > limit:
        raise LimitExceeded(f"too many {what}: {len(value)} > {limit}")
    for item in value:
        if type(item) is not bytes or (exact is not None and len(item) != exact):
            raise SchemaError(f"malformed entry in {what}")
    return tuple(value)


def _unique(items: tuple[bytes, ...], what: str) -> tuple[bytes, ...]:
    if len(set(items)) != len(items):
        raise SchemaError(f"duplicate entry in {what}")
    return items


def _version_vector(value: object, limits: Limits) -> tuple[tuple[bytes, int], ...]:
    if type(value) is not list:
        raise SchemaError("version vector must be an array")
    if len(value) > limits.max_collection_items:
        raise LimitExceeded("version vector too long")
    out = []
    prev = b""
    for entry in value:
        if (
            type(entry) is not list or len(entry) != 2 or type(entry[0]) is not bytes
            or len(entry[0]) != KEY_BYTES or type(entry[1]) is not int or entry[1] < 1
        ):
            raise SchemaError("version vector entry is [32-byte key, seq >= 1]")
        if entry[0] <= prev:
            raise SchemaError("version vector keys must be sorted and unique")
        prev = entry[0]
        out.append((entry[0], entry[1]))
    return tuple(out)


def _peer(value: object) -> str:
    if (
        type(value) is not str
        or not 0 < len(value) <= MAX_PEER_ID_CHARS
        or not set(value) <= _BASE58
    ):
        raise SchemaError("peer is not a PeerID string")
    return value


def _peers(value: object) -> tuple[str, ...]:
    if type(value) is not list:
        raise SchemaError("peers must be an array")
    if len(value) > MAX_PEERS_PER_MESSAGE:
        raise LimitExceeded("too many peers")
    return tuple(_peer(p) for p in value)


def _ttl(value: object) -> int:
    if type(value) is not int or not 0 <= value <= MAX_TTL:
        raise SchemaError(f"ttl must be an integer in 0..{MAX_TTL}")
    return value


def _arity(fields: list[Any], n: int, layout: str) -> None:
    if len(fields) != n:
        raise SchemaError(f"frame layout is [version, type, room_id, {layout}]")


class FrameCache:
    """Decoded frames, keyed by their bytes (at most ``max_entries``, oldest forgotten).

    For simulators: thousands of nodes in one process receive byte-identical frames (the same
    ``Changes``/``IHave`` travels the whole mesh). Only successful decodes of immutable
    messages are kept (frozen dataclasses of bytes, ints and tuples; never ``Presence``, whose
    ``fields`` is a dict), so sharing one among consumers is safe; the answer is the one a
    decode would give, since a frame's meaning depends only on its bytes and the limits."""

    __slots__ = ("entries", "max_entries")

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self.entries: dict[bytes, Message] = {}


_frame_cache: ScopedHook[FrameCache] = ScopedHook()


def using_frame_cache(cache: FrameCache | None) -> AbstractContextManager[None]:
    """Let ``decode_frame`` use ``cache`` (None: no cache) inside the block; the cache
    installed before is back when the block ends, even on error."""
    return _frame_cache.using(cache)


def decode_frame(data: bytes, limits: Limits = DEFAULT_LIMITS) -> Message:
    """Decode one frame; raise a ``DecodeError`` subclass for anything malformed."""
    # Only frames decoded with the default limits are cached, so the key is the bytes alone
    # (hashing a Limits per call cost more than the lookup saved).
    cache = _frame_cache.value
    if cache is not None and cache.max_entries and limits is DEFAULT_LIMITS \
            and type(data) is bytes:
        entries = cache.entries
        msg = entries.get(data)
        if msg is None:
            msg = _decode_frame(data, limits)
            if type(msg) is not Presence:
                if len(entries) >= cache.max_entries:
                    del entries[next(iter(entries))]  # FIFO eviction
                entries[data] = msg
        return msg
    return _decode_frame(data, limits)


def _decode_frame(data: bytes, limits: Limits) -> Message:
    obj = unpack(data, limits, limits.max_frame_bytes, "frame")
    if type(obj) is not list or len(obj) < 3:
        raise SchemaError("frame is not [version, type, room_id, ...]")
    version, mtype, room_id = obj[0], obj[1], obj[2]
    if type(version) is not int:
        raise SchemaError("frame version is not an integer")
    if version not in SUPPORTED_VERSIONS:
        raise UnknownVersion(f"protocol version {version} is not supported")
    if type(mtype) is not int:
        raise SchemaError("frame type is not an integer")
    if type(room_id) is not bytes or len(room_id) != ROOM_ID_BYTES:
        raise SchemaError("room_id must be 32 bytes")
    f = obj[3:]
    if mtype == Changes.TYPE:
        _arity(f, 2, "[change...], push")
        if type(f[1]) is not bool:
            raise SchemaError("changes push flag must be a bool")
        return Changes(
            room_id, _bytes_list(f[0], limits.max_changes_per_frame, None, "changes"), f[1]
        )
    if mtype == Heads.TYPE:
        _arity(f, 4, "[hash...], [[author, seq]...], bloom, reply")
        heads = _unique(_bytes_list(f[0], limits.max_deps, HASH_BYTES, "heads"), "heads")
        if type(f[2]) is not bytes or type(f[3]) is not bool:
            raise SchemaError("heads bloom must be bytes and reply a bool")
        return Heads(room_id, heads, _version_vector(f[1], limits), f[2], f[3])
    if mtype == Snapshot.TYPE:
        _arity(f, 1, "data")
        if type(f[0]) is not bytes:
            raise SchemaError("snapshot data must be bytes")
        return Snapshot(room_id, f[0])
    if mtype in (IHave.TYPE, Graft.TYPE, Want.TYPE):
        _arity(f, 1, "[change id...]")
        ids = _unique(_bytes_list(f[0], limits.max_collection_items, HASH_BYTES, "ids"), "ids")
        cls = IHave if mtype == IHave.TYPE else Graft if mtype == Graft.TYPE else Want
        return cls(room_id, ids)
    if mtype == Prune.TYPE:
        _arity(f, 1, "[origin key...]")
        return Prune(room_id, _bytes_list(f[0], limits.max_collection_items, KEY_BYTES, "origins"))
    if mtype == Presence.TYPE:
        _arity(f, 2, "body, signature")
        body, sig = f
        if type(body) is not bytes or type(sig) is not bytes or len(sig) != SIGNATURE_BYTES:
            raise SchemaError("presence is [body: bytes, signature: 64 bytes]")
        inner = unpack(body, limits, limits.max_frame_bytes, "presence body")
        if type(inner) is not list or len(inner) != 3:
            raise SchemaError("presence body is [participant, seq, fields]")
        participant, seq, fields = inner
        if type(participant) is not bytes or len(participant) != KEY_BYTES:
            raise SchemaError("presence participant must be a 32-byte key")
        if type(seq) is not int or not 0 <= seq < 2**63:
            raise SchemaError("presence seq must be a non-negative integer")
        if type(fields) is not dict:
            raise SchemaError("presence fields must be a map")
        check_value(fields, limits)
        return Presence(room_id, participant, seq, fields, sig, body)
    if mtype == ForwardJoin.TYPE:
        _arity(f, 2, "peer, ttl")
        return ForwardJoin(room_id, _peer(f[0]), _ttl(f[1]))
    if mtype == Shuffle.TYPE:
        _arity(f, 3, "origin, ttl, [peer...]")
        return Shuffle(room_id, _peer(f[0]), _ttl(f[1]), _peers(f[2]))
    if mtype == ShuffleReply.TYPE:
        _arity(f, 1, "[peer...]")
        return ShuffleReply(room_id, _peers(f[0]))
    if mtype == Disconnect.TYPE:
        _arity(f, 1, "[peer...]")
        return Disconnect(room_id, _peers(f[0]))
    if mtype == PresenceInterest.TYPE:
        _arity(f, 3, "msgs_per_s, bytes_per_s, view_radius")
        return PresenceInterest(room_id, *check_presence_interest(f[0], f[1], f[2]))
    if mtype == WantPrefix.TYPE:
        _arity(f, 1, "[prefix...]")
        return WantPrefix(room_id, _unique(_bytes_list(
            f[0], limits.max_collection_items, PREFIX_BYTES, "prefixes"), "prefixes"))
    raise UnknownMessageType(f"message type {mtype} is not defined in version {version}")
