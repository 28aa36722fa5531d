"""The description of one direction of a link: :class:`LinkSpec`, its presets and constants.

A :class:`LinkSpec` is a frozen, validated set of parameters (latency distribution, jitter,
random and Gilbert–Elliott burst loss, bandwidth and queue, reordering, MTU and header bytes,
SCTP-like retransmission), read from scenario files (:meth:`LinkSpec.from_dict`) and written to
results and the emulation fabric (:meth:`LinkSpec.to_dict`). It is apart from the stateful
model that obeys it (:class:`netsim.links.Link`, where the model's semantics are documented)
because scenarios, topologies, preflight and results read specs without ever carrying a frame.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from aiortc.rtcsctptransport import (
    SCTP_COMMON_HEADER_LENGTH,
    SCTP_DATA_CHUNK_HEADER_LENGTH,
    SCTP_RTO_MAX,
    SCTP_RTO_MIN,
    USERDATA_MAX_LENGTH,
)

__all__ = [
    "ACK_LOSS_MODELS",
    "DATA_PACKET_OVERHEAD",
    "IP_UDP_DTLS_BYTES",
    "LATENCY_DISTS",
    "MAX_MESSAGE_BYTES",
    "PRESETS",
    "RECOVERY_MODELS",
    "SACK_GAP_BYTES",
    "SACK_PACKET_BYTES",
    "LinkSpec",
]

#: aiortc's SCTP maximum message size (bytes); larger frames are a caller bug.
MAX_MESSAGE_BYTES = 262_144

#: Bytes below SCTP in every packet of a data channel: IPv4 20 + UDP 8 + DTLS 1.2 record
#: header 13 + AES-GCM explicit nonce 8 and tag 16 (aiortc's DTLS). Counted in the emulation
#: fabric's packet trace: a SACK with no gap block is 93 B = 37 + 28 + SCTP 12 + SACK 16.
IP_UDP_DTLS_BYTES = 20 + 8 + 13 + 8 + 16

#: Header bytes of one DATA packet (aiortc sends one chunk per packet, no bundling): 93 B.
DATA_PACKET_OVERHEAD = IP_UDP_DTLS_BYTES + SCTP_COMMON_HEADER_LENGTH + SCTP_DATA_CHUNK_HEADER_LENGTH

#: One SACK packet without gap blocks (SACK chunk header 16 B: type, flags, length, cumulative
#: TSN, a_rwnd, gap and duplicate counts); each gap block adds :data:`SACK_GAP_BYTES`.
SACK_PACKET_BYTES = IP_UDP_DTLS_BYTES + SCTP_COMMON_HEADER_LENGTH + 16
SACK_GAP_BYTES = 4

#: Accepted values of :attr:`LinkSpec.latency_dist`.
LATENCY_DISTS = ("fixed", "normal", "pareto")

#: Accepted values of :attr:`LinkSpec.recovery`: ``sctp`` (aiortc's fast retransmit and T3,
#: ``netsim/sctp.py``) or ``rto`` (the closed-form model: an RTO per lost attempt, doubling).
RECOVERY_MODELS = ("sctp", "rto")

#: Accepted values of :attr:`LinkSpec.sack_loss`: SACKs lost like the reverse direction's
#: packets (``reverse``), or never (``none``).
ACK_LOSS_MODELS = ("reverse", "none")

_CHOICES = {"latency_dist": LATENCY_DISTS, "recovery": RECOVERY_MODELS,
            "sack_loss": ACK_LOSS_MODELS}

_PROBABILITIES = (
    "loss", "ge_p_good_bad", "ge_p_bad_good", "ge_loss_bad", "ge_loss_good", "reorder"
)
_NON_NEGATIVE = ("latency_ms", "latency_sd_ms", "jitter_ms", "bandwidth_kbps", "reorder_ms")


@dataclass(frozen=True)
class LinkSpec:
    """Parameters of one direction of a link. Times in milliseconds, sizes in bytes.

    Construction validates every field (``ValueError`` naming the field).
    """

    latency_ms: float = 20.0
    latency_dist: str = "fixed"
    latency_sd_ms: float = 0.0
    pareto_shape: float = 2.5
    jitter_ms: float = 0.0
    loss: float = 0.0
    ge_p_good_bad: float = 0.0
    ge_p_bad_good: float = 1.0
    ge_loss_bad: float = 1.0
    ge_loss_good: float = 0.0
    bandwidth_kbps: float = 0.0
    queue_bytes: int = 256 * 1024
    reorder: float = 0.0
    reorder_ms: float = 10.0
    mtu: int = USERDATA_MAX_LENGTH
    overhead_bytes: int = DATA_PACKET_OVERHEAD
    rto_min_ms: float = SCTP_RTO_MIN * 1000.0
    rto_max_ms: float = SCTP_RTO_MAX * 1000.0
    max_retransmits: int = 10
    recovery: str = "sctp"
    sack_loss: str = "reverse"

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in _CHOICES:
                if value not in _CHOICES[f.name]:
                    raise ValueError(
                        f"{f.name}: must be one of {list(_CHOICES[f.name])}, got {value!r}"
                    )
                continue
            if f.type in ("int", int):
                if not isinstance(value, int) or isinstance(value, bool):
                    raise ValueError(f"{f.name}: must be an integer, got {value!r}")
            else:
                if not isinstance(value, int | float) or isinstance(value, bool):
                    raise ValueError(f"{f.name}: must be a number, got {value!r}")
                if not math.isfinite(value):
                    raise ValueError(f"{f.name}: must be finite, got {value!r}")
        for name in _PROBABILITIES:
            p = getattr(self, name)
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{name}: must be a probability in [0, 1], got {p!r}")
        for name in _NON_NEGATIVE:
            if getattr(self, name) < 0:
                raise ValueError(f"{name}: must be >= 0, got {getattr(self, name)!r}")
        if self.pareto_shape <= 1.0:
            raise ValueError(
                f"pareto_shape: must be > 1 (finite mean), got {self.pareto_shape!r}"
            )
        if self.ge_p_good_bad > 0 and self.ge_p_bad_good <= 0:
            raise ValueError("ge_p_bad_good: must be > 0 when ge_p_good_bad > 0")
        if self.queue_bytes < 1:
            raise ValueError(f"queue_bytes: must be >= 1, got {self.queue_bytes!r}")
        if self.mtu < 1:
            raise ValueError(f"mtu: must be >= 1, got {self.mtu!r}")
        if self.overhead_bytes < 0:
            raise ValueError(f"overhead_bytes: must be >= 0, got {self.overhead_bytes!r}")
        if self.rto_min_ms <= 0:
            raise ValueError(f"rto_min_ms: must be > 0, got {self.rto_min_ms!r}")
        if self.rto_max_ms < self.rto_min_ms:
            raise ValueError(
                f"rto_max_ms: must be >= rto_min_ms ({self.rto_min_ms}), got {self.rto_max_ms!r}"
            )
        if self.max_retransmits < 0:
            raise ValueError(f"max_retransmits: must be >= 0, got {self.max_retransmits!r}")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], base: LinkSpec | None = None) -> LinkSpec:
        """Build a spec from a dict (e.g. a TOML table), strictly.

        Keys are field names; missing ones come from ``base`` (default: ``LinkSpec()``). The
        optional key ``preset`` (a name in :data:`PRESETS`) replaces ``base``. Integers are
        accepted for float fields. Unknown keys or bad values raise ``ValueError`` naming the key.
        """
        if not isinstance(d, Mapping):
            raise ValueError(f"link spec must be a table/dict, got {type(d).__name__}")
        data = dict(d)
        if "preset" in data:
            preset = data.pop("preset")
            if not isinstance(preset, str) or preset not in PRESETS:
                raise ValueError(f"preset: unknown preset {preset!r} (known: {sorted(PRESETS)})")
            base = PRESETS[preset]
        return (base if base is not None else cls()).replace(**data)

    def replace(self, **kw: Any) -> LinkSpec:
        """A copy with some fields changed (validated; unknown names raise ``ValueError``)."""
        known = {f.name: f for f in fields(self)}
        for key in kw:
            if key not in known:
                raise ValueError(f"{key}: unknown link parameter (known: {sorted(known)})")
        coerced: dict[str, Any] = {}
        for key, value in kw.items():
            is_float = known[key].type in ("float", float)
            if is_float and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            coerced[key] = value
        return dataclasses.replace(self, **coerced)

    def to_dict(self) -> dict[str, Any]:
        """All fields as a plain dict (JSON/TOML friendly)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @property
    def rate_bytes_per_s(self) -> float:
        """Serialisation rate in bytes per second (0.0 means unlimited)."""
        return self.bandwidth_kbps * 1000.0 / 8.0

    def packets(self, size: int) -> int:
        """Number of packets a frame of ``size`` payload bytes takes on the wire (>= 1)."""
        return max(1, -(-size // self.mtu))

    def wire_bytes(self, size: int) -> int:
        """Bytes a frame of ``size`` payload bytes occupies on the wire, headers included
        (and the last chunk's padding to 4 bytes, as SCTP pads every chunk)."""
        return size + (-size) % 4 + self.packets(size) * self.overhead_bytes

    def initial_rto_s(self) -> float:
        """The first retransmission timeout in seconds: ``max(rto_min, 3 * latency)``."""
        return min(max(self.rto_min_ms, 3.0 * self.latency_ms), self.rto_max_ms) / 1000.0


#: Named link profiles (one direction each).
PRESETS: dict[str, LinkSpec] = {
    "lan": LinkSpec(latency_ms=1.0, bandwidth_kbps=100_000.0),
    "wan": LinkSpec(latency_ms=40.0, jitter_ms=5.0, loss=0.001, bandwidth_kbps=20_000.0),
    "3g": LinkSpec(
        latency_ms=100.0, jitter_ms=30.0, loss=0.01, bandwidth_kbps=2_000.0, queue_bytes=64 * 1024
    ),
    # Geostationary hop: ~300 ms one way, ~600 ms RTT.
    "satellite": LinkSpec(latency_ms=300.0, loss=0.02, bandwidth_kbps=1_000.0),
}
