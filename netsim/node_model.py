"""What a simulated node costs and how its links live: the ``[node]`` and ``[liveness]``
sections of a scenario.

Defaults are the live node's own values, imported from the code a node runs (never copied):
the keepalive period and silence limit (``meshnode.runtime.links``), the bootstrap redial
period (``meshnode.runtime.bootstrap``), the dial timeouts (``meshnode.runtime.links``,
``meshnode.transport.link.LinkSettings``). The two figures that cannot be imported are
measurements, and say where they come from:

- ``processing_quantiles_ms``: the per-hop time of a real node, measured in the emulation
  (``netsim emulate``, the fidelity case ``bandwidth``, 196 relayed one-change frames, load
  average 1.0-1.2 on the 2-core development machine): from the moment the fabric wrote a DATA
  packet into the middle node's TUN to the moment the node sent the same frame on to the next
  node (``netsim.emulate.trace``): DTLS decrypt, SCTP and its SACK, msgpack decode, signature
  check, apply, SQLite, re-encode, SCTP, DTLS, ``sendto`` and every wait for the event loop
  and the CPU. Quantiles 0/10/25/50/75/90/95/99/100%: 0.66/1.08/1.35/1.60/2.01/2.15/2.28/3.08/
  3.42 ms. On a loaded machine it grows (load 4-7: ~4.5 ms per hop); the fidelity suite
  measures it in every run (see ``docs/netsim.md``).
- ``processing_ms`` and ``processing_ms_per_kb`` (the CPU a message occupies the loop for):
  ``benchmarks/netsim_calibration.py`` on the idle machine: a one-change Changes frame (238 B)
  costs the relaying core 0.15 ms (decode, signature check, apply, frames to forward) and the
  aiortc transport 0.15 ms (DTLS, SCTP, data channel, both ends), of which the core's part
  scales with the frame (0.63 ms per KiB).
- ``setup_round_trips`` and ``setup_s``: a link's set-up once the path works, from the
  emulation's packet trace (fidelity case ``partition``, the redial after the heal): the SYN,
  SYN-ACK, the HTTP offer and its answer, ICE checks, the DTLS handshake (2 round trips), SCTP
  INIT and COOKIE (2), the data channel's OPEN and the hellos: 16 one-way trips, 8 round trips,
  from the first SYN to the link up in 0.71 s over 40 ms links; the rest (0.06 s) is CPU
  (offer, answer, certificates, signatures; 0.03 s on an idle loopback, same benchmark).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field, fields
from typing import Any

from meshnode.runtime.bootstrap import BOOTSTRAP_RETRY_S
from meshnode.runtime.links import (
    DEAD_AFTER_S,
    KEEPALIVE_S,
    RELAYED_DIAL_TIMEOUT_S,
    SIGNALING_TIMEOUT_S,
)
from meshnode.transport.link import LinkSettings

#: Per-hop time of a real node (ms) at :data:`PROCESSING_QUANTILES`, for a one-change frame,
#: less the per-KiB part: MEASURED (see the module docstring).
MEASURED_HOP_MS: tuple[float, ...] = (0.66, 1.08, 1.35, 1.60, 2.01, 2.15, 2.28, 3.08, 3.42)

__all__ = ["BOOTSTRAP_MODES", "PROCESSING_QUANTILES", "LivenessSpec", "NodeSpec", "parse_section"]

#: The probabilities at which :attr:`NodeSpec.processing_quantiles_ms` gives the per-hop time.
PROCESSING_QUANTILES = (0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 1.0)

#: Accepted values of :attr:`LivenessSpec.bootstrap`.
BOOTSTRAP_MODES = ("lower", "none")


@dataclass(frozen=True)
class NodeSpec:
    """Per-hop processing. Every message a node receives occupies its (single) event loop for
    ``processing_ms + processing_ms_per_kb * size / 1024`` of CPU, in turn (FIFO: a burst, or
    presence and pings beside the changes, queue); and the core sees it no sooner than X after
    it arrived, X drawn (per message, seeded) from the measured per-hop time
    ``processing_quantiles_ms``: its values at the probabilities :data:`PROCESSING_QUANTILES`,
    linear in between. X already holds the CPU work of a one-change frame, so an isolated
    message takes X (or its CPU time, if larger), and a burst is paced by the CPU. Messages
    reach the core in the order they arrived: a long draw (a stall of the loop) holds back
    those behind it and releases them together. All zero turns it off."""

    processing_ms: float = 0.15
    processing_ms_per_kb: float = 0.63
    processing_quantiles_ms: tuple[float, ...] = MEASURED_HOP_MS

    def __post_init__(self) -> None:
        qs = self.processing_quantiles_ms
        if len(qs) != len(PROCESSING_QUANTILES):
            raise ValueError(f"node.processing_quantiles_ms: {len(PROCESSING_QUANTILES)} values "
                             f"(at {list(PROCESSING_QUANTILES)}), not {len(qs)}")
        if any(b < a for a, b in itertools.pairwise(qs)):
            raise ValueError("node.processing_quantiles_ms must not decrease")

    def draw_ms(self, u: float) -> float:
        """The distribution's value at probability ``u`` in [0, 1) (inverse CDF, linear
        between the measured quantiles)."""
        qs, ps = self.processing_quantiles_ms, PROCESSING_QUANTILES
        for k in range(1, len(ps)):
            if u <= ps[k]:
                f = (u - ps[k - 1]) / (ps[k] - ps[k - 1])
                return qs[k - 1] + f * (qs[k] - qs[k - 1])
        return qs[-1]


@dataclass(frozen=True)
class LivenessSpec:
    """Links that die and come back as a real node's do (``enabled = false``: links stay up
    through partitions, held frames are re-sent at the heal, dials take 1.5 round trips).

    - keepalive: every ``keepalive_s / 2`` a node pings each link it has sent nothing on for
      ``keepalive_s`` and closes each link it has heard nothing on for more than
      ``dead_after_s`` (both ends then see the link down).
    - partitions and crashes: packets are lost (SCTP retransmits every RTO); a crashed node's
      neighbours notice through the keepalive; a node that leaves closes its links at once.
    - bootstrap: with ``bootstrap = "lower"`` each node keeps a link to each topology
      neighbour with a smaller index (those started before it), redialling as the real
      ``Bootstrap`` does: try, then sleep ``bootstrap_retry_s``, while there is no link.
    - dials: a dial whose path works succeeds ``setup_round_trips`` round trips of its link
      (nominal latency both ways) plus ``setup_s`` later. A bootstrap dial's SYN over a cut
      path is lost and retransmitted on Linux's schedule (1, 2, 3, 4, 5, 7, 11 s after the
      first with ``syn_linear_timeouts = 4``, the kernel's ``tcp_syn_linear_timeouts``; 1, 3,
      7 s with 0): the dial completes at the first SYN after the heal plus the set-up, or
      fails after ``dial_timeout_s``. ``bootstrap_phases_s`` fixes when a bootstrap loop
      wakes (``{"A-B": phase}``: A's loop dialling B wakes at this phase plus multiples of
      ``bootstrap_retry_s``; loops not named get a seeded random phase): the fidelity suite
      sets the phases the emulated nodes had. An overlay's (relayed) dial fails at
      once without any link (no route), after ``hello_timeout_s`` to a peer that answers but
      that no topology edge reaches (ICE never connects), and after ``relayed_timeout_s``
      when no answer can come (peer down or cut off).
    """

    enabled: bool = True
    keepalive_s: float = KEEPALIVE_S
    dead_after_s: float = DEAD_AFTER_S
    bootstrap: str = "lower"
    bootstrap_retry_s: float = BOOTSTRAP_RETRY_S
    bootstrap_phases_s: dict[str, float] = field(default_factory=dict)
    syn_linear_timeouts: float = 4.0
    setup_s: float = 0.06
    setup_round_trips: float = 8.0
    dial_timeout_s: float = SIGNALING_TIMEOUT_S
    relayed_timeout_s: float = RELAYED_DIAL_TIMEOUT_S
    hello_timeout_s: float = LinkSettings().hello_timeout_s


def parse_section(cls: type[Any], raw: Any, where: str) -> Any:
    """Build ``cls`` (``NodeSpec`` or ``LivenessSpec``) from a scenario table, strictly:
    unknown keys and bad values raise ``ValueError`` naming ``where.key``."""
    if not isinstance(raw, dict):
        raise ValueError(f"[{where}] must be a table")
    known = {f.name: f for f in fields(cls)}
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in known:
            raise ValueError(f"{where}: unknown key {key!r} (known: {sorted(known)})")
        default = getattr(cls(), key)
        if isinstance(default, dict):
            out[key] = _phases(value, f"{where}.{key}")
            continue
        if isinstance(default, tuple):
            ok = isinstance(value, list) and all(
                isinstance(x, int | float) and not isinstance(x, bool) and x == x
                and 0 <= x < float("inf") for x in value)
            if not ok:
                raise ValueError(f"{where}.{key} must be a list of finite numbers >= 0, "
                                 f"not {value!r}")
            out[key] = tuple(float(x) for x in value)
            continue
        if isinstance(default, bool):
            if not isinstance(value, bool):
                raise ValueError(f"{where}.{key} must be true or false, not {value!r}")
        elif isinstance(default, str):
            if value not in BOOTSTRAP_MODES:
                raise ValueError(f"{where}.{key} must be one of {list(BOOTSTRAP_MODES)}, "
                                 f"not {value!r}")
        else:
            ok = isinstance(value, int | float) and not isinstance(value, bool) and value >= 0
            if not ok or value != value or value == float("inf"):
                raise ValueError(f"{where}.{key} must be a finite number >= 0, not {value!r}")
            if key in ("keepalive_s", "dead_after_s", "bootstrap_retry_s") and value <= 0:
                raise ValueError(f"{where}.{key} must be > 0, not {value!r}")
            value = float(value)
        out[key] = value
    try:
        return cls(**out)
    except ValueError as err:
        raise ValueError(str(err).replace("node.", f"{where}.", 1)) from None


def _phases(raw: Any, where: str) -> dict[str, float]:
    """A table ``{"A-B": seconds}`` of bootstrap loop phases (A and B node indices)."""
    if not isinstance(raw, dict):
        raise ValueError(f"{where} must be a table of \"A-B\" = seconds, not {raw!r}")
    out: dict[str, float] = {}
    for key, value in raw.items():
        parts = str(key).split("-")
        if len(parts) != 2 or not all(p.isdigit() for p in parts):
            raise ValueError(f"{where}: key {key!r} is not \"A-B\" (two node indices)")
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        if not ok or not 0 <= value < float("inf"):
            raise ValueError(f"{where}.{key} must be a finite number >= 0, not {value!r}")
        out[key] = float(value)
    return out
