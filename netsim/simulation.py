"""A simulated room: real ``SceneReplica`` + ``RoomOverlay`` cores on simulated links.

Every node runs the very objects a meshnode node runs. The simulation plays the driver: it
carries frames over ``netsim.links.Link`` models, calls ``handle_timer`` when a core asks,
honours link requests along topology edges, and applies the scenario's events (partitions,
degradations, crashes, joins, hostile nodes). Identities, nonces and every random choice come
from the scenario seed, so a run is reproducible byte for byte.
"""

from __future__ import annotations

import dataclasses
import functools
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from meshnode.crdt import ROOT, PermissionDenied, SceneReplica
from meshnode.identity import Identity
from meshnode.overlay import (
    SYNC,
    ChangeApplied,
    ConnectRequest,
    DisconnectRequest,
    OverlayConfig,
    OverlayStats,
    RoomOverlay,
)
from meshnode.runtime.room import LIVE_OVERLAY
from netsim.caches import SimulationCaches, frozen_setup
from netsim.engine import Engine
from netsim.links import Link, LinkSpec
from netsim.liveness import PING, Liveness
from netsim.scenario import Event, Scenario, ScenarioError
from netsim.shared_setup import clone_for
from netsim.sim_node import Pair as Pair
from netsim.sim_node import SimNode as SimNode
from netsim.topology import Topology, build, neighbours
from protocol.errors import DecodeError
from protocol.frames import Changes, IHave, decode_frame, encode_frame

if TYPE_CHECKING:
    from netsim.media import MediaSim




@dataclass
class Observations:
    """What the simulation records for ``netsim.metrics``."""

    submitted: dict[bytes, tuple[int, float]] = field(default_factory=dict)
    delivered: dict[bytes, dict[int, float]] = field(default_factory=dict)
    samples: list[dict[str, float]] = field(default_factory=list)
    heals: list[float] = field(default_factory=list)
    partitions: list[float] = field(default_factory=list)
    frames_cut: int = 0
    crossing_after_cut: int = 0
    # Presence frames (the ``presence`` channel) put on the wire to each node, by index.
    presence_bytes_to: dict[int, int] = field(default_factory=dict)
    presence_frames_to: dict[int, int] = field(default_factory=dict)


class Simulation:
    """Build a room from a scenario and run it. ``run()`` returns the observations."""

    def __init__(self, scenario: Scenario, *, progress: Callable[[float], None] | None = None,
                 share_setup: bool = True):
        """``share_setup``: clone the replicas of a public room from one that applied the
        set-up (``netsim.shared_setup``); False makes each apply it (same results, slower)."""
        self.scenario = scenario
        self.share_setup = share_setup
        self.progress = progress
        self.rng = random.Random(scenario.seed)
        self.engine = Engine()
        self.obs = Observations()
        # Every node decodes the same frames and changes: caches owned by this simulation,
        # installed only while it builds and runs (netsim/caches.py).
        self.caches = SimulationCaches()
        try:
            self.topology: Topology = build(
                scenario.topology["kind"], scenario.topology, random.Random(self.rng.random()),
                scenario.links,
            )
        except ValueError as err:
            raise ScenarioError(f"topology: {err}") from None
        n = self.topology.n
        self.adj = neighbours(self.topology)
        self.edge_set = {(a, b) for a, b in self.topology.edges}
        overrides: dict[Pair, LinkSpec] = {}
        for edges, spec in scenario.link_overrides:
            for e in edges:
                if e not in self.edge_set:
                    raise ScenarioError(f"link_overrides: {list(e)} is not a topology edge")
                overrides[e] = spec
        self.base_specs: dict[Pair, LinkSpec] = {}
        self.links: dict[Pair, Link] = {}
        # Each direction's draws as the emulation's fabric seeds them (``Scenario.link_seed``).
        link_seed = scenario.seed if scenario.link_seed is None else scenario.link_seed
        for a, b in self.topology.edges:
            for s, d in ((a, b), (b, a)):
                spec = overrides.get((a, b)) or self.topology.link_spec(s, d, scenario.links)
                self.base_specs[(s, d)] = spec
                self.rng.random()  # drawn as before, so that the seed's other draws stay
                self.links[(s, d)] = Link(spec, random.Random(f"{link_seed}:{s}->{d}"))
        engine = self.engine
        for (s, d), link in self.links.items():
            channel = link.bind(engine.at, lambda: engine.now,
                                functools.partial(self._arrive, s, d, SYNC))
            channel.reverse = self.links[(d, s)]
        # Per-hop processing ([node]): when each node's event loop is next free.
        self.node_spec = scenario.node
        self.cpu_free_at = [0.0] * self.topology.n
        self.handed_at = [0.0] * self.topology.n  # when the core last got a message
        # Its own stream (not drawn from self.rng): the per-hop draws leave every other
        # seeded choice of a run where it was.
        self.node_rng = random.Random(f"{scenario.seed}:node-processing")
        self._draws = any(scenario.node.processing_quantiles_ms)
        self.held: dict[Pair, list[tuple[str, bytes]]] = {}
        self.held_in_flight: dict[Pair, int] = {}  # how many of held[pair] were on the wire
        self.epoch: dict[Pair, int] = {}
        self.connected: set[Pair] = set()
        self.groups: dict[int, int] | None = None
        # Pairs (submitted change, node other than its origin) in obs.delivered, kept up to
        # date as they are recorded so that _sample does not rescan every change.
        self._delivered_pairs = 0
        max_degree = max(self.topology.degrees(), default=1)
        # The live node's settings (LIVE_OVERLAY, what `meshnode up` runs), with an active
        # view large enough to use every topology edge, then the scenario's [overlay].
        cfg = {"active_view_size": max(LIVE_OVERLAY.active_view_size, max_degree),
               **scenario.overlay}
        self.config: OverlayConfig = dataclasses.replace(LIVE_OVERLAY, **cfg)
        self.liveness = Liveness(self, scenario.liveness)
        self.media: MediaSim | None = None  # the [media] section's model (netsim/media.py)
        with self.caches.active():
            self._build_room(n)

    # ------------------------------------------------------------------ set-up

    def _build_room(self, n: int) -> None:
        ids = [Identity.from_private_bytes(self.rng.randbytes(32)) for _ in range(n)]
        wl = self.scenario.workload
        # A private room's replicas draw nonces and epoch secrets from the seeded rng too.
        extra: dict[str, Any] = {"random_bytes": self.rng.randbytes} if wl.private else {}
        owner = SceneReplica.create(ids[0], now=0.0, name=self.scenario.name,
                                    nonce=self.rng.randbytes(16), private=wl.private, **extra)
        setup: list[bytes] = list(owner.changes_since([])[1:])
        for i in range(1, n):
            owner.grant(ids[i].public_id, "editor" if i < wl.editors
                        else "host" if i >= n - wl.hosts else "viewer")
            if owner.pending_ops >= 200:
                setup.append(owner.commit(0.0) or b"")
        tail = owner.commit(0.0)
        if tail:
            setup.append(tail)
        self.nodes: list[SimNode] = []
        joiners = {x for ev in self.scenario.events if ev.kind == "join" for x in ev.nodes}
        # A public room's replicas are copies of one that applied the set-up (linear set-up,
        # grants shared: netsim/shared_setup.py); a private room's each apply it themselves.
        template: SceneReplica | None = None
        if self.share_setup and not wl.private and n > 1:
            template = SceneReplica.from_genesis(owner.genesis, ids[1], **extra)
            template.apply_many(setup, 0.0)
        for i in range(n):
            if i == 0:
                rep = owner
            elif template is not None:
                rep = clone_for(template, ids[i], **extra)
            else:
                rep = SceneReplica.from_genesis(owner.genesis, ids[i], **extra)
                rep.apply_many(setup, 0.0)
            node = SimNode(i, ids[i], ids[i].public_id, rep, editor=i < wl.editors)
            node.alive = i not in joiners
            self.nodes.append(node)
        self.by_peer = {node.peer_id: node.index for node in self.nodes}
        # Editors start with a few entities each, so edits have something to act on.
        per_editor = max(1, wl.initial_entities // max(1, wl.editors))
        for node in self.nodes[: wl.editors]:
            for k in range(per_editor):
                node.own_entities.append(node.replica.create_entity(
                    ROOT, {"name": {"text": f"{node.index}-{k}"},
                           "transform": {"position": [0.0, 0.0, 0.0]}}))
            data = node.replica.commit(0.0)
            for other in self.nodes:
                if other is not node and data is not None:
                    other.replica.apply(data, 0.0)

    # ------------------------------------------------------------------ running

    def run(self) -> Observations:
        """Run the scenario to its end (with this simulation's caches installed, and the
        set-up's objects kept out of the garbage collector's scans: ``frozen_setup``)."""
        with self.caches.active(), frozen_setup():
            return self._run()

    def _run(self) -> Observations:
        sc = self.scenario
        for node in self.nodes:
            if node.alive:
                self._start(node)
        for a, b in self.topology.edges:
            if self.nodes[a].alive and self.nodes[b].alive:
                self._link_up(a, b)
        for ev in sc.events:
            self.engine.at(ev.at_s, self._event, ev)
        wl = sc.workload
        stop = wl.stop_s if wl.stop_s is not None else sc.duration_s * 0.75
        if wl.edits_per_s > 0 and wl.editors > 0:
            self.engine.at(wl.start_s + self.rng.expovariate(wl.edits_per_s), self._edit, stop)
        if wl.presence_hz > 0:
            for node in self.nodes[: wl.editors]:
                self.engine.at(wl.start_s + self.rng.random() / wl.presence_hz,
                               self._presence, node, stop)
        self.engine.at(0.0, self._sample)
        self.liveness.start()
        if sc.media is not None:
            from netsim.media import MediaSim

            self.media = MediaSim(self, sc.media)
            self.media.start()
        self.engine.run_until(sc.duration_s, self.progress)
        return self.obs

    def _start(self, node: SimNode) -> None:
        engine = self.engine
        # One virtual clock serves as both the monotonic and the wall clock.
        node.overlay = RoomOverlay(node.replica, node.identity, self.config,
                                   rng=random.Random(self.rng.random()),
                                   wall_clock=lambda: engine.now)
        node.alive = True
        node.timer_at = None

    def _overlay(self, i: int) -> RoomOverlay:
        ov = self.nodes[i].overlay
        assert ov is not None
        return ov

    def _link_up(self, a: int, b: int) -> None:
        if (a, b) in self.connected:
            return
        self.connected.add((a, b))
        self.connected.add((b, a))
        now = self.engine.now
        self.liveness.link_up(a, b)
        # Nodes speak link version 2 to each other, as real ones do: changes cross in the
        # compact form (protocol.compact), so links carry the bytes real links carry.
        self._overlay(a).connect(self.nodes[b].peer_id, now, compact=True)
        self._overlay(b).connect(self.nodes[a].peer_id, now, compact=True)
        self._drain(a)
        self._drain(b)

    def _link_down(self, a: int, b: int) -> None:
        if (a, b) not in self.connected:
            return
        self.connected.discard((a, b))
        self.connected.discard((b, a))
        for pair in ((a, b), (b, a)):
            self.epoch[pair] = self.epoch.get(pair, 0) + 1
            self.held.pop(pair, None)
            self.held_in_flight.pop(pair, None)
            channel = self.links[pair].channel
            if channel is not None:
                channel.reset()  # a new link is a new SCTP association
        self.liveness.link_down(a, b)
        now = self.engine.now
        for x, y in ((a, b), (b, a)):
            node = self.nodes[x]
            if node.alive and node.overlay is not None:
                node.overlay.disconnect(self.nodes[y].peer_id, now)
                self._drain(x)

    def _cut(self, a: int, b: int) -> bool:
        return self.groups is not None and self.groups.get(a) != self.groups.get(b)

    def _transmit(self, src: int, dst: int, channel: str, frame: bytes) -> None:
        pair = (src, dst)
        if pair not in self.connected:
            return
        if channel != SYNC:
            obs = self.obs
            obs.presence_bytes_to[dst] = obs.presence_bytes_to.get(dst, 0) + len(frame)
            obs.presence_frames_to[dst] = obs.presence_frames_to.get(dst, 0) + 1
        link = self.links[pair]
        liveness = self.liveness
        if liveness.enabled:
            # Partitions are lost packets (link.cut); SCTP recovers what it can, the
            # keepalive closes what stays silent.
            now = self.engine.now
            liveness.last_out[pair] = now
            if link.cut:
                self.obs.frames_cut += 1
            if channel == SYNC and link.sctp:
                link.send_reliable(len(frame), now, (channel, frame, self.epoch.get(pair, 0)))
                return
            t = link.send(len(frame), now, channel == SYNC)
            if t is not None:
                self.engine.at(t, self._arrive, src, dst, channel,
                               (channel, frame, self.epoch.get(pair, 0)))
            return
        groups = self.groups  # self._cut(src, dst), inlined: this runs once per frame
        if groups is not None and groups.get(src) != groups.get(dst):
            self.obs.frames_cut += 1
            if channel == SYNC:
                self.held.setdefault(pair, []).append((channel, frame))
            return
        t = link.send(len(frame), self.engine.now, channel == SYNC)
        if t is None:
            if channel == SYNC:
                self.held.setdefault(pair, []).append((channel, frame))
            return
        self.engine.at(t, self._arrive, src, dst, channel,
                       (channel, frame, self.epoch.get(pair, 0)))

    def _arrive(self, src: int, dst: int, channel: str,
                payload: tuple[str, bytes, int]) -> None:
        """A message reached ``dst``'s socket: it waits for the node's event loop (per-hop
        processing, ``[node]``), then the core sees it."""
        _, frame, epoch = payload
        if self.epoch.get((src, dst), 0) != epoch:
            return
        if frame is PING:
            self.liveness.heard(src, dst)
            return
        spec = self.node_spec
        # CPU: the loop is busy this long per message (a burst queues behind it). Latency: an
        # idle loop hands the message to the core after a measured per-hop time (the draw),
        # which includes the CPU work and the waits for the loop and the processor. In order:
        # a message never overtakes an earlier one (one loop, one socket), so a stall holds
        # back what arrives during it, and releases it at once (a burst on the next link).
        cpu = (spec.processing_ms + spec.processing_ms_per_kb * len(frame) / 1024.0) / 1000.0
        hop = spec.draw_ms(self.node_rng.random()) / 1000.0 if self._draws else 0.0
        if cpu <= 0.0 and hop <= 0.0:
            self._deliver(src, dst, channel, frame, epoch)
            return
        engine = self.engine
        now = engine.now
        free = self.cpu_free_at[dst]
        busy_until = (free if free > now else now) + cpu
        self.cpu_free_at[dst] = busy_until
        done = max(busy_until, now + hop, self.handed_at[dst])
        self.handed_at[dst] = done
        engine.at(done, self._deliver, src, dst, channel, frame, epoch)

    def _deliver(self, src: int, dst: int, channel: str, frame: bytes, epoch: int) -> None:
        pair = (src, dst)
        if self.epoch.get(pair, 0) != epoch or pair not in self.connected:
            return
        node = self.nodes[dst]
        ov = node.overlay
        if not node.alive or ov is None:
            return
        liveness = self.liveness
        if liveness.enabled:
            now = self.engine.now
            last_in = liveness.last_in  # liveness.heard(src, dst), inlined (once per frame)
            if pair in last_in:
                last_in[pair] = now
            ov.receive(self.nodes[src].peer_id, channel, frame, now)
            self._drain(dst)
            return
        groups = self.groups  # self._cut(src, dst), inlined
        if groups is not None and groups.get(src) != groups.get(dst):
            # The partition also cuts frames still on the wire when it began (a lossy link's
            # retransmissions can keep one there for seconds): presence is lost; a sync frame
            # is re-sent at the heal ahead of those held since the cut, as it was sent first.
            self.obs.frames_cut += 1
            if channel == SYNC:
                k = self.held_in_flight.get(pair, 0)
                self.held.setdefault(pair, []).insert(k, (channel, frame))
                self.held_in_flight[pair] = k + 1
            return
        ov.receive(self.nodes[src].peer_id, channel, frame, self.engine.now)
        self._drain(dst)

    def _drain(self, i: int) -> None:
        """Carry out what a core asked for: frames, link requests, timers; record events."""
        node = self.nodes[i]
        ov = node.overlay
        if ov is None or not node.alive:
            return
        now = self.engine.now
        frames = ov.frames_to_send()
        if frames:
            by_peer, transmit = self.by_peer, self._transmit
            withhold = node.hostile == "withhold"
            for peer, channel, frame in frames:
                if withhold and channel == SYNC and _is_changes(frame):
                    continue  # a black hole: announces, but never sends change payloads
                transmit(i, by_peer[peer], channel, frame)
        next_event = ov.next_event
        while (ev := next_event()) is not None:
            if type(ev) is ChangeApplied:
                cid = ev.change_id
                obs = self.obs
                got = obs.delivered.get(cid)
                if got is None:
                    got = obs.delivered[cid] = {}
                if i not in got:
                    sub = obs.submitted.get(cid)
                    if sub is not None and sub[0] != i:
                        self._delivered_pairs += 1
                got[i] = now
            elif isinstance(ev, ConnectRequest):
                self._connect_request(i, self.by_peer[ev.peer])
            elif isinstance(ev, DisconnectRequest):
                j = self.by_peer.get(ev.peer)
                if j is not None:
                    self.engine.at(now, self._link_down, i, j)
        t = ov.get_timer()
        if t is not None and (node.timer_at is None or t < node.timer_at):
            node.timer_at = t
            self.engine.at(t, self._timer, i, t)

    def _timer(self, i: int, when: float) -> None:
        node = self.nodes[i]
        if node.timer_at != when or not node.alive or node.overlay is None:
            return
        node.timer_at = None
        node.overlay.handle_timer(self.engine.now)
        self._drain(i)

    def _connect_request(self, a: int, b: int) -> None:
        """Links exist only along topology edges; anything else fails at once."""
        if self.liveness.enabled:
            self.liveness.relayed_dial(a, b)
            return
        edge = (min(a, b), max(a, b))
        ok = (
            edge in self.edge_set and self.nodes[b].alive and not self._cut(a, b)
            and (a, b) not in self.connected
        )
        if not ok:
            ov = self.nodes[a].overlay
            if ov is not None and (a, b) not in self.connected:
                ov.connect_failed(self.nodes[b].peer_id, self.engine.now)
            return
        rtt = 2 * self.links[(a, b)].spec.latency_ms / 1000.0
        self.engine.at(self.engine.now + 1.5 * rtt, self._handshake, a, b)

    def _handshake(self, a: int, b: int) -> None:
        if self.nodes[a].alive and self.nodes[b].alive and not self._cut(a, b):
            self._link_up(a, b)
        else:
            ov = self.nodes[a].overlay
            if ov is not None:
                ov.connect_failed(self.nodes[b].peer_id, self.engine.now)
                self._drain(a)

    # ------------------------------------------------------------------ workload

    def _live_editors(self) -> list[SimNode]:
        return [n for n in self.nodes if n.editor and n.alive and not n.hostile]

    def _edit(self, stop: float) -> None:
        now = self.engine.now
        if now > stop:
            return
        wl = self.scenario.workload
        self.engine.at(now + self.rng.expovariate(wl.edits_per_s), self._edit, stop)
        editors = self._live_editors()
        if not editors:
            return
        node = self.rng.choice(editors)
        self._one_edit(node, now)

    def _one_edit(self, node: SimNode, now: float) -> None:
        try:
            self._try_edit(node, now)
        except PermissionDenied:  # a private room's editor waiting for a key, or removed
            node.replica.discard()

    def _try_edit(self, node: SimNode, now: float) -> None:
        rep, rng = node.replica, self.rng
        node.own_entities = [e for e in node.own_entities if rep.exists(e)]
        mix = self.scenario.workload.mix
        kinds, weights = zip(*mix.items(), strict=True)
        kind = rng.choices(kinds, weights)[0]
        own = node.own_entities
        if not own or kind == "create":
            parent = rng.choice(own) if own and rng.random() < 0.5 else ROOT
            own.append(rep.create_entity(parent, {"transform": {"position": [0.0, 0.0, 0.0]}}))
        elif kind == "transform":
            pos = [round(rng.uniform(-10, 10), 3) for _ in range(3)]
            rep.set_field(rng.choice(own), "transform", "position", pos)
        elif kind == "field":
            rep.set_field(rng.choice(own), "material", "color", rng.choice(["red", "blue"]))
        elif kind == "delete" and len(own) > 1:
            rep.delete(own.pop(rng.randrange(len(own))))
        elif kind == "move" and len(own) > 1:
            e, p = rng.sample(own, 2)
            try:
                rep.move(e, p)
            except ValueError:
                rep.move(e, ROOT)
        else:
            rep.set_field(rng.choice(own), "transform", "position", [0.0, 0.0, 0.0])
        self._commit_and_spread(node, now)

    def _commit_and_spread(self, node: SimNode, now: float) -> None:
        rep = node.replica
        data = rep.commit(now)
        if data is None or node.overlay is None:
            return
        res = node.overlay.submit_change(data, now)
        if res.change_id is not None:
            self._note_submitted(res.change_id, node.index, now)
        self._drain(node.index)

    def _note_submitted(self, cid: bytes, origin: int, now: float) -> None:
        obs = self.obs
        got = obs.delivered.get(cid, {})
        old = obs.submitted.get(cid)
        if old is not None:
            self._delivered_pairs -= sum(1 for j in got if j != old[0])
        obs.submitted[cid] = (origin, now)
        self._delivered_pairs += sum(1 for j in got if j != origin)

    def _presence(self, node: SimNode, stop: float) -> None:
        now = self.engine.now
        if now > stop or not node.alive or node.overlay is None:
            return
        hz = self.scenario.workload.presence_hz
        self.engine.at(now + 1.0 / hz, self._presence, node, stop)
        pos = [round(self.rng.uniform(-10, 10), 2) for _ in range(3)]
        node.overlay.submit_presence({"position": pos}, now)
        self._drain(node.index)

    # ------------------------------------------------------------------ scenario events

    def _event(self, ev: Event) -> None:
        getattr(self, f"_ev_{ev.kind}")(ev)

    def _ev_partition(self, ev: Event) -> None:
        self.groups = {x: g for g, members in enumerate(ev.groups) for x in members}
        self.obs.partitions.append(self.engine.now)
        self.liveness.paths_changed()

    def _ev_remove(self, ev: Event) -> None:
        """The owner (node 0) removes these members; in a private room that rotates."""
        owner = self.nodes[0]
        for x in ev.nodes:
            owner.replica.grant(self.nodes[x].peer_id, "none")
            self.nodes[x].editor = False
            self.nodes[x].removed = True
        self._commit_and_spread(owner, self.engine.now)

    def _ev_rotate(self, ev: Event) -> None:
        """These members (editors or above of a private room) each rotate the keys now."""
        for x in ev.nodes:
            node = self.nodes[x]
            if node.alive:
                try:
                    node.replica.rotate()
                except PermissionDenied:  # not an editor, or waiting for its key
                    continue
                self._commit_and_spread(node, self.engine.now)

    def _ev_heal(self, ev: Event) -> None:
        self.groups = None
        self.obs.heals.append(self.engine.now)
        if self.liveness.enabled:
            self.liveness.paths_changed()
            return
        held, self.held = self.held, {}
        self.held_in_flight = {}
        for (src, dst), frames in held.items():
            for channel, frame in frames:
                self._transmit(src, dst, channel, frame)

    def _targets(self, ev: Event) -> list[Pair]:
        if not ev.edges:
            return list(self.links)
        return [p for a, b in ev.edges for p in ((a, b), (b, a)) if p in self.links]

    def _ev_degrade(self, ev: Event) -> None:
        for pair in self._targets(ev):
            spec = self.links[pair].spec
            self.links[pair].set_spec(LinkSpec.from_dict(ev.link, base=spec), self.engine.now)

    def _ev_restore(self, ev: Event) -> None:
        for pair in self._targets(ev):
            self.links[pair].set_spec(self.base_specs[pair], self.engine.now)

    def _ev_crash(self, ev: Event, *, leave: bool = False) -> None:
        for x in ev.nodes:
            node = self.nodes[x]
            if not node.alive:
                continue
            if not self.liveness.enabled or leave:
                for y in self.adj[x]:
                    self._link_down(x, y)
            if node.overlay is not None:
                node.old_stats.append(node.overlay.stats)
            node.alive = False
            node.overlay = None
        # A crashed node's neighbours hear nothing more; their keepalive closes the links.
        self.liveness.paths_changed()

    def _ev_leave(self, ev: Event) -> None:
        self._ev_crash(ev, leave=True)
        for x in ev.nodes:
            self.nodes[x].departed = True

    def _ev_restart(self, ev: Event) -> None:
        for x in ev.nodes:
            node = self.nodes[x]
            if node.alive or node.departed:
                continue
            if self.liveness.enabled:
                for y in self.adj[x]:  # links its neighbours still thought up are stale
                    self._link_down(x, y)
                self._start(node)
                self.liveness.node_started(x)
                continue
            self._start(node)
            for y in self.adj[x]:
                if self.nodes[y].alive:
                    self._link_up(x, y)

    _ev_join = _ev_restart

    def _ev_hostile(self, ev: Event) -> None:
        for x in ev.nodes:
            node = self.nodes[x]
            node.hostile = ev.behaviour
            if ev.behaviour in ("flood", "garbage", "equivocate"):
                self.engine.at(self.engine.now, self._misbehave, x, ev.rate_per_s)

    def _misbehave(self, x: int, rate: float) -> None:
        node = self.nodes[x]
        now = self.engine.now
        if not node.alive or now >= self.scenario.duration_s:
            return
        self.engine.at(now + 1.0 / rate, self._misbehave, x, rate)
        room = node.replica.room_id
        targets = [y for y in self.adj[x] if (x, y) in self.connected]
        if node.hostile == "flood":
            frame = encode_frame(IHave(room, (self.rng.randbytes(32),)))
            for y in targets:
                self._transmit(x, y, SYNC, frame)
        elif node.hostile == "garbage":
            for y in targets:
                self._transmit(x, y, SYNC, self.rng.randbytes(self.rng.randrange(1, 200)))
        elif node.hostile == "equivocate" and targets:
            self._equivocate(node, targets, now)

    def _equivocate(self, node: SimNode, targets: list[int], now: float) -> None:
        """Sign two different changes with one seq; send one to half the neighbours."""
        rep = node.replica
        if not node.own_entities:
            node.own_entities.append(rep.create_entity(ROOT))
            data = rep.commit(now)
            if data is not None and node.overlay is not None:
                node.overlay.submit_change(data, now)
                self._drain(node.index)
            return
        twin = SceneReplica.from_snapshot(rep.snapshot(), node.identity)
        e = node.own_entities[0]
        rep.set_field(e, "material", "color", "left")
        twin.set_field(e, "material", "color", "right")
        a, b = rep.commit(now), twin.commit(now)
        if a is None or b is None:
            return
        room = rep.room_id
        half = len(targets) // 2 or 1
        for k, y in enumerate(targets):
            frame = encode_frame(Changes(room, (a if k < half else b,)))
            self._transmit(node.index, y, SYNC, frame)

    # ------------------------------------------------------------------ sampling

    def honest_live(self) -> list[SimNode]:
        """Nodes that are up, not hostile and not removed: those that must converge."""
        return [n for n in self.nodes if n.alive and not n.hostile and not n.removed]

    def _sample(self) -> None:
        now = self.engine.now
        live = self.honest_live()
        heads = {tuple(n.replica.heads()) for n in live}
        expected = len(self.obs.submitted) * max(0, len(live) - 1)
        got = self._delivered_pairs if expected else 0
        self.obs.samples.append({
            "t": now,
            "distinct_heads": float(len(heads)),
            "delivered_fraction": (got / expected) if expected else 1.0,
        })
        nxt = now + self.scenario.sample_interval_s
        if nxt <= self.scenario.duration_s + 1e-9:
            self.engine.at(nxt, self._sample)

    def link_utilisation(self) -> dict[str, float]:
        """Busy fraction of every link direction over the run."""
        d = max(self.scenario.duration_s, 1e-9)
        return {f"{a}-{b}": link.busy_s / d for (a, b), link in sorted(self.links.items())}

    def overlay_stats(self, node: SimNode) -> list[OverlayStats]:
        """Stats of every overlay the node has run (restarts make new ones)."""
        return [*node.old_stats, *([node.overlay.stats] if node.overlay else [])]


def _is_changes(frame: bytes) -> bool:
    try:
        return isinstance(decode_frame(frame), Changes)
    except DecodeError:
        return False
