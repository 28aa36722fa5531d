"""The browser's media messages on its ``client`` data channel: pure parsing, no I/O.

The browser is always the offerer of its one ``RTCPeerConnection`` (data channel and media
alike): it adds a transceiver when it starts its microphone or camera, or when the node asks
for more receive slots, and sends the new offer as a ``media_offer``. See
``meshnode.web.media`` for the whole protocol; this module turns one decoded JSON object into a
typed request, or raises ``BadMediaMessage`` with a stable ``reason`` (a metric label).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from meshnode.web.messages import MAX_REQ

__all__ = [
    "MEDIA_TYPES",
    "BadMediaMessage",
    "MediaOffer",
    "MediaPrefsRequest",
    "MediaPublish",
    "MediaRefusal",
    "PublishedTrack",
    "parse_media_message",
]

MAX_SDP_CHARS = 64 * 1024
"""Largest offer a browser may send (the node's answer is about the same size)."""

MAX_PUBLISHED_TRACKS = 8
"""Most tracks one ``media_publish`` may list (the node's own cap is usually lower)."""

MAX_KBPS = 1_000_000.0
"""Largest ``max_kbps`` accepted (1 Gbit/s: anything above is "no limit")."""

_MID = re.compile(r"^[A-Za-z0-9_.-]{1,16}$")
KINDS = ("audio", "video")


class MediaRefusal(StrEnum):
    """Why the node refused a media message (stable: ``media_refused.reason`` and metric
    labels, ``media_`` + the value)."""

    BAD_MESSAGE = "bad_message"
    """A field is missing, of the wrong type or out of range."""
    BAD_SDP = "bad_sdp"
    """The offer cannot be applied (not SDP, no data channel, an unknown codec...)."""
    NO_ROLE = "no_role"
    """This browser holds no role in the room that lets it do this."""
    MEDIA_OFF = "media_off"
    """This node relays no media (in this room)."""
    BUSY = "busy"
    """Another offer is still being answered: send the next after its answer."""
    RATE_LIMITED = "rate_limited"
    """Too many media messages in a short time."""
    TOO_MANY_TRACKS = "too_many_tracks"
    """Over the node's cap on publications per peer or on m-lines per connection."""
    UNKNOWN_TRACK = "unknown_track"
    """A ``media_publish`` names a mid the browser does not send on, or the wrong kind."""
    RELAY_REFUSED = "relay_refused"
    """The room's relay refused (its own cap or rule; ``error`` says which)."""


class BadMediaMessage(ValueError):
    """A media message the node refuses; ``reason`` is a ``MediaRefusal``."""

    def __init__(self, reason: MediaRefusal, text: str, req: int | None = None) -> None:
        super().__init__(text)
        self.reason = reason
        self.text = text
        self.req = req


@dataclass(frozen=True, slots=True)
class MediaOffer:
    """``{"t":"media_offer","req":n,"sdp":str}``: the browser's new offer."""

    req: int
    sdp: str


@dataclass(frozen=True, slots=True)
class PublishedTrack:
    """One send m-line that carries a live track."""

    mid: str
    kind: str


@dataclass(frozen=True, slots=True)
class MediaPublish:
    """``{"t":"media_publish","req":n,"tracks":[{"mid":str,"kind":"audio"|"video"}]}``: the
    browser's send m-lines that carry a live track now (all others carry none)."""

    req: int
    tracks: tuple[PublishedTrack, ...]


@dataclass(frozen=True, slots=True)
class MediaPrefsRequest:
    """``{"t":"media_prefs","req":n,"audio_only":bool,"max_kbps":number|null}``."""

    req: int
    audio_only: bool
    max_kbps: float | None


MediaMessage = MediaOffer | MediaPublish | MediaPrefsRequest

MEDIA_TYPES = frozenset({"media_offer", "media_publish", "media_prefs"})
"""The ``t`` values this module parses."""


def _req(msg: dict[str, Any]) -> int:
    req = msg.get("req")
    if type(req) is not int or not 0 <= req <= MAX_REQ:
        raise BadMediaMessage(MediaRefusal.BAD_MESSAGE,
                              f'{msg.get("t")} needs an integer "req" in 0..{MAX_REQ}')
    return req


def _offer(msg: dict[str, Any], req: int) -> MediaOffer:
    sdp = msg.get("sdp")
    if type(sdp) is not str or not sdp:
        raise BadMediaMessage(MediaRefusal.BAD_MESSAGE, 'media_offer needs the offer SDP as '
                              'a string "sdp"', req)
    if len(sdp) > MAX_SDP_CHARS:
        raise BadMediaMessage(MediaRefusal.BAD_SDP,
                              f"an offer is at most {MAX_SDP_CHARS} characters", req)
    if not sdp.startswith("v=0") or "m=application" not in sdp:
        raise BadMediaMessage(MediaRefusal.BAD_SDP, "the offer must be SDP for this "
                              "connection (v=0, with its data channel m=application)", req)
    return MediaOffer(req, sdp)


def _publish(msg: dict[str, Any], req: int) -> MediaPublish:
    tracks = msg.get("tracks")
    if type(tracks) is not list:
        raise BadMediaMessage(MediaRefusal.BAD_MESSAGE,
                              'media_publish needs a list "tracks" of {"mid", "kind"}', req)
    if len(tracks) > MAX_PUBLISHED_TRACKS:
        raise BadMediaMessage(MediaRefusal.TOO_MANY_TRACKS,
                              f"at most {MAX_PUBLISHED_TRACKS} tracks", req)
    out: list[PublishedTrack] = []
    seen: set[str] = set()
    for track in tracks:
        if type(track) is not dict:
            raise BadMediaMessage(MediaRefusal.BAD_MESSAGE,
                                  'each track is {"mid": str, "kind": "audio"|"video"}', req)
        mid, kind = track.get("mid"), track.get("kind")
        if type(mid) is not str or not _MID.match(mid):
            raise BadMediaMessage(MediaRefusal.BAD_MESSAGE,
                                  "a track's mid is 1..16 letters, digits, '_', '.' or '-'", req)
        if kind not in KINDS:
            raise BadMediaMessage(MediaRefusal.BAD_MESSAGE,
                                  'a track\'s kind is "audio" or "video"', req)
        if mid in seen:
            raise BadMediaMessage(MediaRefusal.BAD_MESSAGE, f"mid {mid!r} is listed twice", req)
        seen.add(mid)
        out.append(PublishedTrack(mid, str(kind)))
    return MediaPublish(req, tuple(out))


def _prefs(msg: dict[str, Any], req: int) -> MediaPrefsRequest:
    audio_only = msg.get("audio_only", False)
    if type(audio_only) is not bool:
        raise BadMediaMessage(MediaRefusal.BAD_MESSAGE, '"audio_only" is true or false', req)
    max_kbps = msg.get("max_kbps")
    if max_kbps is not None:
        if type(max_kbps) not in (int, float) or not math.isfinite(max_kbps) or max_kbps <= 0:
            raise BadMediaMessage(MediaRefusal.BAD_MESSAGE,
                                  '"max_kbps" is a positive number or null (no limit)', req)
        max_kbps = min(float(max_kbps), MAX_KBPS)
    return MediaPrefsRequest(req, audio_only, max_kbps)


_PARSERS: dict[str, Callable[[dict[str, Any], int], MediaMessage]] = {
    "media_offer": _offer, "media_publish": _publish, "media_prefs": _prefs,
}


def parse_media_message(msg: dict[str, Any]) -> MediaMessage:
    """The typed request in ``msg`` (a decoded JSON object whose ``t`` is in
    ``MEDIA_TYPES``); raises ``BadMediaMessage`` (with ``req`` when it could be read)."""
    kind = msg.get("t")
    parser = _PARSERS.get(kind) if type(kind) is str else None
    if parser is None:
        raise BadMediaMessage(MediaRefusal.BAD_MESSAGE, f"not a media message: {msg.get('t')!r}")
    return parser(msg, _req(msg))
