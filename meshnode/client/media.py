"""The Python client's voice and video: publish aiortc tracks to the room, receive the tracks
the node forwards.

    handle = await room.publish(track)          # an aiortc MediaStreamTrack, audio or video
    room.on_track(lambda peer, track: ...)      # a receivable track of another participant
    room.set_media(audio_only=True)             # or max_kbps=300
    await handle.stop()

The media travel on a second ``RTCPeerConnection`` to the node, beside the data link,
negotiated over it (``meshnode.media.session``); the node offers, the client answers, so a
publication is: list it (``MediaSources``), the node opens a ``recvonly`` line for it, the
client's answer sends the track there. aiortc encodes what the client publishes and decodes
what it receives; the node in between only forwards packets.
"""

import asyncio
import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass

from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCPeerConnection,
    RTCRtpTransceiver,
)
from aiortc.rtcconfiguration import RTCBundlePolicy

from meshnode.media.session import RECV, SEND, MediaSession
from meshnode.runtime.links import Established, LinkManager, LinkService
from meshnode.transport.ice import IceSettings
from protocol.link import LinkMessage
from protocol.media import (
    MediaPrefs,
    MediaRefused,
    MediaSignal,
    MediaSource,
    MediaSources,
    make_source_id,
)

log = logging.getLogger("meshnode.client")

__all__ = ["ClientMedia", "MediaRefusedError", "Publication", "TrackCallback"]

TrackCallback = Callable[[str, MediaStreamTrack], None]


class MediaRefusedError(Exception):
    """The node will not relay our media; ``reason`` is its stable label (``not_member``,
    ``removed``, ``too_many_publications``, ``relay_full``, ``media_disabled``; in a private
    room ``blind_host`` and ``not_reader``...)."""

    def __init__(self, reason: str, detail: str, source_id: str = "") -> None:
        super().__init__(f"the node refused media {source_id or 'of the room'}: {reason}"
                         + (f" ({detail})" if detail else ""))
        self.reason = reason
        self.detail = detail
        self.source_id = source_id


@dataclass(slots=True)
class Publication:
    """A track we publish; ``stop()`` ends it."""

    source_id: str
    track: MediaStreamTrack
    _media: "ClientMedia"

    async def stop(self) -> None:
        """Stop publishing (the node ends the source for every subscriber)."""
        self._media.unpublish(self.source_id)


class ClientMedia(LinkService):
    """The client's side of the media relay, on its one link to its node (see the module
    docstring). ``RoomClient`` creates it; use the room's ``publish``/``on_track``/
    ``set_media``."""

    link_messages = (MediaSignal, MediaSources, MediaRefused)

    def __init__(self, room_id: bytes, peer_id: str, ice: IceSettings) -> None:
        self.room_id = room_id
        self.peer_id = peer_id
        self._ice = ice
        self._links: LinkManager | None = None
        self._node: str | None = None
        self.session: MediaSession | None = None
        self._published: dict[str, Publication] = {}
        self._live: dict[str, asyncio.Future[None]] = {}
        self._labels = itertools.count()
        self._callbacks: list[TrackCallback] = []
        self.tracks: dict[str, MediaStreamTrack] = {}
        """The tracks received now, by source ID (``<publisher PeerID>/<label>``)."""
        self.transceivers: dict[str, RTCRtpTransceiver] = {}
        """Their transceivers (for statistics, or to read their RTP)."""
        self._prefs = MediaPrefs(room_id)
        self.refusals: list[MediaRefusedError] = []
        self._closing: set[asyncio.Task[None]] = set()

    def bind(self, links: LinkManager) -> None:
        """Use ``links`` (the room's link manager) and hear its links."""
        self._links = links
        links.register(self)

    # ------------------------------------------------------------------ API

    async def publish(self, track: MediaStreamTrack, timeout_s: float = 30.0) -> Publication:
        """Publish ``track`` (audio or video) and wait until the node receives it. Raises
        :class:`MediaRefusedError` if the node refuses it, ``TimeoutError`` if no answer."""
        if track.kind not in ("audio", "video"):
            raise ValueError(f"a track is audio or video, not {track.kind!r}")
        source_id = make_source_id(self.peer_id, f"{track.kind}{next(self._labels)}")
        pub = Publication(source_id, track, self)
        self._published[source_id] = pub
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._live[source_id] = fut
        self._announce()
        try:
            await asyncio.wait_for(asyncio.shield(fut), timeout_s)
        except BaseException:
            self.unpublish(source_id)
            raise
        return pub

    def unpublish(self, source_id: str) -> None:
        """Stop publishing ``source_id``."""
        if self._published.pop(source_id, None) is not None:
            self._live.pop(source_id, None)
            self._announce()

    def on_track(self, callback: TrackCallback) -> None:
        """Call ``callback(publisher_peer_id, track)`` for each track the node starts
        forwarding to us (already received ones included)."""
        self._callbacks.append(callback)
        for source_id, track in list(self.tracks.items()):
            self._tell(callback, source_id, track)

    def set_media(self, *, audio_only: bool = False, max_kbps: float | None = None) -> None:
        """Ask the node for audio only, and/or at most ``max_kbps`` of media (a number from 1
        to 1,000,000; a fraction is rounded down: the wire carries whole kbps)."""
        if max_kbps is not None and (isinstance(max_kbps, bool)
                                     or not isinstance(max_kbps, (int, float))
                                     or not 1 <= max_kbps <= 1_000_000):
            raise ValueError("max_kbps must be a number from 1 to 1000000 (None: no cap of "
                             f"ours), not {max_kbps!r}")
        self._prefs = MediaPrefs(self.room_id, bool(audio_only),
                                 0 if max_kbps is None else int(max_kbps), None)
        self._send(self._prefs)

    # ------------------------------------------------------------------ wire

    def _send(self, msg: LinkMessage) -> bool:
        if self._links is None or self._node is None:
            return False
        return self._links.send_link(self._node, msg)

    def _announce(self) -> None:
        self._send(MediaSources(self.room_id, tuple(
            MediaSource(sid, self.peer_id, pub.track.kind) for sid, pub in
            self._published.items())))

    def link_up(self, est: Established) -> None:
        """Our node: a fresh media session (the node offers)."""
        self._node = est.peer
        if self.session is not None:
            self._close_later(self.session)
        self.session = MediaSession(offerer=False, send_signal=self._send, make_pc=self._pc,
                                    hooks=self, on_bad=self._bad)
        if self._prefs != MediaPrefs(self.room_id):
            self._send(self._prefs)
        if self._published:
            self._announce()

    def link_down(self, est: Established, reason: str) -> None:
        """The link (and so the media connection) is gone; it comes back with the link."""
        self._node = None
        session, self.session = self.session, None
        if session is not None:
            self._close_later(session)

    def _close_later(self, session: MediaSession) -> None:
        task = asyncio.get_running_loop().create_task(session.close())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def aclose(self) -> None:
        """Close the media connection (the room's ``close`` does)."""
        session, self.session = self.session, None
        if session is not None:
            await session.close()
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)

    def link_message(self, est: Established, msg: LinkMessage) -> None:
        """Signals for our session; refusals."""
        if isinstance(msg, MediaSignal) and self.session is not None:
            self.session.handle(msg)
        elif isinstance(msg, MediaRefused) and msg.room_id == self.room_id:
            err = MediaRefusedError(msg.reason, msg.detail, msg.source_id)
            log.warning("%s", err)
            self.refusals.append(err)
            targets = [msg.source_id] if msg.source_id else list(self._live)
            for sid in targets:
                fut = self._live.get(sid)
                if fut is not None and not fut.done():
                    fut.set_exception(err)
                    fut.exception()  # retrieved here; publish() re-raises it

    def _bad(self, reason: str) -> None:
        log.warning("bad media signal from the node: %s", reason)

    def _pc(self) -> RTCPeerConnection:
        cfg: RTCConfiguration = self._ice.rtc_configuration()
        cfg.bundlePolicy = RTCBundlePolicy.MAX_BUNDLE
        return RTCPeerConnection(configuration=cfg)

    # ------------------------------------------------------------------ SessionHooks

    def sending(self, source_id: str, transceiver: RTCRtpTransceiver) -> None:
        """The node opened the line for one of our publications: send the track there."""
        pub = self._published.get(source_id)
        if pub is None or pub.track.kind != transceiver.kind:
            transceiver.direction = "inactive"
            return
        transceiver.sender.replaceTrack(pub.track)
        fut = self._live.get(source_id)
        if fut is not None and not fut.done():
            fut.set_result(None)

    def receiving(self, source_id: str, transceiver: RTCRtpTransceiver) -> None:
        """The node forwards ``source_id`` to us."""
        track = transceiver.receiver.track
        if track is None:
            return
        self.tracks[source_id] = track
        self.transceivers[source_id] = transceiver
        for cb in list(self._callbacks):
            self._tell(cb, source_id, track)

    def ended(self, source_id: str, direction: str, replaced: bool) -> None:
        """A line ended: a received track stops."""
        if direction == RECV:
            self.transceivers.pop(source_id, None)
            track = self.tracks.pop(source_id, None)
            if track is not None:
                track.stop()
        elif direction == SEND and not replaced and source_id in self._published:
            # The node stopped taking it (it may say why in a MediaRefused).
            log.info("the node stopped receiving our %s", source_id)

    @staticmethod
    def _tell(cb: TrackCallback, source_id: str, track: MediaStreamTrack) -> None:
        try:
            cb(source_id.partition("/")[0], track)
        except Exception:
            log.exception("an on_track callback failed")
