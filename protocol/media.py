"""Media link messages (types 72..75): how two peers set up the media of their link.

Each link (client-node, or a node-node trunk) may carry one media ``RTCPeerConnection`` beside
its data connection, negotiated with these messages on the link's ``sync`` channel; the RTP
itself never touches the data channels. Same layout and rules as ``protocol.link``:
``msgpack([version, type, *fields])``, every field checked, only ``DecodeError`` subclasses
raised.

- :class:`MediaSignal` carries an SDP offer or answer of the link's media connection, or a
  request for a new offer. One side only ever offers (the data link's answerer: the node on
  a client link), so offers never cross (no glare). ``generation`` numbers the connection: a
  new generation is a fresh connection that replaces the previous one (recycling, when the
  session description grew too large). An offer lists, in ``mids``, which source each of its
  m-lines carries (``(mid, source_id)``), in both directions.
- :class:`MediaSources` is the sender's list of the media sources of one room it can send on
  this link (full state; it replaces the previous list of that room). A client lists what it
  publishes; a node lists what it can forward. ``mid`` is the m-line that carries the source
  now ("" when none), ``hops`` how many nodes the source has crossed (0: the sender
  publishes it itself, or its own client does).
- :class:`MediaPrefs` says what the sender wants to receive in a room: ``audio_only``,
  ``max_kbps`` (0: no cap of its own), and ``wanted``: None lets the other side choose (a
  client: the node's selection), a tuple names the sources wanted (a node asking a
  neighbour node for what its own subscribers need).
- :class:`MediaRefused` says the sender will not relay a media source (``source_id``; ""
  for all of the room's media) and why: a stable ``reason`` label (``not_member``,
  ``removed``, ``too_many_publications``, ``relay_full``, ``media_disabled``...) and a
  ``detail`` for a person.

A ``source_id`` is ``<publisher PeerID>/<label>`` (label: 1..32 characters of
``[A-Za-z0-9_.-]``), so two publishers never collide and a relay can check that a client
publishes under its own PeerID only.
"""

from dataclasses import dataclass
from typing import Any, ClassVar

from protocol.errors import LimitExceeded, SchemaError
from protocol.frames import _peer as _peer_id
from protocol.limits import Limits
from protocol.link_fields import (
    MAX_DETAIL_CHARS,
    MAX_REFUSAL_REASON_CHARS,
    LinkExtension,
    _arity,
    _label,
    _room_id,
    _text,
    register_link_type,
)

__all__ = [
    "MAX_HOPS",
    "MAX_MEDIA_KBPS",
    "MAX_MEDIA_LINES",
    "MAX_MEDIA_SDP_CHARS",
    "MAX_MEDIA_SOURCES",
    "MEDIA_KINDS",
    "MEDIA_SIGNAL_KINDS",
    "MediaPrefs",
    "MediaRefused",
    "MediaSignal",
    "MediaSource",
    "MediaSources",
    "check_source_id",
    "make_source_id",
]

MEDIA_KINDS = frozenset({"audio", "video"})
MEDIA_SIGNAL_KINDS = frozenset({"offer", "answer", "request"})
MAX_MEDIA_SDP_CHARS = 60_000  # under the msgpack reader's 64 KiB string limit
MAX_MEDIA_LINES = 256
MAX_MEDIA_SOURCES = 256
MAX_MID_CHARS = 32
MAX_LABEL_CHARS = 32
MAX_SOURCE_ID_CHARS = 160
MAX_HOPS = 8
MAX_MEDIA_KBPS = 1_000_000
MAX_GENERATION = 2**32 - 1
_LABEL = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")
_MID = frozenset(chr(c) for c in range(0x21, 0x7F))


def make_source_id(publisher: str, label: str) -> str:
    """The source ID of ``publisher``'s source ``label`` (raises ``ValueError`` if either is
    not valid)."""
    source_id = f"{publisher}/{label}"
    check_source_id(source_id)
    return source_id


def check_source_id(value: object, publisher: str | None = None) -> str:
    """``value`` as a source ID (``<PeerID>/<label>``), published by ``publisher`` if given;
    raises ``SchemaError`` (a ``ValueError``) otherwise."""
    text = _text(value, MAX_SOURCE_ID_CHARS, "source_id")
    peer, sep, label = text.partition("/")
    if not sep or not 0 < len(label) <= MAX_LABEL_CHARS or not set(label) <= _LABEL:
        raise SchemaError("a source_id is <PeerID>/<label of 1..32 characters [A-Za-z0-9_.-]>")
    _peer_id(peer)
    if publisher is not None and peer != publisher:
        raise SchemaError("a source_id starts with its publisher's PeerID")
    return text


def _mid(value: object) -> str:
    text = _text(value, MAX_MID_CHARS, "mid")
    if not set(text) <= _MID:
        raise SchemaError("a mid is printable ASCII without spaces")
    return text


def _int(value: object, low: int, high: int, what: str) -> int:
    if type(value) is not int or not low <= value <= high:
        raise SchemaError(f"{what} must be an integer in {low}..{high}")
    return value


def _list(value: object, limit: int, what: str) -> list[Any]:
    if type(value) is not list:
        raise SchemaError(f"{what} must be an array")
    if len(value) > limit:
        raise LimitExceeded(f"too many {what}: {len(value)} > {limit}")
    return value


@dataclass(frozen=True, slots=True)
class MediaSignal(LinkExtension):
    """An SDP offer or answer of the link's media connection ``generation``, or (``request``,
    empty ``sdp``) a request for a new offer. ``mids`` maps each m-line of an offer to the
    source it carries; answers and requests carry none."""

    TYPE: ClassVar[int] = 72
    generation: int
    kind: str
    sdp: str
    mids: tuple[tuple[str, str], ...] = ()

    def fields(self) -> list[Any]:
        return [self.generation, self.kind, self.sdp, [list(m) for m in self.mids]]

    @classmethod
    def from_fields(cls, fields: list[Any], limits: Limits) -> "MediaSignal":
        _arity(fields, 4, "generation, kind, sdp, [[mid, source_id]...]")
        generation = _int(fields[0], 0, MAX_GENERATION, "media signal generation")
        kind = fields[1]
        if type(kind) is not str or kind not in MEDIA_SIGNAL_KINDS:
            raise SchemaError(f"media signal kind must be one of {sorted(MEDIA_SIGNAL_KINDS)}")
        sdp = _text(fields[2], MAX_MEDIA_SDP_CHARS, "media sdp")
        if (kind == "request") != (sdp == ""):
            raise SchemaError("an offer or answer carries an SDP; a request carries none")
        mids: list[tuple[str, str]] = []
        for entry in _list(fields[3], MAX_MEDIA_LINES, "media lines"):
            if type(entry) is not list or len(entry) != 2:
                raise SchemaError("a media line is [mid, source_id]")
            mids.append((_mid(entry[0]), check_source_id(entry[1])))
        if mids and kind != "offer":
            raise SchemaError("only an offer maps m-lines to sources")
        if len({m for m, _ in mids}) != len(mids):
            raise SchemaError("duplicate mid in a media offer")
        return cls(generation, kind, sdp, tuple(mids))


@dataclass(frozen=True, slots=True)
class MediaSource:
    """One source as :class:`MediaSources` lists it (see the module docstring)."""

    source_id: str
    publisher: str
    kind: str
    mid: str = ""
    hops: int = 0


@dataclass(frozen=True, slots=True)
class MediaSources(LinkExtension):
    """Every source of ``room_id`` the sender can send on this link (full state)."""

    TYPE: ClassVar[int] = 73
    room_id: bytes
    sources: tuple[MediaSource, ...]

    def fields(self) -> list[Any]:
        return [self.room_id, [[s.source_id, s.publisher, s.kind, s.mid, s.hops]
                               for s in self.sources]]

    @classmethod
    def from_fields(cls, fields: list[Any], limits: Limits) -> "MediaSources":
        _arity(fields, 2, "room_id, [[source_id, publisher, kind, mid, hops]...]")
        room = _room_id(fields[0], "media sources")
        sources: list[MediaSource] = []
        for entry in _list(fields[1], MAX_MEDIA_SOURCES, "media sources"):
            if type(entry) is not list or len(entry) != 5:
                raise SchemaError("a media source is [source_id, publisher, kind, mid, hops]")
            publisher = _peer_id(entry[1])
            source_id = check_source_id(entry[0], publisher)
            kind = entry[2]
            if type(kind) is not str or kind not in MEDIA_KINDS:
                raise SchemaError(f"a media source kind is one of {sorted(MEDIA_KINDS)}")
            mid = _mid(entry[3]) if entry[3] != "" else ""
            sources.append(MediaSource(source_id, publisher, kind, mid,
                                       _int(entry[4], 0, MAX_HOPS, "media source hops")))
        if len({s.source_id for s in sources}) != len(sources):
            raise SchemaError("duplicate source_id in media sources")
        return cls(room, tuple(sources))


@dataclass(frozen=True, slots=True)
class MediaPrefs(LinkExtension):
    """What the sender wants to receive of ``room_id`` (see the module docstring)."""

    TYPE: ClassVar[int] = 74
    room_id: bytes
    audio_only: bool = False
    max_kbps: int = 0
    wanted: tuple[str, ...] | None = None

    def fields(self) -> list[Any]:
        wanted = None if self.wanted is None else list(self.wanted)
        return [self.room_id, self.audio_only, self.max_kbps, wanted]

    @classmethod
    def from_fields(cls, fields: list[Any], limits: Limits) -> "MediaPrefs":
        _arity(fields, 4, "room_id, audio_only, max_kbps, [source_id...] or nil")
        room = _room_id(fields[0], "media prefs")
        if type(fields[1]) is not bool:
            raise SchemaError("media prefs audio_only must be a boolean")
        max_kbps = _int(fields[2], 0, MAX_MEDIA_KBPS, "media prefs max_kbps")
        wanted: tuple[str, ...] | None = None
        if fields[3] is not None:
            items = _list(fields[3], MAX_MEDIA_SOURCES, "wanted sources")
            wanted = tuple(check_source_id(s) for s in items)
            if len(set(wanted)) != len(wanted):
                raise SchemaError("duplicate wanted source")
        return cls(room, fields[1], max_kbps, wanted)


@dataclass(frozen=True, slots=True)
class MediaRefused(LinkExtension):
    """The sender will not relay ``source_id`` ("" : any media) of ``room_id``, for
    ``reason`` (a stable label)."""

    TYPE: ClassVar[int] = 75
    room_id: bytes
    reason: str
    detail: str
    source_id: str = ""

    def fields(self) -> list[Any]:
        return [self.room_id, self.reason, self.detail, self.source_id]

    @classmethod
    def from_fields(cls, fields: list[Any], limits: Limits) -> "MediaRefused":
        _arity(fields, 4, "room_id, reason, detail, source_id")
        room = _room_id(fields[0], "media refused")
        reason = _label(fields[1], MAX_REFUSAL_REASON_CHARS, "media refusal reason")
        detail = _text(fields[2], MAX_DETAIL_CHARS, "media refusal detail")
        source = "" if fields[3] == "" else check_source_id(fields[3])
        return cls(room, reason, detail, source)


for _cls in (MediaSignal, MediaSources, MediaPrefs, MediaRefused):
    register_link_type(_cls)
