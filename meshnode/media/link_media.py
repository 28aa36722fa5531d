"""``LinkMedia``: the relay's endpoint for one link (a Python client, or a trunk to a
neighbour node): its ``MediaSession`` and what the peer said in ``MediaSources`` and
``MediaPrefs``.

The data link's answerer offers the media connection (``meshnode.media.session``): on a
client's link that is always this node; on a trunk, whichever node answered the other's
dial. The offerer creates every m-line: ``sendonly`` for the sources it forwards,
``recvonly`` for those it receives (a client's publications; on a trunk, the sources it
asked the neighbour for). The session is created on first need, so a link that never
carries media costs no second connection.
"""

import logging
from collections.abc import Callable

from aiortc import RTCPeerConnection, RTCRtpTransceiver

from meshnode.media.endpoint import Preferences, RelayPort, SourceInfo
from meshnode.media.session import RECV, SEND, MediaSession
from meshnode.runtime.links import Established
from protocol.link import LinkMessage
from protocol.media import MediaPrefs, MediaRefused, MediaSignal, MediaSource, MediaSources

log = logging.getLogger("meshnode.media")

__all__ = ["LinkMedia"]


class LinkMedia:
    """A ``MediaEndpoint`` on one established link (see the module docstring)."""

    def __init__(self, est: Established, relay: RelayPort,
                 send: Callable[[str, LinkMessage], bool],
                 make_pc: Callable[[], RTCPeerConnection], *,
                 on_bad: Callable[[str], None], recycle_sdp_chars: int) -> None:
        self.est = est
        self._relay = relay
        self._send = send
        self._make_pc = make_pc
        self._on_bad = on_bad
        self._recycle = recycle_sdp_chars
        self.offerer = not est.offered_by_us
        self.session: MediaSession | None = None
        self._prefs: dict[bytes, Preferences] = {}
        # What the peer says it can send, per room (source ID -> entry).
        self.offered: dict[bytes, dict[str, MediaSource]] = {}
        self._sources: dict[str, SourceInfo] = {}  # every source ID we heard of, by ID
        self._outputs: set[str] = set()
        self._wanted: dict[bytes, frozenset[str]] = {}
        self._announced: dict[bytes, tuple[MediaSource, ...]] = {}
        self.closed = False

    # ------------------------------------------------------------------ MediaEndpoint

    @property
    def peer_id(self) -> str:
        """The link's peer."""
        return self.est.peer

    @property
    def kind(self) -> str:
        """``client`` or ``node``."""
        return self.est.hello.kind

    def rooms(self) -> frozenset[bytes]:
        """The rooms the link shares."""
        return frozenset(self.est.rooms)

    def preferences(self, room_id: bytes) -> Preferences:
        """The peer's last ``MediaPrefs`` for the room."""
        return self._prefs.get(room_id, Preferences())

    def add_output(self, source: SourceInfo) -> None:
        """Forward ``source`` to the peer: the offerer adds a ``sendonly`` line; on a trunk
        we answer, the neighbour adds the line for what it asked us for."""
        self._sources[source.source_id] = source
        if source.source_id in self._outputs:
            return
        self._outputs.add(source.source_id)
        if self.offerer:
            self._session().add(source.source_id, source.kind, SEND)

    def remove_output(self, source_id: str) -> None:
        """Stop forwarding ``source_id`` to the peer."""
        if source_id not in self._outputs:
            return
        self._outputs.discard(source_id)
        if self.offerer and self.session is not None:
            self.session.remove(source_id, SEND)

    def refuse(self, room_id: bytes, reason: str, detail: str, source_id: str = "") -> None:
        """Send ``MediaRefused``."""
        self._send(self.peer_id, MediaRefused(room_id, reason, detail, source_id))

    # ------------------------------------------------------------------ relay side

    def accept_publication(self, source: SourceInfo) -> None:
        """(Offerer) receive ``source`` from the peer: a ``recvonly`` line."""
        self._sources[source.source_id] = source
        self._session().add(source.source_id, source.kind, RECV)

    def drop_publication(self, source_id: str) -> None:
        """(Offerer) stop receiving ``source_id`` from the peer."""
        if self.session is not None:
            self.session.remove(source_id, RECV)

    def want(self, room_id: bytes, wanted: frozenset[str]) -> None:
        """(Trunk) ask the neighbour for exactly ``wanted`` of the room; as the offerer, also
        open (or close) the ``recvonly`` lines."""
        old = self._wanted.get(room_id, frozenset())
        if wanted == old:
            return
        self._wanted[room_id] = wanted
        self._send(self.peer_id, MediaPrefs(room_id, False, 0, tuple(sorted(wanted))))
        if not self.offerer:
            return
        offered = self.offered.get(room_id, {})
        for sid in wanted - old:
            entry = offered.get(sid)
            if entry is not None:
                self._sources[sid] = SourceInfo(sid, entry.publisher, entry.kind, room_id)
                self._session().add(sid, entry.kind, RECV)
        for sid in old - wanted:
            if self.session is not None:
                self.session.remove(sid, RECV)

    def announce(self, room_id: bytes, sources: tuple[MediaSource, ...]) -> None:
        """(Trunk) tell the neighbour which sources of the room we can send (if changed)."""
        if self._announced.get(room_id, ()) == sources:
            return
        self._announced[room_id] = sources
        self._send(self.peer_id, MediaSources(room_id, sources))

    def source(self, source_id: str) -> SourceInfo | None:
        """What we know of a source carried on this link."""
        return self._sources.get(source_id)

    # ------------------------------------------------------------------ messages

    def handle(self, msg: LinkMessage) -> None:
        """A media link message from the peer (the relay routed it here)."""
        if isinstance(msg, MediaSignal):
            if msg.kind == "offer" and self.offerer:
                self._on_bad("media_unexpected_offer")
                return
            self._session().handle(msg)
        elif isinstance(msg, MediaPrefs):
            wanted = None if msg.wanted is None else frozenset(msg.wanted)
            self._prefs[msg.room_id] = Preferences(msg.audio_only, float(msg.max_kbps) or None,
                                                   wanted)
            self._relay.preferences_changed(self, msg.room_id)
        elif isinstance(msg, MediaSources):
            self.offered[msg.room_id] = {s.source_id: s for s in msg.sources}
            for s in msg.sources:
                self._sources.setdefault(s.source_id,
                                         SourceInfo(s.source_id, s.publisher, s.kind,
                                                    msg.room_id))
            self._relay.preferences_changed(self, msg.room_id)
        elif isinstance(msg, MediaRefused):
            log.info("%s refused media of room %s: %s (%s) %s", self.peer_id,
                     msg.room_id.hex()[:16], msg.reason, msg.detail, msg.source_id)

    # ------------------------------------------------------------------ SessionHooks

    def sending(self, source_id: str, transceiver: RTCRtpTransceiver) -> None:
        """A line we forward into is negotiated."""
        self._relay.output_ready(self, source_id, transceiver)

    def receiving(self, source_id: str, transceiver: RTCRtpTransceiver) -> None:
        """The peer sends ``source_id`` on ``transceiver``: it is a publication (a client)
        or a source arriving over the trunk."""
        info = self._sources.get(source_id)
        if info is None:
            self._on_bad("media_unknown_source")
            transceiver.direction = "inactive"
            return
        self._relay.publish(self, info, transceiver)

    def ended(self, source_id: str, direction: str, replaced: bool) -> None:
        """A line ended (``replaced``: its connection was recycled; it comes back)."""
        if direction == RECV and not replaced:
            self._relay.unpublish(self, source_id)
        elif direction == SEND:
            self._relay.output_ended(self, source_id)

    # ------------------------------------------------------------------ lifecycle

    def _session(self) -> MediaSession:
        if self.session is None:
            self.session = MediaSession(
                offerer=self.offerer, send_signal=lambda m: self._send(self.peer_id, m),
                make_pc=self._make_pc, hooks=self, on_bad=self._on_bad,
                on_failed=self._failed, recycle_sdp_chars=self._recycle)
        return self.session

    def _failed(self, reason: str) -> None:
        log.warning("media connection with %s failed: %s", self.peer_id, reason)
        self.session = None
        self._outputs.clear()
        self._wanted.clear()

    async def close(self) -> None:
        """The link closed: close the media connection."""
        self.closed = True
        if self.session is not None:
            await self.session.close()
