"""``SimTransport``: a simulated room's nodes and the links between them.

The base of ``netsim.simulation.Simulation`` (one chain, a file each): ``__init__`` (the
topology, the link models, every attribute of the chain), building the room (identities,
replicas, the set-up's changes) and the transport: cores started, links brought up and down
along topology edges, frames carried over the ``netsim.links`` models with the per-hop
processing delay, delivered to the cores, what the cores ask for (frames, timers, link
requests) carried out. ``Observations`` is what the run records.
"""

from __future__ import annotations

import dataclasses
import functools
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from meshnode.crdt import ROOT, SceneReplica
from meshnode.identity import Identity
from meshnode.overlay import (
    SYNC,
    ChangeApplied,
    ConnectRequest,
    DisconnectRequest,
    OverlayConfig,
    RoomOverlay,
)
from meshnode.runtime.room import LIVE_OVERLAY
from netsim.caches import SimulationCaches
from netsim.engine import Engine
from netsim.links import Link, LinkSpec
from netsim.liveness import PING, Liveness
from netsim.scenario import Scenario, ScenarioError
from netsim.shared_setup import clone_for
from netsim.sim_node import Pair as Pair
from netsim.sim_node import SimNode as SimNode
from netsim.topology import Topology, build, neighbours
from protocol.errors import DecodeError
from protocol.frames import Changes, decode_frame

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


class SimTransport:
    """The nodes and links of a ``Simulation`` (see the module docstring)."""

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

    # ------------------------------------------------------------------ transport

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


def _is_changes(frame: bytes) -> bool:
    try:
        return isinstance(decode_frame(frame), Changes)
    except DecodeError:
        return False
