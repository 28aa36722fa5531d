"""The packet fabric: one user-space process that carries every IP packet between nodes.

Each node's network namespace has one TUN device whose file descriptor this process holds. A
packet a node sends to another node's address comes out of its TUN here; the fabric looks up
the directed link ``(src, dst)``, passes the packet through that link's model and writes it into
the destination's TUN when the model says it arrives. The model is netsim's own
:class:`netsim.links.Link` (so emulation and simulation share one definition of latency, jitter,
loss, Gilbert-Elliott bursts and the bandwidth queue), applied per IP packet rather than per
frame: the real stack above (SCTP over DTLS over UDP, and TCP for HTTP signalling) does its own
retransmission.

Guarantees:

- Only topology edges carry packets; a packet to a node that is not a neighbour is dropped (the
  emulated network has no routing, as netsim's overlay may link only along edges).
- Packets of one direction leave in order (a FIFO, like a real queue) unless the link's
  ``reorder`` probability says otherwise.
- Every direction draws from its own ``random.Random`` seeded from the scenario's link seed
  and the pair, afresh at scenario time 0 (what the set-up sent before does not count), so the
  n-th packet of a direction from time 0 meets the same fate on every run, and the same as in
  a ``netsim run`` with that link seed (``Scenario.link_seed``): a comparison of the two
  meets the same bursts, not two independent draws of them.
- Partitions drop everything that crosses groups (including packets already in flight when the
  cut begins); ``degrade`` / ``restore`` swap the link model; both follow the scenario's schedule
  relative to the start time the runner sends on stdin.
- The TUN devices belong to this process: when it exits, for any reason, the kernel removes them.

Protocol with the runner (JSON lines): the spec is read from the file named on the command line;
the fabric prints ``{"ready": true}`` once every TUN is up in its namespace; it reads
``{"start": <monotonic seconds>}`` (scenario time 0) and ``{"stop": true}``, and on stop prints
``{"stats": {...}}`` and exits.
"""

from __future__ import annotations

import fcntl
import heapq
import json
import os
import random
import select
import struct
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any, TextIO

from netsim.links import Link, LinkSpec

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
MAX_PACKET = 65_535

Pair = tuple[int, int]


def per_packet(spec: LinkSpec) -> LinkSpec:
    """The scenario's link spec as applied to single IP packets: one packet per "frame" and no
    added header bytes (an IP packet already carries its headers)."""
    return spec.replace(mtu=MAX_PACKET, overhead_bytes=0)


@dataclass
class DirectedLink:
    """The model of one direction ``src -> dst``, with its FIFO and counters."""

    link: Link
    fifo: bool
    last_arrival: float = 0.0
    packets_in: int = 0
    packets_out: int = 0
    bytes_out: int = 0
    lost: int = 0
    cut: int = 0

    def admit(self, size: int, now: float) -> float | None:
        """When a packet of ``size`` bytes offered at ``now`` arrives, or None (lost/dropped)."""
        self.packets_in += 1
        arrival = self.link.send(size, now, reliable=False)
        if arrival is None:
            self.lost += 1
            return None
        if self.fifo:
            arrival = max(arrival, self.last_arrival)
            self.last_arrival = arrival
        return arrival


@dataclass
class FabricSpec:
    """What the runner tells the fabric (written as JSON; see :meth:`to_json`)."""

    seed: int
    addresses: list[str]  # node i's IPv4 address
    namespaces: list[str]
    tun_names: list[str]
    prefix_len: int
    links: dict[str, dict[str, Any]]  # "a-b" (directed) -> LinkSpec fields
    events: list[dict[str, Any]] = field(default_factory=list)  # at_s, kind, groups/edges/link
    setup_mesh: bool = False  # carry every pair (default link) until {"restrict": true}
    default_link: dict[str, Any] = field(default_factory=dict)
    trace: str = ""  # a file: one line per packet once the workload starts (netsim.emulate.trace)

    def to_json(self) -> str:
        """The spec as JSON."""
        return json.dumps(self.__dict__)

    @classmethod
    def from_json(cls, text: str) -> FabricSpec:
        """Parse what :meth:`to_json` wrote."""
        return cls(**json.loads(text))


class Fabric:
    """The routing and link-model state (no file descriptors: see :func:`serve`)."""

    def __init__(self, spec: FabricSpec) -> None:
        self.spec = spec
        self.by_address = {
            socket_bytes(addr): i for i, addr in enumerate(spec.addresses)
        }
        self.links: dict[Pair, DirectedLink] = {}
        self.base: dict[Pair, LinkSpec] = {}
        for key, fields_ in sorted(spec.links.items()):
            a, b = (int(x) for x in key.split("-"))
            base = LinkSpec.from_dict(fields_)
            self.base[(a, b)] = base
            self.links[(a, b)] = DirectedLink(self._model(a, b), fifo=base.reorder == 0)
        self.groups: dict[int, int] | None = None
        self.unrouted = 0
        # While the room is set up, a node may need a pair that is no topology edge (only the
        # room's founder admits admins; see runner.py): such pairs get the default link, in
        # counters of their own, until the runner restricts the fabric to the topology.
        self.mesh = spec.setup_mesh
        self.setup_links: dict[Pair, DirectedLink] = {}
        self.scheduling = "default"

    def _model(self, a: int, b: int) -> Link:
        """A fresh model of the direction ``a -> b``: its draws from their start."""
        return Link(per_packet(self.base[(a, b)]), random.Random(f"{self.spec.seed}:{a}->{b}"))

    def fresh_draws(self) -> None:
        """Scenario time 0: every link model starts its draws again, as netsim's do (the
        packets of the set-up drew from them before; their number varies from run to run).
        It runs before any event of the schedule is applied (a degrade at time 0 follows)."""
        for pair, dl in self.links.items():
            dl.link = self._model(*pair)

    def route(self, packet: bytes, now: float) -> tuple[int, int, float] | None:
        """Where and when an IPv4 packet arrives: ``(src, dst, arrival)``, or None if dropped."""
        if len(packet) < 20 or packet[0] >> 4 != 4:
            self.unrouted += 1  # IPv6 (router solicitations) or garbage: not ours to carry
            return None
        src = self.by_address.get(packet[12:16])
        dst = self.by_address.get(packet[16:20])
        if src is None or dst is None:
            self.unrouted += 1
            return None
        link = self.links.get((src, dst))
        if link is None and self.mesh and src != dst:
            link = self.setup_links.get((src, dst))
            if link is None:
                base = per_packet(LinkSpec.from_dict(self.spec.default_link))
                link = self.setup_links[(src, dst)] = DirectedLink(
                    Link(base, random.Random(f"{self.spec.seed}:setup:{src}->{dst}")), True)
        if link is None:
            self.unrouted += 1
            return None
        if self.cut(src, dst):
            link.packets_in += 1
            link.cut += 1
            return None
        arrival = link.admit(len(packet), now)
        return None if arrival is None else (src, dst, arrival)

    def cut(self, src: int, dst: int) -> bool:
        """Whether a partition separates ``src`` and ``dst`` now."""
        return self.groups is not None and self.groups.get(src) != self.groups.get(dst)

    def delivered(self, src: int, dst: int, size: int) -> None:
        """Count a packet written to its destination."""
        link = self.links.get((src, dst)) or self.setup_links[(src, dst)]
        link.packets_out += 1
        link.bytes_out += size

    def apply(self, event: dict[str, Any], now: float) -> None:
        """Apply one scheduled network event (partition, heal, degrade, restore)."""
        kind = event["kind"]
        if kind == "partition":
            self.groups = {x: g for g, members in enumerate(event["groups"]) for x in members}
        elif kind == "heal":
            self.groups = None
        elif kind in ("degrade", "restore"):
            edges = event.get("edges") or []
            targets = list(self.links) if not edges else [
                p for a, b in edges for p in ((a, b), (b, a)) if p in self.links]
            for pair in targets:
                dl = self.links[pair]
                if kind == "degrade":
                    new = LinkSpec.from_dict(event["link"], base=self.base[pair])
                else:
                    new = self.base[pair]
                dl.link.set_spec(per_packet(new), now)
                dl.fifo = new.reorder == 0

    def stats(self, duration_s: float) -> dict[str, Any]:
        """Per-direction counters (for results.json)."""
        d = max(duration_s, 1e-9)
        return {
            "links": {
                f"{a}-{b}": {
                    "packets_in": dl.packets_in, "packets_out": dl.packets_out,
                    "bytes_out": dl.bytes_out, "lost_or_dropped": dl.lost, "cut": dl.cut,
                    "busy_s": round(dl.link.busy_s, 6),
                    "utilisation": round(dl.link.busy_s / d, 6),
                    "wire_bytes": dl.link.bytes_sent,
                }
                for (a, b), dl in sorted(self.links.items())
            },
            "setup_only_pairs": sorted(f"{a}-{b}" for a, b in self.setup_links),
            "unrouted_packets": self.unrouted,
            "scheduling": self.scheduling,
        }


def socket_bytes(address: str) -> bytes:
    """An IPv4 address as its 4 packed bytes."""
    return bytes(int(x) for x in address.split("."))


def open_tun(name: str) -> int:
    """Create a TUN device ``name`` (no packet-info header) in this namespace; its fd."""
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    try:
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI))
    except OSError:
        os.close(fd)
        raise
    return fd


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


def plumb(spec: FabricSpec) -> list[int]:
    """Create every TUN device, move it into its node's namespace and give it its address."""
    fds = []
    for name, ns, addr in zip(spec.tun_names, spec.namespaces, spec.addresses, strict=True):
        fds.append(open_tun(name))
        _ip("link", "set", name, "netns", ns)
        _ip("-n", ns, "addr", "add", f"{addr}/{spec.prefix_len}", "dev", name)
        _ip("-n", ns, "link", "set", name, "up")
        _ip("-n", ns, "link", "set", "lo", "up")
    return fds


def _realtime() -> str:
    """Ask for real-time scheduling: a packet's delay is the model's, not the time this
    process waited for a CPU that the nodes (or anything else on the machine) hold. The loop
    sleeps in epoll between packets, so it cannot starve them."""
    try:
        os.sched_setscheduler(0, os.SCHED_RR, os.sched_param(10))
        return "SCHED_RR"
    except (OSError, AttributeError):
        try:
            os.nice(-10)
            return "nice -10"
        except OSError:
            return "default"


def serve(spec: FabricSpec) -> int:
    """Run the fabric until stdin says stop (or closes)."""
    fabric = Fabric(spec)
    fabric.scheduling = _realtime()
    fds = plumb(spec)
    stdin = sys.stdin.fileno()
    os.set_blocking(stdin, False)
    print(json.dumps({"ready": True}), flush=True)
    poller = select.epoll()  # a float timeout: packets leave on time, not on the next ms
    for fd in fds:
        poller.register(fd, select.EPOLLIN)
    poller.register(stdin, select.EPOLLIN)
    started = time.monotonic()
    trace = open(spec.trace, "w", encoding="ascii", buffering=1 << 16) if spec.trace else None  # noqa: SIM115
    try:
        return _loop(spec, fabric, fds, poller, stdin, trace, started)
    finally:
        if trace is not None:
            trace.close()


def _loop(spec: FabricSpec, fabric: Fabric, fds: list[int], poller: select.epoll, stdin: int,
          trace: TextIO | None, started: float) -> int:
    pending: list[tuple[float, int, int, int, bytes]] = []  # arrival, seq, src, dst, packet
    seq = 0
    t0: float | None = None
    events = sorted(spec.events, key=lambda e: float(e["at_s"]))
    next_event = 0
    buf = b""
    fresh = False  # the link models' draws restarted at time 0
    while True:
        now = time.monotonic()
        if t0 is not None and not fresh and now >= t0:
            fabric.fresh_draws()
            fresh = True
        while t0 is not None and next_event < len(events) and \
                t0 + float(events[next_event]["at_s"]) <= now:
            fabric.apply(events[next_event], now)
            next_event += 1
        while pending and pending[0][0] <= now:
            due, _, src, dst, packet = heapq.heappop(pending)
            if fabric.cut(src, dst) or (not fabric.mesh and (src, dst) not in fabric.links):
                continue
            try:
                os.write(fds[dst], packet)
                fabric.delivered(src, dst, len(packet))
                if trace is not None and t0 is not None:
                    # w: written into dst's TUN (the packet reached dst), and how late
                    done = time.monotonic()
                    trace.write(f"w {done - t0:.6f} {src} {dst} {len(packet)} "
                                f"{done - due:.6f}\n")
            except OSError:
                pass  # the namespace's interface is down (a node going away): a lost packet
        wake = [pending[0][0]] if pending else []
        if t0 is not None and next_event < len(events):
            wake.append(t0 + float(events[next_event]["at_s"]))
        timeout = max(0.0, min(wake) - time.monotonic()) if wake else 1.0
        for fd, _ in poller.poll(timeout):
            if fd == stdin:
                chunk = os.read(stdin, 65536)
                if not chunk:
                    return _stop(fabric, started)
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    msg = json.loads(line)
                    if msg.get("restrict"):
                        fabric.mesh = False
                    if "start" in msg:
                        t0 = float(msg["start"])
                    if msg.get("stop"):
                        return _stop(fabric, t0 if t0 is not None else started)
                continue
            now = time.monotonic()
            if t0 is not None and not fresh and now >= t0:
                fabric.fresh_draws()
                fresh = True
            for _ in range(64):  # drain what is queued, a bounded batch per wake-up
                try:
                    packet = os.read(fd, MAX_PACKET)
                except BlockingIOError:
                    break
                routed = fabric.route(packet, now)
                if trace is not None and t0 is not None and len(packet) >= 20:
                    # r: read from a node's TUN (the node sent it), lost or not
                    trace.write(f"r {now - t0:.6f} {fabric.by_address.get(packet[12:16], -1)} "
                                f"{fabric.by_address.get(packet[16:20], -1)} {len(packet)} "
                                f"{packet[9]}\n")
                if routed is not None:
                    src, dst, arrival = routed
                    seq += 1
                    heapq.heappush(pending, (arrival, seq, src, dst, packet))


def _stop(fabric: Fabric, since: float) -> int:
    print(json.dumps({"stats": fabric.stats(time.monotonic() - since)}), flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m netsim.emulate.fabric SPEC.json`` (started by the runner, as root)."""
    args = sys.argv[1:] if argv is None else argv
    with open(args[0], encoding="utf-8") as fh:
        spec = FabricSpec.from_json(fh.read())
    return serve(spec)


if __name__ == "__main__":
    raise SystemExit(main())
