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

``MediaRelay`` is one chain of classes, a file each: ``RelayEndpoints`` (``relay_endpoints``:
the relay's state, the ``LinkService`` hooks, the ``RelayPort`` the endpoints call,
publications, access, refusals) and ``MediaRelay`` (here: the timer, planning, metrics,
status); ``relay_ports`` holds the protocols of what it drives (``MediaDriver``, ``TapPort``,
``OutputPort``).
"""

import asyncio
import logging
from collections import Counter
from typing import Any

from meshnode.media.endpoint import MediaEndpoint as MediaEndpoint
from meshnode.media.endpoint import Preferences as Preferences
from meshnode.media.endpoint import RelayPort as RelayPort
from meshnode.media.endpoint import SourceInfo as SourceInfo
from meshnode.media.estimate import LinkEstimate, LinkReport
from meshnode.media.link_media import LinkMedia
from meshnode.media.participants import participant_of, source_participant
from meshnode.media.planner import Announce, RoomState, Subscriber, decide_room
from meshnode.media.relay_endpoints import _DETAILS as _DETAILS
from meshnode.media.relay_endpoints import RelayEndpoints as RelayEndpoints
from meshnode.media.relay_endpoints import _key as _key
from meshnode.media.relay_endpoints import _Source as _Source
from meshnode.media.relay_ports import AccessCheck as AccessCheck
from meshnode.media.relay_ports import MediaDriver as MediaDriver
from meshnode.media.relay_ports import OutputPort as OutputPort
from meshnode.media.relay_ports import PositionsOf as PositionsOf
from meshnode.media.relay_ports import TapPort as TapPort
from meshnode.media.selection import SourceView, SubscriberView
from protocol.media import MediaSource

log = logging.getLogger("meshnode.media")

__all__ = ["MediaDriver", "MediaEndpoint", "MediaRelay", "OutputPort", "Preferences",
           "RelayPort", "SourceInfo", "TapPort"]


PAUSED_KEEP_S = 30.0
"""How long a paused video output keeps its line before it is torn down."""


class MediaRelay(RelayEndpoints):
    """The node's media relay (see the module docstring). ``start()`` its timer, then
    ``aclose()``."""

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

    # ------------------------------------------------------------------ planning

    def tick(self) -> None:
        """Re-check access, re-plan every room, apply the plans, refresh the gauges."""
        now = self._clock()
        self._enforce_access()
        self._paused = {(key, sid): since for (key, sid), since in self._paused.items()
                        if sid in self.sources and key in self.sources[sid].outputs}
        for room_id in self._hosted():
            self._plan_room(room_id, now)
        self._refresh_metrics()

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
