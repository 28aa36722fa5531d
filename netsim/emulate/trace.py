"""What the fabric's packet trace says about the real stack: per-hop cost and wire bytes.

The fabric (``fabric.py``) writes one line per IP packet once the workload clock starts
(``logs/packets.trace``): ``r T SRC DST LEN PROTO`` when it reads a packet a node sent, and
``w T SRC DST LEN LATE`` when it writes one into the destination's TUN (``LATE``: seconds after
the time the link model gave, the fabric's own lateness). Times are scenario seconds.

From it (pure functions, no I/O but :func:`read`):

- **Bootstrap dials**: each TCP SYN a node sends (an IPv4 TCP packet of :data:`SYN_IP_BYTES`:
  the SYN and its options; nothing else the nodes send over TCP has that length) starts or
  retries the HTTP signalling of a dial. A node dials its lower-indexed neighbours (the
  runner's bootstrap rule), so the first SYN of such a dial after time 0 gives the phase of
  the node's bootstrap loop, which netsim needs to redial when the real node did
  (:func:`liveness_section`).

- **Relay time** of a node: from a DATA packet written into the node by one neighbour to the
  packet of the same length the node sends on to another neighbour (the same change frame,
  re-sent: DTLS and SCTP add the same bytes). That is the node's whole per-hop cost as the
  network sees it: DTLS decrypt, SCTP, the SACK, msgpack decode, signature check, apply,
  SQLite, re-encode, SCTP and DTLS again, ``sendto``, and every wait for the event loop and
  the CPU in between.
- **Fabric lateness**: how long after its model time each packet was written (epoll's timeout
  has millisecond granularity), a cost every emulated hop has and a real network has not.
- **Wire**: per direction, packets and bytes, split into SCTP control packets (SACKs and the
  like, at most :data:`CONTROL_MAX_BYTES`) and data packets.

:func:`node_section` turns the per-hop samples into netsim's ``[node]`` table
(``processing_quantiles_ms``), which is how the fidelity suite gives netsim the per-hop cost of
the machine the emulation ran on.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from meshnode.runtime.bootstrap import BOOTSTRAP_RETRY_S
from netsim.links import SACK_PACKET_BYTES
from netsim.metrics import percentile
from netsim.node_model import PROCESSING_QUANTILES

__all__ = ["CONTROL_MAX_BYTES", "SYN_IP_BYTES", "Packet", "hop_samples", "liveness_section",
           "node_section", "read", "relay_samples", "summary", "syn_times"]

#: Packets up to this IP length are SCTP control (a SACK with up to 4 gap blocks, keepalive
#: and STUN packets); longer ones carry data.
CONTROL_MAX_BYTES = SACK_PACKET_BYTES + 16

#: A relayed packet must leave within this long of the one it relays to count as its copy.
RELAY_WINDOW_S = 0.05

UDP = 17
TCP = 6
#: IP length of a Linux SYN: 20 B IPv4, 20 B TCP, 20 B of options (MSS, SACK permitted,
#: timestamps, window scale).
SYN_IP_BYTES = 60


@dataclass(frozen=True, slots=True)
class Packet:
    """One trace line."""

    kind: str  # "r" (read from src) or "w" (written into dst)
    t: float
    src: int
    dst: int
    size: int
    extra: float  # r: IP protocol number; w: lateness in seconds


def read(path: Path) -> list[Packet]:
    """Parse a trace file (a missing file is an empty trace; malformed lines are skipped)."""
    out: list[Packet] = []
    try:
        text = path.read_text(encoding="ascii", errors="replace")
    except OSError:
        return out
    for line in text.splitlines():
        parts = line.split()
        if len(parts) != 6 or parts[0] not in ("r", "w"):
            continue
        try:
            out.append(Packet(parts[0], float(parts[1]), int(parts[2]), int(parts[3]),
                              int(parts[4]), float(parts[5])))
        except ValueError:
            continue
    return out


def _relays(packets: list[Packet], after: float) -> list[tuple[Packet, float]]:
    """Each data packet written into a node, with the time that node sent its copy on: the
    first not yet matched packet of the same length to another node within
    :data:`RELAY_WINDOW_S`, unless another packet of that length came in meanwhile (then the
    copy may be the later one's: a frame the node merged with others, or did not forward,
    would otherwise borrow the next change's copy). Packets without a copy are left out."""
    outs: dict[tuple[int, int], list[tuple[float, int]]] = {}  # (node, size) -> (t, dst)
    ins: dict[tuple[int, int], list[float]] = {}  # (node, size) -> arrival times
    for p in packets:
        if p.kind == "r" and p.extra == UDP and p.size > CONTROL_MAX_BYTES and p.t >= after:
            outs.setdefault((p.src, p.size), []).append((p.t, p.dst))
        elif p.kind == "w" and p.size > CONTROL_MAX_BYTES:
            ins.setdefault((p.dst, p.size), []).append(p.t)
    used: set[tuple[int, int, float]] = set()
    found: list[tuple[Packet, float]] = []
    for p in packets:
        if p.kind != "w" or p.size <= CONTROL_MAX_BYTES or p.t < after:
            continue
        for t, dst in outs.get((p.dst, p.size), []):
            if t < p.t or dst == p.src or (p.dst, p.size, t) in used:
                continue
            arrivals = ins[(p.dst, p.size)]
            k = bisect.bisect_right(arrivals, p.t)
            alone = k == len(arrivals) or arrivals[k] > t
            if t - p.t <= RELAY_WINDOW_S and alone:
                used.add((p.dst, p.size, t))
                found.append((p, t))
            break
    return found


def relay_samples(packets: list[Packet], after: float = 0.0) -> list[tuple[float, int]]:
    """Relay times (seconds) and IP sizes of the relayed data packets (see :func:`_relays`)."""
    return [(t - p.t, p.size) for p, t in _relays(packets, after)]


def hop_samples(packets: list[Packet], after: float = 0.0) -> list[float]:
    """One emulated hop's cost beyond the link model, in ms, per relayed data packet: the
    node's relay time plus the fabric's lateness on the packet that came in."""
    return [(t - p.t + max(0.0, p.extra)) * 1000.0 for p, t in _relays(packets, after)]


def node_section(hops_ms: list[float]) -> dict[str, Any]:
    """netsim's ``[node]`` table for a per-hop time measured as ``hops_ms``: its quantiles
    on :data:`PROCESSING_QUANTILES` (empty without samples: netsim's defaults stand)."""
    if not hops_ms:
        return {}
    ordered = sorted(hops_ms)
    qs = [_quantile(ordered, q) for q in PROCESSING_QUANTILES]
    return {"processing_quantiles_ms": [round(x, 3) for x in qs]}


def syn_times(packets: list[Packet]) -> dict[str, list[float]]:
    """Per direction ``"SRC-DST"``, when SRC sent a SYN (or a SYN-ACK: the answering side)
    to DST, from time 0."""
    out: dict[str, list[float]] = {}
    for p in packets:
        if p.kind == "r" and p.extra == TCP and p.size == SYN_IP_BYTES and p.t >= 0.0:
            out.setdefault(f"{p.src}-{p.dst}", []).append(round(p.t, 4))
    return out


def liveness_section(syns: dict[str, list[float]], retry_s: float) -> dict[str, Any]:
    """netsim's ``[liveness]`` table for the bootstrap loops these SYNs show: per loop
    ``"A-B"`` (a SYN from node A to a lower-indexed B; the SYN-ACKs go the other way), the
    phase (seconds into its ``retry_s`` period) of its first dial after time 0. Empty if no
    node dialled."""
    phases = {key: round(times[0] % retry_s, 4) for key, times in sorted(syns.items())
              if times and int(key.split("-")[0]) > int(key.split("-")[1])}
    return {"bootstrap_phases_s": phases} if phases else {}


def _quantile(ordered: list[float], q: float) -> float:
    """Linear interpolation between order statistics (q in [0, 1])."""
    pos = q * (len(ordered) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def summary(packets: list[Packet]) -> dict[str, Any]:
    """What results.json's ``emulation.trace`` holds: per-hop cost and its parts, the
    ``[node]`` table that reproduces it, and per-direction wire counts."""
    relays = relay_samples(packets)
    hops = hop_samples(packets)
    late = [p.extra * 1000.0 for p in packets if p.kind == "w" and p.t >= 0.0]
    frame = percentile(sorted(s for _, s in relays), 50) if relays else None
    wire: dict[str, dict[str, float]] = {}
    for p in packets:
        if p.kind != "r" or p.t < 0.0 or p.extra != UDP:
            continue
        d = wire.setdefault(f"{p.src}-{p.dst}", {"packets": 0, "bytes": 0, "control_packets": 0,
                                                 "data_packets": 0, "data_bytes": 0})
        d["packets"] += 1
        d["bytes"] += p.size
        if p.size <= CONTROL_MAX_BYTES:
            d["control_packets"] += 1
        else:
            d["data_packets"] += 1
            d["data_bytes"] += p.size

    def q3(xs: list[float]) -> dict[str, float | None]:
        s = sorted(xs)
        return {f"p{q}": None if not s else round(percentile(s, q) or 0.0, 3)
                for q in (50, 90, 99)}

    syns = syn_times(packets)
    return {
        "hop_ms": q3(hops),
        "relay_ms": q3([t * 1000.0 for t, _ in relays]),
        "fabric_late_ms": q3(late),
        "hop_samples": len(hops),
        "relayed_frame_ip_bytes": frame,
        "node_section": node_section(hops),
        "wire": dict(sorted(wire.items())),
        "syns": dict(sorted(syns.items())),
        "liveness_section": liveness_section(syns, BOOTSTRAP_RETRY_S),
    }
