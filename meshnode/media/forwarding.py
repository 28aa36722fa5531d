"""Per-(source, subscriber) RTP forwarding state: the sans-I/O core of the media relay.

An :class:`Output` decides, packet by packet, whether one source's packet goes to one
subscriber and with which sequence number and timestamp. The subscriber sees one clean stream:

- sequence numbers are rewritten so that packets the relay drops (pause, keyframe gate,
  temporal-layer filter) leave no gap, so the subscriber never NACKs what was dropped on
  purpose; a gap the publisher's network made is kept, so the subscriber's NACK and the
  publisher's retransmission still fill it;
- timestamps keep a constant offset (media time goes on during a pause), and are rebased from
  the clock only when the source restarts (a sequence jump over ``MAX_DROPOUT``);
- video starts, and restarts after a resume, on a keyframe (``wants_keyframe`` says when the
  driver should ask the publisher for one; :class:`KeyframeThrottle` bounds how often);
- temporal layers are filtered per frame, never inside one: going down is immediate, going up
  waits for a frame with the layer-sync bit one layer up (or a keyframe), so every forwarded
  frame is decodable.

No clocks, no I/O: ``now`` is passed in, results are values (:class:`Forward`, :class:`Drop`).
"""

from bisect import bisect_right
from collections import Counter
from dataclasses import dataclass
from enum import StrEnum

SEQ_MOD = 1 << 16
TS_MOD = 1 << 32
# RFC 3550 A.1: a forward jump larger than this is a restarted source, not loss.
MAX_DROPOUT = 3000
MAX_TID = 3  # VP8 TID is two bits
# Late (reordered or retransmitted) packets are matched to frames and offsets this far back.
FRAME_MEMORY = 128
REBASE_MEMORY = 32


class DropReason(StrEnum):
    """Why an :class:`Output` did not forward a packet (stable metric labels)."""

    PAUSED = "paused"
    AWAITING_KEYFRAME = "awaiting_keyframe"
    LAYER = "layer"
    LATE = "late"


@dataclass(frozen=True, slots=True)
class PacketInfo:
    """What forwarding needs to know about one source packet.

    ``keyframe`` and ``frame_start`` come from the codec payload (for audio both are True);
    ``tid`` is the temporal layer or None; ``size`` is the payload size in bytes;
    ``layer_sync`` is the VP8 Y bit (the frame depends on base-layer frames only).
    """

    sequence_number: int
    timestamp: int
    marker: bool
    keyframe: bool
    frame_start: bool
    tid: int | None
    size: int
    layer_sync: bool = False


@dataclass(frozen=True, slots=True)
class Forward:
    """Send the packet with these rewritten header values."""

    sequence_number: int
    timestamp: int


@dataclass(frozen=True, slots=True)
class OutputEnd:
    """Where an output left its subscriber's stream, so that the next output on the same
    sender (a receive slot reused for another source) continues it: ``next_sequence_number``
    follows the last one sent, and ``timestamp`` was sent at ``at`` (``now``), in units of
    ``clock_rate``. A receiver that saw a jump on one SSRC would count it as loss and NACK
    it (sequence) or stretch its jitter buffer (timestamp)."""

    next_sequence_number: int
    timestamp: int
    at: float
    clock_rate: int


@dataclass(frozen=True, slots=True)
class Drop:
    """Do not send the packet; ``reason`` is a :class:`DropReason` value."""

    reason: str


class Output:
    """One source forwarded to one subscriber.

    ``kind`` is ``"audio"`` or ``"video"``; video is gated on keyframes, audio is not.
    ``first_sequence_number`` / ``first_timestamp`` are the subscriber-side values of the first
    forwarded packet (the driver draws them at random, as RTP senders do); ``after``, when
    given, continues where an earlier output on the same sender ended instead: its next
    sequence number, and its last timestamp plus the media time elapsed since.
    """

    def __init__(
        self,
        kind: str,
        clock_rate: int,
        *,
        first_sequence_number: int = 0,
        first_timestamp: int = 0,
        after: OutputEnd | None = None,
    ) -> None:
        if kind not in ("audio", "video"):
            raise ValueError(f"kind must be 'audio' or 'video', not {kind!r}")
        if clock_rate <= 0:
            raise ValueError(f"clock_rate must be positive, not {clock_rate}")
        self.kind = kind
        self._video = kind == "video"
        self.clock_rate = clock_rate
        self.sent_packets = 0
        self.sent_bytes = 0
        self.dropped: Counter[str] = Counter()
        self._paused = False
        self._max_tid: int | None = None
        self._cur_tid = MAX_TID
        self._awaiting_keyframe = kind == "video"
        # Input sequence numbers are unwrapped to unbounded ints ("ext").
        self._highest: int | None = None
        # Output: out_ext = in_ext + offset; emitted modulo 2**16. _next_out = highest out + 1.
        self._after = after
        if after is not None:
            first_sequence_number = after.next_sequence_number
        self._next_out = first_sequence_number & 0xFFFF
        self._started = False
        self._first_timestamp = first_timestamp & 0xFFFFFFFF
        self._offset = 0
        # Each rebase starts a region: (first in_ext, offset); late packets use their region's
        # offset and may not reach the next region's first output number.
        self._rebases: list[tuple[int, int]] = []
        self._needs_rebase = True
        self._first_dropped: int | None = None  # in-order drops since the last forward
        self._last_dropped: int | None = None
        self._last_fwd: int | None = None  # highest in_ext forwarded, and its marker bit
        self._last_fwd_marker = True
        self._ts_offset = 0
        self._rebase_ts = False
        self._last_out_ts = 0
        self._last_out_now = 0.0
        # The decision of the current frame (by input timestamp) and of recent frames.
        self._cur_ts: int | None = None
        self._cur_decision: str | None = None
        self._frames: dict[int, str | None] = {}
        self.out_sequence_number = 0
        """The rewritten sequence number of the last packet :meth:`rewrite` forwarded."""
        self.out_timestamp = 0
        """The rewritten timestamp of the last packet :meth:`rewrite` forwarded."""

    # -- control -------------------------------------------------------------------------

    @property
    def paused(self) -> bool:
        """True while every packet is dropped (``pause()`` until ``resume()``)."""
        return self._paused

    @property
    def max_tid(self) -> int | None:
        """The highest temporal layer forwarded, None for all."""
        return self._max_tid

    @property
    def wants_keyframe(self) -> bool:
        """True while video waits for a keyframe: the driver should ask the source (throttled)."""
        return self._awaiting_keyframe and not self._paused

    def pause(self) -> None:
        """Stop forwarding after the current frame (the subscriber sees no gap when forwarding
        resumes)."""
        self._paused = True

    def resume(self, now: float) -> bool:
        """Forward again. Returns True when the source should be asked for a keyframe (video:
        nothing is forwarded until the next one starts)."""
        if not self._paused:
            return False
        self._paused = False
        self._forget_history()
        if self.kind == "video":
            self._awaiting_keyframe = True
        return self._awaiting_keyframe

    def set_max_tid(self, tid: int | None) -> None:
        """Forward temporal layers 0..tid only (None: all). Takes effect on a frame boundary:
        at once going down, at the next layer-sync frame (or keyframe) going up."""
        if tid is not None and not 0 <= tid <= MAX_TID:
            raise ValueError(f"max_tid must be None or 0..{MAX_TID}, not {tid}")
        self._max_tid = tid

    def end(self) -> OutputEnd | None:
        """Where this output's stream stands now (None: nothing was forwarded yet, so an
        output that continues it starts where this one would have)."""
        if not self._started:
            return self._after
        return OutputEnd(self._next_out % SEQ_MOD, self._last_out_ts, self._last_out_now,
                         self.clock_rate)

    # -- packets -------------------------------------------------------------------------

    def forward(self, info: PacketInfo, now: float) -> Forward | Drop:
        """Decide one packet of the source: :class:`Forward` with the rewritten sequence
        number and timestamp, or :class:`Drop` with the reason (also counted in ``dropped``)."""
        reason = self.rewrite(info, now)
        if reason is None:
            return Forward(self.out_sequence_number, self.out_timestamp)
        return Drop(reason)

    def rewrite(self, info: PacketInfo, now: float) -> str | None:
        """:meth:`forward` without a result object (the relay calls this once per copy):
        None when the packet is forwarded, its rewritten values then in
        ``out_sequence_number`` and ``out_timestamp``; else the drop reason (counted)."""
        seq = info.sequence_number & 0xFFFF
        highest = self._highest
        if highest is None:
            ext = seq
        else:
            delta = (seq - highest) & 0xFFFF
            if delta == 0 or delta >= SEQ_MOD // 2:
                return self._late(info, highest - (-delta & 0xFFFF), now)
            ext = highest + delta
            if delta > MAX_DROPOUT:
                self._restart()
        self._highest = ext
        timestamp = info.timestamp
        if self._paused and not (timestamp == self._cur_ts and self._cur_decision is None):
            # Pausing takes effect on a frame boundary: a frame cut short, with no sequence
            # gap to show it, would reach the subscriber's decoder as corrupt.
            self._cur_ts, self._cur_decision = timestamp, DropReason.PAUSED
            return self._drop(DropReason.PAUSED, ext)
        if timestamp != self._cur_ts:
            self._cur_ts = timestamp
            if self._video or info.tid is not None:
                decision = self._cur_decision = self._decide(info)
                frames = self._frames
                frames[timestamp] = decision
                if len(frames) > FRAME_MEMORY:
                    del frames[next(iter(frames))]
                if decision is not None:
                    return self._drop(decision, ext)
            else:
                # Audio without layers: every packet is a frame, never gated, so every
                # decision is "forward" (pausing is handled above) and a late packet finds
                # the same without a frame memory.
                self._cur_decision = None
        elif self._cur_decision is not None:
            return self._drop(self._cur_decision, ext)
        if self._needs_rebase:
            self._rebase(ext, info, now)
        # Forward (inline: this runs once per copy).
        out = ext + self._offset
        if out >= self._next_out:
            self._next_out = out + 1
        self._last_fwd = ext
        self._last_fwd_marker = info.marker
        self.out_sequence_number = out & 0xFFFF
        self.out_timestamp = self._last_out_ts = (timestamp + self._ts_offset) & 0xFFFFFFFF
        self._last_out_now = now
        self.sent_packets += 1
        self.sent_bytes += info.size
        return None

    def _decide(self, info: PacketInfo) -> str | None:
        """Forward (None) or drop (reason) the frame that ``info`` starts."""
        if self._awaiting_keyframe:
            if not (info.keyframe and info.frame_start):
                return DropReason.AWAITING_KEYFRAME
            self._awaiting_keyframe = False
            self._cur_tid = self._target_tid()
            return None
        if info.tid is None:
            return None
        target = self._target_tid()
        if info.keyframe or self._cur_tid > target:
            self._cur_tid = target  # a keyframe resets references; going down is immediate
        if info.tid <= self._cur_tid:
            return None
        if info.layer_sync and info.tid == self._cur_tid + 1 and info.tid <= target:
            self._cur_tid = info.tid  # this frame depends on base layers only: step up
            return None
        return DropReason.LAYER

    def _target_tid(self) -> int:
        return MAX_TID if self._max_tid is None else self._max_tid

    def _rebase(self, ext: int, info: PacketInfo, now: float) -> None:
        """Continue the output sequence right after the last forwarded packet."""
        if not self._started:
            self._started = True
            first_ts = self._first_timestamp
            if self._after is not None:
                # Media time went on since the previous output's last packet.
                elapsed = max(1, round((now - self._after.at) * self.clock_rate))
                first_ts = (self._after.timestamp + elapsed) % TS_MOD
            self._ts_offset = (first_ts - info.timestamp) % TS_MOD
            base = ext
        else:
            # Packets missing between the last drop and this one belong to this frame unless
            # this packet starts it: keep that gap so NACKs can still fill it.
            base = ext
            if not info.frame_start and self._last_dropped is not None:
                base = min(ext, self._last_dropped + 1)
            # Likewise packets missing after the last forwarded one, if its frame had not
            # ended (no marker) when the drops began: keep their slots for retransmissions.
            if (
                self._last_fwd is not None
                and not self._last_fwd_marker
                and self._first_dropped is not None
            ):
                self._next_out += max(0, self._first_dropped - self._last_fwd - 1)
            if self._rebase_ts:
                elapsed = max(1, round((now - self._last_out_now) * self.clock_rate))
                self._ts_offset = (self._last_out_ts + elapsed - info.timestamp) % TS_MOD
        self._rebase_ts = False
        self._offset = self._next_out - base
        self._rebases.append((base, self._offset))
        del self._rebases[:-REBASE_MEMORY]
        self._needs_rebase = False
        self._first_dropped = self._last_dropped = None

    def _drop(self, reason: str, ext: int | None) -> str:
        if ext is not None:  # an in-order packet: the next forwarded one closes the gap
            self._needs_rebase = True
            self._last_dropped = ext
            if self._first_dropped is None:
                self._first_dropped = ext
        self.dropped[reason] += 1
        return reason

    def _late(self, info: PacketInfo, ext: int, now: float) -> str | None:
        """A reordered, retransmitted or duplicate packet: forward it only into the frame and
        the sequence slot it belongs to."""
        if self._paused:
            return self._drop(DropReason.PAUSED, None)
        if info.timestamp in self._frames:
            decision = self._frames[info.timestamp]
        elif self._awaiting_keyframe:
            decision = DropReason.AWAITING_KEYFRAME
        elif info.tid is not None and info.tid > self._cur_tid:
            decision = DropReason.LAYER
        else:  # a whole frame that was late: it passes the current filter
            decision = None
            if self._video or info.tid is not None:  # (audio keeps no frame memory)
                frames = self._frames
                frames[info.timestamp] = None
                while len(frames) > FRAME_MEMORY:  # late frames must not grow it either
                    del frames[next(iter(frames))]
        if decision is not None:
            return self._drop(decision, None)
        i = bisect_right(self._rebases, ext, key=lambda r: r[0]) - 1
        if i < 0:
            return self._drop(DropReason.LATE, None)
        out = ext + self._rebases[i][1]
        limit = sum(self._rebases[i + 1]) if i + 1 < len(self._rebases) else self._next_out
        if out >= limit:  # the slot belongs to a later region: the gap was closed
            return self._drop(DropReason.LATE, None)
        self.sent_packets += 1
        self.sent_bytes += info.size
        self.out_sequence_number = out % SEQ_MOD
        self.out_timestamp = (info.timestamp + self._ts_offset) % TS_MOD
        return None

    def _restart(self) -> None:
        """The source jumped (a new stream): forget its history, rebase the clock."""
        self._forget_history()
        self._rebase_ts = self._started
        if self.kind == "video":
            self._awaiting_keyframe = True

    def _forget_history(self) -> None:
        self._frames.clear()
        self._rebases.clear()
        self._cur_ts = None
        self._cur_decision = None
        self._needs_rebase = True
        self._last_fwd = None


class KeyframeThrottle:
    """At most one keyframe request (PLI) upstream per ``min_interval_s`` for one source.

    Both the relay's own requests (an output waiting for a keyframe) and subscribers' PLI/FIR go
    through it, so a subscriber flooding PLIs costs the publisher one keyframe per interval.
    """

    def __init__(self, min_interval_s: float = 0.3) -> None:
        self.min_interval_s = min_interval_s
        self.sent = 0
        self.suppressed = 0
        self._last: float | None = None

    def request(self, now: float) -> bool:
        """True: send a keyframe request upstream now. False: one was sent too recently."""
        if self._last is not None and now - self._last < self.min_interval_s:
            self.suppressed += 1
            return False
        self._last = now
        self.sent += 1
        return True


class RateLimit:
    """A token bucket over bytes: ``allow(size, now)`` is False once a source sends more than
    ``kbps`` on average over ``burst_s`` seconds (the driver drops those packets as ``rate``)."""

    def __init__(self, kbps: float, burst_s: float = 1.0) -> None:
        if kbps <= 0 or burst_s <= 0:
            raise ValueError(f"kbps and burst_s must be positive, not {kbps}, {burst_s}")
        self.bytes_per_s = kbps * 1000 / 8
        self.capacity = self.bytes_per_s * burst_s
        self._tokens = self.capacity
        self._last: float | None = None

    def allow(self, size: int, now: float) -> bool:
        """Take ``size`` bytes from the bucket if they are there."""
        if self._last is not None:
            elapsed = max(0.0, now - self._last)
            self._tokens = min(self.capacity, self._tokens + elapsed * self.bytes_per_s)
        self._last = now
        if size > self._tokens:
            return False
        self._tokens -= size
        return True
