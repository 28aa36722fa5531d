"""``MediaRelay``: the node as a selective forwarding unit (SFU) for the rooms it hosts.

Registered with the node's ``LinkManager`` as a ``LinkService`` (media link messages
72..75), beside the browsers' media sessions, which plug in as ``MediaEndpoint``s
(``meshnode.media.endpoint``, re-exported here). What it does:

- **Publications.** A client lists its sources (``MediaSources``); each one it may publish
  gets a ``recvonly`` m-line on its link's media connection; the receiver is tapped by the
  driver (``MediaDriver.tap``): packets are read, never decoded.
- **Subscriptions.** Every ``plan_interval_s`` each hosted room is re-planned
  (``meshnode.media.planner``, pure): clients and browsers get what the ``Selector`` picks
  for them (positions from the room's presence, audio levels and rates from the taps,
  bandwidth estimates from the outputs, their ``MediaPrefs``); neighbour nodes get the
  sources they asked for. The relay then opens and closes outputs to match.
- **Trunks.** One media connection per neighbour node (the link's own): each node announces
  the sources it has or can reach (``MediaSources``, split horizon, hop counts) and asks
  for what its own subscribers need (``MediaPrefs.wanted``), so each source crosses a link
  between two nodes at most once, and only towards nodes that need it.
- **Access.** A peer may receive a room's media only while it holds a role in the room (the
  same rule as the room's data: ``access``), and publish only with an editor's role or better
  (``read_only``); otherwise, or once removed, its sources end, its outputs close, and it is
  told why (``MediaRefused``).
- **Caps.** Publications per peer, relayed kbps per node and per room, kbps per subscriber.
  Every refusal is a stable reason label: a ``MediaRefused``, a log line and
  ``meshnode_media_refusals_total{reason}``. Over a room's cap, existing videos are demoted
  (``planner.fit_room_cap``: lower layers, then the farthest paused, ``relay_full``).
- **Bandwidth.** Each client subscriber's budget is the smallest of ``max_peer_kbps``, its own
  ``MediaPrefs.max_kbps`` and its link estimate (``meshnode.media.estimate``: REMB, loss and
  RTT from its receiver reports). A video the plan leaves out is *paused*, not torn down:
  its line stays for ``PAUSED_KEEP_S``, and when the plan takes it back it resumes on the
  next keyframe (asked of the publisher at once), without renegotiation.
"""

import asyncio
import functools
import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiortc import RTCPeerConnection, RTCRtpTransceiver

from meshnode.media.config import MediaConfig
from meshnode.media.endpoint import MediaEndpoint, Preferences, RelayPort, SourceInfo
from meshnode.media.estimate import LinkEstimate, LinkReport
from meshnode.media.link_media import LinkMedia
from meshnode.media.metrics import MediaMetrics
from meshnode.media.participants import participant_of, source_participant
from meshnode.media.planner import Announce, RoomState, Subscriber, decide_room
from meshnode.media.selection import Selector, SourceView, SubscriberView
from meshnode.metrics import NodeMetrics
from meshnode.runtime.links import Established, LinkManager, LinkService
from meshnode.runtime.tasks import TaskSet
from protocol.link import LinkMessage
from protocol.media import MediaPrefs, MediaRefused, MediaSignal, MediaSource, MediaSources

log = logging.getLogger("meshnode.media")

__all__ = ["MediaDriver", "MediaEndpoint", "MediaRelay", "OutputPort", "Preferences",
           "RelayPort", "SourceInfo", "TapPort"]


class TapPort(Protocol):
    """The driver's tap on one receiver: what it measured, and a way to ask the publisher
    for a keyframe."""

    @property
    def kbps(self) -> float: ...
    @property
    def audio_level(self) -> int | None: ...
    @property
    def last_spoke(self) -> float | None: ...
    @property
    def layer_kbps(self) -> tuple[float, ...]: ...
    def close(self) -> None: ...


class OutputPort(Protocol):
    """The driver's output of one source into one sender, and what the subscriber's RTCP
    says about it (REMB ``estimate_kbps``; ``loss``, ``rtt_ms`` and the count of
    ``reports`` from its receiver reports)."""

    @property
    def estimate_kbps(self) -> float | None: ...
    @property
    def loss(self) -> float | None: ...
    @property
    def rtt_ms(self) -> float | None: ...
    @property
    def reports(self) -> int: ...
    @property
    def sent_bytes(self) -> int: ...
    def set_max_tid(self, tid: int | None) -> None: ...
    def pause(self) -> None: ...
    def resume(self) -> None: ...
    def close(self) -> None: ...


class MediaDriver(Protocol):
    """What the relay needs of the aiortc driver (``meshnode.media.aiortc_driver``)."""

    def make_pc(self) -> RTCPeerConnection: ...
    def tap(self, source: SourceInfo, transceiver: RTCRtpTransceiver) -> Any: ...
    def output(self, tap: Any, transceiver: RTCRtpTransceiver, key: str,
               trunk: bool) -> OutputPort: ...
    def stats(self) -> Mapping[str, Any]: ...


class AccessCheck(Protocol):
    """``access(peer, kind, room_id, publish)``: None if the peer may receive the room's
    media (``publish``: may publish into it), else the refusal reason (``not_member``,
    ``removed``, ``unknown_room``, ``read_only``)."""

    def __call__(self, peer: str, kind: str, room_id: bytes,
                 publish: bool = False) -> str | None: ...


PAUSED_KEEP_S = 30.0
"""How long a paused video output keeps its line before it is torn down."""

PositionsOf = Callable[[bytes], Mapping[str, tuple[float, float, float]]]
"""The positions of a room's participants, from its presence (PeerID -> x, y, z)."""


@dataclass(slots=True)
class _Source:
    info: SourceInfo
    origin: MediaEndpoint
    tap: TapPort
    outputs: dict[str, OutputPort] = field(default_factory=dict)  # endpoint key -> output


def _key(endpoint: MediaEndpoint) -> str:
    # By participant: a node's browsers share its PeerID (meshnode.media.participants).
    return f"{endpoint.kind}:{participant_of(endpoint)}"


class MediaRelay(LinkService, RelayPort):
    """The node's media relay (see the module docstring). ``start()`` its timer, then
    ``aclose()``."""

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

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Start re-planning every ``plan_interval_s``."""
        if self.config.enabled and self._timer is None:
            self._timer = asyncio.get_running_loop().create_task(self._tick_forever(),
                                                                 name="media-plan")

    async def aclose(self) -> None:
        """Stop planning, close every media connection."""
        if self._timer is not None:
            self._timer.cancel()
            await asyncio.gather(self._timer, return_exceptions=True)
        for media in list(self._link_media.values()):
            await media.close()
        self._link_media.clear()
        await self._tasks.aclose()

    async def _tick_forever(self) -> None:
        while True:
            await asyncio.sleep(self.config.plan_interval_s)
            try:
                self.tick()
            except Exception:
                log.exception("media planning failed")

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

    # ------------------------------------------------------------------ planning

    def relayed_kbps(self, room_id: bytes | None = None) -> float:
        """What this node sends now (estimated from the sources' rates), in a room or all."""
        return sum(src.tap.kbps * self._sending(src) for src in self.sources.values()
                   if room_id is None or src.info.room_id == room_id)

    def _sending(self, src: _Source) -> int:
        """How many of the source's outputs are not paused."""
        return sum(1 for key in src.outputs if (key, src.info.source_id) not in self._paused)

    def tick(self) -> None:
        """Re-check access, re-plan every room, apply the plans, refresh the gauges."""
        now = self._clock()
        self._enforce_access()
        self._paused = {(key, sid): since for (key, sid), since in self._paused.items()
                        if sid in self.sources and key in self.sources[sid].outputs}
        for room_id in self._hosted():
            self._plan_room(room_id, now)
        self._refresh_metrics()

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

    def _plan_room(self, room_id: bytes, now: float) -> None:
        positions = self._positions(room_id)
        local: list[SourceView] = []
        origin: dict[str, str] = {}
        for sid, src in self.sources.items():
            if src.info.room_id != room_id:
                continue
            info = src.info
            who = source_participant(info)  # never sent back to its own participant
            local.append(SourceView(sid, who,
                                    "audio" if info.kind == "audio" else "video",
                                    positions.get(who), src.tap.audio_level,
                                    src.tap.last_spoke, src.tap.kbps, src.tap.layer_kbps))
            origin[sid] = _key(src.origin)
        remote: dict[str, dict[str, Announce]] = {}
        subscribers: list[Subscriber] = []
        neighbours: list[str] = []
        for key, endpoint in self.endpoints.items():
            if room_id not in endpoint.rooms() or self._may_keep(endpoint, room_id):
                continue
            prefs = endpoint.preferences(room_id)
            if endpoint.kind == "node":
                neighbours.append(key)
                if isinstance(endpoint, LinkMedia):
                    remote[key] = {sid: Announce(sid, s.publisher, s.kind, s.hops)
                                   for sid, s in endpoint.offered.get(room_id, {}).items()
                                   if self._access(s.publisher, "client", room_id, True) is None}
                subscribers.append(Subscriber(key, True, SubscriberView(
                    key, None, None, False, None), prefs.wanted or frozenset()))
                continue
            estimate = self._estimate(key)
            cap = self.config.max_peer_kbps
            max_kbps = min(prefs.max_kbps, cap) if prefs.max_kbps else cap
            me = participant_of(endpoint)
            subscribers.append(Subscriber(key, False, SubscriberView(
                me, positions.get(me), estimate,
                prefs.audio_only, max_kbps)))
        if not local and not remote:
            for sub in subscribers:
                self._apply_outputs(sub.endpoint, room_id, {})
            return
        decision = decide_room(RoomState(local, origin, remote, subscribers, neighbours,
                                         self._room_cap(room_id)), self.selector, now)
        for key, outputs in decision.outputs.items():
            self._apply_outputs(key, room_id, outputs)
            for sid in outputs:  # flowing again: a later demotion is news again
                flowing = self.sources.get(sid)
                if flowing is not None and (key in flowing.outputs
                                            or (key, sid) in self._pending_outputs):
                    self._refused.discard((key, room_id, f"{sid}:relay_full"))
        for key, demoted in decision.demoted.items():
            for sid in demoted:  # told once per demotion; it resumes when there is room
                self._refuse(self.endpoints[key], room_id, "relay_full",
                             _DETAILS["relay_full"], sid)
        for key in neighbours:
            endpoint = self.endpoints[key]
            if isinstance(endpoint, LinkMedia):
                endpoint.want(room_id, decision.want.get(key, frozenset()))
                endpoint.announce(room_id, tuple(
                    MediaSource(a.source_id, a.publisher, a.kind, "", a.hops)
                    for a in decision.announce.get(key, ())))

    def _room_cap(self, room_id: bytes) -> float | None:
        """What the room's outputs may cost: ``max_room_kbps``, and what ``max_relay_kbps``
        leaves after the other rooms (None: no cap)."""
        caps: list[float] = []
        if self.config.max_room_kbps:
            caps.append(self.config.max_room_kbps)
        if self.config.max_relay_kbps:
            others = self.relayed_kbps() - self.relayed_kbps(room_id)
            caps.append(max(0.0, self.config.max_relay_kbps - others))
        return min(caps) if caps else None

    def _estimate(self, key: str) -> float | None:
        """The subscriber's link estimate, from what its outputs' RTCP says."""
        remb: list[float] = []
        loss: list[float] = []
        rtt: list[float] = []
        reports = sent = 0
        for src in self.sources.values():
            out = src.outputs.get(key)
            if out is None:
                continue
            if out.estimate_kbps is not None and (key, src.info.source_id) not in self._paused:
                remb.append(out.estimate_kbps)
            if out.loss is not None:
                loss.append(out.loss)
            if out.rtt_ms is not None:
                rtt.append(out.rtt_ms)
            reports += out.reports
            sent += out.sent_bytes
        # The least loss of its outputs: a receiver report also counts what was lost before
        # the relay (a publisher's bad uplink, kept as gaps so NACKs work), which the other
        # outputs on the same link do not show.
        estimate = self._estimates.setdefault(key, LinkEstimate())
        return estimate.update(LinkReport(max(remb) if remb else None,
                                          min(loss) if loss else None,
                                          min(rtt) if rtt else None, reports, sent),
                               self._clock())

    def _apply_outputs(self, key: str, room_id: bytes, wanted: dict[str, int | None]) -> None:
        endpoint = self.endpoints[key]
        room_kbps = self.relayed_kbps(room_id)
        now = self._clock()
        for sid, src in self.sources.items():
            if src.info.room_id != room_id:
                continue
            if sid in wanted:
                tid = wanted[sid]
                out = src.outputs.get(key)
                if out is not None:
                    out.set_max_tid(tid)
                    if self._paused.pop((key, sid), None) is not None:
                        out.resume()  # from the next keyframe, asked for now
                elif (key, sid) not in self._pending_outputs:
                    # A client's outputs fit the room's cap already (the planner demoted
                    # them); a trunk's copy is refused when it would not fit.
                    if endpoint.kind == "node" and self._over_caps(room_kbps, src):
                        self._refuse(endpoint, room_id, "relay_full",
                                     _DETAILS["relay_full"], sid)
                        continue
                    self._pending_outputs[(key, sid)] = tid
                    endpoint.add_output(src.info)
            elif key in src.outputs or (key, sid) in self._pending_outputs:
                out = src.outputs.get(key)
                since = self._paused.get((key, sid))
                if (out is not None and src.info.kind == "video" and endpoint.kind != "node"
                        and (since is None or now - since < PAUSED_KEEP_S)):
                    if since is None:  # left out for now: pause, keep the line
                        self._paused[(key, sid)] = now
                        out.pause()
                    continue
                self._paused.pop((key, sid), None)
                self._pending_outputs.pop((key, sid), None)
                out = src.outputs.pop(key, None)
                if out is not None:
                    out.close()
                endpoint.remove_output(sid)

    def _over_caps(self, room_kbps: float, src: _Source) -> bool:
        cfg = self.config
        return bool((cfg.max_relay_kbps and self.relayed_kbps() + src.tap.kbps
                     > cfg.max_relay_kbps)
                    or (cfg.max_room_kbps and room_kbps + src.tap.kbps > cfg.max_room_kbps))

    def _refresh_metrics(self) -> None:
        m = self.metrics
        streams: Counter[tuple[str, str]] = Counter()
        kbps: dict[tuple[str, str], float] = {}
        widest = 0
        for src in self.sources.values():
            kind = src.info.kind
            streams[("in", kind)] += 1
            kbps[("in", kind)] = kbps.get(("in", kind), 0.0) + src.tap.kbps
            streams[("out", kind)] += len(src.outputs)
            kbps[("out", kind)] = kbps.get(("out", kind), 0.0) + src.tap.kbps * self._sending(src)
            widest = max(widest, len(src.outputs))
        for direction in ("in", "out"):
            for kind in ("audio", "video"):
                m.streams.labels(direction, kind).set(streams[(direction, kind)])
                m.kbps.labels(direction, kind).set(round(kbps.get((direction, kind), 0.0), 1))
        m.subscribers_per_source.set(widest)
        # The driver's running totals, as counters (increments since the last refresh).
        stats = self.driver.stats()
        m.decoders.set(float(stats.get("decoders", 0)))
        totals: dict[tuple[str, str], float] = {("keyframes", ""): float(
            stats.get("keyframe_requests", 0))}
        for reason, n in dict(stats.get("drops", {})).items():
            totals[("drops", str(reason))] = float(n)
        for direction, n in dict(stats.get("bytes", {})).items():
            totals[("bytes", str(direction))] = float(n)
        for (what, label), value in totals.items():
            delta = value - self._totals.get((what, label), 0.0)
            if delta <= 0:
                continue
            self._totals[(what, label)] = value
            if what == "keyframes":
                m.keyframe_requests.inc(delta)
            elif what == "drops":
                m.drops.labels(label).inc(delta)
            else:
                m.bytes.labels(label).inc(delta)

    def status(self) -> dict[str, Any]:
        """Media load, for the status page and ``/api/status``."""
        rooms: dict[str, dict[str, Any]] = {}
        for src in self.sources.values():
            room = rooms.setdefault(src.info.room_id.hex(), {"sources": 0, "outputs": 0,
                                                             "kbps_in": 0.0, "kbps_out": 0.0,
                                                             "streams": []})
            room["sources"] += 1
            room["streams"].append({"source": src.info.source_id, "kind": src.info.kind,
                                    "kbps": round(src.tap.kbps, 1),
                                    "layer_kbps": [round(k, 1) for k in src.tap.layer_kbps],
                                    "outputs": len(src.outputs)})
            room["outputs"] += len(src.outputs)
            room["kbps_in"] = round(room["kbps_in"] + src.tap.kbps, 1)
            room["kbps_out"] = round(room["kbps_out"] + src.tap.kbps * self._sending(src), 1)
        return {"enabled": self.config.enabled, "sources": len(self.sources),
                "outputs": sum(len(s.outputs) for s in self.sources.values()),
                "kbps_out": round(self.relayed_kbps(), 1), "rooms": rooms,
                "paused": len(self._paused),
                "estimates": {key: round(kbps, 1) for key, e in self._estimates.items()
                              if (kbps := e.kbps) is not None},
                "recycles": {kind: sum(m.session.recycles for m in self._link_media.values()
                                       if m.session is not None and m.kind == kind)
                             for kind in ("client", "node")},
                "refusals": dict(self.refusals), "driver": dict(self.driver.stats())}


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
