"""The reliable channel of a link, recovered the way aiortc's SCTP recovers it.

One :class:`ReliableChannel` is the ``sync`` data channel of one link direction: the sender's
side (outstanding messages, SACK processing, the T3 timer, the RTO estimator) and the
receiver's side (cumulative TSN, out-of-order buffer, in-order delivery, one SACK per arrival).
It follows ``aiortc/rtcsctptransport.py`` (the version installed with meshnode; its constants
are imported from it, never copied):

- **SACKs.** The receiver answers every DATA packet at once (``_handle_data`` sends a SACK
  whenever one is needed; aiortc has no delayed ack). A SACK carries the cumulative TSN and
  gap blocks; it is a packet on the reverse direction (93 B + 4 per gap block: it waits in that
  direction's bandwidth queue behind data, and is lost like any packet there).
- **Fast retransmit.** On a SACK whose gap blocks newly acknowledge a TSN (the "highest TSN
  newly acked"), every missing TSN below it gets a miss; at the third miss it is retransmitted
  at once (``_receive_sack_chunk``). A SACK that newly acknowledges nothing strikes nothing.
  A retransmitted message starts counting again from zero, and can be fast-retransmitted again.
- **T3.** ``RTO = max(SCTP_RTO_MIN, min(SRTT + 4 RTTVAR, SCTP_RTO_MAX))`` (RFC 4960 estimator,
  alpha 1/8, beta 1/4; ``SCTP_RTO_INITIAL`` before the first sample; only messages sent once
  give samples). T3 starts when data goes out with no timer running, restarts whenever the
  cumulative ack advances with data still outstanding or the earliest outstanding message is
  retransmitted, and stops when nothing is outstanding. On expiry every outstanding message is
  marked for retransmission and cwnd drops to one packet: the earliest goes at once, the rest
  once a SACK advances the cumulative ack (about one round trip later). **The RTO is not
  doubled on expiry** (``_t3_expired`` leaves ``_rto`` alone), so a link cut for seconds
  retransmits once per RTO.

- **Congestion window** (:meth:`ReliableChannel._depart`), in rounds of one round trip: a
  new association starts with aiortc's ``3 * USERDATA_MAX_LENGTH`` bytes; a chunk leaves
  while less than the window is in flight in the current round, else in the next round; a
  round that filled the window doubles it (slow start: each SACK adds up to one chunk, and
  aiortc grows the window only when it was fully used; its ``ssthresh`` starts at the peer's
  receive window, so a resync stays in slow start), up to ``ssthresh`` and then one chunk per
  round. A T3 expiry sets the window to one chunk and ``ssthresh`` to half the window (at
  least 4 chunks), as ``_t3_expired`` does. Scene traffic (a few hundred bytes per round trip)
  never fills the window; the burst that resyncs a node after a partition does, and takes a
  few round trips more than one.

A message is the unit (one TSN per message, ``packets`` packets on the wire): it is lost if
any of its packets is, and each of its packets that arrives sends one SACK (each newly acks
one chunk, so a k-packet message counts up to k misses against an earlier hole). Not
modelled: the ``presence`` channel's share of the TSN space (its packets would add gap
reports), the window's halving at a fast retransmit (the halved window, at least 4 chunks,
is above what scene traffic uses), and the window's gating of retransmissions.

Everything runs on the simulation's virtual clock through the ``schedule`` callback it hands
in; the only randomness is the links' own ``random.Random``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from aiortc.rtcsctptransport import (
    SCTP_RTO_ALPHA,
    SCTP_RTO_BETA,
    SCTP_RTO_INITIAL,
    SCTP_RTO_MAX,
    SCTP_RTO_MIN,
    USERDATA_MAX_LENGTH,
)


class _Spec(Protocol):
    """What the channel reads of a direction's ``netsim.links.LinkSpec``."""

    @property
    def rto_min_ms(self) -> float: ...

    @property
    def rto_max_ms(self) -> float: ...

    @property
    def latency_ms(self) -> float: ...

    @property
    def mtu(self) -> int: ...

    def packets(self, size: int) -> int: ...


class Link(Protocol):
    """What the channel needs of one direction of a ``netsim.links.Link`` (a protocol, so
    that ``netsim.links``, which owns channels, and this module do not import each other)."""

    @property
    def spec(self) -> _Spec: ...

    cut: bool
    retransmissions: int
    frames_lost: int
    frames_delivered: int

    def clean_path(self) -> bool: ...

    def attempt(self, size: int, now: float) -> float | None: ...

    def ack(self, now: float, gaps: int = 0) -> float | None: ...

__all__ = [
    "FAST_RETRANSMIT_MISSES",
    "SCTP_RTO_INITIAL",
    "SCTP_RTO_MAX",
    "SCTP_RTO_MIN",
    "ReliableChannel",
    "Schedule",
]

#: Misses that trigger a fast retransmit (``if schunk._misses == 3`` in aiortc).
FAST_RETRANSMIT_MISSES = 3
#: A new association's congestion window (``self._cwnd = 3 * USERDATA_MAX_LENGTH``), bytes.
INITIAL_CWND = 3 * USERDATA_MAX_LENGTH
#: The least ``ssthresh`` after a T3 expiry (``max(self._cwnd // 2, 4 * USERDATA_MAX_LENGTH)``).
MIN_SSTHRESH = 4 * USERDATA_MAX_LENGTH

Schedule = Callable[..., None]
"""``schedule(when, fn, *args)``: run ``fn(*args)`` at virtual time ``when``."""


def _gap_blocks(buffered: dict[int, Any]) -> int:
    """How many gap ack blocks a SACK carries: runs of consecutive TSNs held out of order."""
    blocks = 0
    previous = None
    for tsn in sorted(buffered):
        if previous is None or tsn != previous + 1:
            blocks += 1
        previous = tsn
    return blocks



@dataclass(slots=True)
class _Message:
    """One outstanding message at the sender."""

    tsn: int
    size: int
    payload: Any
    sent_at: float
    sent_count: int = 1
    misses: int = 0
    acked: bool = False  # acknowledged by a gap block (not yet by the cumulative TSN)
    retransmit: bool = False  # marked by T3, waits for the window


class ReliableChannel:
    """The ``sync`` channel of one link direction (see the module docstring)."""

    def __init__(self, link: Link, schedule: Schedule, clock: Callable[[], float],
                 deliver: Callable[[Any], None]) -> None:
        self.link = link
        self.schedule = schedule
        self.clock = clock
        self.deliver = deliver
        self.reverse: Link | None = None  # the other direction: where SACKs travel
        self.generation = 0
        self._reset_state()
        # Counters (cumulative over associations).
        self.fast_retransmits = 0
        self.t3_expiries = 0
        self.sacks_sent = 0
        self.sacks_lost = 0

    def _reset_state(self) -> None:
        self.next_tsn = 0
        self.outstanding: dict[int, _Message] = {}  # insertion order = TSN order
        # Sent on a clean path without SACK bookkeeping: they can only be lost if a partition
        # swallows them on the wire, and then they join ``outstanding`` (see _arrive).
        # (size, payload, sent at): a _Message is made only if one of them is lost.
        self.in_flight: dict[int, tuple[int, Any, float]] = {}
        self.cum_acked = -1
        self.srtt: float | None = None
        self.rttvar = 0.0
        self.rto = SCTP_RTO_INITIAL
        self.t3_deadline: float | None = None
        self._t3_scheduled: float | None = None
        # Receiver side.
        self.rcv_cum = -1
        self.rcv_buffer: dict[int, Any] = {}
        # Congestion window (see _depart): bytes, and the current round of one round trip.
        self.cwnd = float(INITIAL_CWND)
        self.ssthresh = float("inf")  # the peer's receive window: never reached by a resync
        self.round_end = float("-inf")
        self.round_bytes = 0.0
        self.round_full = False
        self.last_departure = float("-inf")
        self.queued = 0  # messages waiting for the window

    def reset(self) -> None:
        """A new association (the link closed and was opened again): everything in flight is
        gone; events already scheduled for the old one are ignored."""
        self.generation += 1
        self._reset_state()

    # ------------------------------------------------------------------ sender

    def send(self, size: int, now: float, payload: Any) -> None:
        """Send one message (it will be delivered, in order, unless the association resets)."""
        tsn = self.next_tsn
        self.next_tsn += 1
        depart = self._depart(size, now)
        if depart > now or self.queued:  # the window is full: it leaves when a later round
            self.queued += 1             # opens it (and after those queued before it)
            self.schedule(depart, self._send_queued, tsn, size, payload, self.generation)
            return
        if not self.outstanding and self.link.clean_path():
            self._send_clean(tsn, size, payload, now)
            return
        self._send_at(tsn, size, payload, self.generation)

    def _send_queued(self, tsn: int, size: int, payload: Any, generation: int) -> None:
        if generation == self.generation:
            self.queued -= 1
        self._send_at(tsn, size, payload, generation)

    def _depart(self, size: int, now: float) -> float:
        """When a message of ``size`` bytes offered at ``now`` leaves, given the congestion
        window (see the module docstring): its chunks go, in order, in the first round with
        less than a window in flight; a round that filled the window grows it."""
        spec = self.link.spec
        t = max(now, self.last_departure)
        mtu = spec.mtu
        if size <= mtu and t < self.round_end and self.round_bytes + max(1, size) < self.cwnd:
            # One chunk into a round with room to spare (scene traffic, nearly always): the
            # loop below would add it and change nothing else.
            self.round_bytes += max(1, size)
            self.last_departure = t
            return t
        reverse = self.reverse if self.reverse is not None else self.link
        rtt = self.srtt if self.srtt is not None else (
            spec.latency_ms + reverse.spec.latency_ms) / 1000.0
        left = max(1, size)
        while left > 0:
            if t >= self.round_end:  # the last round's SACKs are back: a new round
                if self.round_full:
                    grow = self.cwnd if self.cwnd < self.ssthresh else float(spec.mtu)
                    self.cwnd += grow
                self.round_end = t + max(rtt, 1e-6)
                self.round_bytes = 0.0
                self.round_full = False
            if self.round_bytes < self.cwnd:
                chunk = min(left, spec.mtu)
                self.round_bytes += chunk
                left -= chunk
                if self.round_bytes >= self.cwnd:
                    self.round_full = True
            else:
                self.round_full = True
                t = self.round_end
        self.last_departure = t
        return t

    def _send_clean(self, tsn: int, size: int, payload: Any, now: float) -> None:
        """Nothing to recover and nothing can be lost: no SACK bookkeeping needed (the
        arrival time is what the full model would compute, without its events)."""
        arrival = self.link.attempt(size, now)
        assert arrival is not None
        if self.srtt is None:
            self._update_rto(2.0 * (arrival - now))
        self.in_flight[tsn] = (size, payload, now)
        self.schedule(arrival, self._arrive, tsn, payload, 0, self.generation)

    def _send_at(self, tsn: int, size: int, payload: Any, generation: int) -> None:
        if generation != self.generation:
            return  # the association it was queued on is gone
        now = self.clock()
        if not self.outstanding and self.link.clean_path():
            self._send_clean(tsn, size, payload, now)
            return
        msg = _Message(tsn, size, payload, now)
        self.outstanding[tsn] = msg
        self._transmit(msg, now)
        if self.t3_deadline is None:
            self._t3_start(now)

    def _transmit(self, msg: _Message, now: float) -> None:
        arrival = self.link.attempt(msg.size, now)
        if arrival is not None:
            packets = self.link.spec.packets(msg.size)
            self.schedule(arrival, self._arrive, msg.tsn, msg.payload, packets, self.generation)

    def _retransmit(self, msg: _Message, now: float) -> None:
        msg.sent_count += 1
        msg.misses = 0
        msg.retransmit = False
        self.link.retransmissions += 1
        if next(iter(self.outstanding)) == msg.tsn:
            self._t3_start(now)  # the earliest outstanding TSN is being retransmitted
        self._transmit(msg, now)

    # ------------------------------------------------------------------ receiver

    def _arrive(self, tsn: int, payload: Any, packets: int, generation: int) -> None:
        if generation != self.generation:
            return  # an old association's packet
        fast = self.in_flight.pop(tsn, None) if not packets else None
        if self.link.cut:  # the partition swallowed it on the wire
            if fast is not None:  # the sender learns of it like any loss: recover it
                self.link.frames_lost += 1
                self.outstanding[tsn] = _Message(tsn, fast[0], fast[1], fast[2])
                self.outstanding = dict(sorted(self.outstanding.items()))
                if self.t3_deadline is None:
                    self._t3_start(self.clock())
            return
        if tsn == self.rcv_cum + 1 and not self.rcv_buffer:
            # The next in order with nothing held back (nearly always): straight through.
            self.rcv_cum = tsn
            self.link.frames_delivered += 1
            self.deliver(payload)
        elif tsn > self.rcv_cum and tsn not in self.rcv_buffer:
            self.rcv_buffer[tsn] = payload
            while self.rcv_cum + 1 in self.rcv_buffer:
                self.rcv_cum += 1
                self.link.frames_delivered += 1
                self.deliver(self.rcv_buffer.pop(self.rcv_cum))
        if packets:
            self._send_sack(packets)

    def _send_sack(self, packets: int) -> None:
        """One SACK per packet that arrived; each is a packet on the reverse direction (its
        queue, its loss), and the last to arrive carries the weight of those that survive."""
        reverse = self.reverse if self.reverse is not None else self.link
        now = self.clock()
        survived = 0
        last = 0.0
        gap_blocks = _gap_blocks(self.rcv_buffer)
        for _ in range(packets):
            self.sacks_sent += 1
            arrival = reverse.ack(now, gap_blocks)
            if arrival is None:
                self.sacks_lost += 1
            else:
                survived += 1
                last = max(last, arrival)
        if not survived:
            return
        gaps = frozenset(self.rcv_buffer)
        self.schedule(last, self._on_sack, self.rcv_cum, gaps, survived, self.generation)

    # ------------------------------------------------------------------ SACKs and T3

    def _on_sack(self, cum: int, gaps: frozenset[int], weight: int, generation: int) -> None:
        reverse = self.reverse if self.reverse is not None else self.link
        if generation != self.generation or cum < self.cum_acked or reverse.cut:
            return
        now = self.clock()
        self.cum_acked = cum
        out = self.outstanding
        done = 0
        for tsn in list(out):
            if tsn > cum:
                break
            msg = out.pop(tsn)
            done += 1
            if done == 1 and msg.sent_count == 1:
                self._update_rto(now - msg.sent_at)
        if gaps:
            highest_newly_acked = cum
            for tsn, msg in out.items():
                if tsn in gaps and not msg.acked:
                    msg.acked = True
                    highest_newly_acked = tsn
            for tsn, msg in list(out.items()):
                if tsn > highest_newly_acked:
                    break
                if tsn not in gaps and not msg.acked:
                    msg.misses += weight
                    if msg.misses >= FAST_RETRANSMIT_MISSES:
                        self.fast_retransmits += 1
                        self._retransmit(msg, now)
        if not out:
            self.t3_deadline = None
        elif done:
            self._t3_start(now)
            for msg in list(out.values()):
                if msg.retransmit:  # marked by T3: the window opened again
                    self._retransmit(msg, now)

    def _update_rto(self, r: float) -> None:
        if self.srtt is None:
            self.rttvar = r / 2
            self.srtt = r
        else:
            self.rttvar = (1 - SCTP_RTO_BETA) * self.rttvar + SCTP_RTO_BETA * abs(self.srtt - r)
            self.srtt = (1 - SCTP_RTO_ALPHA) * self.srtt + SCTP_RTO_ALPHA * r
        spec = self.link.spec
        self.rto = max(spec.rto_min_ms / 1000.0,
                       min(self.srtt + 4 * self.rttvar, spec.rto_max_ms / 1000.0))

    def _t3_start(self, now: float) -> None:
        """(Re)start T3. One engine event per timer run: a restart only moves the deadline,
        and the event, when it fires early, re-arms itself for the new deadline."""
        self.t3_deadline = now + self.rto
        if self._t3_scheduled is None:
            self._t3_scheduled = self.t3_deadline
            self.schedule(self.t3_deadline, self._t3_event, self.generation)

    def _t3_event(self, generation: int) -> None:
        if generation != self.generation:
            return
        self._t3_scheduled = None
        deadline = self.t3_deadline
        if deadline is None:
            return
        now = self.clock()
        if now < deadline:
            self._t3_scheduled = deadline
            self.schedule(deadline, self._t3_event, generation)
            return
        self.t3_deadline = None
        self.t3_expiries += 1
        self.ssthresh = max(self.cwnd / 2, float(MIN_SSTHRESH))
        self.cwnd = float(self.link.spec.mtu)
        msgs = list(self.outstanding.values())
        if not msgs:
            return
        for msg in msgs[1:]:
            if not msg.acked:
                msg.retransmit = True
        self._retransmit(msgs[0], now)  # cwnd is one packet: the earliest goes first
