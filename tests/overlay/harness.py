"""An in-memory, deterministic network of ``RoomOverlay`` cores for tests and benchmarks.

One ``Network`` is a discrete-event simulation on a fake clock: a heap of
``(time, tie-break..., event)`` holding frame deliveries, overlay timers, link set-ups and
tear-downs, and scheduled callbacks. Each node is a real ``SceneReplica`` plus a real
``RoomOverlay``; the harness is only the driver (section 3 of the brief).

A test reads in a few lines::

    net = Network(seed=1, config=OverlayConfig(anti_entropy_interval_s=1.0))
    room = net.add_room(5)                       # node 0 owns the room, 1..4 are editors
    for a, b in line_edges(room.nodes):
        net.link(a, b, latency=0.02)
    cid = net.edit(0, lambda r: r.create_entity(components={"n": {"v": 1}}))
    net.run_for(2.0)
    net.assert_converged()
    assert net.nodes[4].deliveries[cid].hops == 4

API (``Network``; node arguments are indices into ``net.nodes``)
    build:    ``Network(seed, config, allow_new_links=False, default_latency=0.02,
              connect_delay=0.05, rto_min=0.2, rto_factor=3.0, rto_max=8.0, start=0.0,
              check_invariants=True, record_events=True, trace=False)``;
              ``add_room(n, roles=None, name=, config=) -> Room`` (``room.nodes``);
              ``link_params`` (callable (a, b) -> link options, for ConnectRequest links)
    links:    ``link``, ``unlink``, ``partition(groups)``, ``heal()``, ``is_linked``,
              ``neighbors``, ``edges()``, ``active_edges()``, ``is_connected(nodes,
              active=False)``, ``reachable``; ``links[(lo, hi)] -> Link``
    churn:    ``crash(i, detect_after=0)``, ``restart(i, relink=True)``, ``leave(i)``,
              ``join(via, room=0, role="editor", granter=None, **link options) -> index``,
              ``live()``
    input:    ``edit(i, fn) -> change id``, ``edit_random(i, rng)``, ``presence(i, fields)``,
              ``introduce(i, peers)``, ``inject(src, dst, channel, frame)``,
              ``set_filter(i, fn)`` (rewrite what a node sends: hostile nodes)
    time:     ``run(until)``, ``run_for(seconds)``, ``run_until(predicate, timeout, step)``,
              ``schedule(at, fn)``, ``every(period, fn, start=, until=)``; ``now``
    checks:   ``converged(nodes)``, ``assert_converged(nodes)``, ``delivered(cid, nodes)``,
              ``stats_totals(nodes)``, ``frames_sent_totals(nodes)``; ``on_event`` hook
    helpers:  ``line_edges``, ``ring_edges``, ``star_edges``, ``random_connected_edges``,
              ``random_edit``, ``frame_kind``

Links
    ``link(a, b, latency=, loss=, jitter=, reorder=)`` opens a link and connects both ends
    at once; each option is a number or a pair ``(a->b, b->a)``. The ``sync`` channel is
    reliable and ordered (SCTP): a lost attempt costs a retransmission timeout
    (``max(rto_min, rto_factor * latency)``, doubling up to ``rto_max``) and a frame never
    overtakes an earlier one in the same direction. The ``presence`` channel is unreliable
    and unordered: a lost frame is gone, jitter and ``reorder`` reorder frames.
    ``unlink``, ``partition``, ``crash`` and ``leave`` cut links abruptly (frames in flight
    are lost). A ``DisconnectRequest`` from an overlay closes its side at once and the other
    side after the frames already in flight have arrived (a graceful close, so a
    ``Disconnect`` frame with alternatives is delivered).
    A ``ConnectRequest`` is honoured (after ``connect_delay``, with ``link_params``) only if
    ``allow_new_links`` is set and the peer is alive and in the same partition group;
    otherwise the harness calls ``connect_failed`` at once.

Invariant
    Every frame an overlay hands out (``frames_to_send``) must go to a peer it is currently
    linked to, from its own side of the link; otherwise ``InvariantViolation`` is raised.

Records
    ``node.deliveries[change_id] -> Delivery(at, via, hops)`` (from ``ChangeApplied``; the
    origin has hops 0, else hops of the sender + 1); ``node.frames_sent`` and
    ``node.bytes_sent`` by frame kind ("Changes.push", "Changes.pull", "IHave", ...,
    "garbage"); ``node.events`` (every overlay event but ``ChangeApplied``, with its time);
    ``node.stats()`` sums the overlay's ``OverlayStats`` over restarts; ``net.changes``
    (change id -> ``Origin``) for every change made with ``edit``; ``net.disconnects`` (time,
    who, peer, reason) for every ``DisconnectRequest``; ``net.dropped`` counts lost frames by
    reason.

Clocks
    Every ``now`` an overlay gets is the network clock ``net.now`` (monotonic). Its wall
    clock is ``net.now + node.wall_offset``: step ``wall_offset`` to model a node whose wall
    clock jumps (NTP, no real-time clock) while its monotonic clock runs on.

Determinism: identities, room nonce, overlay and link randomness all derive from ``seed``;
ties on the heap are broken by (time, destination node, kind, source node, sequence), so a
run does not depend on hash randomisation.
"""

from __future__ import annotations

import hashlib
import heapq
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from meshnode.crdt import ROOT, EntityId, SceneReplica
from meshnode.identity import Identity
from meshnode.overlay import (
    PRESENCE,
    SYNC,
    ChangeApplied,
    ConnectRequest,
    DisconnectRequest,
    Event,
    OverlayConfig,
    OverlayStats,
    RoomOverlay,
)
from protocol.change import change_id as _change_id

__all__ = [
    "PRESENCE",
    "SYNC",
    "Delivery",
    "InvariantViolation",
    "Link",
    "Network",
    "Origin",
    "Room",
    "SimNode",
    "frame_kind",
    "line_edges",
    "random_connected_edges",
    "random_edit",
    "ring_edges",
    "star_edges",
]

# Heap priorities among events at the same time for the same node.
_P_CALL, _P_TIMER, _P_FRAME, _P_CLOSE, _P_CONNECT = 0, 1, 2, 3, 4

_KINDS = {
    1: "Changes", 2: "Heads", 3: "Snapshot", 4: "IHave", 5: "Graft", 6: "Prune", 7: "Want",
    8: "Presence", 9: "ForwardJoin", 10: "Shuffle", 11: "ShuffleReply", 12: "Disconnect",
}


class InvariantViolation(AssertionError):
    """The overlay did something the harness forbids (e.g. sent to an unlinked peer)."""


def frame_kind(frame: bytes) -> str:
    """The message kind of an encoded frame, cheaply (no decoding): "Changes.push",
    "Changes.pull", "Heads", ...; "garbage" if it does not look like a frame."""
    # A frame is a msgpack fixarray [version, type, room_id, ...]: byte 2 is the type.
    if len(frame) < 3 or not 0x93 <= frame[0] <= 0x9F or frame[1] != 1:
        return "garbage"
    kind = _KINDS.get(frame[2], "garbage")
    if kind == "Changes":
        return "Changes.push" if frame[-1] == 0xC3 else "Changes.pull"
    return kind


@dataclass(slots=True)
class Origin:
    """Where and when a change tracked by the harness was made."""

    node: int
    at: float


@dataclass(slots=True)
class Delivery:
    """A node applied a change: when, from which node (None: made locally), and after how
    many hops from its origin."""

    at: float
    via: int | None
    hops: int


@dataclass(slots=True)
class _Direction:
    latency: float
    loss: float
    jitter: float
    reorder: float
    rng: random.Random
    last_sync: float = 0.0  # arrival time of the latest sync frame (keeps the channel ordered)
    frames: int = 0


@dataclass(eq=False, slots=True)
class Link:
    """A link between nodes ``a`` and ``b`` (``a < b``). ``open[i]`` is False once node i's
    side is closed; ``dead`` means frames in flight are lost."""

    a: int
    b: int
    dirs: dict[tuple[int, int], _Direction]
    open: dict[int, bool]
    dead: bool = False
    params: dict[str, Any] = field(default_factory=dict)

    def other(self, i: int) -> int:
        return self.b if i == self.a else self.a


@dataclass(slots=True)
class Room:
    """One room: its node indices (``nodes[0]`` is the owner), genesis and roles."""

    index: int
    genesis: bytes
    room_id: bytes
    nodes: list[int]
    roles: dict[int, str]
    joined: int = 0  # identities minted for joiners so far


@dataclass(eq=False)
class SimNode:
    """One node: identity, durable replica, current overlay (None while down) and records."""

    index: int
    room: Room
    identity: Identity
    replica: SceneReplica
    config: OverlayConfig = field(default_factory=OverlayConfig)
    overlay: RoomOverlay | None = None
    alive: bool = True
    left: bool = False
    incarnation: int = 0
    deliveries: dict[bytes, Delivery] = field(default_factory=dict)
    events: list[tuple[float, Event]] = field(default_factory=list)
    frames_sent: dict[str, int] = field(default_factory=dict)
    bytes_sent: dict[str, int] = field(default_factory=dict)
    frames_received: dict[str, int] = field(default_factory=dict)
    past_stats: list[OverlayStats] = field(default_factory=list)
    timer_at: float | None = None
    in_timer: bool = False
    timer_stalls: int = 0
    wall_offset: float = 0.0
    """Added to the network clock for this node's wall clock (``wall_clock``); every ``now``
    the overlay is given stays the network clock. Step it to model a wall clock stepped
    back or forward."""
    send_filter: Callable[[int, int, str, bytes], Iterable[tuple[str, bytes]]] | None = None

    @property
    def peer_id(self) -> str:
        return self.identity.public_id

    def stats(self) -> dict[str, int]:
        """``OverlayStats`` counters summed over every incarnation (``*_by_kind`` omitted)."""
        total: dict[str, int] = {}
        stats = [*self.past_stats, *([self.overlay.stats] if self.overlay else [])]
        for st in stats:
            for f in fields(OverlayStats):
                v = getattr(st, f.name)
                if isinstance(v, int):
                    total[f.name] = total.get(f.name, 0) + v
        return total

    def events_of(self, kind: type) -> list[Any]:
        """The recorded events of one type (e.g. ``PeerMisbehaved``), oldest first."""
        return [e for _, e in self.events if isinstance(e, kind)]


def _pair(value: Any) -> tuple[Any, Any]:
    if isinstance(value, tuple | list):
        if len(value) != 2:
            raise ValueError("a per-direction option is a pair (a->b, b->a)")
        return value[0], value[1]
    return value, value


def _flip(params: dict[str, Any]) -> dict[str, Any]:
    """Link options seen from the other end."""
    return {k: tuple(reversed(_pair(v))) for k, v in params.items()}


class Network:
    """A deterministic in-memory network of room overlays. See the module docstring."""

    def __init__(
        self,
        seed: int = 0,
        config: OverlayConfig | None = None,
        *,
        allow_new_links: bool = False,
        default_latency: float = 0.02,
        connect_delay: float = 0.05,
        rto_min: float = 0.2,
        rto_factor: float = 3.0,
        rto_max: float = 8.0,
        start: float = 0.0,
        check_invariants: bool = True,
        record_events: bool = True,
        trace: bool = False,
    ) -> None:
        self.seed = seed
        self.config = config or OverlayConfig()
        self.allow_new_links = allow_new_links
        self.default_latency = default_latency
        self.connect_delay = connect_delay
        self.rto_min, self.rto_factor, self.rto_max = rto_min, rto_factor, rto_max
        self.check_invariants = check_invariants
        self.record_events = record_events
        self.rng = random.Random(f"net/{seed}")
        self.now = start
        self.nodes: list[SimNode] = []
        self.rooms: list[Room] = []
        self.links: dict[tuple[int, int], Link] = {}
        self._leaves: set[tuple[int, int]] = set()  # (hub, leaf) pairs
        self.changes: dict[bytes, Origin] = {}
        self.disconnects: list[tuple[float, int, int, str]] = []
        self.dropped: dict[str, int] = {}
        self.events_processed = 0
        self.trace: list[tuple[float, int, int, str, bytes]] | None = [] if trace else None
        """With ``trace=True``: every delivered frame as (time, src, dst, channel, frame)."""
        self.link_params: Callable[[int, int], dict[str, Any]] | None = None
        """Options for links made on ``ConnectRequest`` (default: ``default_latency``)."""
        self.on_event: Callable[[int, Event], None] | None = None
        """Called as ``on_event(node, event)`` for every overlay event, before the harness
        acts on it."""
        self._heap: list[tuple[Any, ...]] = []
        self._seq = 0
        self._by_peer: dict[str, int] = {}
        self._groups: dict[int, int] | None = None
        self._cut: dict[tuple[int, int], dict[str, Any]] = {}
        self._pending: set[tuple[int, int]] = set()
        self._crash_links: dict[int, list[tuple[int, dict[str, Any]]]] = {}
        self._link_count = 0

    # ------------------------------------------------------------------ building

    def _identity(self, room: int, k: int) -> Identity:
        tag = f"meshnode-tests/overlay/{self.seed}/{room}/{k}".encode()
        return Identity.from_private_bytes(hashlib.sha256(tag).digest())

    def add_room(
        self,
        n_nodes: int,
        roles: Sequence[str] | dict[int, str] | None = None,
        *,
        name: str = "room",
        config: OverlayConfig | None = None,
    ) -> Room:
        """Found a room of ``n_nodes`` nodes: node 0 of it is the owner, the others get
        ``roles`` (a list for nodes 1.., or {position: role}; default "editor"). Every
        replica starts from the genesis plus the one change granting the roles. Nothing is
        linked yet."""
        r = len(self.rooms)
        ids = [self._identity(r, k) for k in range(n_nodes)]
        role_of = {k: "editor" for k in range(1, n_nodes)}
        if isinstance(roles, dict):
            role_of.update(roles)
        elif roles is not None:
            if len(roles) != n_nodes - 1:
                raise ValueError("roles lists the role of nodes 1..n-1")
            role_of.update(enumerate(roles, start=1))
        nonce = hashlib.sha256(f"room/{self.seed}/{r}".encode()).digest()[:16]
        owner = SceneReplica.create(ids[0], now=self.now, name=name, nonce=nonce)
        replicas = [owner] + [SceneReplica.from_genesis(owner.genesis, i) for i in ids[1:]]
        grants = [(k, role) for k, role in sorted(role_of.items()) if role != "none"]
        if grants:
            for k, role in grants:
                owner.grant(ids[k].public_id, role)
            data = owner.commit(self.now)
            assert data is not None
            for rep in replicas[1:]:
                res = rep.apply(data, self.now)
                assert res.status == "applied", res
        room = Room(r, owner.genesis, owner.room_id, [], {0: "owner", **role_of})
        self.rooms.append(room)
        for k in range(n_nodes):
            room.nodes.append(self._add_node(room, ids[k], replicas[k], config))
        room.roles = {room.nodes[k]: role for k, role in room.roles.items()}
        return room

    def _add_node(
        self, room: Room, identity: Identity, replica: SceneReplica,
        config: OverlayConfig | None,
    ) -> int:
        i = len(self.nodes)
        node = SimNode(i, room, identity, replica, config or self.config)
        self.nodes.append(node)
        self._by_peer[identity.public_id] = i
        self._start_overlay(node)
        return i

    def _start_overlay(self, node: SimNode) -> None:
        rng = random.Random(f"overlay/{self.seed}/{node.index}/{node.incarnation}")
        node.overlay = RoomOverlay(node.replica, node.identity, node.config, rng=rng,
                                   wall_clock=lambda: self.now + node.wall_offset)
        node.timer_at = None
        self._pump(node)

    def index_of(self, peer_id: str) -> int:
        """The node index of a PeerID."""
        return self._by_peer[peer_id]

    # ------------------------------------------------------------------ links

    def _direction(self, src: int, dst: int, latency: float, loss: float, jitter: float,
                   reorder: float) -> _Direction:
        if not 0.0 <= loss < 1.0:
            raise ValueError("loss must be in [0, 1)")
        rng = random.Random(f"link/{self.seed}/{self._link_count}/{src}/{dst}")
        return _Direction(latency, loss, jitter, reorder, rng)

    def link(
        self,
        a: int,
        b: int,
        latency: float | tuple[float, float] | None = None,
        loss: float | tuple[float, float] = 0.0,
        jitter: float | tuple[float, float] = 0.0,
        reorder: float | tuple[float, float] = 0.0,
        leaf: bool = False,
    ) -> Link:
        """Open a link between ``a`` and ``b`` and connect both overlays now. Options are
        numbers or per-direction pairs ``(a->b, b->a)``; ``reorder`` is the probability
        that a presence frame is held back (up to two latencies). ``leaf``: ``a`` serves ``b``
        as a leaf (a node and its client)."""
        if a == b:
            raise ValueError("a node cannot link to itself")
        if self._key(a, b) in self.links:
            raise ValueError(f"nodes {a} and {b} are already linked")
        for i in (a, b):
            if not self.nodes[i].alive:
                raise ValueError(f"node {i} is down")
        if not self.reachable(a, b):
            raise ValueError(f"nodes {a} and {b} are in different partition groups")
        lat = latency if latency is not None else self.default_latency
        params = {"latency": lat, "loss": loss, "jitter": jitter, "reorder": reorder}
        if leaf:
            self._leaves.add((a, b))
        return self._open(a, b, params, first=a)

    def _open(self, a: int, b: int, params: dict[str, Any], first: int) -> Link:
        self._link_count += 1
        lat, loss, jit, reo = (_pair(params.get(k, d)) for k, d in (
            ("latency", self.default_latency), ("loss", 0.0), ("jitter", 0.0), ("reorder", 0.0)))
        ab = self._direction(a, b, lat[0], loss[0], jit[0], reo[0])
        ba = self._direction(b, a, lat[1], loss[1], jit[1], reo[1])
        lo, hi = sorted((a, b))
        # Store params as seen from (lo, hi), so a relink restores each direction.
        if a != lo:
            params = _flip(params)
        link = Link(lo, hi, {(a, b): ab, (b, a): ba}, {a: True, b: True}, params=params)
        self.links[(lo, hi)] = link
        second = b if first == a else a
        for i, j in ((first, second), (second, first)):
            node = self.nodes[i]
            if node.overlay is not None and link.open[i] and self.links.get((lo, hi)) is link:
                node.overlay.connect(node_peer(self, j), self.now,
                                     leaf=(i, j) in self._leaves)
                self._pump(node)
        return link

    def unlink(self, a: int, b: int) -> None:
        """Cut the link between ``a`` and ``b`` abruptly (frames in flight are lost)."""
        link = self.links.get(self._key(a, b))
        if link is not None:
            self._cut_link(link)

    def _cut_link(self, link: Link) -> None:
        link.dead = True
        del self.links[(link.a, link.b)]
        for i in (link.a, link.b):
            if link.open[i]:
                link.open[i] = False
                self._disconnect(i, link.other(i))

    def _disconnect(self, i: int, peer: int) -> None:
        node = self.nodes[i]
        if node.overlay is not None:
            node.overlay.disconnect(node_peer(self, peer), self.now)
            self._pump(node)

    def _close_side(self, link: Link, i: int) -> None:
        """Node ``i`` closes its side; the other side closes once frames in flight from
        ``i`` have arrived."""
        if not link.open[i]:
            return
        link.open[i] = False
        j = link.other(i)
        self._disconnect(i, j)
        if not link.open[j]:
            self.links.pop((link.a, link.b), None)
            return
        d = link.dirs[(i, j)]
        at = max(self.now + d.latency, d.last_sync)
        self._push(at, j, _P_CLOSE, i, ("close", link, j))

    @staticmethod
    def _key(a: int, b: int) -> tuple[int, int]:
        return (a, b) if a < b else (b, a)

    def is_linked(self, a: int, b: int) -> bool:
        """True if a link between ``a`` and ``b`` exists and both sides are open."""
        link = self.links.get(self._key(a, b))
        return link is not None and link.open[a] and link.open[b]

    def neighbors(self, i: int) -> set[int]:
        """Nodes ``i`` has an open link to (both sides open)."""
        return {j for (a, b) in self.links for j in ((b,) if a == i else (a,) if b == i else ())
                if self.is_linked(i, j)}

    def edges(self) -> set[tuple[int, int]]:
        """Every open link, as (low, high) node indices."""
        return {k for k, link in self.links.items() if link.open[k[0]] and link.open[k[1]]}

    def reachable(self, a: int, b: int) -> bool:
        """True unless a partition separates ``a`` and ``b``."""
        g = self._groups
        return g is None or g.get(a, -1) == g.get(b, -1)

    def active_edges(self) -> set[tuple[int, int]]:
        """Open links on which both overlays hold each other in their active views (a link
        still being refused, or held pending a JOIN, is not one)."""
        out = set()
        for a, b in self.edges():
            oa, ob = self.nodes[a].overlay, self.nodes[b].overlay
            if (oa is not None and ob is not None and self.nodes[b].peer_id in oa.view.active
                    and self.nodes[a].peer_id in ob.view.active):
                out.add((a, b))
        return out

    def is_connected(self, nodes: Iterable[int] | None = None, *, active: bool = False) -> bool:
        """True if the open links (with ``active``: the ``active_edges``) connect all
        ``nodes`` (default: every live node)."""
        want = set(self.live() if nodes is None else nodes)
        if not want:
            return True
        adj: dict[int, set[int]] = {}
        for a, b in (self.active_edges() if active else self.edges()):
            adj.setdefault(a, set()).add(b)
            adj.setdefault(b, set()).add(a)
        start = next(iter(want))
        seen, stack = {start}, [start]
        while stack:
            i = stack.pop()
            for j in adj.get(i, ()):
                if j not in seen:
                    seen.add(j)
                    stack.append(j)
        return want <= seen

    def partition(self, groups: Sequence[Iterable[int]]) -> None:
        """Split the network: links between groups are cut (and remembered for ``heal``),
        and no new link may cross groups. Nodes in no group form one more group."""
        self._groups = {}
        for g, members in enumerate(groups):
            for i in members:
                self._groups[i] = g
        for key, link in list(self.links.items()):
            if not self.reachable(link.a, link.b):
                self._cut[key] = link.params
                self._cut_link(link)

    def heal(self) -> None:
        """End the partition and reopen the links it cut (where both ends are up)."""
        self._groups = None
        cut, self._cut = self._cut, {}
        for (a, b), params in sorted(cut.items()):
            if self.nodes[a].alive and self.nodes[b].alive:
                if self._key(a, b) not in self.links:
                    self._open(a, b, params, first=a)
            else:
                self._defer_link(a, b, params)

    def _defer_link(self, a: int, b: int, params: dict[str, Any]) -> None:
        """Remember link (a, b) (params as seen from a) for when its crashed end restarts."""
        for i, j, p in ((a, b, params), (b, a, _flip(params))):
            node = self.nodes[i]
            if not node.alive and not node.left and not self.nodes[j].left:
                self._crash_links.setdefault(i, []).append((j, p))
                return

    # ------------------------------------------------------------------ churn

    def crash(self, i: int, detect_after: float = 0.0) -> None:
        """Node ``i`` stops (its replica is kept: durable state). Its links die; the
        neighbours notice after ``detect_after`` seconds."""
        node = self.nodes[i]
        if not node.alive:
            return
        remember = self._crash_links.setdefault(i, [])
        for key, link in sorted(self.links.items()):
            if i in key:
                j = link.other(i)
                if link.open[i] and link.open[j]:
                    remember.append((j, link.params if i == link.a else _flip(link.params)))
                link.dead = True
                link.open[i] = False
                if detect_after <= 0:
                    self.links.pop(key)
                    if link.open[j]:
                        link.open[j] = False
                        self._disconnect(j, i)
                else:
                    self._push(self.now + detect_after, j, _P_CLOSE, i, ("close", link, j))
        self._stop(node)

    def _stop(self, node: SimNode) -> None:
        node.alive = False
        if node.overlay is not None:
            node.past_stats.append(node.overlay.stats)
        node.overlay = None
        node.timer_at = None

    def restart(self, i: int, relink: bool = True) -> None:
        """Restart a crashed node: same identity and replica, a new overlay. With
        ``relink`` it reopens the links it had when it crashed (to live peers; peers in
        another partition group get it back at ``heal``)."""
        node = self.nodes[i]
        if node.alive or node.left:
            raise ValueError(f"node {i} is not crashed")
        # Links whose far side has not noticed the crash yet are closed now.
        for key, link in list(self.links.items()):
            if i in key:
                self.links.pop(key)
                j = link.other(i)
                if link.open[j]:
                    link.open[j] = False
                    self._disconnect(j, i)
        node.alive = True
        node.incarnation += 1
        self._start_overlay(node)
        if relink:
            for j, params in self._crash_links.pop(i, []):
                if self._key(i, j) in self.links or self.nodes[j].left:
                    continue
                if not self.nodes[j].alive:
                    self._defer_link(i, j, params)
                elif self.reachable(i, j):
                    self._open(i, j, dict(params), first=i)
                else:
                    lo, hi = self._key(i, j)
                    self._cut[(lo, hi)] = params if i == lo else _flip(params)

    def leave(self, i: int) -> None:
        """Node ``i`` leaves for good: its links are closed and it never comes back."""
        node = self.nodes[i]
        for key, link in list(self.links.items()):
            if i in key:
                self._cut_link(link)
        node.left = True
        self._crash_links.pop(i, None)
        self._stop(node)

    def join(
        self,
        via: Iterable[int],
        *,
        room: int = 0,
        role: str = "editor",
        granter: int | None = None,
        latency: float | tuple[float, float] | None = None,
        **link_options: Any,
    ) -> int:
        """A new member joins ``room``: ``granter`` (default: the owner) grants ``role`` with
        a change it gossips, the newcomer starts from the genesis and links to ``via``.
        Returns the new node's index."""
        rm = self.rooms[room]
        rm.joined += 1
        ident = self._identity(room, 10_000 + rm.joined)
        g = rm.nodes[0] if granter is None else granter
        self.edit(g, lambda r: r.grant(ident.public_id, role))
        replica = SceneReplica.from_genesis(rm.genesis, ident)
        i = self._add_node(rm, ident, replica, None)
        rm.nodes.append(i)
        rm.roles[i] = role
        via = list(via)
        if self._groups is not None and via:
            self._groups[i] = self._groups.get(via[0], -1)  # it joins on via[0]'s side
        for j in via:
            self.link(i, j, latency=latency, **link_options)
        return i

    def live(self, room: int | None = None) -> list[int]:
        """Indices of nodes that are up (optionally of one room)."""
        return [n.index for n in self.nodes
                if n.alive and (room is None or n.room.index == room)]

    # ------------------------------------------------------------------ local input

    def edit(self, i: int, fn: Callable[[SceneReplica], Any]) -> bytes | None:
        """Run ``fn(replica)`` on node ``i``, commit at ``now`` and spread the change.
        Returns the change ID (None if ``fn`` made no edit). A down node commits durably
        and spreads the change when it is back (anti-entropy)."""
        node = self.nodes[i]
        fn(node.replica)
        data = node.replica.commit(self.now + node.wall_offset)  # the scene clock is wall time
        if data is None:
            return None
        cid = _change_id(data)
        self.changes[cid] = Origin(i, self.now)
        if node.overlay is not None:
            node.overlay.submit_change(data, self.now)
            self._pump(node)
        else:
            node.deliveries[cid] = Delivery(self.now, None, 0)
        return cid

    def edit_random(self, i: int, rng: random.Random | None = None) -> bytes | None:
        """A random valid edit on node ``i`` (see ``random_edit``); returns the change ID."""
        r = rng or self.rng
        return self.edit(i, lambda rep: random_edit(rep, r))

    def presence(self, i: int, fields: dict[str, Any]) -> bool:
        """Node ``i`` publishes its participant's presence; False if rate-limited."""
        node = self.nodes[i]
        assert node.overlay is not None, f"node {i} is down"
        ok = node.overlay.submit_presence(fields, self.now)
        self._pump(node)
        return ok

    def introduce(self, i: int, peers: Iterable[int]) -> None:
        """Tell node ``i``'s overlay about other nodes (a bootstrap list, discovery)."""
        node = self.nodes[i]
        if node.overlay is not None:
            node.overlay.introduce([node_peer(self, j) for j in peers], self.now)
            self._pump(node)

    def inject(self, src: int, dst: int, channel: str, frame: bytes) -> None:
        """Send a hand-made frame from ``src`` to ``dst`` over their link (channel semantics,
        latency and loss apply; counted in ``src``'s ``frames_sent``). Does nothing if the
        link is gone or ``src``'s side is closed."""
        link = self.links.get(self._key(src, dst))
        if link is None or not link.open[src]:
            self.dropped["inject_unlinked"] = self.dropped.get("inject_unlinked", 0) + 1
            return
        self._transmit(link, src, dst, channel, frame)

    def set_filter(
        self, i: int, fn: Callable[[int, int, str, bytes], Iterable[tuple[str, bytes]]] | None,
    ) -> None:
        """Rewrite what node ``i``'s overlay sends: ``fn(src, dst, channel, frame)`` returns
        the ``(channel, frame)`` pairs to send instead (empty: drop). For hostile nodes."""
        self.nodes[i].send_filter = fn

    # ------------------------------------------------------------------ scheduling

    def _push(self, at: float, node: int, prio: int, src: int, item: tuple[Any, ...]) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (at, node, prio, src, self._seq, item))

    def schedule(self, at: float, fn: Callable[[Network], Any]) -> None:
        """Call ``fn(net)`` at time ``at`` (before node events of that instant)."""
        self._push(max(at, self.now), -1, _P_CALL, -1, ("call", fn))

    def every(self, period: float, fn: Callable[[Network], Any], *, start: float | None = None,
              until: float = float("inf")) -> None:
        """Call ``fn(net)`` every ``period`` seconds from ``start`` (default: now) while the
        time is below ``until``."""
        def tick(net: Network) -> None:
            fn(net)
            if net.now + period < until:
                net.schedule(net.now + period, tick)
        t0 = self.now if start is None else start
        if t0 < until:
            self.schedule(t0, tick)

    def run(self, until: float) -> None:
        """Process every event due up to time ``until``; then ``now == until``."""
        heap = self._heap
        while heap and heap[0][0] <= until:
            at, _node, _prio, _src, _seq, item = heapq.heappop(heap)
            self.now = max(self.now, at)
            self.events_processed += 1
            self._dispatch(item)
        self.now = max(self.now, until)

    def run_for(self, seconds: float) -> None:
        """Run ``seconds`` of simulated time."""
        self.run(self.now + seconds)

    def run_until(self, predicate: Callable[[], bool], timeout: float,
                  step: float = 0.1) -> bool:
        """Run until ``predicate()`` holds (checked every ``step`` s) or ``timeout`` s have
        passed; returns whether it held."""
        end = self.now + timeout
        while True:
            if predicate():
                return True
            if self.now >= end:
                return False
            self.run(min(end, self.now + step))

    # ------------------------------------------------------------------ the engine

    def _dispatch(self, item: tuple[Any, ...]) -> None:
        kind = item[0]
        link: Link
        if kind == "frame":
            _, link, src, dst, channel, frame, inc = item
            node = self.nodes[dst]
            if link.dead or self.links.get((link.a, link.b)) is not link:
                self._drop("link_down")
            elif not link.open[dst] or not node.alive or node.incarnation != inc:
                self._drop("closed")
            else:
                k = frame_kind(frame)
                node.frames_received[k] = node.frames_received.get(k, 0) + 1
                if self.trace is not None:
                    self.trace.append((self.now, src, dst, channel, frame))
                assert node.overlay is not None
                node.overlay.receive(node_peer(self, src), channel, frame, self.now)
                self._pump(node)
        elif kind == "timer":
            _, i, inc, at = item
            node = self.nodes[i]
            if node.overlay is None or node.incarnation != inc or node.timer_at != at:
                return
            node.timer_at = None
            node.in_timer = True
            try:
                node.overlay.handle_timer(self.now)
                self._pump(node)
            finally:
                node.in_timer = False
        elif kind == "close":
            _, link, j = item
            if self.links.get((link.a, link.b)) is link:
                self.links.pop((link.a, link.b))
            if link.open[j]:
                link.open[j] = False
                self._disconnect(j, link.other(j))
        elif kind == "connect":
            _, a, b, inc = item
            self._pending.discard(self._key(a, b))
            na, nb = self.nodes[a], self.nodes[b]
            if na.overlay is None or na.incarnation != inc:
                return
            if (not nb.alive or not self.reachable(a, b) or self._key(a, b) in self.links):
                na.overlay.connect_failed(node_peer(self, b), self.now)
                self._pump(na)
                return
            params = self.link_params(a, b) if self.link_params else {}
            params = {"latency": self.default_latency, **params}
            self._open(a, b, params, first=a)
        elif kind == "call":
            item[1](self)

    def _drop(self, reason: str) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1

    def _pump(self, node: SimNode) -> None:
        """Carry out everything ``node``'s overlay asks for, until it is quiet."""
        while node.overlay is not None:
            ov = node.overlay
            frames = ov.frames_to_send()
            events: list[Event] = []
            while (ev := ov.next_event()) is not None:
                events.append(ev)
            if not frames and not events:
                break
            for peer, channel, frame in frames:
                self._send(node, peer, channel, frame)
            for ev in events:
                self._on_event(node, ev)
        self._arm_timer(node)

    def _arm_timer(self, node: SimNode) -> None:
        if node.overlay is None:
            return
        t = node.overlay.get_timer()
        if t is None:
            node.timer_at = None
            return
        if t <= self.now and node.in_timer:
            # Still due right after handle_timer: a stall. Count it and wait a little, so a
            # buggy overlay cannot spin the simulation forever.
            node.timer_stalls += 1
            t = self.now + 1e-3
        t = max(t, self.now)
        if node.timer_at is None or t != node.timer_at:
            node.timer_at = t
            self._push(t, node.index, _P_TIMER, node.index,
                       ("timer", node.index, node.incarnation, t))

    def _send(self, node: SimNode, peer: str, channel: str, frame: bytes) -> None:
        i = node.index
        j = self._by_peer.get(peer)
        link = self.links.get(self._key(i, j)) if j is not None else None
        if self.check_invariants and (link is None or not link.open[i]):
            raise InvariantViolation(
                f"t={self.now:.6f}: node {i} sent a {frame_kind(frame)} frame to "
                f"{'unknown peer' if j is None else f'node {j}'}, which it is not linked to"
            )
        if channel not in (SYNC, PRESENCE):
            raise InvariantViolation(f"node {i} used unknown channel {channel!r}")
        if link is None or j is None:
            return
        if node.send_filter is not None:
            for ch, fr in node.send_filter(i, j, channel, frame):
                self._transmit(link, i, j, ch, fr)
        else:
            self._transmit(link, i, j, channel, frame)

    def _transmit(self, link: Link, i: int, j: int, channel: str, frame: bytes) -> None:
        node = self.nodes[i]
        k = frame_kind(frame)
        node.frames_sent[k] = node.frames_sent.get(k, 0) + 1
        node.bytes_sent[k] = node.bytes_sent.get(k, 0) + len(frame)
        d = link.dirs[(i, j)]
        d.frames += 1
        rng = d.rng
        delay = d.latency + (rng.uniform(0.0, d.jitter) if d.jitter > 0 else 0.0)
        if channel == SYNC:
            rto = max(self.rto_min, self.rto_factor * d.latency)
            tries = 0
            while d.loss > 0 and rng.random() < d.loss and tries < 30:
                delay += rto
                rto = min(rto * 2.0, self.rto_max)
                tries += 1
            at = max(self.now + delay, d.last_sync)
            d.last_sync = at
        else:
            if d.loss > 0 and rng.random() < d.loss:
                self._drop("loss")
                return
            if d.reorder > 0 and rng.random() < d.reorder:
                delay += rng.uniform(0.0, 2.0 * d.latency)
            at = self.now + delay
        dst = self.nodes[j]
        self._push(at, j, _P_FRAME, i, ("frame", link, i, j, channel, frame, dst.incarnation))

    def _on_event(self, node: SimNode, ev: Event) -> None:
        i = node.index
        if self.on_event is not None:
            self.on_event(i, ev)
        if isinstance(ev, ChangeApplied):
            if ev.peer is None:
                node.deliveries.setdefault(ev.change_id, Delivery(ev.at, None, 0))
            else:
                via = self._by_peer.get(ev.peer)
                prev = self.nodes[via].deliveries.get(ev.change_id) if via is not None else None
                hops = (prev.hops if prev is not None else 0) + 1
                node.deliveries.setdefault(ev.change_id, Delivery(ev.at, via, hops))
        else:
            if self.record_events:
                node.events.append((self.now, ev))
            if isinstance(ev, ConnectRequest):
                self._connect_request(node, ev.peer)
            elif isinstance(ev, DisconnectRequest):
                j = self._by_peer.get(ev.peer)
                if j is not None:
                    self.disconnects.append((self.now, i, j, ev.reason))
                    link = self.links.get(self._key(i, j))
                    if link is not None:
                        self._close_side(link, i)

    def _connect_request(self, node: SimNode, peer: str) -> None:
        i = node.index
        j = self._by_peer.get(peer)
        ov = node.overlay
        assert ov is not None
        ok = (
            self.allow_new_links
            and j is not None
            and j != i
            and self.nodes[j].alive
            and self.nodes[j].room is node.room
            and self.reachable(i, j)
        )
        if ok and j is not None:
            key = self._key(i, j)
            if key in self._pending:
                return  # a link between them is being set up already
            if key not in self.links:
                self._pending.add(key)
                self._push(self.now + self.connect_delay, -1, _P_CONNECT, i,
                           ("connect", i, j, node.incarnation))
                return
        ov.connect_failed(peer, self.now)

    # ------------------------------------------------------------------ checks

    def converged(self, nodes: Iterable[int] | None = None) -> bool:
        """True if the replicas of ``nodes`` (default: every live node) have equal heads and
        state."""
        idx = list(self.live() if nodes is None else nodes)
        if not idx:
            return True
        ref = self.nodes[idx[0]].replica
        heads, state = ref.heads(), None
        for i in idx[1:]:
            if self.nodes[i].replica.heads() != heads:
                return False
        state = ref.state()
        return all(self.nodes[i].replica.state() == state for i in idx[1:])

    def assert_converged(self, nodes: Iterable[int] | None = None) -> None:
        """Assert ``converged``, with a readable account of who differs."""
        idx = list(self.live() if nodes is None else nodes)
        if self.converged(idx):
            return
        lines = []
        for i in idx:
            r = self.nodes[i].replica
            lines.append(
                f"node {i}: {r.change_count()} changes, {r.buffered_count()} buffered, "
                f"heads {[h.hex()[:8] for h in r.heads()]}, neighbours "
                f"{sorted(self.neighbors(i))}"
            )
        listing = "\n  ".join(lines)
        raise AssertionError(f"replicas differ at t={self.now:.3f}:\n  {listing}")

    def delivered(self, cid: bytes, nodes: Iterable[int] | None = None) -> bool:
        """True if every node in ``nodes`` (default: live) has applied change ``cid``."""
        return all(self.nodes[i].replica.has_change(cid)
                   for i in (self.live() if nodes is None else nodes))

    def stats_totals(self, nodes: Iterable[int] | None = None) -> dict[str, int]:
        """``OverlayStats`` counters summed over ``nodes`` (default: all, every
        incarnation). Diff two calls to measure a phase."""
        total: dict[str, int] = {}
        for i in (range(len(self.nodes)) if nodes is None else nodes):
            for k, v in self.nodes[i].stats().items():
                total[k] = total.get(k, 0) + v
        return total

    def frames_sent_totals(self, nodes: Iterable[int] | None = None) -> dict[str, int]:
        """Frames sent by kind, summed over ``nodes`` (default: all)."""
        total: dict[str, int] = {}
        for i in (range(len(self.nodes)) if nodes is None else nodes):
            for k, v in self.nodes[i].frames_sent.items():
                total[k] = total.get(k, 0) + v
        return total


def node_peer(net: Network, i: int) -> str:
    """The PeerID of node ``i``."""
    return net.nodes[i].identity.public_id


# ---------------------------------------------------------------------- topologies


def line_edges(nodes: Sequence[int]) -> list[tuple[int, int]]:
    """0-1, 1-2, ...: a path."""
    return [(nodes[k], nodes[k + 1]) for k in range(len(nodes) - 1)]


def ring_edges(nodes: Sequence[int]) -> list[tuple[int, int]]:
    """A path closed into a ring."""
    return [*line_edges(nodes), (nodes[-1], nodes[0])] if len(nodes) > 2 else line_edges(nodes)


def star_edges(nodes: Sequence[int]) -> list[tuple[int, int]]:
    """Everyone linked to ``nodes[0]``."""
    return [(nodes[0], j) for j in nodes[1:]]


def random_connected_edges(
    nodes: Sequence[int], degree: float, rng: random.Random, max_degree: int | None = None,
) -> list[tuple[int, int]]:
    """A random connected graph of average degree about ``degree``: a random spanning tree
    (each node links to an earlier one) plus random extra edges, no node above
    ``max_degree`` (if given) where that can be avoided. Sorted (low, high) pairs."""
    order = list(nodes)
    rng.shuffle(order)
    edges: set[tuple[int, int]] = set()
    deg = dict.fromkeys(order, 0)

    def add(a: int, b: int) -> None:
        edges.add((min(a, b), max(a, b)))
        deg[a] += 1
        deg[b] += 1

    for k in range(1, len(order)):
        cands = order[:k]
        if max_degree is not None:
            cands = [c for c in cands if deg[c] < max_degree] or order[:k]
        add(order[k], rng.choice(cands))
    want = round(degree * len(order) / 2)
    tries = 0
    while len(edges) < want and tries < 100 * want:
        tries += 1
        a, b = rng.sample(order, 2)
        key = (min(a, b), max(a, b))
        if key in edges:
            continue
        if max_degree is not None and (deg[a] >= max_degree or deg[b] >= max_degree):
            continue
        add(a, b)
    return sorted(edges)


# ---------------------------------------------------------------------- edits


def random_edit(replica: SceneReplica, rng: random.Random) -> None:
    """One random valid edit of ``replica``'s own content: create an entity (under the root
    or one of its own), set a field, move or delete one of its entities."""
    me = replica.identity.public_key
    mine = [e for e in replica.entities() if e.creator == me]
    roll = rng.random()
    if not mine or roll < 0.35:
        parent = rng.choice(mine) if mine and rng.random() < 0.3 else ROOT
        replica.create_entity(parent, {"t": {"v": rng.randrange(1000)}})
    elif roll < 0.8:
        ent = rng.choice(mine)
        replica.set_field(ent, "t", rng.choice(("v", "w")), rng.randrange(1000))
    elif roll < 0.92:
        ent = rng.choice(mine)
        targets = [ROOT, *mine]
        target: EntityId = rng.choice(targets)
        try:
            if replica.parent_of(ent) == target:
                raise ValueError("a move to the same parent is no edit")
            replica.move(ent, target)
        except ValueError:  # a cycle, onto itself, or nowhere
            replica.set_field(ent, "t", "v", rng.randrange(1000))
    else:
        replica.delete(rng.choice(mine))
