"""One-direction link models for netsim.

A :class:`LinkSpec` (``netsim.link_spec``, re-exported here) describes one direction of a
link (latency distribution, jitter, random and Gilbert–Elliott burst loss, bandwidth with a FIFO
tail-drop queue, reordering, MTU packetisation, SCTP-like retransmission). A :class:`Link` is
the stateful model of one direction: the engine calls :meth:`Link.send` with the frame size and
the virtual time and gets back the arrival time (or ``None`` if the frame never arrives).

Everything is pure Python and deterministic: the only randomness is the ``random.Random`` handed
to the link, and time is whatever the caller says it is (seconds on the virtual clock).

Model, per frame of ``size`` payload bytes (``Link.send``):

1. **Packetisation.** The frame is ``ceil(size / mtu)`` packets (at least 1; ``mtu`` defaults
   to aiortc's ``USERDATA_MAX_LENGTH``, 1160 B of user data per DATA chunk), each carrying
   ``overhead_bytes`` of headers (IP/UDP/DTLS/SCTP: 93 B, :data:`DATA_PACKET_OVERHEAD`), so it
   occupies ``size + padding + packets * overhead_bytes`` bytes on the wire (SCTP pads a chunk
   to 4 bytes). SACKs are packets too (:meth:`Link.ack`): they share the reverse direction's
   queue and loss.
2. **Queue and serialisation.** With ``bandwidth_kbps > 0`` the frame waits in a FIFO behind the
   backlog (``busy_until``) and is serialised at the link rate. The backlog in bytes is
   ``(busy_until - now) * rate``; if the backlog is non-empty and backlog + frame would exceed
   ``queue_bytes`` the frame is tail-dropped. (An empty queue always accepts one frame, so a
   frame larger than the queue is slow, not undeliverable.)
3. **Loss.** Each packet is lost with probability ``1 - (1 - loss) * (1 - ge_loss_<state>)``;
   the frame is lost if any packet is. With Gilbert–Elliott bursts (``ge_p_good_bad > 0``) the
   chain advances once per packet before its draw (SACKs and pings included, as the emulation
   fabric advances it per IP packet); without, one uniform is drawn against
   ``1 - (1 - p) ** packets``, which has the same distribution.
4. **Propagation.** Arrival = end of serialisation + latency, where latency is drawn from
   ``latency_dist`` ("fixed"; "normal" with ``latency_sd_ms``, clamped at 0; "pareto" with shape
   ``pareto_shape`` scaled so its mean is ``latency_ms``), plus uniform ``±jitter_ms`` (floored at
   0), plus ``reorder_ms`` with probability ``reorder``.

Unreliable frames (the ``presence`` channel: unordered, ``maxRetransmits=0``) are simply lost or
delivered, and may be reordered. The packets of the SCTP model (:meth:`Link.attempt`, DATA, and
:meth:`Link.ack`, SACKs) keep their order on a direction unless ``reorder > 0`` (jitter alone
does not reorder them), as the emulation's fabric keeps each direction FIFO: with reordering a
SACK sent later could overtake earlier ones and take their gap reports' strikes with it.

Reliable frames (the ``sync`` channel: SCTP reliable, ordered) are never lost while the link is
up. With ``recovery = "sctp"`` (the default) and a bound channel (:meth:`Link.bind`, what the
simulation does), :meth:`Link.send_reliable` hands them to ``netsim.sctp.ReliableChannel``,
which recovers losses as aiortc does (fast retransmit after three gap reports, T3 without
backoff) and delivers in order through a callback; :meth:`Link.attempt` is its one
transmission attempt, and ``cut`` (a partition) loses every packet. :meth:`Link.send` with
``reliable=True`` keeps the closed-form model below (``recovery = "rto"``): each lost or
tail-dropped attempt costs a retransmission timeout: the RTO starts at
``max(rto_min_ms, 3 * latency_ms)`` (aiortc's SCTP has a 1 s minimum RTO), doubles on every retry
(capped at ``rto_max_ms``), and the next attempt starts when the timer fires (a timer is armed at
the end of the attempt's serialisation). After ``max_retransmits`` retries the next attempt is
delivered regardless: real SCTP would abort the association there, but the simulator keeps the
data (late, never lost) and counts it in ``forced_deliveries``. Delivery is in order per
direction: a reliable frame never arrives before the previous reliable frame on the same link.
Retransmissions are charged to the queue when ``send`` is called (capacity is conserved; their
exact position on the timeline is approximated).

Partitions: a link that is down (``link.up = False``, or :meth:`Link.set_up`) returns ``None``
for every frame, reliable or not, and counts it in ``frames_dropped_down``. **Contract with the
engine:** a reliable frame refused by a down link is not lost — the engine must keep it in a
per-link pending list and ``send`` it again (in order) when the link comes back up. Frames
whose arrival time was already computed before the link went down are delivered as computed.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from netsim.link_spec import ACK_LOSS_MODELS as ACK_LOSS_MODELS
from netsim.link_spec import DATA_PACKET_OVERHEAD as DATA_PACKET_OVERHEAD
from netsim.link_spec import IP_UDP_DTLS_BYTES as IP_UDP_DTLS_BYTES
from netsim.link_spec import LATENCY_DISTS as LATENCY_DISTS
from netsim.link_spec import MAX_MESSAGE_BYTES as MAX_MESSAGE_BYTES
from netsim.link_spec import PRESETS as PRESETS
from netsim.link_spec import RECOVERY_MODELS as RECOVERY_MODELS
from netsim.link_spec import SACK_GAP_BYTES as SACK_GAP_BYTES
from netsim.link_spec import SACK_PACKET_BYTES as SACK_PACKET_BYTES
from netsim.link_spec import LinkSpec as LinkSpec
from netsim.sctp import ReliableChannel, Schedule

__all__ = [
    "ACK_LOSS_MODELS",
    "DATA_PACKET_OVERHEAD",
    "LATENCY_DISTS",
    "MAX_MESSAGE_BYTES",
    "PRESETS",
    "RECOVERY_MODELS",
    "SACK_PACKET_BYTES",
    "Link",
    "LinkSpec",
]


class Link:
    """The stateful model of one direction of a link. See the module docstring for semantics.

    Public counters (all cumulative): ``frames_sent`` (frames offered while up),
    ``frames_delivered``, ``packets_sent`` and ``bytes_sent`` (on the wire, headers and
    retransmissions included), ``frames_lost`` (transmission attempts lost on the wire, reliable
    or not), ``frames_dropped_queue`` (attempts tail-dropped), ``frames_dropped_down`` (frames
    refused while down), ``retransmissions`` (reliable re-sends), ``forced_deliveries``
    (reliable frames delivered after exhausting ``max_retransmits``) and ``busy_s`` (seconds
    spent serialising; utilisation over a window = Δbusy_s / Δt).
    """

    def __init__(self, spec: LinkSpec, rng: random.Random) -> None:
        self._spec = spec
        self._derive()
        self._rng = rng
        self.up = True
        self.cut = False  # a partition: every packet, both ways, is lost (sctp recovery)
        self.channel: ReliableChannel | None = None  # bound by the simulation (bind)
        self.busy_until = 0.0
        self.last_reliable_arrival = 0.0
        self.last_wire_arrival = 0.0  # the SCTP model's last packet (FIFO unless reorder > 0)
        self.ge_bad = False
        self.frames_sent = 0
        self.frames_delivered = 0
        self.packets_sent = 0
        self.bytes_sent = 0
        self.frames_lost = 0
        self.frames_dropped_queue = 0
        self.frames_dropped_down = 0
        self.retransmissions = 0
        self.forced_deliveries = 0
        self.busy_s = 0.0

    @property
    def spec(self) -> LinkSpec:
        """The current parameters."""
        return self._spec

    def set_spec(self, spec: LinkSpec, now: float | None = None) -> None:
        """Change the parameters mid-run (a degradation event).

        Queue, burst-loss state and ordering carry over. If ``now`` is given and both the old and
        new rates are limited, the bytes still queued are re-timed at the new rate.
        """
        old_rate, new_rate = self._spec.rate_bytes_per_s, spec.rate_bytes_per_s
        if now is not None and old_rate > 0 and new_rate > 0 and self.busy_until > now:
            self.busy_until = now + (self.busy_until - now) * old_rate / new_rate
        self._spec = spec
        self._derive()

    def _derive(self) -> None:
        """Cache what ``send`` needs from the spec (the spec is frozen; ``set_spec`` re-runs
        this). ``_fixed_latency_s`` is the latency when it takes no random draw, else None;
        ``_lossless`` is True when ``_lost`` would return False without a draw."""
        spec = self._spec
        self._rate = spec.rate_bytes_per_s
        self._rto0 = spec.initial_rto_s()
        self._rto_max = spec.rto_max_ms / 1000.0
        self._lossless = spec.loss == 0.0 and not spec.ge_p_good_bad > 0
        self.sctp = spec.recovery == "sctp"  # sync frames go through the bound channel
        fixed = not (spec.latency_dist == "normal" and spec.latency_sd_ms > 0) and (
            spec.latency_dist != "pareto"
        )
        self._fixed_latency_s = (
            spec.latency_ms / 1000.0
            if fixed and not spec.jitter_ms > 0 and not spec.reorder > 0 else None
        )

    def bind(self, schedule: Schedule, clock: Callable[[], float],
             deliver: Callable[[Any], None]) -> ReliableChannel:
        """Attach the event-driven reliable channel (``recovery = "sctp"``): ``schedule(when,
        fn, *args)`` and ``clock()`` are the engine's, ``deliver(payload)`` is called at the
        receiver, in order, for every message given to :meth:`send_reliable`."""
        self.channel = ReliableChannel(self, schedule, clock, deliver)
        return self.channel

    def send_reliable(self, size: int, now: float, payload: Any) -> bool:
        """Offer a reliable message to the bound SCTP-like channel (``netsim/sctp.py``); it is
        delivered later through the ``deliver`` callback. False if the link is down."""
        if type(size) is not int or not 0 <= size <= MAX_MESSAGE_BYTES:
            self._check_size(size)  # (raises; the test above is its fast path)
        channel = self.channel
        if channel is None:
            raise RuntimeError("send_reliable needs a channel: call bind() first")
        if not self.up:
            self.frames_dropped_down += 1
            return False
        self.frames_sent += 1
        channel.send(size, now, payload)
        return True

    def clean_path(self) -> bool:
        """True when an attempt can neither be lost nor tail-dropped (no loss, no queue
        limit, not cut): the reliable channel then needs no recovery bookkeeping."""
        return not self.cut and self._lossless and self._rate <= 0

    def attempt(self, size: int, now: float) -> float | None:
        """One transmission attempt of a reliable message: queue, serialisation, loss
        (everything is lost while ``cut``), propagation. Returns the arrival time, or None
        if lost or tail-dropped. Used by the reliable channel, which handles recovery."""
        spec = self._spec
        packets = max(1, -(-size // spec.mtu))
        wire = size + (-size) % 4 + packets * spec.overhead_bytes
        rate = self._rate
        if rate > 0:
            tx = wire / rate
            backlog = max(0.0, self.busy_until - now) * rate
            if backlog > 0 and backlog + wire > spec.queue_bytes:
                self.frames_dropped_queue += 1
                return None
            finish = max(now, self.busy_until) + tx
            self.busy_until = finish
            self.busy_s += tx
        else:
            finish = now
        self.packets_sent += packets
        self.bytes_sent += wire
        if self.cut or (not self._lossless and self._lost(packets)):
            self.frames_lost += 1
            return None
        if self._fixed_latency_s is not None:
            return self._in_order(finish + self._fixed_latency_s)
        return self._in_order(finish + self._latency_s())

    def ack(self, now: float, gaps: int = 0) -> float | None:
        """One SACK packet sent on this direction at ``now``: it takes its turn in the
        bandwidth queue behind data (:data:`SACK_PACKET_BYTES` + 4 per gap block), advances the
        loss chain like any packet (``sack_loss = "reverse"``) and propagates. Its arrival
        time, or None if lost, tail-dropped or cut."""
        if self.cut:
            self.packets_sent += 1
            return None
        wire = SACK_PACKET_BYTES + SACK_GAP_BYTES * gaps
        rate = self._rate
        finish = now
        if rate > 0:
            backlog = max(0.0, self.busy_until - now) * rate
            if backlog > 0 and backlog + wire > self._spec.queue_bytes:
                self.frames_dropped_queue += 1
                return None
            tx = wire / rate
            finish = max(now, self.busy_until) + tx
            self.busy_until = finish
            self.busy_s += tx
        self.packets_sent += 1
        self.bytes_sent += wire
        if self._spec.sack_loss != "none" and not self._lossless and self._lost(1):
            return None
        if self._fixed_latency_s is not None:
            return self._in_order(finish + self._fixed_latency_s)
        return self._in_order(finish + self._latency_s())

    def _in_order(self, arrival: float) -> float:
        """An SCTP packet's arrival, no earlier than the previous one's (FIFO) unless the
        link reorders."""
        if self._spec.reorder > 0:
            return arrival
        arrival = max(arrival, self.last_wire_arrival)
        self.last_wire_arrival = arrival
        return arrival

    def set_up(self, up: bool) -> None:
        """Bring the link up or down (partition). Same as assigning ``link.up``."""
        self.up = up

    def backlog_bytes(self, now: float) -> float:
        """Bytes waiting in (or being serialised by) the queue at time ``now``."""
        rate = self._spec.rate_bytes_per_s
        if rate <= 0 or self.busy_until <= now:
            return 0.0
        return (self.busy_until - now) * rate

    def counters(self) -> dict[str, float]:
        """The cumulative counters as a dict (for reports)."""
        return {
            "frames_sent": self.frames_sent,
            "frames_delivered": self.frames_delivered,
            "packets_sent": self.packets_sent,
            "bytes_sent": self.bytes_sent,
            "frames_lost": self.frames_lost,
            "frames_dropped_queue": self.frames_dropped_queue,
            "frames_dropped_down": self.frames_dropped_down,
            "retransmissions": self.retransmissions,
            "forced_deliveries": self.forced_deliveries,
            "busy_s": self.busy_s,
        }

    def send(self, size: int, now: float, reliable: bool) -> float | None:
        """Offer a frame of ``size`` payload bytes at time ``now`` (seconds).

        Returns the arrival time in seconds, or ``None`` if the frame does not arrive: an
        unreliable frame lost or tail-dropped, or any frame while the link is down (the engine
        must re-send refused reliable frames when the link comes up).
        """
        self._check_size(size)
        if not self.up:
            self.frames_dropped_down += 1
            return None
        self.frames_sent += 1
        spec = self._spec
        if self.cut:  # a partition swallows the packets (reliable ones: use send_reliable)
            packets = spec.packets(size)
            self.packets_sent += packets
            self.bytes_sent += spec.wire_bytes(size)
            self.frames_lost += 1
            return None
        packets = max(1, -(-size // spec.mtu))  # spec.packets(size)
        wire = size + (-size) % 4 + packets * spec.overhead_bytes  # spec.wire_bytes(size)
        rate = self._rate
        if rate <= 0 and self._lossless and self._fixed_latency_s is not None:
            # Fast path (unlimited bandwidth, no loss, no random latency): what the loop below
            # computes in that case, with the same arithmetic, and no random draw.
            self.busy_s += 0.0
            self.packets_sent += packets
            self.bytes_sent += wire
            arrival = now + self._fixed_latency_s
            if reliable:
                arrival = max(arrival, self.last_reliable_arrival)
                self.last_reliable_arrival = arrival
            self.frames_delivered += 1
            return arrival
        tx = wire / rate if rate > 0 else 0.0
        t = now  # start of the current attempt
        rto = self._rto0
        rto_max = self._rto_max
        retries = 0
        while True:
            last_chance = reliable and retries >= spec.max_retransmits
            # Queue admission and serialisation.
            if rate > 0:
                backlog = max(0.0, self.busy_until - t) * rate
                if backlog > 0 and backlog + wire > spec.queue_bytes and not last_chance:
                    self.frames_dropped_queue += 1
                    if not reliable:
                        return None
                    t += rto
                    rto = min(2 * rto, rto_max)
                    retries += 1
                    self.retransmissions += 1
                    continue
                finish = max(t, self.busy_until) + tx
                self.busy_until = max(self.busy_until, now) + tx
            else:
                finish = t
            self.busy_s += tx
            self.packets_sent += packets
            self.bytes_sent += wire
            # Loss on the wire.
            if self._lost(packets):
                self.frames_lost += 1
                if not reliable:
                    return None
                if not last_chance:
                    t = finish + rto
                    rto = min(2 * rto, rto_max)
                    retries += 1
                    self.retransmissions += 1
                    continue
                self.forced_deliveries += 1
            arrival = finish + self._latency_s()
            if reliable:
                arrival = max(arrival, self.last_reliable_arrival)
                self.last_reliable_arrival = arrival
            self.frames_delivered += 1
            return arrival

    @staticmethod
    def _check_size(size: int) -> None:
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise ValueError(f"size: must be a non-negative integer, got {size!r}")
        if size > MAX_MESSAGE_BYTES:
            raise ValueError(f"size: {size} B exceeds the SCTP max message {MAX_MESSAGE_BYTES} B")

    def _lost(self, packets: int) -> bool:
        spec = self._spec
        keep = 1.0 - spec.loss
        if spec.ge_p_good_bad > 0:
            # The chain advances once per packet, as the emulation fabric advances it per IP
            # packet (data, SACKs, pings alike); the frame is lost if any packet is.
            rng = self._rng
            lost = False
            for _ in range(packets):
                if self.ge_bad:
                    if rng.random() < spec.ge_p_bad_good:
                        self.ge_bad = False
                elif rng.random() < spec.ge_p_good_bad:
                    self.ge_bad = True
                k = keep * (1.0 - (spec.ge_loss_bad if self.ge_bad else spec.ge_loss_good))
                if k < 1.0 and rng.random() >= k:
                    lost = True
            return lost
        if keep >= 1.0:
            return False
        return self._rng.random() >= keep**packets

    def _latency_s(self) -> float:
        spec = self._spec
        rng = self._rng
        if spec.latency_dist == "normal" and spec.latency_sd_ms > 0:
            ms = max(0.0, rng.gauss(spec.latency_ms, spec.latency_sd_ms))
        elif spec.latency_dist == "pareto":
            scale = spec.latency_ms * (spec.pareto_shape - 1.0) / spec.pareto_shape
            ms = scale * rng.paretovariate(spec.pareto_shape)
        else:
            ms = spec.latency_ms
        if spec.jitter_ms > 0:
            ms = max(0.0, ms + rng.uniform(-spec.jitter_ms, spec.jitter_ms))
        if spec.reorder > 0 and rng.random() < spec.reorder:
            ms += spec.reorder_ms
        return ms / 1000.0
