"""The publisher side of the relay: :class:`SourceTap` sits on a publisher's
``RTCRtpReceiver`` in place of its jitter buffer (R1, R2), so aiortc still does SRTP, NACK,
REMB and RTX but never decodes, admits each packet (SSRC, payload type, rate) and hands it on
as a :class:`SourcePacket` (VP8 descriptor and audio level parsed); it asks the publisher for
keyframes (R3) through its throttle.

Part of the aiortc driver (``meshnode.media.aiortc_driver`` says how its files fit).
"""

import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiortc import RTCRtpReceiver, RTCRtpTransceiver
from aiortc.codecs import is_rtx
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtp import RtpPacket

from meshnode.media.aiortc_hooks import _RX_JITTER_BUFFER
from meshnode.media.forwarding import KeyframeThrottle, PacketInfo, RateLimit
from meshnode.media.rtp import MediaDecodeError, Vp8Info, parse_vp8
from meshnode.media.transport_guard import guard_transport

# (the driver's logger, as before the split: its name is what operators filter on)
logger = logging.getLogger("meshnode.media.aiortc_driver")

DEFAULT_CLOCK_RATE = {"audio": 48000, "video": 90000}


def _codec_map(transceiver: RTCRtpTransceiver) -> dict[int, RTCRtpCodecParameters]:
    codecs: list[RTCRtpCodecParameters] = transceiver._codecs
    return {c.payloadType: c for c in codecs if c.payloadType is not None}


@dataclass(frozen=True, slots=True)
class SourcePacket:
    """One tapped packet of a source, as the forwarder needs it.

    ``payload`` is the RTP payload exactly as the publisher sent it (no padding);
    ``audio_level`` is the RFC 6464 (voice, -dBov) pair when the packet carried one; ``vp8``
    the parsed VP8 descriptor for VP8 video.
    """

    info: PacketInfo
    payload: bytes
    payload_type: int
    ssrc: int
    mime_type: str
    clock_rate: int
    audio_level: tuple[bool, int] | None
    vp8: Vp8Info | None


PacketHandler = Callable[["SourceTap", SourcePacket, float], Awaitable[None]]


class _TapBuffer:
    """Stands in for aiortc's JitterBuffer (R1): keeps the packet, never yields a frame, so the
    receiver's decoder thread never gets work and no decoder is ever created."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.packet: RtpPacket | None = None

    def add(self, packet: RtpPacket) -> tuple[bool, None]:
        self.packet = packet
        return False, None


class SourceTap:
    """Taps a publisher's ``RTCRtpReceiver`` (the receiver of ``transceiver``).

    ``on_packet(tap, packet, now)`` is awaited for every admitted packet. ``ssrc``: the SSRC
    the publisher announced (None: the first one seen); packets on any other SSRC are dropped
    (``ssrc``), as are packets over ``max_kbps`` (``rate``: give a generous multiple of the
    announced rate), unknown payload types (``payload_type``), payloads aiortc cannot
    depayload (``malformed``) and malformed VP8 descriptors (``vp8_descriptor``).
    ``clock`` gives ``now`` (seconds, monotonic).
    """

    def __init__(
        self,
        transceiver: RTCRtpTransceiver,
        *,
        source_id: str = "",
        on_packet: PacketHandler | None = None,
        ssrc: int | None = None,
        max_kbps: float | None = None,
        keyframe_interval_s: float = 0.3,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.transceiver = transceiver
        self.receiver: RTCRtpReceiver = transceiver.receiver
        self.kind: str = transceiver.kind
        self.source_id = source_id
        self.on_packet = on_packet
        self.ssrc = ssrc
        self.rtx_ssrc: int | None = None
        self.payload_type: int | None = None
        self.last_sequence_number: int | None = None
        self.mime_type: str | None = None
        self.packets = 0
        self.bytes = 0
        self.dropped: Counter[str] = Counter()
        self.audio_level: int | None = None
        self.voice = False
        self.audio_level_at: float | None = None
        self.keyframe_requests = 0
        self.layer_bytes: Counter[int] = Counter()
        """Payload bytes per VP8 temporal layer (TID) so far: per-layer rates."""
        self.throttle = KeyframeThrottle(keyframe_interval_s)
        self._clock = clock
        self._rate = RateLimit(max_kbps) if max_kbps is not None else None
        self._codecs: dict[int, RTCRtpCodecParameters] = {}
        self._clock_rate = DEFAULT_CLOCK_RATE.get(self.kind, 90000)
        self._original_buffer = getattr(self.receiver, _RX_JITTER_BUFFER)
        self._buffer = _TapBuffer(getattr(self._original_buffer, "capacity", 0))
        setattr(self.receiver, _RX_JITTER_BUFFER, self._buffer)  # R1
        self.receiver._handle_rtp_packet = self._handle_rtp_packet  # type: ignore[method-assign]
        self._original_handle = type(self.receiver)._handle_rtp_packet.__get__(self.receiver)

    @property
    def attached(self) -> bool:
        """True while the receiver holds this tap instead of its jitter buffer (R1)."""
        return getattr(self.receiver, _RX_JITTER_BUFFER) is self._buffer

    @property
    def clock_rate(self) -> int:
        """The RTP clock rate of the source's codec (a default for its kind until known)."""
        return self._clock_rate

    def set_max_kbps(self, max_kbps: float | None) -> None:
        """Drop (as ``rate``) what goes over ``max_kbps`` from now on (None: no limit)."""
        self._rate = RateLimit(max_kbps) if max_kbps is not None else None

    def detach(self) -> None:
        """Give the receiver back its own jitter buffer and packet handler."""
        setattr(self.receiver, _RX_JITTER_BUFFER, self._original_buffer)
        self.receiver.__dict__.pop("_handle_rtp_packet", None)
        self.on_packet = None

    async def request_keyframe(self) -> bool:
        """Send a PLI to the publisher (R3), at most once per ``keyframe_interval_s``.
        Returns whether one was sent."""
        if self.kind != "video" or self.ssrc is None:
            return False
        if not self.throttle.request(self._clock()):
            # Counted: a subscriber flooding PLI/FIR shows here, never upstream.
            self.dropped["keyframe_throttled"] += 1
            return False
        self.keyframe_requests += 1
        await self.receiver._send_rtcp_pli(self.ssrc)
        return True

    def _drop(self, reason: str) -> None:
        if not self.dropped[reason]:
            logger.warning("media source %s: dropping packets (%s)", self.source_id, reason)
        self.dropped[reason] += 1

    def _codec(self, payload_type: int) -> RTCRtpCodecParameters | None:
        codec = self._codecs.get(payload_type)
        if codec is None:  # first packet or renegotiated: reread the transceiver's codecs
            self._codecs = _codec_map(self.transceiver)
            codec = self._codecs.get(payload_type)
        return codec

    def _admit(self, packet: RtpPacket, now: float) -> str | None:
        """Why the packet must not reach aiortc, or None."""
        codec = self._codec(packet.payload_type)
        if codec is None:
            return "payload_type"
        if is_rtx(codec):
            if self.rtx_ssrc is None:
                self.rtx_ssrc = packet.ssrc
            elif packet.ssrc != self.rtx_ssrc:
                return "ssrc"
        elif self.ssrc is None:
            self.ssrc = packet.ssrc
        elif packet.ssrc != self.ssrc:
            return "ssrc"
        size = len(packet.payload) + packet.padding_size
        if self._rate is not None and not self._rate.allow(size, now):
            return "rate"
        self.packets += 1
        self.bytes += size
        return None

    async def _handle_rtp_packet(self, packet: RtpPacket, arrival_time_ms: int) -> None:
        """R2: replaces ``receiver._handle_rtp_packet`` on this instance."""
        # Here, not at creation: bundling may move the receiver to another transport.
        guard_transport(self.receiver.transport)
        now = self._clock()
        reason = self._admit(packet, now)
        if reason is not None:
            self._drop(reason)
            return
        await self._original_handle(packet, arrival_time_ms=arrival_time_ms)
        tapped, self._buffer.packet = self._buffer.packet, None
        if tapped is None:  # aiortc dropped it: payload it cannot depayload, bad RTX
            self._drop("malformed")
            return
        self.last_sequence_number = tapped.sequence_number
        source_packet = self._source_packet(tapped, now)
        if source_packet is None or self.on_packet is None:
            return
        try:
            await self.on_packet(self, source_packet, now)
        except Exception:  # never into aiortc's receive loop: that would stop the whole PC
            logger.exception("media source %s: forwarding failed", self.source_id)
            self.dropped["error"] += 1

    def _source_packet(self, packet: RtpPacket, now: float) -> SourcePacket | None:
        codec = self._codec(packet.payload_type)
        if codec is None:
            return None
        self.payload_type = packet.payload_type
        self.mime_type = codec.mimeType
        self._clock_rate = codec.clockRate
        level = packet.extensions.audio_level
        if level is not None:
            self.voice, self.audio_level = bool(level[0]), int(level[1])
            self.audio_level_at = now
        vp8: Vp8Info | None = None
        keyframe = frame_start = True
        tid: int | None = None
        layer_sync = False
        # Video codecs other than VP8 are not parsed: every packet counts as a frame start and
        # a keyframe (no gate, no layer filter); decoders recover on the next keyframe.
        if self.kind == "video" and codec.mimeType.lower() == "video/vp8":
            try:
                vp8 = parse_vp8(packet.payload)
            except MediaDecodeError as exc:
                self._drop(exc.reason)
                return None
            keyframe, frame_start = vp8.keyframe, vp8.frame_start
            tid, layer_sync = vp8.tid, vp8.layer_sync
            if tid is not None:
                self.layer_bytes[tid] += len(packet.payload)
        info = PacketInfo(
            sequence_number=packet.sequence_number,
            timestamp=packet.timestamp,
            marker=bool(packet.marker),
            keyframe=keyframe,
            frame_start=frame_start,
            tid=tid,
            size=len(packet.payload),
            layer_sync=layer_sync,
        )
        return SourcePacket(
            info=info,
            payload=packet.payload,
            payload_type=packet.payload_type,
            ssrc=packet.ssrc,
            mime_type=codec.mimeType,
            clock_rate=codec.clockRate,
            audio_level=(bool(level[0]), int(level[1])) if level is not None else None,
            vp8=vp8,
        )
