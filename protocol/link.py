"""Link messages: what two peers say about their link itself, not about one room.

They travel on the ``sync`` data channel beside room frames and share their outer layout,
``msgpack([version, type, *fields])``, with types from 64 up (room frames use 1..63 and put a
room ID third). :func:`peek_type` tells the two apart without decoding; :func:`decode_link`
checks every field and raises only ``protocol.errors.DecodeError`` subclasses.

- :class:`Hello` is the first message on a link, each way. It is signed by the sender's
  Ed25519 key and names both DTLS certificate fingerprints, which binds the encrypted
  transport to the identity (a relay that terminates DTLS cannot forward it unchanged).
- :class:`Signal` carries an SDP offer or answer through the mesh, so a node can open a link
  to a peer it learnt about from the overlay without knowing its address.
- :class:`Ack` tells a client which of its changes are durable at the node.
- :class:`Nack` tells a client which of its changes the node cannot make durable yet, and why
  (its store fails: ``disk_full``, ``io_error``...). The node keeps them and retries; an
  ``Ack`` follows once they are durable.
- :class:`Rooms` updates the list of rooms the sender takes part in over this link.
- :class:`Ping` says "still here" on an idle link, so a peer that vanished (a crash, a cut
  cable) is noticed in seconds rather than when ICE consent fails (~30 s).
- :class:`Refused` tells the peer that it may not take part in a room over this link, and
  why (a stable reason label), so a client waiting to be admitted can stop and say so.
- :class:`Bundle` carries several room frames in one data-channel message: aiortc spends
  about as much CPU on a message as on its bytes, so a node sends what it has for a neighbour
  at the end of each turn of its event loop as one message.
"""

from dataclasses import dataclass
from typing import Any, ClassVar

import protocol.media  # noqa: F401  (the media link messages register themselves)
from protocol import snapshot_offer  # noqa: F401  (SnapshotPart registers itself)
from protocol.errors import LimitExceeded, SchemaError, UnknownMessageType, UnknownVersion
from protocol.frames import (
    COMPACT_VERSION,
    HASH_BYTES,
    KEY_BYTES,
    MAX_TTL,
    PROTOCOL_VERSION,
    ROOM_ID_BYTES,
    SIGNATURE_BYTES,
    SUPPORTED_VERSIONS,
)
from protocol.frames import _peer as _peer_id
from protocol.limits import DEFAULT_LIMITS, Limits
from protocol.link_fields import (
    FIRST_LINK_TYPE as FIRST_LINK_TYPE,
)
from protocol.link_fields import (
    MAX_DETAIL_CHARS as MAX_DETAIL_CHARS,
)
from protocol.link_fields import (
    MAX_REFUSAL_REASON_CHARS as MAX_REFUSAL_REASON_CHARS,
)
from protocol.link_fields import (
    LinkExtension,
    _arity,
    _label,
    _room_id,
    _text,
    extension_type,
)
from protocol.msgpack_io import pack, unpack

HELLO_DOMAIN = b"meshnode/hello/v1\x00"
KINDS = frozenset({"node", "client"})
SIGNAL_KINDS = frozenset({"offer", "answer", "error"})
MAX_ROOMS_PER_LINK = 64
MAX_INVITES = 4
MAX_INVITE_BYTES = 2_048
MAX_URL_CHARS = 256
MAX_FINGERPRINT_CHARS = 128
MAX_SDP_CHARS = 32_768
MAX_ACK_IDS = 1_024
NONCE_BYTES = 16
MAX_BUNDLE_FRAMES = 1_024
MAX_REASON_CHARS = 32


@dataclass(frozen=True, slots=True)
class Hello:
    """The signed greeting that opens a link (see the module docstring).

    ``fingerprint`` is the sender's own DTLS certificate fingerprint and ``peer_fingerprint``
    the one it saw from the receiver, both as in SDP (``sha-256 AB:CD:…``). ``rooms`` are the
    rooms the sender wants to share over this link; ``url`` is where its signaling endpoint
    can be reached ("" if nowhere); ``invites`` are invite tokens it redeems; ``time_ms`` is
    its wall clock, to refuse stale replays; ``versions`` the protocol versions it speaks.
    """

    TYPE: ClassVar[int] = 64
    public_key: bytes
    kind: str
    fingerprint: str
    peer_fingerprint: str
    rooms: tuple[bytes, ...]
    url: str
    time_ms: int
    invites: tuple[bytes, ...]
    versions: tuple[int, ...]
    signature: bytes
    body: bytes


@dataclass(frozen=True, slots=True)
class Signal:
    """An SDP offer, answer or error relayed hop by hop from ``src`` to ``dst`` (PeerIDs).

    ``nonce`` pairs an answer with its offer; ``ttl`` bounds the walk."""

    TYPE: ClassVar[int] = 65
    src: str
    dst: str
    ttl: int
    nonce: bytes
    kind: str
    sdp: str


@dataclass(frozen=True, slots=True)
class Ack:
    """These changes of ``room_id`` are durable at the sender."""

    TYPE: ClassVar[int] = 66
    room_id: bytes
    ids: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class Nack:
    """These changes of ``room_id`` are not durable at the sender yet, for ``reason``.

    ``reason`` is a short label (``[a-z0-9_]``, at most 32 characters) naming why its store
    fails, e.g. ``disk_full``; receivers must accept labels they do not know. Not a refusal:
    the sender keeps the changes and sends an :class:`Ack` once they are durable."""

    TYPE: ClassVar[int] = 70
    room_id: bytes
    ids: tuple[bytes, ...]
    reason: str


@dataclass(frozen=True, slots=True)
class Rooms:
    """The sender now shares exactly these rooms over this link."""

    TYPE: ClassVar[int] = 67
    rooms: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class Ping:
    """The sender is alive (sent on a link that has been idle; needs no answer)."""

    TYPE: ClassVar[int] = 68


@dataclass(frozen=True, slots=True)
class Bundle:
    """Room frames (encoded, each a message of its own otherwise), to be handled in order."""

    TYPE: ClassVar[int] = 69
    frames: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class Refused:
    """The sender will not share ``room_id`` with the receiver over this link.

    ``reason`` is a stable label (``not_member``, ``invite_expired``, ``invite_bad_signature``,
    ...; lowercase letters, digits and ``_``), ``detail`` a sentence for a person."""

    TYPE: ClassVar[int] = 71
    room_id: bytes
    reason: str
    detail: str


LinkMessage = Hello | Signal | Ack | Nack | Rooms | Ping | Bundle | Refused | LinkExtension


def peek_type(data: bytes) -> int | None:
    """The message type of a frame or link message, read from its first bytes; None if the
    bytes do not start like either (a full decode then says what is wrong)."""
    if len(data) < 3 or not 0x92 <= data[0] <= 0x9F or data[1] > 0x7F or data[2] > 0x7F:
        return None
    return data[2]


def hello_payload(body: bytes) -> bytes:
    """The bytes a hello's signature covers."""
    return HELLO_DOMAIN + body


HELLO_VERSIONS = tuple(sorted(SUPPORTED_VERSIONS | {COMPACT_VERSION}))
"""What a hello says we speak by default: version 1, and ``COMPACT_VERSION`` (compact changes
and ``WantPrefix``, ``protocol.compact``; frames keep version 1)."""


def make_hello(
    public_key: bytes, kind: str, fingerprint: str, peer_fingerprint: str,
    rooms: list[bytes], url: str, time_ms: int, sign: Any,
    invites: list[bytes] | None = None, versions: tuple[int, ...] = HELLO_VERSIONS,
) -> Hello:
    """Build and sign a hello; ``sign`` maps bytes to a 64-byte Ed25519 signature.
    ``versions``: what we speak (a peer that leaves ``COMPACT_VERSION`` out is sent
    canonical changes only)."""
    versions = tuple(sorted(versions))
    inv = list(invites or [])
    body = pack([public_key, kind, fingerprint, peer_fingerprint, list(rooms), url, time_ms,
                 inv, list(versions)])
    return Hello(public_key, kind, fingerprint, peer_fingerprint, tuple(rooms), url, time_ms,
                 tuple(inv), versions, sign(hello_payload(body)), body)


def _fields_of(msg: LinkMessage) -> list[Any]:
    if isinstance(msg, LinkExtension):
        return msg.fields()
    if isinstance(msg, Hello):
        return [msg.body, msg.signature]
    if isinstance(msg, Signal):
        return [msg.src, msg.dst, msg.ttl, msg.nonce, msg.kind, msg.sdp]
    if isinstance(msg, Ack):
        return [msg.room_id, list(msg.ids)]
    if isinstance(msg, Nack):
        return [msg.room_id, list(msg.ids), msg.reason]
    if isinstance(msg, Ping):
        return []
    if isinstance(msg, Bundle):
        return [list(msg.frames)]
    if isinstance(msg, Refused):
        return [msg.room_id, msg.reason, msg.detail]
    return [list(msg.rooms)]


def encode_link(msg: LinkMessage) -> bytes:
    """Encode one link message."""
    return pack([PROTOCOL_VERSION, msg.TYPE, *_fields_of(msg)])


def _ids(value: object, limit: int, size: int, what: str) -> tuple[bytes, ...]:
    if type(value) is not list:
        raise SchemaError(f"{what} must be an array")
    if len(value) > limit:
        raise LimitExceeded(f"too many {what}: {len(value)} > {limit}")
    for item in value:
        if type(item) is not bytes or len(item) != size:
            raise SchemaError(f"each of {what} must be {size} bytes")
    if len(set(value)) != len(value):
        raise SchemaError(f"duplicate entry in {what}")
    return tuple(value)


def _hello(body: object, sig: object, limits: Limits) -> Hello:
    if type(body) is not bytes or type(sig) is not bytes or len(sig) != SIGNATURE_BYTES:
        raise SchemaError("hello is [body: bytes, signature: 64 bytes]")
    f = unpack(body, limits, limits.max_frame_bytes, "hello body")
    if type(f) is not list or len(f) != 9:
        raise SchemaError("hello body is [key, kind, fingerprint, peer_fingerprint, rooms, "
                          "url, time_ms, invites, versions]")
    key, kind, fp, peer_fp, rooms, url, time_ms, invites, versions = f
    if type(key) is not bytes or len(key) != KEY_BYTES:
        raise SchemaError("hello key must be 32 bytes")
    if type(kind) is not str or kind not in KINDS:
        raise SchemaError(f"hello kind must be one of {sorted(KINDS)}")
    if type(time_ms) is not int or not 0 <= time_ms < 2**63:
        raise SchemaError("hello time_ms must be a non-negative integer")
    if type(invites) is not list or len(invites) > MAX_INVITES:
        raise SchemaError(f"hello invites must be an array of at most {MAX_INVITES}")
    for inv in invites:
        if type(inv) is not bytes or len(inv) > MAX_INVITE_BYTES:
            raise SchemaError("hello invite must be bytes")
    if type(versions) is not list or not 0 < len(versions) <= 16 or any(
        type(v) is not int for v in versions
    ):
        raise SchemaError("hello versions must be a non-empty array of integers")
    return Hello(
        key, kind,
        _text(fp, MAX_FINGERPRINT_CHARS, "fingerprint"),
        _text(peer_fp, MAX_FINGERPRINT_CHARS, "peer fingerprint"),
        _ids(rooms, MAX_ROOMS_PER_LINK, ROOM_ID_BYTES, "rooms"),
        _text(url, MAX_URL_CHARS, "url"), time_ms, tuple(invites), tuple(versions), sig, body,
    )


def decode_link(data: bytes, limits: Limits = DEFAULT_LIMITS) -> LinkMessage:
    """Decode one link message; raise a ``DecodeError`` subclass for anything malformed."""
    obj = unpack(data, limits, limits.max_frame_bytes, "link message")
    if type(obj) is not list or len(obj) < 2:
        raise SchemaError("link message is not [version, type, ...]")
    version, mtype = obj[0], obj[1]
    if type(version) is not int:
        raise SchemaError("link message version is not an integer")
    if version not in SUPPORTED_VERSIONS:
        raise UnknownVersion(f"protocol version {version} is not supported")
    if type(mtype) is not int:  # 64.0 would otherwise pass as a hello that peek_type misses
        raise SchemaError("link message type is not an integer")
    f = obj[2:]
    if mtype == Hello.TYPE:
        _arity(f, 2, "body, signature")
        return _hello(f[0], f[1], limits)
    if mtype == Signal.TYPE:
        _arity(f, 6, "src, dst, ttl, nonce, kind, sdp")
        src, dst, ttl, nonce, kind, sdp = f
        if type(ttl) is not int or not 0 <= ttl <= MAX_TTL:
            raise SchemaError(f"signal ttl must be an integer in 0..{MAX_TTL}")
        if type(nonce) is not bytes or len(nonce) != NONCE_BYTES:
            raise SchemaError(f"signal nonce must be {NONCE_BYTES} bytes")
        if type(kind) is not str or kind not in SIGNAL_KINDS:
            raise SchemaError(f"signal kind must be one of {sorted(SIGNAL_KINDS)}")
        return Signal(_peer_id(src), _peer_id(dst), ttl, nonce, kind,
                      _text(sdp, MAX_SDP_CHARS, "sdp"))
    if mtype == Ack.TYPE:
        _arity(f, 2, "room_id, [change id...]")
        return Ack(_room_id(f[0], "ack"), _ids(f[1], MAX_ACK_IDS, HASH_BYTES, "ids"))
    if mtype == Nack.TYPE:
        _arity(f, 3, "room_id, [change id...], reason")
        room = _room_id(f[0], "nack")
        ids = _ids(f[1], MAX_ACK_IDS, HASH_BYTES, "ids")
        if not ids:
            raise SchemaError("a nack names at least one change")
        return Nack(room, ids, _label(f[2], MAX_REASON_CHARS, "nack reason"))
    if mtype == Rooms.TYPE:
        _arity(f, 1, "[room id...]")
        return Rooms(_ids(f[0], MAX_ROOMS_PER_LINK, ROOM_ID_BYTES, "rooms"))
    if mtype == Ping.TYPE:
        _arity(f, 0, "(nothing)")
        return Ping()
    if mtype == Bundle.TYPE:
        _arity(f, 1, "[frame...]")
        frames = f[0]
        if type(frames) is not list or not 0 < len(frames) <= MAX_BUNDLE_FRAMES:
            raise SchemaError(f"a bundle holds 1..{MAX_BUNDLE_FRAMES} frames")
        for frame in frames:
            if type(frame) is not bytes:
                raise SchemaError("bundled frames must be bytes")
            inner = peek_type(frame)
            if inner is not None and inner >= FIRST_LINK_TYPE:
                raise SchemaError("a bundle carries room frames, not link messages")
        return Bundle(tuple(frames))
    if mtype == Refused.TYPE:
        _arity(f, 3, "room_id, reason, detail")
        return Refused(_room_id(f[0], "refused"),
                       _label(f[1], MAX_REFUSAL_REASON_CHARS, "refusal reason"),
                       _text(f[2], MAX_DETAIL_CHARS, "refusal detail"))
    extension = extension_type(mtype)
    if extension is not None:
        return extension.from_fields(f, limits)
    raise UnknownMessageType(f"link message type {mtype!r} is not defined in version {version}")
