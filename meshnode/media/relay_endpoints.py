"""The media relay's endpoints and what they publish: the base of ``MediaRelay``
(``meshnode.media.relay``, whose docstring describes the relay). It holds the relay's state,
opens a ``LinkMedia`` per link (the ``LinkService`` hooks), implements the ``RelayPort`` the
endpoints call (attach, publish, outputs ready or ended), takes clients' lists of
publications, checks whether an endpoint may publish or keep its media (access, caps), and
refuses with a stable reason (told once, logged, counted).

``MediaRelay`` is one chain of classes, a file each: ``RelayEndpoints`` (``relay_endpoints``)
and ``MediaRelay`` (``relay``: its timer, planning, metrics, status); ``relay_ports`` holds the
protocols of what the relay drives (``MediaDriver``, ``TapPort``, ``OutputPort``).
"""

import asyncio
import functools
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from aiortc import RTCRtpTransceiver

from meshnode.media.config import MediaConfig
from meshnode.media.endpoint import MediaEndpoint, RelayPort, SourceInfo
from meshnode.media.estimate import LinkEstimate
from meshnode.media.link_media import LinkMedia
from meshnode.media.metrics import MediaMetrics
from meshnode.media.participants import participant_of
from meshnode.media.relay_ports import AccessCheck, MediaDriver, OutputPort, PositionsOf, TapPort
from meshnode.media.selection import Selector
from meshnode.metrics import NodeMetrics
from meshnode.runtime.links import Established, LinkManager, LinkService
from meshnode.runtime.tasks import TaskSet
from protocol.link import LinkMessage
from protocol.media import MediaPrefs, MediaRefused, MediaSignal, MediaSource, MediaSources

log = logging.getLogger("meshnode.media")


@dataclass(slots=True)
class _Source:
    info: SourceInfo
    origin: MediaEndpoint
    tap: TapPort
    outputs: dict[str, OutputPort] = field(default_factory=dict)  # endpoint key -> output


def _key(endpoint: MediaEndpoint) -> str:
    # By participant: a node's browsers share its PeerID (meshnode.media.participants).
    return f"{endpoint.kind}:{participant_of(endpoint)}"


class RelayEndpoints(LinkService, RelayPort):
    """The endpoints of a ``MediaRelay`` and their publications (see the module docstring)."""

    link_messages = (MediaSignal, MediaSources, MediaPrefs, MediaRefused)

    def __init__(self, links: LinkManager, config: MediaConfig, metrics: NodeMetrics,
                 driver: MediaDriver, *, access: AccessCheck, positions: PositionsOf,
                 hosted: Callable[[], set[bytes]],
                 clock: Callable[[], float] = time.monotonic,
                 on_crash: Callable[[str, BaseException], None] | None = None) -> None:
        self.links = links
        self.config = config
        self.node_metrics = metrics
        self.metrics = MediaMetrics(metrics.registry)
        self.driver = driver
        self._access = access
        self._positions = positions
        self._hosted = hosted
        self._clock = clock
        self.selector = Selector(config.selection())
        self.endpoints: dict[str, MediaEndpoint] = {}
        self._link_media: dict[str, LinkMedia] = {}
        self.sources: dict[str, _Source] = {}
        self._pending_outputs: dict[tuple[str, str], int | None] = {}  # asked, not ready
        self._refused: set[tuple[str, bytes, str]] = set()
        self._tasks = TaskSet("media", on_crash)
        self._timer: asyncio.Task[None] | None = None
        self.refusals: Counter[str] = Counter()
        self._totals: dict[tuple[str, str], float] = {}
        self._paused: dict[tuple[str, str], float] = {}  # (key, source) -> paused since
        self._estimates: dict[str, LinkEstimate] = {}
        links.register(self)

    # ------------------------------------------------------------------ LinkService

    def link_up(self, est: Established) -> None:
        """Every link may carry media; its connection opens on first need."""
        if est.hello.kind not in ("client", "node"):
            return
        media = LinkMedia(est, self, self.links.send_link, self.driver.make_pc,
                          on_bad=functools.partial(self._bad, est),
                          recycle_sdp_chars=self.config.recycle_sdp_chars)
        self._link_media[est.peer] = media
        self.attach(media)

    def link_down(self, est: Established, reason: str) -> None:
        """Closing the link closes its media connection; its sources end."""
        media = self._link_media.pop(est.peer, None)
        if media is None or media.est is not est:
            return
        self.detach(media)
        self._tasks.spawn(media.close(), f"media-close-{est.peer[:12]}")

    def link_message(self, est: Established, msg: LinkMessage) -> None:
        """Route a media message to the link's endpoint (refusing media when disabled)."""
        media = self._link_media.get(est.peer)
        if media is None or media.est is not est:
            return
        if not self.config.enabled:
            if isinstance(msg, (MediaSources, MediaPrefs)):
                self._refuse(media, msg.room_id, "media_disabled",
                             "this node does not relay media")
            return
        if isinstance(msg, MediaSources) and est.hello.kind == "client":
            self._client_sources(media, msg)
            return
        media.handle(msg)

    def _bad(self, est: Established, reason: str) -> None:
        self.metrics.drops.labels(reason).inc()
        self.links.count_garbage(est, reason)

    # ------------------------------------------------------------------ RelayPort

    def attach(self, endpoint: MediaEndpoint) -> None:
        """A new endpoint."""
        self.endpoints[_key(endpoint)] = endpoint

    def detach(self, endpoint: MediaEndpoint) -> None:
        """An endpoint closed: its sources end, its outputs go."""
        key = _key(endpoint)
        if self.endpoints.get(key) is endpoint:
            del self.endpoints[key]
        for sid, src in list(self.sources.items()):
            if src.origin is endpoint:
                self._end_source(sid)
            else:
                out = src.outputs.pop(key, None)
                if out is not None:
                    out.close()
        self.selector.forget(participant_of(endpoint))
        self._estimates.pop(key, None)
        for paused in [p for p in self._paused if p[0] == key]:
            del self._paused[paused]
        for pending in [p for p in self._pending_outputs if p[0] == key]:
            del self._pending_outputs[pending]

    def publish(self, endpoint: MediaEndpoint, source: SourceInfo,
                transceiver: RTCRtpTransceiver) -> str | None:
        """Tap a publication (or a source arriving over a trunk)."""
        reason = self._may_publish(endpoint, source)
        if reason is not None:
            self._refuse(endpoint, source.room_id, reason, _DETAILS.get(reason, reason),
                         source.source_id)
            return reason
        old = self.sources.get(source.source_id)
        if old is not None:
            if old.origin is not endpoint:
                # One path per source: a second arrival (a route changed) replaces the first.
                log.info("source %s now arrives from %s", source.source_id, endpoint.peer_id)
            self._end_source(source.source_id)
        tap: TapPort = self.driver.tap(source, transceiver)
        self.sources[source.source_id] = _Source(source, endpoint, tap)
        log.info("source %s (%s) in room %s from %s %s", source.source_id, source.kind,
                 source.room_id.hex()[:16], endpoint.kind, endpoint.peer_id)
        return None

    def unpublish(self, endpoint: MediaEndpoint, source_id: str) -> None:
        """A publication ended."""
        src = self.sources.get(source_id)
        if src is not None and src.origin is endpoint:
            self._end_source(source_id)

    def output_ready(self, endpoint: MediaEndpoint, source_id: str,
                     transceiver: RTCRtpTransceiver) -> None:
        """Forward into a negotiated line."""
        key = _key(endpoint)
        src = self.sources.get(source_id)
        tid = self._pending_outputs.pop((key, source_id), None)
        if src is None:
            endpoint.remove_output(source_id)
            return
        old = src.outputs.pop(key, None)
        if old is not None:
            old.close()
        out = self.driver.output(src.tap, transceiver, key, endpoint.kind == "node")
        out.set_max_tid(tid)
        if (key, source_id) in self._paused:  # its line was recycled while paused
            out.pause()
        src.outputs[key] = out

    def output_ended(self, endpoint: MediaEndpoint, source_id: str) -> None:
        """A line we forwarded into ended (removed, or its connection was recycled)."""
        src = self.sources.get(source_id)
        if src is not None:
            out = src.outputs.pop(_key(endpoint), None)
            if out is not None:
                out.close()

    def preferences_changed(self, endpoint: MediaEndpoint, room_id: bytes) -> None:
        """Re-plan soon (the timer does)."""

    # ------------------------------------------------------------------ publications

    def _client_sources(self, media: LinkMedia, msg: MediaSources) -> None:
        """A client's list of its publications: open a receiving line for each it may
        publish, close those it no longer lists."""
        room = msg.room_id
        listed: dict[str, MediaSource] = {}
        for s in msg.sources:
            info = SourceInfo(s.source_id, s.publisher, s.kind, room)
            if s.publisher != media.peer_id:
                self._refuse(media, room, "foreign_source",
                             "a client publishes under its own PeerID only", s.source_id)
                continue
            reason = self._may_publish(media, info, len(listed))
            if reason is not None:
                self._refuse(media, room, reason, _DETAILS.get(reason, reason), s.source_id)
                continue
            listed[s.source_id] = s
            media.accept_publication(info)
        before = media.offered.get(room, {})
        for sid in set(before) - set(listed):
            media.drop_publication(sid)
            self.unpublish(media, sid)
        media.offered[room] = listed

    def _may_publish(self, endpoint: MediaEndpoint, source: SourceInfo,
                     already: int | None = None) -> str | None:
        if not self.config.enabled:
            return "media_disabled"
        if source.room_id not in endpoint.rooms():
            return "not_shared"
        if endpoint.kind == "node":
            # A neighbour relays others' sources; their publishers must be editors too.
            return (self._access(endpoint.peer_id, endpoint.kind, source.room_id)
                    or self._access(source.publisher, "client", source.room_id, True))
        reason = self._access(endpoint.peer_id, endpoint.kind, source.room_id, True)
        if reason is not None:
            return reason
        if already is None:
            already = sum(1 for s in self.sources.values() if s.origin is endpoint
                          and s.info.room_id == source.room_id
                          and s.info.source_id != source.source_id)
        if already >= self.config.max_publications_per_peer:
            return "too_many_publications"
        if self.config.max_relay_kbps and self.relayed_kbps() > self.config.max_relay_kbps:
            return "relay_full"
        return None

    def _end_source(self, source_id: str) -> None:
        src = self.sources.pop(source_id, None)
        if src is None:
            return
        src.tap.close()
        for key, out in src.outputs.items():
            out.close()
            endpoint = self.endpoints.get(key)
            if endpoint is not None:
                endpoint.remove_output(source_id)
        log.info("source %s ended", source_id)

    def _refuse(self, endpoint: MediaEndpoint, room_id: bytes, reason: str, detail: str,
                source_id: str = "") -> None:
        """Tell the peer once per (room, source, reason); count and log every refusal."""
        self.refusals[reason] += 1
        self.metrics.refusals.labels(reason).inc()
        key = (_key(endpoint), room_id, f"{source_id}:{reason}")
        if key in self._refused:
            return
        self._refused.add(key)
        log.info("media of room %s refused to %s %s: %s %s", room_id.hex()[:16],
                 endpoint.kind, endpoint.peer_id, reason, source_id)
        endpoint.refuse(room_id, reason, detail, source_id)

    # ------------------------------------------------------------------ load and access

    def relayed_kbps(self, room_id: bytes | None = None) -> float:
        """What this node sends now (estimated from the sources' rates), in a room or all."""
        return sum(src.tap.kbps * self._sending(src) for src in self.sources.values()
                   if room_id is None or src.info.room_id == room_id)

    def _sending(self, src: _Source) -> int:
        """How many of the source's outputs are not paused."""
        return sum(1 for key in src.outputs if (key, src.info.source_id) not in self._paused)

    def _enforce_access(self) -> None:
        """A peer that lost its role (removed, banned) loses its media at once."""
        for endpoint in list(self.endpoints.values()):
            for sid, src in list(self.sources.items()):
                if src.origin is endpoint:
                    reason = self._may_keep(endpoint, src.info.room_id, publish=True)
                    if reason is None and endpoint.kind == "node":
                        reason = self._access(src.info.publisher, "client", src.info.room_id,
                                              True)
                    if reason is not None:
                        self._end_source(sid)
                        if isinstance(endpoint, LinkMedia):
                            endpoint.drop_publication(sid)
                        self._refuse(endpoint, src.info.room_id, reason,
                                     _DETAILS.get(reason, reason), sid)
            for sid, src in list(self.sources.items()):
                key = _key(endpoint)
                if key in src.outputs and self._may_keep(endpoint, src.info.room_id):
                    src.outputs.pop(key).close()
                    endpoint.remove_output(sid)

    def _may_keep(self, endpoint: MediaEndpoint, room_id: bytes,
                  publish: bool = False) -> str | None:
        if room_id not in endpoint.rooms():
            return "not_shared"
        if publish and endpoint.kind == "node":
            publish = False  # a node relays; its sources' publishers are checked instead
        return self._access(endpoint.peer_id, endpoint.kind, room_id, publish)


_DETAILS = {
    "not_member": "you hold no role in this room: join it to send or receive its media",
    "removed": "you were removed from this room: its media stopped",
    "not_shared": "this link does not share the room",
    "unknown_room": "this node does not host the room",
    "too_many_publications": "you publish as many sources in this room as this node allows",
    "relay_full": "this node relays as much media as its operator allows; try again later",
    "media_disabled": "this node does not relay media",
    "blind_host": "this node hosts the private room without its keys, so it relays none of "
                  "its media (it could hear and see them): join through a node that reads it",
    "not_reader": "the room is private and you hold none of its keys: its media go to "
                  "readers only",
}
