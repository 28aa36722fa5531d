"""Room-overlay benchmark: per-author Plumtree (``RoomOverlay``) against plain flooding.

Run ``python benchmarks/overlay_bench.py [--sizes 20,100,500] [--changes M] [--seed 1]``
(``--quick``: a smoke run of a few seconds). It is not a test: it prints ONE JSON object and
exits 0 if every run delivered every change and converged (1 otherwise). See
benchmarks/README.md for what each figure means.

For each size N, on ONE random connected graph (a random ring plus random chords, average
degree ~4.5, per-edge latency uniform 10-60 ms, no loss, no bandwidth limit, no processing
delay), both systems run the same workload on real ``SceneReplica``s on a virtual clock:

* **overlay**: one ``RoomOverlay`` per node, linked along the graph's edges at t=0.
  ``active_view_size`` is at least the maximum degree and shuffles/view repair are rare, and
  every ``ConnectRequest`` is refused (``connect_failed``), so the overlay's links stay the
  given graph. Everything else is the default ``OverlayConfig`` (IHave batching, graft
  timeout, anti-entropy).
* **flooding**: a node that forwards every change it applies to all its neighbours except the
  one it came from (duplicates are dropped by the replica), in the same ``Changes`` frames.

Workload: node 0 owns the room, ``--authors`` other nodes are editors. Warm-up: each author
commits ``--warmup`` changes (so every author's Plumtree tree has settled); then ``M``
measured changes from random authors, one every 0.3-0.7 s (uniform), so consecutive changes
rarely overlap in flight. Each change creates an entity now and then and moves a few of the
author's entities. The overlay run generates the change bytes (``replica.commit`` +
``submit_change``); the flooding run replays the very same bytes at the same times.

The event loop is a heap of frame deliveries, node timers and workload actions; a frame on an
edge takes exactly that edge's latency, so every link is FIFO (like the reliable ``sync``
channel).
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import heapq
import json
import math
import random
import sys
import time
from dataclasses import dataclass
from typing import Any

from _env import environment

from meshnode.crdt import APPLIED, BUFFERED, DUPLICATE, ROOT, SceneReplica
from meshnode.identity import Identity
from meshnode.overlay import (
    ChangeApplied,
    ConnectRequest,
    DisconnectRequest,
    OverlayConfig,
    PeerMisbehaved,
    RoomOverlay,
)
from netsim.links import LinkSpec
from netsim.topology import Topology, hop_distances, shortest_from
from protocol.change import change_id
from protocol.frames import Changes, decode_frame, encode_frame

DELIVER, TIMER, ACTION = 0, 1, 2
PAYLOAD_KINDS = ("Changes.push", "Changes.pull")
SETUP_S = 3.0  # links up, first shuffles and joins settle
WARMUP_GAP_S = 0.3
SETTLE_S = 3.0  # after the last measured change, before the measured window closes
TAIL_S = 12.0  # more time for anti-entropy before the convergence check
LAT_S = (0.010, 0.060)


# ---------------------------------------------------------------------------- the graph


def make_graph(n: int, rng: random.Random, avg_degree: float) -> list[dict[int, float]]:
    """A random ring (a random permutation) plus random chords; latency per edge."""
    adj: list[dict[int, float]] = [{} for _ in range(n)]

    def add(a: int, b: int) -> bool:
        if a == b or b in adj[a]:
            return False
        lat = rng.uniform(*LAT_S)
        adj[a][b] = lat
        adj[b][a] = lat
        return True

    order = list(range(n))
    rng.shuffle(order)
    for k in range(n):
        add(order[k], order[(k + 1) % n])
    target = max(n, round(n * avg_degree / 2))
    edges = sum(len(a) for a in adj) // 2
    budget = 100 * n
    while edges < target and budget > 0:
        budget -= 1
        if add(rng.randrange(n), rng.randrange(n)):
            edges += 1
    return adj


def shortest_paths(adj: list[dict[int, float]], sources: list[int]
                   ) -> tuple[dict[int, list[float]], dict[int, list[int]]]:
    """Shortest one-way latency (ms) and hop count from each source, by netsim's own
    Dijkstra and BFS on the same graph."""
    edges = sorted({(min(a, b), max(a, b)) for a in range(len(adj)) for b in adj[a]})
    topo = Topology(len(adj), edges, edge_specs={
        (a, b): LinkSpec(latency_ms=adj[a][b] * 1000.0) for a, b in edges
    })
    ms = {a: shortest_from(topo, a, LinkSpec()) for a in sources}
    hops = {a: hop_distances(topo, a) for a in sources}
    return ms, hops


# ---------------------------------------------------------------------------- the room


class Room:
    """Identities, genesis and the grant change shared by both runs."""

    def __init__(self, n: int, n_authors: int, seed: int, rng: random.Random) -> None:
        self.ids = [
            Identity.from_private_bytes(hashlib.sha256(b"overlay-bench %d %d" % (seed, i)).digest())
            for i in range(n)
        ]
        self.pids = [i.public_id for i in self.ids]
        self.index = {p: k for k, p in enumerate(self.pids)}
        self.authors = sorted(rng.sample(range(1, n), min(n_authors, n - 1)))
        owner = SceneReplica.create(self.ids[0], now=0.0, nonce=b"bench%d" % seed)
        for a in self.authors:
            owner.grant(self.ids[a].public_id, "editor")
        grant = owner.commit(0.0)
        assert grant is not None
        self.genesis = owner.genesis
        self.grant = grant

    def replicas(self) -> list[SceneReplica]:
        reps = []
        for ident in self.ids:
            r = SceneReplica.from_genesis(self.genesis, ident)
            res = r.apply(self.grant, 0.0)
            assert res.status == APPLIED, res
            reps.append(r)
        return reps


def make_change(rep: SceneReplica, own: list[Any], rng: random.Random, k: int, now: float) -> bytes:
    """One change: maybe create an entity, then move up to 3 of the author's entities."""
    if not own or rng.random() < 0.2:
        own.append(
            rep.create_entity(
                ROOT,
                {
                    "name": {"text": f"entity {k}"},
                    "transform": {"position": [0.0, 0.0, 0.0], "rotation": [0.0, 0.0, 0.0, 1.0]},
                },
            )
        )
    for ent in rng.sample(own, min(3, len(own))):
        pos = [round(rng.uniform(-50, 50), 3) for _ in range(3)]
        rep.set_field(ent, "transform", "position", pos)
    data = rep.commit(now)
    assert data is not None
    return data


# ---------------------------------------------------------------------------- event loop


class Sim:
    """A heap of frame deliveries, node timers and actions on a virtual clock."""

    def __init__(self, adj: list[dict[int, float]], jitter_s: float = 0.0, seed: int = 0) -> None:
        self.adj = adj
        self.heap: list[tuple[Any, ...]] = []
        self.seq = 0
        self.now = 0.0
        self.frames = 0
        self.jitter_s = jitter_s
        self.seed = seed
        # one RNG per directed link, so jitter does not depend on the order in which a node
        # sends to its different neighbours at one instant
        self.jrng: dict[tuple[int, int], random.Random] = {}
        self.last: dict[tuple[int, int], float] = {}

    def send(self, src: int, dst: int, channel: str, frame: bytes) -> None:
        self.seq += 1
        t = self.now + self.adj[src][dst]
        if self.jitter_s:
            # extra delay uniform in [0, jitter], but a link stays FIFO (reliable, ordered)
            key = (src, dst)
            rng = self.jrng.get(key)
            if rng is None:
                rng = self.jrng[key] = random.Random(f"{self.seed} {src} {dst}")
            t = max(t + rng.random() * self.jitter_s, self.last.get(key, 0.0))
            self.last[key] = t
        heapq.heappush(self.heap, (t, self.seq, DELIVER, dst, src, channel, frame))

    def at(self, t: float, action: Any) -> None:
        self.seq += 1
        heapq.heappush(self.heap, (t, self.seq, ACTION, action, None, None, None))

    def timer(self, t: float, node: int) -> None:
        self.seq += 1
        heapq.heappush(self.heap, (t, self.seq, TIMER, node, None, None, None))

    def run(self, until: float) -> None:
        heap = self.heap
        pop = heapq.heappop
        while heap and heap[0][0] <= until:
            t, _, kind, a, b, c, d = pop(heap)
            self.now = t
            if kind == DELIVER:
                self.frames += 1
                self.deliver(a, b, c, d)
            elif kind == TIMER:
                self.fire(a, t)
            else:
                a()
        self.now = max(self.now, until)

    def deliver(self, dst: int, src: int, channel: str, frame: bytes) -> None:
        raise NotImplementedError

    def fire(self, node: int, t: float) -> None:
        raise NotImplementedError


class Tracker:
    """Per measured change: when and from whom each node applied it."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.measured: dict[bytes, int] = {}  # change id -> index
        self.origin: list[int] = []
        self.submitted: list[float] = []
        self.recv_t: list[list[float | None]] = []
        self.parent: list[list[int]] = []
        self.deliveries = 0

    def add(self, cid: bytes, origin: int, now: float) -> None:
        self.measured[cid] = len(self.origin)
        self.origin.append(origin)
        self.submitted.append(now)
        self.recv_t.append([None] * self.n)
        self.parent.append([-1] * self.n)

    def applied(self, cid: bytes, node: int, parent: int, now: float) -> None:
        k = self.measured.get(cid)
        if k is None:
            return
        row = self.recv_t[k]
        if row[node] is None:
            row[node] = now
            self.parent[k][node] = parent
            self.deliveries += 1


# ---------------------------------------------------------------------------- overlay run


class OverlaySim(Sim):
    def __init__(
        self,
        adj: list[dict[int, float]],
        room: Room,
        cfg: OverlayConfig,
        seed: int,
        tracker: Tracker,
        jitter_s: float = 0.0,
    ) -> None:
        super().__init__(adj, jitter_s, seed + 3)
        self.room = room
        self.reps = room.replicas()
        self.ovs = [
            RoomOverlay(r, room.ids[k], cfg, rng=random.Random(seed * 1_000_003 + k),
                        wall_clock=self._wall)
            for k, r in enumerate(self.reps)
        ]
        self.timer_at: list[float | None] = [None] * len(adj)
        self.tracker = tracker
        self.index = room.index
        self.misbehaved: dict[str, int] = {}
        self.disconnects: dict[str, int] = {}
        self.connect_refused = 0

    def _wall(self) -> float:
        return self.now  # the virtual clock is both the monotonic and the wall clock

    def after(self, i: int) -> None:
        ov = self.ovs[i]
        now = self.now
        index = self.index
        for peer, channel, frame in ov.frames_to_send():
            self.send(i, index[peer], channel, frame)
        while (ev := ov.next_event()) is not None:
            if type(ev) is ChangeApplied:
                self.tracker.applied(
                    ev.change_id, i, -1 if ev.peer is None else index[ev.peer], now
                )
            elif type(ev) is ConnectRequest:
                self.connect_refused += 1
                ov.connect_failed(ev.peer, now)
            elif type(ev) is DisconnectRequest:
                self.disconnects[ev.reason] = self.disconnects.get(ev.reason, 0) + 1
            elif type(ev) is PeerMisbehaved:
                self.misbehaved[ev.reason] = self.misbehaved.get(ev.reason, 0) + 1
        t = ov.get_timer()
        if t is not None:
            if t <= now:
                t = now
            if t != self.timer_at[i]:
                self.timer_at[i] = t
                self.timer(t, i)

    def deliver(self, dst: int, src: int, channel: str, frame: bytes) -> None:
        self.ovs[dst].receive(self.room.pids[src], channel, frame, self.now)
        self.after(dst)

    def fire(self, node: int, t: float) -> None:
        if self.timer_at[node] != t:
            return  # superseded
        self.timer_at[node] = None
        self.ovs[node].handle_timer(t)
        self.after(node)
        again = self.timer_at[node]
        if again is not None and again <= t:
            self.timer_at[node] = t + 1e-3  # guard against a timer that does not advance
            self.timer(t + 1e-3, node)

    def start(self) -> None:
        pids = self.room.pids
        for a, nbrs in enumerate(self.adj):
            for b in nbrs:
                if a < b:
                    self.ovs[a].connect(pids[b], 0.0)
                    self.ovs[b].connect(pids[a], 0.0)
        for i in range(len(self.adj)):
            self.after(i)

    def submit(self, author: int, data: bytes) -> None:
        res = self.ovs[author].submit_change(data, self.now)
        assert res.status == APPLIED, res
        self.after(author)


# ---------------------------------------------------------------------------- flooding run


class FloodSim(Sim):
    """Plain flooding: forward each change applied here to every neighbour but its sender."""

    def __init__(
        self,
        adj: list[dict[int, float]],
        room: Room,
        tracker: Tracker,
        jitter_s: float = 0.0,
        seed: int = 0,
    ) -> None:
        super().__init__(adj, jitter_s, seed + 4)
        self.room = room
        self.reps = room.replicas()
        self.tracker = tracker
        n = len(adj)
        self.pushed_in = [0] * n
        self.bytes_out = [0] * n
        self.buffered = 0
        self.nbrs = [sorted(a) for a in adj]

    def _apply(self, i: int, datas: tuple[bytes, ...] | list[bytes], src: int) -> None:
        rep = self.reps[i]
        now = self.now
        fwd: list[bytes] = []
        for res in rep.apply_many(datas, now):
            if res.status == APPLIED:
                for cid in res.applied:
                    self.tracker.applied(cid, i, src, now)
                    data = rep.change_bytes(cid)
                    assert data is not None
                    fwd.append(data)
            elif res.status == BUFFERED:
                self.buffered += 1
            elif res.status != DUPLICATE:
                raise AssertionError(res)
        if fwd:
            frame = encode_frame(Changes(rep.room_id, tuple(fwd), True))
            size = len(frame)
            for peer in self.nbrs[i]:
                if peer != src:
                    self.bytes_out[i] += size
                    self.send(i, peer, "sync", frame)

    def deliver(self, dst: int, src: int, channel: str, frame: bytes) -> None:
        msg = decode_frame(frame, self.reps[dst].limits)
        assert isinstance(msg, Changes)
        self.pushed_in[dst] += len(msg.changes)
        self._apply(dst, msg.changes, src)

    def submit(self, author: int, data: bytes) -> None:
        self._apply(author, [data], -1)


# ---------------------------------------------------------------------------- metrics


def pct(values: list[float] | list[int], digits: int = 3) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p90": None, "p99": None, "max": None}
    v = sorted(values)
    n = len(v)

    def at(p: float) -> float:
        return round(v[min(n - 1, max(0, math.ceil(p * n) - 1))], digits)  # nearest rank

    return {"p50": at(0.50), "p90": at(0.90), "p99": at(0.99), "max": round(v[-1], digits)}


def delivery_metrics(
    tr: Tracker, sp_ms: dict[int, list[float]], sp_hops: dict[int, list[int]]
) -> dict[str, Any]:
    lat, lat_stretch, hops, hop_stretch = [], [], [], []
    missing = 0
    broken_chains = 0
    for k, origin in enumerate(tr.origin):
        row = tr.recv_t[k]
        par = tr.parent[k]
        depth: dict[int, int] = {origin: 0}
        for i in range(tr.n):
            if i == origin:
                continue
            t = row[i]
            if t is None:
                missing += 1
                continue
            ms = (t - tr.submitted[k]) * 1000.0
            best = sp_ms[origin][i]
            lat.append(ms)
            lat_stretch.append(ms / best)
            # hops along the ChangeApplied.peer chain
            chain: list[int] = []
            j = i
            while j not in depth and j >= 0 and len(chain) <= tr.n:
                chain.append(j)
                j = par[j]
            if j < 0 or j not in depth:
                broken_chains += 1
                continue
            h = depth[j]
            for node in reversed(chain):
                h += 1
                depth[node] = h
            hops.append(depth[i])
            hop_stretch.append(depth[i] / sp_hops[origin][i])
    expected = len(tr.origin) * (tr.n - 1)
    return {
        "delivery_ratio": round((expected - missing) / expected, 6) if expected else None,
        "deliveries": expected - missing,
        "latency_ms": pct(lat, 2),
        "latency_stretch": pct(lat_stretch, 4),
        "hops": pct(hops, 0),
        "hop_stretch": pct(hop_stretch, 3),
        "broken_hop_chains": broken_chains,
    }


def per(x: float, d: float, digits: int = 4) -> float | None:
    return round(x / d, digits) if d else None


# ---------------------------------------------------------------------------- one size


@dataclass
class Plan:
    """What both runs of one size share."""

    n: int
    m: int
    schedule: list[tuple[float, int, bool]]  # (time, author, measured)
    warm: list[int]
    t_measure: float
    t_close: float
    t_end: float
    sp_ms: dict[int, list[float]]
    sp_hops: dict[int, list[int]]


def run_overlay(
    adj: list[dict[int, float]],
    room: Room,
    cfg: OverlayConfig,
    plan: Plan,
    args: argparse.Namespace,
    seed: int,
) -> tuple[dict[str, Any], list[bytes], dict[str, Any], int]:
    """The overlay run; it also makes the change bytes (returned for the flooding run)."""
    n, m, schedule, warm = plan.n, plan.m, plan.schedule, plan.warm
    t_measure, t_close, t_end = plan.t_measure, plan.t_close, plan.t_end
    sp_ms, sp_hops = plan.sp_ms, plan.sp_hops
    wall0 = time.perf_counter()
    otr = Tracker(n)
    osim = OverlaySim(adj, room, cfg, seed, otr, args.jitter_ms / 1000)
    own: dict[int, list[Any]] = {a: [] for a in room.authors}
    datas: list[bytes] = []
    crng = random.Random(seed + 2)

    def overlay_action(author: int, measured: bool, k: int) -> Any:
        def act() -> None:
            data = make_change(osim.reps[author], own[author], crng, k, osim.now)
            datas.append(data)
            if measured:
                otr.add(change_id(data), author, osim.now)
            osim.submit(author, data)

        return act

    for k, (ts, a, meas) in enumerate(schedule):
        osim.at(ts, overlay_action(a, meas, k))
    osim.start()
    osim.run(SETUP_S - 1e-9)
    warm0 = snapshot_overlay(osim)
    osim.run(t_measure - 1e-9)
    gc.collect()
    before = snapshot_overlay(osim)
    frames0 = osim.frames
    cpu0 = time.process_time()
    osim.run(t_close)
    cpu_overlay = time.process_time() - cpu0
    after = snapshot_overlay(osim)
    frames_overlay = osim.frames - frames0
    delivered_in_window = otr.deliveries
    osim.run(t_end)
    o_metrics = delivery_metrics(otr, sp_ms, sp_hops)
    o_metrics["late_deliveries_after_window"] = otr.deliveries - delivered_in_window
    state0 = osim.reps[0].state()
    count0 = osim.reps[0].change_count()
    o_converged = all(
        r.change_count() == count0 and r.buffered_count() == 0 for r in osim.reps
    ) and all(r.state() == state0 for r in osim.reps)
    o_metrics["converged"] = o_converged
    o_metrics.update(overlay_costs(before, after, n, m))
    o_metrics["frames_per_node_per_change"] = per(frames_overlay, n * m, 3)
    o_metrics["warmup"] = overlay_costs(warm0, before, n, len(warm))
    o_metrics["cpu_us_per_delivered_change"] = round(
        cpu_overlay / max(1, delivered_in_window) * 1e6, 1
    )
    o_metrics["cpu_s_measured_phase"] = round(cpu_overlay, 3)
    o_metrics["connect_requests_refused"] = osim.connect_refused
    o_metrics["disconnect_requests"] = osim.disconnects
    o_metrics["peer_misbehaved"] = osim.misbehaved
    o_metrics["wall_s"] = round(time.perf_counter() - wall0, 2)
    return o_metrics, datas, state0, count0


def run_flood(
    adj: list[dict[int, float]],
    room: Room,
    plan: Plan,
    datas: list[bytes],
    final_state: dict[str, Any],
    count0: int,
    args: argparse.Namespace,
    seed: int,
) -> dict[str, Any]:
    """The flooding run: the same change bytes at the same times."""
    n, m, schedule, warm = plan.n, plan.m, plan.schedule, plan.warm
    t_measure, t_close, t_end = plan.t_measure, plan.t_close, plan.t_end
    sp_ms, sp_hops = plan.sp_ms, plan.sp_hops
    wall0 = time.perf_counter()
    ftr = Tracker(n)
    fsim = FloodSim(adj, room, ftr, args.jitter_ms / 1000, seed)

    def flood_action(author: int, measured: bool, data: bytes) -> Any:
        def act() -> None:
            if measured:
                ftr.add(change_id(data), author, fsim.now)
            fsim.submit(author, data)

        return act

    for (ts, a, meas), data in zip(schedule, datas, strict=True):
        fsim.at(ts, flood_action(a, meas, data))
    fsim.run(SETUP_S - 1e-9)
    wpushed0, wbytes0 = sum(fsim.pushed_in), sum(fsim.bytes_out)
    fsim.run(t_measure - 1e-9)
    gc.collect()
    pushed0, bytes0, frames0 = sum(fsim.pushed_in), sum(fsim.bytes_out), fsim.frames
    cpu0 = time.process_time()
    fsim.run(t_close)
    cpu_flood = time.process_time() - cpu0
    delivered_in_window = ftr.deliveries
    pushed, fbytes = sum(fsim.pushed_in) - pushed0, sum(fsim.bytes_out) - bytes0
    frames_flood = fsim.frames - frames0
    fsim.run(t_end)
    f_metrics = delivery_metrics(ftr, sp_ms, sp_hops)
    f_metrics["late_deliveries_after_window"] = ftr.deliveries - delivered_in_window
    f_metrics["converged"] = all(
        r.change_count() == count0 and r.buffered_count() == 0 for r in fsim.reps
    ) and all(r.state() == final_state for r in fsim.reps)
    f_metrics["payload_copies_per_node_per_change"] = {
        "push": per(pushed, (n - 1) * m),
        "pull": 0.0,
        "total": per(pushed, (n - 1) * m),
    }
    f_metrics["payload_bytes_per_node_per_change"] = per(fbytes, n * m, 1)
    f_metrics["control_bytes_per_node_per_change"] = {"total": 0.0, "by_kind": {}}
    f_metrics["frames_per_node_per_change"] = per(frames_flood, n * m, 3)
    f_metrics["warmup"] = {
        "payload_copies_per_node_per_change": {
            "push": per(pushed0 - wpushed0, (n - 1) * len(warm)),
            "pull": 0.0,
            "total": per(pushed0 - wpushed0, (n - 1) * len(warm)),
        },
        "payload_bytes_per_node_per_change": per(bytes0 - wbytes0, n * len(warm), 1),
    }
    f_metrics["cpu_us_per_delivered_change"] = round(
        cpu_flood / max(1, delivered_in_window) * 1e6, 1
    )
    f_metrics["cpu_s_measured_phase"] = round(cpu_flood, 3)
    f_metrics["buffered_out_of_order"] = fsim.buffered
    f_metrics["wall_s"] = round(time.perf_counter() - wall0, 2)
    return f_metrics


def run_size(n: int, m: int, args: argparse.Namespace) -> dict[str, Any]:
    seed = args.seed * 7919 + n
    grng = random.Random(seed)
    adj = make_graph(n, grng, args.degree)
    degrees = [len(a) for a in adj]
    room = Room(n, args.authors, seed, grng)
    sp_ms, sp_hops = shortest_paths(adj, room.authors)
    assert all(d >= 0 for a in room.authors for d in sp_hops[a]), "graph not connected"
    cfg = OverlayConfig(
        active_view_size=max(degrees) + 1,
        passive_view_size=30,
        shuffle_interval_s=1e6,
        repair_interval_s=1e6,
        connect_timeout_s=1e6,
    )
    wl = random.Random(seed + 1)

    # -- schedule: warm-up then measured changes (times and authors; bytes come later)
    schedule: list[tuple[float, int, bool]] = []
    t = SETUP_S
    warm = [a for a in room.authors for _ in range(args.warmup)]
    wl.shuffle(warm)
    for a in warm:
        schedule.append((t, a, False))
        t += WARMUP_GAP_S
    t += 2.0
    t_measure = t
    for _ in range(m):
        schedule.append((t, wl.choice(room.authors), True))
        t += wl.uniform(*args.gap)
    t_close = schedule[-1][0] + SETTLE_S
    t_end = t_close + TAIL_S

    plan = Plan(n, m, schedule, warm, t_measure, t_close, t_end, sp_ms, sp_hops)
    o_metrics, datas, final_state, count0 = run_overlay(adj, room, cfg, plan, args, seed)
    o_converged = o_metrics["converged"]
    change_sizes = [len(d) for d in datas]
    gc.collect()
    f_metrics = run_flood(adj, room, plan, datas, final_state, count0, args, seed)
    del datas, final_state
    gc.collect()

    def ratio(a: Any, b: Any) -> float | None:
        return round(a / b, 3) if a is not None and b else None

    ratios = {
        "latency_ms_p50": ratio(o_metrics["latency_ms"]["p50"], f_metrics["latency_ms"]["p50"]),
        "latency_ms_p99": ratio(o_metrics["latency_ms"]["p99"], f_metrics["latency_ms"]["p99"]),
        "latency_stretch_p99": ratio(
            o_metrics["latency_stretch"]["p99"], f_metrics["latency_stretch"]["p99"]
        ),
        "hops_p50": ratio(o_metrics["hops"]["p50"], f_metrics["hops"]["p50"]),
        "payload_copies": ratio(
            o_metrics["payload_copies_per_node_per_change"]["total"],
            f_metrics["payload_copies_per_node_per_change"]["total"],
        ),
        "payload_bytes": ratio(
            o_metrics["payload_bytes_per_node_per_change"],
            f_metrics["payload_bytes_per_node_per_change"],
        ),
        "total_bytes": ratio(
            o_metrics["payload_bytes_per_node_per_change"]
            + o_metrics["control_bytes_per_node_per_change"]["total"],
            f_metrics["payload_bytes_per_node_per_change"],
        ),
        "frames": ratio(
            o_metrics["frames_per_node_per_change"], f_metrics["frames_per_node_per_change"]
        ),
        "cpu_per_delivered_change": ratio(
            o_metrics["cpu_us_per_delivered_change"], f_metrics["cpu_us_per_delivered_change"]
        ),
    }
    sp_all = [sp_ms[a][i] for a in room.authors for i in range(n) if i != a]
    hop_all = [sp_hops[a][i] for a in room.authors for i in range(n) if i != a]
    targets = {
        "latency_stretch_p99_le_1.2": (o_metrics["latency_stretch"]["p99"] or 99) <= 1.2,
        "payload_copies_le_1.3": (o_metrics["payload_copies_per_node_per_change"]["total"] or 99)
        <= 1.3,
        "delivery_ratio_1": o_metrics["delivery_ratio"] == 1.0,
        "converged": o_converged,
    }
    return {
        "graph": {
            "nodes": n,
            "edges": sum(degrees) // 2,
            "avg_degree": round(sum(degrees) / n, 2),
            "max_degree": max(degrees),
            "authors": len(room.authors),
            "shortest_path_ms_from_authors": pct(sp_all, 2),
            "shortest_path_hops_from_authors": pct(hop_all, 0),
        },
        "workload": {
            "warmup_changes": len(warm),
            "measured_changes": m,
            "change_bytes_mean": round(sum(change_sizes) / len(change_sizes), 1),
            "measured_window_s": round(t_close - t_measure, 2),
        },
        "overlay": o_metrics,
        "flooding": f_metrics,
        "ratio_overlay_over_flooding": ratios,
        "targets": targets,
    }


def snapshot_overlay(sim: OverlaySim) -> dict[str, Any]:
    by_kind: dict[str, int] = {}
    pushed = pulled = dups = 0
    for ov in sim.ovs:
        st = ov.stats
        pushed += st.payload_pushed_in
        pulled += st.payload_pulled_in
        dups += st.duplicates_in
        for k, v in st.bytes_out_by_kind.items():
            by_kind[k] = by_kind.get(k, 0) + v
    return {"pushed": pushed, "pulled": pulled, "dups": dups, "by_kind": by_kind}


def overlay_costs(before: dict[str, Any], after: dict[str, Any], n: int, m: int) -> dict[str, Any]:
    d = {k: after["by_kind"].get(k, 0) - before["by_kind"].get(k, 0) for k in after["by_kind"]}
    control = {k: v for k, v in d.items() if k not in PAYLOAD_KINDS and v}
    pushed = after["pushed"] - before["pushed"]
    pulled = after["pulled"] - before["pulled"]
    rec = (n - 1) * m
    return {
        "payload_copies_per_node_per_change": {
            "push": per(pushed, rec),
            "pull": per(pulled, rec),
            "total": per(pushed + pulled, rec),
        },
        "duplicates_per_node_per_change": per(after["dups"] - before["dups"], rec),
        "payload_bytes_per_node_per_change": per(sum(d.get(k, 0) for k in PAYLOAD_KINDS), n * m, 1),
        "control_bytes_per_node_per_change": {
            "total": per(sum(control.values()), n * m, 1),
            "by_kind": {k: per(v, n * m, 1) for k, v in sorted(control.items())},
        },
    }


# ---------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default=None, help="comma-separated node counts (20,100,500)")
    ap.add_argument(
        "--changes",
        type=int,
        default=None,
        help="measured changes per size (default 200, 100 from N>=500)",
    )
    ap.add_argument("--authors", type=int, default=None, help="editors (default 10)")
    ap.add_argument(
        "--warmup", type=int, default=None, help="warm-up changes per author (default 5)"
    )
    ap.add_argument("--degree", type=float, default=4.5, help="average degree (default 4.5)")
    ap.add_argument(
        "--jitter-ms",
        type=float,
        default=0.0,
        help="extra per-frame delay, uniform in [0, J] ms, links stay FIFO (default 0)",
    )
    ap.add_argument(
        "--gap-ms",
        default="300,700",
        help="time between measured changes, uniform in [MIN,MAX] ms (default 300,700)",
    )
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="smoke run: a few seconds")
    args = ap.parse_args(argv)
    args.gap = tuple(float(x) / 1000 for x in args.gap_ms.split(","))
    changes = args.changes
    if args.quick:
        sizes = [20, 50]
        args.authors = 5 if args.authors is None else args.authors
        args.warmup = 3 if args.warmup is None else args.warmup
        changes = 30 if changes is None else changes
    args.authors = 10 if args.authors is None else args.authors
    args.warmup = 5 if args.warmup is None else args.warmup
    if args.sizes:
        sizes = [int(s) for s in args.sizes.split(",")]
    elif not args.quick:
        sizes = [20, 100, 500]
    results: dict[str, Any] = {}
    t0 = time.perf_counter()
    for n in sizes:
        m = changes if changes is not None else (200 if n < 500 else 100)
        results[str(n)] = run_size(n, m, args)
        print(f"N={n} done in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
    ok = all(
        r["overlay"]["converged"]
        and r["flooding"]["converged"]
        and r["overlay"]["delivery_ratio"] == 1.0
        and r["flooding"]["delivery_ratio"] == 1.0
        for r in results.values()
    )
    out = {
        "benchmark": "overlay",
        "params": {
            "sizes": sizes,
            "changes": changes,
            "authors": args.authors,
            "warmup_per_author": args.warmup,
            "avg_degree": args.degree,
            "seed": args.seed,
            "latency_ms": [LAT_S[0] * 1000, LAT_S[1] * 1000],
            "jitter_ms": args.jitter_ms,
            "gap_s": list(args.gap),
        },
        "environment": environment(),
        "ok": ok,
        "results": results,
        "wall_s": round(time.perf_counter() - t0, 1),
    }
    print(json.dumps(out, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
