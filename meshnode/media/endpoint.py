"""What the media relay and its endpoints say to each other.

An *endpoint* is one peer's media connection as the relay sees it: a client's (or a
neighbour node's trunk) media ``RTCPeerConnection`` on a link (``meshnode.media.session``),
or a browser's (``meshnode.web.media``). The relay never opens a connection itself: an
endpoint hands it the aiortc transceivers of what its peer publishes (``RelayPort.publish``)
and, when the relay asks it to send a source (``MediaEndpoint.add_output``), opens a
``sendonly`` m-line and hands back its transceiver (``RelayPort.output_ready``). The relay
taps the receivers and writes into the senders through the driver
(``meshnode.media.aiortc_driver``): RTP is forwarded, never decoded.
"""

from dataclasses import dataclass
from typing import Protocol

from aiortc import RTCRtpTransceiver

__all__ = ["MediaEndpoint", "Preferences", "RelayPort", "SourceInfo"]


@dataclass(frozen=True, slots=True)
class SourceInfo:
    """One media source in one room: ``source_id`` is ``<publisher PeerID>/<label>``
    (``protocol.media``), ``kind`` ``"audio"`` or ``"video"``."""

    source_id: str
    publisher: str
    kind: str
    room_id: bytes


@dataclass(frozen=True, slots=True)
class Preferences:
    """What a subscriber asks for in a room: audio only, and a cap of its own (None: the
    relay adapts from the subscriber's bandwidth estimate alone). ``wanted``: the sources a
    neighbour node asks for by name (None: the relay's selection decides; clients and
    browsers)."""

    audio_only: bool = False
    max_kbps: float | None = None
    wanted: frozenset[str] | None = None


class MediaEndpoint(Protocol):
    """One peer's media connection, as the relay drives it (see the module docstring).

    Implemented by ``meshnode.media.session.LinkMedia`` (Python clients and trunks to
    neighbour nodes) and by the browser media session. All methods are called on the event
    loop and must not block; negotiation happens in the background."""

    @property
    def peer_id(self) -> str:
        """The PeerID of the peer on the other end (a browser: its session's PeerID)."""

    @property
    def kind(self) -> str:
        """``"client"``, ``"browser"`` or ``"node"`` (a trunk to a neighbour node)."""

    def rooms(self) -> frozenset[bytes]:
        """The rooms whose media the peer takes part in over this endpoint (the relay still
        checks the peer's role in each before it relays anything)."""

    def preferences(self, room_id: bytes) -> Preferences:
        """The peer's current wishes for ``room_id``."""

    def add_output(self, source: SourceInfo) -> None:
        """Open a ``sendonly`` m-line for ``source`` (renegotiating); once negotiated, call
        ``RelayPort.output_ready`` with its transceiver. Idempotent."""

    def remove_output(self, source_id: str) -> None:
        """Stop sending ``source_id`` (its m-line becomes ``inactive``). Idempotent."""

    def refuse(self, room_id: bytes, reason: str, detail: str, source_id: str = "") -> None:
        """Tell the peer the relay will not take or give ``source_id`` ("" : any media of
        the room), for ``reason`` (a stable label)."""


class RelayPort(Protocol):
    """What an endpoint may tell the relay (``meshnode.media.relay.MediaRelay`` implements
    it)."""

    def attach(self, endpoint: MediaEndpoint) -> None:
        """A new endpoint (its media connection exists or is about to)."""

    def detach(self, endpoint: MediaEndpoint) -> None:
        """The endpoint closed: its sources end and its outputs are dropped."""

    def publish(self, endpoint: MediaEndpoint, source: SourceInfo,
                transceiver: RTCRtpTransceiver) -> str | None:
        """The peer publishes ``source`` on the receiver of ``transceiver``. Returns None
        if the relay takes it, else the refusal's reason (the relay has called
        ``endpoint.refuse`` already)."""

    def unpublish(self, endpoint: MediaEndpoint, source_id: str) -> None:
        """The peer stopped publishing ``source_id``."""

    def output_ready(self, endpoint: MediaEndpoint, source_id: str,
                     transceiver: RTCRtpTransceiver) -> None:
        """The m-line asked for with ``add_output`` is negotiated: forward into it."""

    def output_ended(self, endpoint: MediaEndpoint, source_id: str) -> None:
        """The m-line of an output ended (removed, or its connection was recycled: then
        ``output_ready`` follows again for the new one)."""

    def preferences_changed(self, endpoint: MediaEndpoint, room_id: bytes) -> None:
        """``endpoint.preferences(room_id)`` changed; the relay re-plans soon."""
