"""What a simulated node costs and how its links live: the ``[node]`` and ``[liveness]``
sections of a scenario.

Defaults are the live node's own values, imported from the code a node runs (never copied):
the keepalive period and silence limit (``meshnode.runtime.links``), the bootstrap redial
period (``meshnode.runtime.bootstrap``), the dial timeouts (``meshnode.runtime.links``,
``meshnode.transport.link.LinkSettings``). The two figures that cannot be imported are
measurements, and say where they come from:

- ``processing_ms`` and ``processing_ms_per_kb``: ``benchmarks/netsim_calibration.py`` on the
  development machine (2 cores, CPython 3.11): a one-change Changes frame (238 B) costs the
  relaying core 0.15 ms (decode, signature check, apply, frames to forward) and the aiortc
  transport 0.15 ms one way (DTLS, SCTP, data channel, both ends): 0.30 ms per hop, of which
  the core's 0.15 ms scales with the frame (0.63 ms per KiB).
- ``setup_s``: a link's set-up once the path works, from the issue's emulation runs (ring of
  4, one node cut 20 s: its first link came 2.0-2.3 s after the heal; ICE checks, DTLS and
  SCTP retransmission pacing over the real path). The CPU part alone is 0.03 s on loopback
  (same benchmark), so nearly all of it is round trips and retransmission timers.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from meshnode.runtime.bootstrap import BOOTSTRAP_RETRY_S
from meshnode.runtime.links import (
    DEAD_AFTER_S,
    KEEPALIVE_S,
    RELAYED_DIAL_TIMEOUT_S,
    SIGNALING_TIMEOUT_S,
)
from meshnode.transport.link import LinkSettings

__all__ = ["BOOTSTRAP_MODES", "LivenessSpec", "NodeSpec", "parse_section"]

#: Accepted values of :attr:`LivenessSpec.bootstrap`.
BOOTSTRAP_MODES = ("lower", "none")


@dataclass(frozen=True)
class NodeSpec:
    """Per-hop processing: every message a node receives occupies its (single) event loop
    for ``processing_ms + processing_ms_per_kb * size / 1024`` before the core sees it;
    messages wait their turn (FIFO), so a busy node queues. 0 and 0 turn it off."""

    processing_ms: float = 0.15
    processing_ms_per_kb: float = 0.63


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
    - dials: a dial whose path works succeeds ``setup_s`` later; a bootstrap dial over a cut
      path waits, and fails after ``dial_timeout_s``; an overlay's (relayed) dial fails at
      once without any link (no route), after ``hello_timeout_s`` to a peer that answers but
      that no topology edge reaches (ICE never connects), and after ``relayed_timeout_s``
      when no answer can come (peer down or cut off).
    """

    enabled: bool = True
    keepalive_s: float = KEEPALIVE_S
    dead_after_s: float = DEAD_AFTER_S
    bootstrap: str = "lower"
    bootstrap_retry_s: float = BOOTSTRAP_RETRY_S
    setup_s: float = 2.15
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
    return cls(**out)
