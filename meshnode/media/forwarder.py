"""The glue of the relay: a :class:`Forwarder` fans one :class:`SourceTap` out to any number
of :class:`OutputSender`, each with its own :class:`meshnode.media.forwarding.Output`
(sequence/timestamp rewriting, keyframe gate, temporal-layer filter), in one synchronous pass
per source packet; an output's stream ends are kept per aiortc sender, so the next output on a
reused sender continues it.

Part of the aiortc driver (``meshnode.media.aiortc_driver`` says how its files fit).
"""

import asyncio
import random
import time
import weakref
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from aiortc import RTCRtpSender

from meshnode.media.forwarding import Forward, Output, OutputEnd
from meshnode.media.output_sender import OutputSender, _ntp_now
from meshnode.media.source_tap import SourcePacket, SourceTap


@dataclass(frozen=True, slots=True)
class OutputStats:
    """One subscriber's view of one source, for metrics and selection."""

    sent_packets: int
    sent_bytes: int
    dropped: dict[str, int]
    paused: bool
    max_tid: int | None
    estimate_kbps: float | None
    loss: float | None
    rtt_ms: float | None
    keyframe_requests: int


@dataclass(slots=True)
class _Entry:
    output: Output
    sender: OutputSender
    user_paused: bool


_stream_ends: "weakref.WeakKeyDictionary[RTCRtpSender, OutputEnd]" = weakref.WeakKeyDictionary()
"""Where the last output written into each aiortc sender left its stream (set when the output
is removed): the next output on that sender, whichever source it forwards, continues it."""


class Forwarder:
    """One source (a :class:`SourceTap`) fanned out to outputs (:class:`OutputSender`),
    each with its own :class:`Output` state, keyed by a name the caller chooses (e.g. the
    subscriber's peer ID). Outputs can be added, removed, paused, resumed and layer-limited
    while packets flow. Keyframe requests to the publisher (outputs waiting for a keyframe,
    subscribers' PLI/FIR) share the tap's throttle.

    Each source packet is written to every output in one synchronous pass (one NTP reading
    from ``wall_clock``, Unix time, for all its copies); only outputs whose sender is not
    ``direct`` are awaited one by one.
    """

    def __init__(self, tap: SourceTap, *, rng: random.Random | None = None,
                 wall_clock: Callable[[], float] = time.time) -> None:
        self.tap = tap
        self._rng = rng or random.Random()
        self._wall_clock = wall_clock
        self.copies_sent = 0
        """Packets sent to all outputs together so far (one per copy)."""
        self._outputs: dict[str, _Entry] = {}
        self._tasks: set[asyncio.Task[bool]] = set()
        tap.on_packet = self.on_packet

    @property
    def keys(self) -> tuple[str, ...]:
        """The keys of the current outputs."""
        return tuple(self._outputs)

    def add_output(
        self, key: str, sender: OutputSender, *, paused: bool = False, max_tid: int | None = None
    ) -> None:
        """Start forwarding to ``sender`` (video from the next keyframe, which is requested).
        If an earlier output wrote into the same aiortc sender (a receive slot reused for
        this source), its sequence numbers and timestamps go on from where it ended, so the
        subscriber sees one continuous stream on that SSRC."""
        if key in self._outputs:
            raise ValueError(f"output {key!r} already exists on source {self.tap.source_id!r}")
        output = Output(
            self.tap.kind,
            self.tap.clock_rate,
            first_sequence_number=self._rng.randrange(1 << 15),  # as aiortc: no early wrap
            first_timestamp=self._rng.randrange(1 << 32),
            after=_stream_ends.pop(sender.sender, None),
        )
        output.set_max_tid(max_tid)
        if paused or not sender.ready:
            output.pause()
        sender.on_keyframe_request = lambda: self._subscriber_wants_keyframe(key)
        self._outputs[key] = _Entry(output, sender, user_paused=paused)
        if output.wants_keyframe:
            self._request_keyframe()

    def remove_output(self, key: str) -> None:
        """Stop forwarding to ``key`` (no error if it is not there)."""
        entry = self._outputs.pop(key, None)
        if entry is not None:
            entry.sender.on_keyframe_request = None
            end = entry.output.end()
            if end is not None:
                _stream_ends[entry.sender.sender] = end

    def pause(self, key: str) -> None:
        """Stop sending to ``key`` (after the current frame); its sequence numbers go on
        without a gap on resume."""
        entry = self._outputs[key]
        entry.user_paused = True
        entry.output.pause()

    def resume(self, key: str) -> None:
        """Send to ``key`` again (video: from the next keyframe, requested now)."""
        entry = self._outputs[key]
        entry.user_paused = False
        if entry.sender.ready and entry.output.resume(self.tap._clock()):
            self._request_keyframe()

    def set_max_tid(self, key: str, tid: int | None) -> None:
        """Forward temporal layers 0..tid to ``key`` (None: all)."""
        self._outputs[key].output.set_max_tid(tid)

    def stats(self, key: str) -> OutputStats:
        """Counters and estimates of one output."""
        entry = self._outputs[key]
        output, sender = entry.output, entry.sender
        dropped = Counter(output.dropped)
        dropped.update(sender.dropped)
        return OutputStats(
            sent_packets=sender.sent_packets,
            sent_bytes=sender.sent_bytes,
            dropped=dict(dropped),
            paused=output.paused,
            max_tid=output.max_tid,
            estimate_kbps=sender.estimate_kbps,
            loss=sender.loss,
            rtt_ms=sender.rtt_ms,
            keyframe_requests=sender.keyframe_requests,
        )

    def close(self) -> None:
        """Remove every output and detach from the tap's callback."""
        for key in list(self._outputs):
            self.remove_output(key)
        if self.tap.on_packet == self.on_packet:
            self.tap.on_packet = None

    async def on_packet(self, tap: SourceTap, packet: SourcePacket, now: float) -> None:
        """The tap's callback: decide and send to every output."""
        wants_keyframe = False
        info = packet.info
        # One NTP reading for every copy (Sender Reports, abs-send-time): a subscriber's copy
        # leaves at a steady offset from it (its place in the pass), which a delay-based
        # estimate (REMB) does not see.
        ntp = _ntp_now(self._wall_clock())
        sent = 0
        # (a snapshot: an output added or removed while a copy is awaited waits for the next
        # packet)
        for entry in tuple(self._outputs.values()):
            output, sender = entry.output, entry.sender
            # Held paused while the subscriber's transport is not up: what it would miss
            # there must not count as sent, and it must start on a keyframe.
            if entry.user_paused or not sender.ready:
                if not output.paused:
                    output.pause()
            elif output.paused:
                output.resume(now)
            if output.rewrite(info, now) is None:
                if sender.direct:
                    sent += sender.send_copy(packet, output.out_sequence_number,
                                             output.out_timestamp, ntp)
                else:
                    sent += await sender.write(packet, Forward(output.out_sequence_number,
                                                               output.out_timestamp))
            elif output.wants_keyframe:
                wants_keyframe = True
        self.copies_sent += sent
        if wants_keyframe:
            await tap.request_keyframe()

    def _subscriber_wants_keyframe(self, key: str) -> None:
        entry = self._outputs.get(key)
        if entry is not None and not entry.output.paused:
            self._request_keyframe()

    def _request_keyframe(self) -> None:
        # Called from synchronous contexts (aiortc's PLI handler, add/resume): run the PLI
        # as a task; the throttle keeps it to one per interval.
        try:
            task = asyncio.get_running_loop().create_task(self.tap.request_keyframe())
        except RuntimeError:  # no running loop: the next packet's gate asks instead
            return
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
