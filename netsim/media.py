"""Media in simulation: the node's own selection core (``meshnode.media.selection``) deciding
what each participant receives, over the scenario's links, shared with the scene traffic.

One participant per node (``n<i>``), at a position from ``[media]`` (a grid or a circle, or
explicit). Publishers send an audio track (``audio_kbps`` while speaking, ``dtx_kbps`` while
silent: Opus DTX) and/or a video track with cumulative temporal-layer bitrates.

**Granularity: fluid slices.** Every ``slice_ms`` (100 ms) each link direction is offered the
bytes of every media stream it carries during the slice (payload plus ``overhead_bytes`` per
packet: 20 ms audio packets, ``mtu``-sized video packets). The bytes join the link's own FIFO
(:class:`netsim.links.Link`, the same ``busy_until`` backlog the scene frames use, so media and
scene traffic delay each other): what would overflow ``queue_bytes`` by the end of the slice is
tail-dropped, the rest is delivered minus the link's expected loss (``loss`` and the
Gilbert–Elliott stationary loss; no random draw, so media never perturbs the scene's random
stream). The queueing delay of a slice is the backlog left at its end. Propagation latency is
the same on every path and is left out of "in time": media is *in time* when the queueing
delay along its path is at most ``jitter_buffer_ms``.

**Relay tree.** A source's packets follow the shortest path (base latency) over the overlay's
current links from the publisher's node to each subscriber's node; the union is a tree and each
link carries each source once, at the highest layer any subscriber behind it wants.

**Selection.** Every ``plan_interval_s`` each subscriber's plan is recomputed with
:class:`~meshnode.media.selection.Selector` from the positions, who spoke recently and the
subscriber's bandwidth estimate. The estimate imitates a delay/loss-based estimator (REMB/GCC
style, AIMD): starts at ``start_kbps``; when the last interval lost more than
``loss_threshold`` of the subscriber's media or queued it more than ``delay_threshold_ms``, it
drops to ``decrease_factor`` × the rate actually received (not below ``min_kbps``); while the
queue drains after that it holds; otherwise it grows by ``increase_per_s`` per second (until
the first congestion; after it, near the capacity found, by ``additive_kbps_per_s``), capped
at ``1.5 × received + 50`` (an estimator cannot see much more than it is sent). A probe lifts
that cap to the plan's next step (one more layer, or one more base layer) unless congestion was
seen in the last ``probe_backoff_s``: probing costs the subscriber a burst of congestion when
the next step does not fit, so it backs off.

Measured per subscriber (``netsim.media_report``): payload kbps received; the share of wanted
audio that arrived in time (wanted = the audio sources an unlimited subscriber would get, while
their publisher speaks); video stalls (a selected video whose slice arrives less than
``stall_below`` complete, or late); time in audio-only; the mean forwarded temporal layer;
keyframes (video switches) and selection drops by reason.
"""

from __future__ import annotations

import heapq
import math
import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Protocol

from meshnode.media.selection import Plan, Selector, SourceView, SubscriberView
from netsim.engine import Engine
from netsim.links import Link, LinkSpec
from netsim.media_spec import MediaSpec
from netsim.scenario import Scenario
from netsim.sim_node import Pair, SimNode


class Simulation(Protocol):
    """What media reads of :class:`netsim.simulation.Simulation` (a protocol, so that the
    simulation, which owns a ``MediaSim``, and this module do not import each other)."""

    engine: Engine
    scenario: Scenario
    nodes: list[SimNode]
    links: dict[Pair, Link]
    connected: set[Pair]
    groups: dict[int, int] | None
AUDIO_PACKET_S = 0.020
DTX_PACKET_S = 0.400


@dataclass(frozen=True)
class MediaSource:
    """One published track in the simulation."""

    source_id: str
    node: int
    kind: str  # "audio" | "video"
    kbps: float  # audio: while speaking; video: all layers
    layers: tuple[float, ...] = ()


@dataclass
class SubscriberStats:
    """What one node's participant received (cumulative over the media window)."""

    received_bytes: float = 0.0
    wanted_audio_s: float = 0.0
    arrived_audio_s: float = 0.0
    stalls: int = 0
    stall_s: float = 0.0
    video_s: float = 0.0
    layer_s: float = 0.0
    audio_only_s: float = 0.0
    planned_s: float = 0.0
    keyframes: int = 0
    estimate_kbps_s: float = 0.0
    dropped: Counter[str] = field(default_factory=Counter)
    stalled: set[str] = field(default_factory=set)
    # The current BWE window.
    win_expected: float = 0.0
    win_delivered: float = 0.0
    win_queue_s: float = 0.0
    win_s: float = 0.0
    last_queue_s: float = 0.0
    congested_at: float | None = None


@dataclass
class LinkMediaStats:
    """Media bytes one link direction was offered and accepted (wire bytes)."""

    offered: float = 0.0
    accepted: float = 0.0
    delivered: float = 0.0


def expected_loss(spec: LinkSpec) -> float:
    """The long-run packet loss of a link spec: independent loss and, with Gilbert–Elliott,
    the stationary mix of its good and bad states."""
    keep = 1.0 - spec.loss
    if spec.ge_p_good_bad > 0:
        bad = spec.ge_p_good_bad / (spec.ge_p_good_bad + spec.ge_p_bad_good)
        keep *= 1.0 - (bad * spec.ge_loss_bad + (1.0 - bad) * spec.ge_loss_good)
    return 1.0 - keep


def layout(spec: MediaSpec, n: int) -> list[tuple[float, float, float]]:
    """Participant positions: explicit, or ``n`` points ``spacing_m`` apart on a square-ish
    grid (row-major by node number) or on a circle."""
    if spec.positions is not None:
        return list(spec.positions)
    if spec.layout == "circle":
        radius = spec.spacing_m * n / (2 * math.pi)
        return [(round(radius * math.cos(2 * math.pi * i / n), 6),
                 round(radius * math.sin(2 * math.pi * i / n), 6), 0.0) for i in range(n)]
    width = max(1, math.ceil(math.sqrt(n)))
    return [((i % width) * spec.spacing_m, (i // width) * spec.spacing_m, 0.0)
            for i in range(n)]


class MediaSim:
    """Drives the selection core and the fluid media model inside one ``Simulation``."""

    def __init__(self, sim: Simulation, spec: MediaSpec) -> None:
        self.sim = sim
        self.spec = spec
        n = len(sim.nodes)
        self.positions = layout(spec, n)
        self.rng = random.Random(f"media-{sim.scenario.seed}")
        self.dt = spec.slice_ms / 1000.0
        self.stop = spec.stop_s if spec.stop_s is not None else sim.scenario.duration_s
        self.sources: list[MediaSource] = []
        for pub in spec.publishers:
            for i in pub.nodes:
                if pub.audio_kbps > 0:
                    self.sources.append(MediaSource(f"n{i}/audio", i, "audio", pub.audio_kbps))
                if pub.video_kbps:
                    self.sources.append(MediaSource(f"n{i}/video", i, "video",
                                                    pub.video_kbps[-1], pub.video_kbps))
        self.sources.sort(key=lambda s: (s.node, s.kind))
        self.by_id = {s.source_id: s for s in self.sources}
        self.talkers = sorted({s.node for s in self.sources if s.kind == "audio"})
        self.subscribers = list(spec.subscribers if spec.subscribers is not None
                                else range(n))
        self.prefs: dict[int, tuple[bool, float | None]] = {}
        for p in spec.prefs:
            for i in p.nodes:
                self.prefs[i] = (p.audio_only, p.max_kbps)
        self.selector = Selector(spec.selection)
        self.wanted_selector = Selector(spec.selection)
        self.estimate = {i: spec.start_kbps for i in self.subscribers}
        self.stats = {i: SubscriberStats() for i in self.subscribers}
        self.link_stats: dict[Pair, LinkMediaStats] = {}
        self.plans: dict[int, Plan] = {}
        self.wanted: dict[int, frozenset[str]] = {}
        self.speaking: set[int] = set()
        self.last_spoke: dict[int, float] = {}
        self.toggles: dict[int, float] = {}
        self.paths: dict[int, dict[int, list[Pair]]] = {}
        self._paths_key: tuple[frozenset[Pair], tuple[int, ...]] | None = None
        self.demand: dict[Pair, dict[str, int]] = {}
        self.next_plan = spec.start_s
        self.series: list[dict[str, float]] = []

    # ------------------------------------------------------------------ driving

    def start(self) -> None:
        """Schedule the first slice."""
        if self.spec.speaking == "random":
            for i in self.talkers:  # everyone starts silent, at a random point of a pause
                self.toggles[i] = self.spec.start_s + self.rng.expovariate(1 / self.spec.pause_s)
        self.sim.engine.at(self.spec.start_s, self._slice)

    def _alive(self, i: int) -> bool:
        node = self.sim.nodes[i]
        return node.alive and not node.hostile

    def _slice(self) -> None:
        now = self.sim.engine.now
        if now >= self.stop - 1e-9:
            return
        self._update_speaking(now)
        if now >= self.next_plan - 1e-9:
            self._replan(now)
            self.next_plan = now + self.spec.plan_interval_s
        self._carry(now)
        self.sim.engine.at(now + self.dt, self._slice)

    def _update_speaking(self, now: float) -> None:
        spec = self.spec
        if spec.speaking == "turns" and self.talkers:
            live = [i for i in self.talkers if self._alive(i)]
            turn = int((now - spec.start_s + 1e-9) // spec.turn_s)
            self.speaking = {live[turn % len(live)]} if live else set()
        elif spec.speaking == "random":
            for i in self.talkers:
                while self.toggles[i] <= now + 1e-9:
                    if i in self.speaking:
                        self.speaking.discard(i)
                        self.toggles[i] += self.rng.expovariate(1 / spec.pause_s)
                    else:
                        self.speaking.add(i)
                        self.toggles[i] += self.rng.expovariate(1 / spec.talk_s)
            self.speaking = {i for i in self.speaking if self._alive(i)}
        for i in self.speaking:
            self.last_spoke[i] = now

    def _rate(self, source: MediaSource, layer: int) -> float:
        """Current kbps of ``source`` forwarded up to ``layer``."""
        if source.kind == "audio":
            return source.kbps if source.node in self.speaking else self.spec.dtx_kbps
        return source.layers[min(layer, len(source.layers) - 1)]

    # ------------------------------------------------------------------ selection

    def _views(self) -> list[SourceView]:
        views = []
        for s in self.sources:
            if not self._alive(s.node):
                continue
            talking = s.node in self.speaking
            views.append(SourceView(
                source_id=s.source_id, publisher=f"n{s.node}", kind="audio"
                if s.kind == "audio" else "video", position=self.positions[s.node],
                audio_level=(30 if talking else 127) if s.kind == "audio" else None,
                last_spoke=self.last_spoke.get(s.node), kbps=self._rate(s, 99),
                layer_kbps=s.layers))
        return views

    def _replan(self, now: float) -> None:
        self._update_paths()
        views = self._views()
        total_kbps = 0.0
        audio_only = 0
        for i in self.subscribers:
            st = self.stats[i]
            if not self._alive(i):
                self.plans.pop(i, None)
                self.selector.forget(f"n{i}")
                st.stalled.clear()
                continue
            if st.win_s > 0:
                self._estimate(i, st, now)
            st.win_expected = st.win_delivered = st.win_queue_s = st.win_s = 0.0
            asked_audio_only, max_kbps = self.prefs.get(i, (False, None))
            view = SubscriberView(f"n{i}", self.positions[i], self.estimate[i],
                                  asked_audio_only, max_kbps)
            plan = self.selector.plan(view, views, now)
            old = self.plans.get(i)
            st.keyframes += sum(1 for v in plan.video if old is None or v not in old.video)
            st.stalled &= set(plan.video)
            st.dropped.update(plan.dropped.values())
            self.plans[i] = plan
            unlimited = SubscriberView(f"n{i}", self.positions[i], None, True, None)
            self.wanted[i] = self.wanted_selector.plan(unlimited, views, now).audio
            total_kbps += plan.kbps
            audio_only += plan.audio_only
        self._update_demand()
        self.series.append({"t": round(now, 3), "planned_kbps": round(total_kbps, 3),
                            "audio_only_subscribers": float(audio_only),
                            "speakers": float(len(self.speaking))})

    def _estimate(self, i: int, st: SubscriberStats, now: float) -> None:
        spec = self.spec
        loss = 1.0 - st.win_delivered / st.win_expected if st.win_expected > 0 else 0.0
        received_kbps = st.win_delivered * 8 / 1000 / st.win_s
        queued = st.win_queue_s * 1000 > spec.delay_threshold_ms
        draining = st.win_queue_s < st.last_queue_s
        st.last_queue_s = st.win_queue_s
        if loss > spec.loss_threshold or (queued and not draining):
            self.estimate[i] = max(spec.min_kbps, spec.decrease_factor * received_kbps)
            st.congested_at = now
            return
        if queued:
            return  # the queue is draining after a decrease: hold, as GCC does
        if st.congested_at is not None:  # near the capacity found: grow additively
            grown = self.estimate[i] + spec.additive_kbps_per_s * st.win_s
        else:
            grown = self.estimate[i] * (1 + spec.increase_per_s) ** st.win_s
        # An estimator sees little more than it is sent; a probe (padding up to the next
        # step the plan could take) lifts that limit, unless one recently failed.
        cap = 1.5 * received_kbps + 50
        if st.congested_at is None or now - st.congested_at >= spec.probe_backoff_s:
            cap = max(cap, self._next_step(i))
        self.estimate[i] = min(grown, cap)

    def _next_step(self, i: int) -> float:
        """The budget the subscriber's plan needs for its next step up: one more layer of a
        forwarded video, or the base layer of a video dropped for budget."""
        plan = self.plans.get(i)
        if plan is None:
            return self.spec.start_kbps
        steps = []
        for sid, layer in plan.video.items():
            layers = self.by_id[sid].layers
            if layer + 1 < len(layers):
                steps.append(layers[layer + 1] - layers[layer])
        for sid, reason in plan.dropped.items():
            if reason in ("budget", "audio_only") and self.by_id[sid].kind == "video":
                steps.append(self.by_id[sid].layers[0])
        if plan.audio_only:
            return max(self.spec.selection.audio_only_below_kbps,
                       plan.kbps + min(steps, default=0.0))
        return plan.kbps + min(steps, default=0.0)

    def _update_paths(self) -> None:
        """Shortest-latency paths over the overlay's current links, from every publisher."""
        sim = self.sim
        alive = tuple(i for i in range(len(sim.nodes)) if self._alive(i))
        key = (frozenset(sim.connected), alive)
        if key == self._paths_key:
            return
        self._paths_key = key
        up = set(alive)
        adj: dict[int, list[tuple[int, float]]] = {i: [] for i in alive}
        for a, b in sorted(sim.connected):
            if a in up and b in up:
                adj[a].append((b, sim.links[(a, b)].spec.latency_ms))
        self.paths = {}
        for p in sorted({s.node for s in self.sources} & up):
            dist = {p: 0.0}
            parent: dict[int, int] = {}
            heap = [(0.0, 0, p)]
            while heap:
                d, hops, x = heapq.heappop(heap)
                if d > dist[x]:
                    continue
                for y, w in adj[x]:
                    nd = d + w
                    if y not in dist or nd < dist[y]:
                        dist[y] = nd
                        parent[y] = x
                        heapq.heappush(heap, (nd, hops + 1, y))
            routes: dict[int, list[Pair]] = {}
            for s in dist:
                route: list[Pair] = []
                x = s
                while x != p:
                    route.append((parent[x], x))
                    x = parent[x]
                routes[s] = route[::-1]
            self.paths[p] = routes

    def _update_demand(self) -> None:
        """Per link: the sources it carries, each at the highest layer wanted behind it."""
        demand: dict[Pair, dict[str, int]] = {}
        for i, plan in self.plans.items():
            wants = [(sid, 0) for sid in plan.audio] + list(plan.video.items())
            for sid, layer in wants:
                route = self.paths.get(self.by_id[sid].node, {}).get(i)
                for pair in route or ():
                    on_link = demand.setdefault(pair, {})
                    on_link[sid] = max(on_link.get(sid, 0), layer)
        self.demand = demand

    # ------------------------------------------------------------------ carrying

    def _packets(self, source: MediaSource, payload: float, mtu: int) -> float:
        if source.kind == "audio":
            every = AUDIO_PACKET_S if source.node in self.speaking else DTX_PACKET_S
            return self.dt / every
        return max(self.dt * 15, payload / mtu)  # at least one packet per frame at 15 fps

    def _carry(self, now: float) -> None:
        sim, dt = self.sim, self.dt
        groups = sim.groups
        frac: dict[Pair, float] = {}
        queue: dict[Pair, float] = {}
        for pair in sorted(self.demand):
            link = sim.links[pair]
            spec = link.spec
            payload = packets = 0.0
            for sid, layer in self.demand[pair].items():
                source = self.by_id[sid]
                b = self._rate(source, layer) * 125.0 * dt
                payload += b
                packets += self._packets(source, b, spec.mtu)
            wire = payload + packets * spec.overhead_bytes
            ls = self.link_stats.setdefault(pair, LinkMediaStats())
            ls.offered += wire
            a, b2 = pair
            if wire <= 0 or (groups is not None and groups.get(a) != groups.get(b2)):
                frac[pair], queue[pair] = (1.0 if wire <= 0 else 0.0), 0.0
                continue
            rate = spec.rate_bytes_per_s
            if rate > 0:
                backlog = link.backlog_bytes(now)
                excess = backlog + wire - rate * dt - spec.queue_bytes
                accepted = min(wire, max(0.0, wire - max(0.0, excess)))
                link.busy_until = max(link.busy_until, now) + accepted / rate
                link.busy_s += accepted / rate
                queue[pair] = max(0.0, link.busy_until - (now + dt))
            else:
                accepted, queue[pair] = wire, 0.0
            link.bytes_sent += round(accepted)
            link.packets_sent += round(packets * accepted / wire)
            ls.accepted += accepted
            frac[pair] = accepted / wire * (1.0 - expected_loss(spec))
            ls.delivered += accepted * (1.0 - expected_loss(spec))
        deadline = self.spec.jitter_buffer_ms / 1000.0
        for i, plan in self.plans.items():
            st = self.stats[i]
            st.planned_s += dt
            st.estimate_kbps_s += self.estimate[i] * dt
            st.audio_only_s += dt if plan.audio_only else 0.0
            got: dict[str, tuple[float, bool]] = {}
            wants = [(sid, 0) for sid in sorted(plan.audio)] + sorted(plan.video.items())
            for sid, layer in wants:
                source = self.by_id[sid]
                route = self.paths.get(source.node, {}).get(i)
                f, q = (1.0, 0.0) if route is not None else (0.0, math.inf)
                for pair in route or ():
                    f *= frac.get(pair, 0.0)
                    q += queue.get(pair, 0.0)
                b = self._rate(source, layer) * 125.0 * dt
                st.received_bytes += b * f
                st.win_expected += b
                st.win_delivered += b * f
                st.win_queue_s = max(st.win_queue_s, q)
                got[sid] = (f, q <= deadline)
            st.win_s += dt
            for sid in self.wanted.get(i, ()):
                if self.by_id[sid].node not in self.speaking:
                    continue
                st.wanted_audio_s += dt
                f, in_time = got.get(sid, (0.0, False))
                if sid in plan.audio and in_time:
                    st.arrived_audio_s += dt * f
            for sid, layer in plan.video.items():
                st.video_s += dt
                st.layer_s += layer * dt
                f, in_time = got[sid]
                if f >= self.spec.stall_below and in_time:
                    st.stalled.discard(sid)
                    continue
                st.stall_s += dt
                if sid not in st.stalled:
                    st.stalls += 1
                    st.stalled.add(sid)
