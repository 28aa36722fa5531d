"""A browser's m-lines as the node keeps them: its publications (``Publication``, a
``sendonly`` m-line, its source ``browser_source_id``), its receive slots (``ReceiveSlot``),
the m-lines an offer brings (checked as SDP aiortc parses) and the key of a source's publisher
in a page's people list (``person_key``).

Part of a browser's media on the node (``meshnode.web.media`` documents the protocol).
"""

from __future__ import annotations

from dataclasses import dataclass

from aiortc import RTCRtpReceiver, RTCRtpSender
from aiortc import sdp as aiortc_sdp
from aiortc.rtcrtptransceiver import RTCRtpTransceiver

from meshnode.media.endpoint import SourceInfo
from meshnode.media.participants import BROWSER_LABEL_PREFIX, source_participant
from meshnode.web.media_messages import BadMediaMessage, MediaRefusal
from protocol.media import make_source_id


@dataclass(slots=True)
class ReceiveSlot:
    """A ``recvonly`` m-line of the browser: the node sends one source at a time on it."""

    mid: str
    kind: str
    transceiver: RTCRtpTransceiver
    source: SourceInfo | None = None

    @property
    def sender(self) -> RTCRtpSender:
        """The aiortc sender the relay writes this slot's RTP packets into."""
        sender: RTCRtpSender = self.transceiver.sender
        return sender


@dataclass(slots=True)
class Publication:
    """A ``sendonly`` m-line of the browser (its microphone or camera)."""

    mid: str
    kind: str
    transceiver: RTCRtpTransceiver
    source: SourceInfo
    active: bool = False
    """It carries a live track (``media_publish``) and the relay took it as a source."""

    @property
    def receiver(self) -> RTCRtpReceiver:
        """The aiortc receiver the relay taps (never to be read as a track: that decodes)."""
        receiver: RTCRtpReceiver = self.transceiver.receiver
        return receiver


def browser_source_id(node_peer: str, session: str, mid: str) -> str:
    """The source ID of a browser's publication on m-line ``mid`` (``ValueError`` if the
    session name or the mid cannot be part of a label): ``<node PeerID>/web.<session>.<mid>``,
    browsers have no PeerID of their own, and the label says which of the node's browsers
    publishes (``person_key``)."""
    return make_source_id(node_peer, f"{BROWSER_LABEL_PREFIX}{session}.{mid}")


def person_key(source: SourceInfo) -> str:
    """The key of the person publishing ``source`` in a page's people list: ``PeerID#session``
    for a browser on a node, the publisher's PeerID for anyone else (the relay's participant,
    ``meshnode.media.participants``)."""
    return source_participant(source)


@dataclass(slots=True)
class _Negotiation:
    busy: bool = False
    asked: tuple[int, int] | None = None
    """The slot counts the last ``media_renegotiate`` asked for."""


@dataclass(slots=True)
class _Mline:
    mid: str
    kind: str
    direction: str


def _offered_media(text: str) -> list[_Mline]:
    """The audio and video m-lines of an offer (raises ``BadMediaMessage`` if it is not SDP
    aiortc can parse)."""
    try:
        parsed = aiortc_sdp.SessionDescription.parse(text)
    except Exception as err:
        raise BadMediaMessage(MediaRefusal.BAD_SDP,
                              f"the offer is not valid SDP: {err!r}") from None
    out: list[_Mline] = []
    for media in parsed.media:
        if media.kind == "application":
            continue
        if media.kind not in ("audio", "video"):
            raise BadMediaMessage(MediaRefusal.BAD_SDP, f"m={media.kind} is not relayed")
        mid = media.rtp.muxId
        if not mid:
            raise BadMediaMessage(MediaRefusal.BAD_SDP, "every m-line needs an a=mid")
        out.append(_Mline(mid, media.kind, media.direction or "sendrecv"))
    return out
