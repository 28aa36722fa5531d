"""Link liveness in a simulation: keepalive, silence close, bootstrap redial, dial timing.

The driver side of :class:`netsim.node_model.LivenessSpec` (its docstring is the model). It
mirrors what a node's ``LinkManager`` and ``Bootstrap`` do, on the virtual clock:

- ``LinkManager._keep_alive``: every ``keepalive_s / 2`` (each node on its own phase), a link
  silent for more than ``dead_after_s`` is closed and a link we sent nothing on for
  ``keepalive_s`` gets a ``Ping`` (a small message on the reliable channel, so it is lost and
  retransmitted like data).
- ``Bootstrap._keep_bootstrapped``: while there is no link to a bootstrap peer, dial it, then
  sleep ``bootstrap_retry_s`` (after a success too, as the real loop does).
- ``LinkManager.dial_peer`` (the overlay's ``ConnectRequest``): relayed through the mesh.

Partitions and crashes set :attr:`netsim.links.Link.cut` on the link directions they sever:
every packet on them is lost, both ways, so the SCTP model retransmits into the void and the
keepalive eventually closes the link, as on a real network. A dial needs the path to work for
its set-up (:meth:`Liveness.setup_time`: TCP and the HTTP offer/answer, ICE, DTLS, SCTP, the
data channel and the hello, ``setup_round_trips`` round trips plus ``setup_s``).

A bootstrap dial's signalling is an HTTP POST over TCP, so it starts with a SYN. Over a cut
path the SYN is lost, and Linux retransmits it on its own schedule (:func:`syn_offsets`), until
the dial's ``dial_timeout_s`` (aiohttp's total timeout) gives up. So a dial that started while
the path was cut completes at the first SYN after the heal, plus the set-up: not at the heal
itself. Which retransmission that is depends on the phase of the bootstrap loop
(``bootstrap_phases_s``).
"""

from __future__ import annotations

import random
from collections import deque
from typing import Protocol

from netsim.engine import Engine
from netsim.links import Link
from netsim.node_model import LivenessSpec
from netsim.sim_node import Pair, SimNode
from netsim.topology import Topology


class Simulation(Protocol):
    """What liveness reads and drives of :class:`netsim.simulation.Simulation` (a protocol,
    so that the simulation, which owns a ``Liveness``, and this module do not import each
    other)."""

    engine: Engine
    rng: random.Random
    topology: Topology
    nodes: list[SimNode]
    links: dict[Pair, Link]
    adj: list[list[int]]
    edge_set: set[Pair]
    connected: set[Pair]
    epoch: dict[Pair, int]

    def _cut(self, a: int, b: int) -> bool: ...

    def _link_up(self, a: int, b: int) -> None: ...

    def _link_down(self, a: int, b: int) -> None: ...

    def _arrive(self, src: int, dst: int, channel: str,
                payload: tuple[str, bytes, int]) -> None: ...

    def _drain(self, i: int) -> None: ...

__all__ = ["PING", "PING_BYTES", "SYN_GIVE_UP_S", "SYN_RTO_INITIAL_S", "TIMER_HZ", "Liveness",
           "syn_offsets", "timer_lateness"]

#: The payload standing for a link-level ``Ping`` (never given to a core).
PING = b"\x00ping"
#: Bytes of an encoded ``Ping`` on the wire (``protocol.link.encode_link(Ping())``, rounded up).
PING_BYTES = 8

#: Linux's initial retransmission timeout for a SYN (``TCP_TIMEOUT_INIT``, 1 s).
SYN_RTO_INITIAL_S = 1.0
#: How long Linux keeps retransmitting a SYN: ``net.ipv4.tcp_syn_retries`` (6) retries' worth
#: of exponential backoff from 1 s (1 + 2 + ... + 64 s; since Linux 6.5 the limit is this
#: time, not a count of retransmissions).
SYN_GIVE_UP_S = 127.0


#: The kernel's timer tick (``CONFIG_HZ``) of the machine the emulation measured: a 1 s
#: timer fired 20-25 ms late and a 4 s one 260 ms late, the granularity of the timer wheel's
#: levels at 250 Hz (32 ms for timers of 0.26-2 s, 256 ms for 2-16 s).
TIMER_HZ = 250


def timer_lateness(timeout_s: float, hz: int = TIMER_HZ) -> float:
    """How late, on average, the kernel's timer wheel fires a timer set ``timeout_s`` ahead:
    half the granularity of the level it lands in (level n holds timers up to 64 * 8**n ticks
    and rounds them up to 8**n ticks)."""
    ticks = timeout_s * hz
    gran = 1
    while ticks >= 64 * gran and gran < 8**7:
        gran *= 8
    return gran / hz / 2


def syn_offsets(timeout_s: float, linear: int) -> tuple[float, ...]:
    """When a TCP connect's SYNs leave, in seconds after the first, those sent before the
    dial's ``timeout_s`` gives up (a SYN due exactly then loses the race: the connect is
    cancelled first). The first ``linear`` retransmissions keep the initial RTO of 1 s
    (``net.ipv4.tcp_syn_linear_timeouts``, 4 since Linux 6.5), each later one doubles it:
    0, 1, 2, 3, 4, 5, 7, 11, 19 s with ``linear = 4``, 0, 1, 3, 7, 15 s with ``linear = 0``
    (older kernels); each retransmission also waits for the timer wheel
    (:func:`timer_lateness`). The emulation (kernel 6.18) measured 0, 1.02, 2.05, 3.07, 4.10,
    5.12, 7.14 and 11.4 s."""
    out = [0.0]
    rto = SYN_RTO_INITIAL_S
    retransmits = 0
    while True:
        nxt = out[-1] + rto + timer_lateness(rto)
        if nxt >= min(timeout_s, SYN_GIVE_UP_S):
            return tuple(out)
        out.append(nxt)
        retransmits += 1
        if retransmits > linear:
            rto *= 2



class Liveness:
    """Keepalive, bootstrap and dial timing for one simulation (see the module docstring)."""

    def __init__(self, sim: Simulation, spec: LivenessSpec) -> None:
        self.sim = sim
        self.spec = spec
        self.enabled = spec.enabled
        self.last_in: dict[Pair, float] = {}  # (src, dst): when dst last heard src
        self.last_out: dict[Pair, float] = {}  # (src, dst): when src last sent to dst
        self.dialing: set[Pair] = set()  # relayed dials under way (a dials b)
        # Bootstrap attempts under way: (a, b) -> start time; and the cut generation, bumped
        # whenever paths change, so a set-up scheduled before a change is re-checked.
        self.attempts: dict[Pair, float] = {}
        self.path_generation = 0
        # Bootstrap dials whose SYN got through: when their set-up completes.
        self.completing: dict[Pair, float] = {}
        self.bootstrap_pairs: list[Pair] = []
        self.links_closed = 0
        self.dials_ok = 0
        self.dials_failed = 0
        # Connected components of the working links (open, not cut), by node: what
        # ``_reachable`` answers, computed once per change of the links instead of one
        # graph search per relayed dial (None: out of date).
        self._components: list[int] | None = None

    # ------------------------------------------------------------------ start

    def start(self) -> None:
        """Start every node's keepalive loop and bootstrap loops (random phases, seeded)."""
        if not self.enabled:
            return
        sim = self.sim
        period = self.spec.keepalive_s / 2
        for node in sim.nodes:
            sim.engine.at(sim.rng.random() * period, self._keepalive, node.index)
        if self.spec.bootstrap == "lower":
            self.bootstrap_pairs = [(b, a) for a, b in sim.topology.edges]  # b > a dials a
        retry = self.spec.bootstrap_retry_s
        for a, b in self.bootstrap_pairs:
            phase = sim.rng.random() * retry  # drawn either way: the seed's other draws stay
            phase = self.spec.bootstrap_phases_s.get(f"{a}-{b}", phase) % retry
            sim.engine.at(phase, self._bootstrap_tick, a, b)

    # ------------------------------------------------------------------ paths

    def usable(self, a: int, b: int) -> bool:
        """Whether packets get through between ``a`` and ``b`` now (both up, not cut)."""
        sim = self.sim
        return sim.nodes[a].alive and sim.nodes[b].alive and not sim._cut(a, b)

    def paths_changed(self) -> None:
        """A partition, heal, crash or restart: recompute every link's ``cut`` and look again
        at the dials waiting for a path."""
        if not self.enabled:
            return
        self.path_generation += 1
        self._components = None
        sim = self.sim
        for (a, b), link in sim.links.items():
            link.cut = not self.usable(a, b)
        for a, b in list(self.attempts):
            self._try_setup(a, b)

    def node_started(self, x: int) -> None:
        """A crashed node restarted (or a node joined): paths changed; its keepalive loop is
        still running (one per node for the whole run) and bootstrap loops redial it."""
        self.paths_changed()

    # ------------------------------------------------------------------ links

    def link_up(self, a: int, b: int) -> None:
        """A link opened: both ends count it as fresh."""
        now = self.sim.engine.now
        for pair in ((a, b), (b, a)):
            self.last_in[pair] = now
            self.last_out[pair] = now
        comp = self._components
        if comp is not None and comp[a] != comp[b] and not self.sim.links[(a, b)].cut:
            self._components = None  # two components joined

    def link_down(self, a: int, b: int) -> None:
        """A link closed (for whatever reason)."""
        self.links_closed += 1
        self._components = None
        for pair in ((a, b), (b, a)):
            self.last_in.pop(pair, None)
            self.last_out.pop(pair, None)

    def heard(self, src: int, dst: int) -> None:
        """``dst`` received something from ``src``."""
        if (src, dst) in self.last_in:
            self.last_in[(src, dst)] = self.sim.engine.now

    def _keepalive(self, i: int) -> None:
        sim = self.sim
        now = sim.engine.now
        sim.engine.at(now + self.spec.keepalive_s / 2, self._keepalive, i)
        if not sim.nodes[i].alive:
            return
        for j in sim.adj[i]:
            if (i, j) not in sim.connected:
                continue
            if now - self.last_in.get((j, i), now) > self.spec.dead_after_s:
                sim._link_down(i, j)  # "keepalive_timeout"
            elif now - self.last_out.get((i, j), now) >= self.spec.keepalive_s:
                self.last_out[(i, j)] = now
                link = sim.links[(i, j)]
                if link.spec.recovery == "sctp":
                    link.send_reliable(PING_BYTES, now, ("sync", PING, sim.epoch.get((i, j), 0)))
                else:
                    t = link.send(PING_BYTES, now, True)
                    if t is not None:
                        sim.engine.at(t, sim._arrive, i, j, "sync",
                                      ("sync", PING, sim.epoch.get((i, j), 0)))

    # ------------------------------------------------------------------ bootstrap dials

    def _bootstrap_tick(self, a: int, b: int) -> None:
        sim = self.sim
        if (a, b) in self.attempts:
            return
        if not sim.nodes[a].alive or (a, b) in sim.connected:
            sim.engine.at(sim.engine.now + self.spec.bootstrap_retry_s,
                          self._bootstrap_tick, a, b)
            return
        start = sim.engine.now
        self.attempts[(a, b)] = start
        sim.engine.at(start + self.spec.dial_timeout_s, self._attempt_timeout, a, b, start)
        self._try_setup(a, b)

    def _try_setup(self, a: int, b: int) -> None:
        """The path works now: the dial completes the set-up time after the next SYN (the
        first, if the dial just started; else the next retransmission, see the module
        docstring); none left before the timeout: the timeout ends it."""
        if not self.usable(a, b):
            self.completing.pop((a, b), None)  # a set-up under way breaks with its path
            return
        sim = self.sim
        start = self.attempts[(a, b)]
        now = sim.engine.now
        done = self.completing.get((a, b))
        if done is None:  # (else a set-up is under way: a change elsewhere does not delay it)
            offsets = syn_offsets(self.spec.dial_timeout_s, int(self.spec.syn_linear_timeouts))
            due = [start + t for t in offsets if start + t >= now - 1e-9]
            if not due:
                return
            done = self.completing[(a, b)] = due[0] + self.setup_time(a, b)
        sim.engine.at(max(done, now), self._attempt_done, a, b, start, self.path_generation)

    def setup_time(self, a: int, b: int) -> float:
        """A dial's set-up once its path works: ``setup_round_trips`` round trips at the
        links' nominal latency (both directions) plus ``setup_s``."""
        links = self.sim.links
        rtt_s = (links[(a, b)].spec.latency_ms + links[(b, a)].spec.latency_ms) / 1000.0
        return self.spec.setup_s + self.spec.setup_round_trips * rtt_s

    def _attempt_done(self, a: int, b: int, start: float, generation: int) -> None:
        if self.attempts.get((a, b)) != start or generation != self.path_generation:
            return  # over already, or the path changed meanwhile (a newer check is due)
        del self.attempts[(a, b)]
        self.completing.pop((a, b), None)
        self.dials_ok += 1
        sim = self.sim
        sim._link_up(a, b)
        sim.engine.at(sim.engine.now + self.spec.bootstrap_retry_s, self._bootstrap_tick, a, b)

    def _attempt_timeout(self, a: int, b: int, start: float) -> None:
        if self.attempts.get((a, b)) != start or (a, b) in self.completing:
            return  # over already, or past its signalling (the timeout covers only that)
        del self.attempts[(a, b)]
        self.completing.pop((a, b), None)
        self.dials_failed += 1
        sim = self.sim
        sim.engine.at(sim.engine.now + self.spec.bootstrap_retry_s, self._bootstrap_tick, a, b)

    # ------------------------------------------------------------------ relayed dials

    def relayed_dial(self, a: int, b: int) -> None:
        """The overlay at ``a`` asked for a link to ``b`` (``LinkManager.dial_peer``)."""
        sim = self.sim
        if (a, b) in sim.connected or (a, b) in self.dialing:
            return
        ok, delay = self.relayed_outcome(a, b)
        if delay == 0.0:
            self._relayed_failed(a, b)  # no_route: nobody to relay the offer
            return
        self.dialing.add((a, b))
        sim.engine.at(sim.engine.now + delay, self._relayed_end, a, b, ok,
                      self.path_generation)

    def relayed_outcome(self, a: int, b: int) -> tuple[bool, float]:
        """How a relayed dial from ``a`` to ``b`` started now ends: ``(succeeds, after s)``.

        No link at ``a``: fails at once (no route). ``b`` unreachable over working links (down
        or cut off): no answer, fails after ``relayed_timeout_s``. Answered but no topology
        edge (or the edge is cut): ICE never connects, fails after ``hello_timeout_s``.
        Otherwise it succeeds after :meth:`setup_time`."""
        sim = self.sim
        if not any((a, y) in sim.connected for y in sim.adj[a]):
            return False, 0.0
        if not self._reachable(a, b):
            return False, self.spec.relayed_timeout_s
        edge = (min(a, b), max(a, b))
        if edge not in sim.edge_set or not self.usable(a, b):
            return False, self.spec.hello_timeout_s
        return True, self.setup_time(a, b)

    def _reachable(self, a: int, b: int) -> bool:
        """Whether a relayed offer from ``a`` reaches ``b`` over working links (BFS)."""
        if a == b or not self.sim.nodes[b].alive:
            return False
        comp = self._components
        if comp is None:
            comp = self._components = self._label_components()
        return comp[a] == comp[b]

    def _label_components(self) -> list[int]:
        """Each node's component over working links (both directions of a link are open or
        closed together, and cut together, so the components are those of an undirected
        graph)."""
        sim = self.sim
        adj, connected, links = sim.adj, sim.connected, sim.links
        comp = [-1] * len(adj)
        for start in range(len(adj)):
            if comp[start] != -1:
                continue
            comp[start] = start
            queue = deque([start])
            while queue:
                u = queue.popleft()
                for v in adj[u]:
                    if comp[v] == -1 and (u, v) in connected and not links[(u, v)].cut:
                        comp[v] = start
                        queue.append(v)
        return comp

    def _relayed_end(self, a: int, b: int, ok: bool, generation: int) -> None:
        sim = self.sim
        self.dialing.discard((a, b))
        if ok and generation != self.path_generation and not self.usable(a, b):
            ok = False
        if ok and sim.nodes[a].alive:
            self.dials_ok += 1
            sim._link_up(a, b)
            return
        self._relayed_failed(a, b)

    def _relayed_failed(self, a: int, b: int) -> None:
        sim = self.sim
        self.dials_failed += 1
        ov = sim.nodes[a].overlay
        if ov is not None and (a, b) not in sim.connected and sim.nodes[a].alive:
            ov.connect_failed(sim.nodes[b].peer_id, sim.engine.now)
            sim._drain(a)
