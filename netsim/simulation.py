"""A simulated room: real ``SceneReplica`` + ``RoomOverlay`` cores on simulated links.

Every node runs the very objects a meshnode node runs. The simulation plays the driver: it
carries frames over ``netsim.links.Link`` models, calls ``handle_timer`` when a core asks,
honours link requests along topology edges, and applies the scenario's events (partitions,
degradations, crashes, joins, hostile nodes). Identities, nonces and every random choice come
from the scenario seed, so a run is reproducible byte for byte.

``Simulation`` stands on ``SimTransport`` (``netsim.sim_transport``: the nodes, the links,
frames carried and delivered); here: running a scenario, its workload (edits, presence), its
events (partitions, crashes, restarts, hostile nodes) and sampling.
"""

from __future__ import annotations

from meshnode.crdt import ROOT, PermissionDenied, SceneReplica
from meshnode.overlay import SYNC, OverlayStats
from netsim.caches import frozen_setup
from netsim.links import LinkSpec
from netsim.scenario import Event
from netsim.sim_node import Pair as Pair
from netsim.sim_node import SimNode as SimNode
from netsim.sim_transport import Observations as Observations
from netsim.sim_transport import SimTransport as SimTransport
from netsim.sim_transport import _is_changes as _is_changes
from protocol.frames import Changes, IHave, encode_frame


class Simulation(SimTransport):
    """Build a room from a scenario and run it. ``run()`` returns the observations."""

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

