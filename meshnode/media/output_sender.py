"""The subscriber side of the relay: :class:`OutputSender` writes forwarded packets into the
``RTCRtpSender`` of a subscriber's peer connection (its SSRC, payload type and header-extension
IDs) while aiortc's own RTP loop idles on an :class:`IdleTrack`; it keeps the NACK history
(:class:`RtxHistory`, S3) and the Sender Report counters (S6), sends the copies and the Sender
Reports on the connection's :class:`SrtpWire` (S7), sends subscribers' PLI/FIR upstream (S4)
and reads REMB, loss and RTT (S5).

Part of the aiortc driver (``meshnode.media.aiortc_driver`` says how its files fit).
"""

import asyncio
import struct
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from aiortc import RTCRtpSender, RTCRtpTransceiver
from aiortc.mediastreams import MediaStreamTrack
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtp import (
    RTCP_PSFB_APP,
    RTP_HISTORY_SIZE,
    HeaderExtensionsMap,
    RtcpPsfbPacket,
    RtcpRrPacket,
    RtcpSrPacket,
    RtpPacket,
    unpack_remb_fci,
)
from av.frame import Frame
from av.packet import Packet
from pylibsrtp import Error as SrtpError

from meshnode.media.aiortc_hooks import (
    _TX_EXTENSIONS_MAP,
    _TX_HISTORY,
    _TX_NTP,
    _TX_OCTETS,
    _TX_PACKETS,
    _TX_RTP_TS,
)
from meshnode.media.forwarding import Forward
from meshnode.media.rtp_out import ExtensionIds, RtpWriter
from meshnode.media.source_tap import SourcePacket
from meshnode.media.srtp_wire import SrtpWire
from meshnode.media.transport_guard import guard_transport

NTP_UNIX_OFFSET = 2_208_988_800  # seconds from 1900 (NTP) to 1970 (Unix)


class IdleTrack(MediaStreamTrack):
    """A placeholder track whose ``recv()`` never returns: the sender's own RTP loop waits on
    it forever (no encoder is created) while :class:`OutputSender` writes the packets."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind

    async def recv(self) -> "Frame | Packet[Any]":
        forever: asyncio.Future[Frame | Packet[Any]] = asyncio.get_running_loop().create_future()
        return await forever


def _ntp_now(unix_time: float) -> int:
    return int((unix_time + NTP_UNIX_OFFSET) * (1 << 32))


def extension_ids(extensions: HeaderExtensionsMap) -> tuple[ExtensionIds, bool]:
    """The IDs ``extensions`` (a sender's negotiated map) writes ``mid``, ``abs-send-time``
    and the audio level under, found through its public ``get`` (the IDs themselves are
    private); and whether one of them is over 14 (aiortc then writes the two-byte form)."""
    found: dict[str, int] = {}
    for x_id in range(1, 256):
        if x_id > 14 and len(found) == 3:
            break
        for value in (b"012", b"5"):  # abs-send-time and mid read 3 bytes; the level 1
            if x_id <= 14:
                data = bytes((x_id << 4 | (len(value) - 1),)) + value
                profile = 0xBEDE
            else:
                data = bytes((x_id, len(value))) + value
                profile = 0x1000
            try:
                # aiortc parses the value of every ID it knows: a size that does not fit
                # that extension raises, and says it is another one.
                got = extensions.get(profile, data + bytes(-len(data) % 4))
            except (ValueError, struct.error):
                continue
            for name, is_set in (("mid", got.mid is not None),
                                 ("abs", got.abs_send_time is not None),
                                 ("level", got.audio_level is not None)):
                if is_set:
                    found.setdefault(name, x_id)
    ids = ExtensionIds(found.get("mid"), found.get("abs"), found.get("level"))
    return ids, any(x_id > 14 for x_id in found.values())


class RtxHistory:
    """Stands in for the sender's RTP history (S3): what was sent, by sequence number modulo
    ``RTP_HISTORY_SIZE``, kept as the values it was written from; aiortc's ``_retransmit``
    (on a subscriber's NACK) gets an ``RtpPacket`` built only then, so the per-copy path
    builds none. ``ssrc``: the sender's."""

    def __init__(self, ssrc: int) -> None:
        self.ssrc = ssrc
        self.sent: list[tuple[int, bool, int, int, int, tuple[bool, int] | None, bytes,
                              str | None] | None] = [None] * RTP_HISTORY_SIZE

    def put(self, payload_type: int, marker: bool, sequence_number: int, timestamp: int,
            abs_send_time: int, audio_level: tuple[bool, int] | None, payload: bytes,
            mid: str | None) -> None:
        """Keep one sent packet (replacing the one ``RTP_HISTORY_SIZE`` earlier)."""
        self.sent[sequence_number % RTP_HISTORY_SIZE] = (
            payload_type, marker, sequence_number, timestamp, abs_send_time, audio_level,
            payload, mid)

    def get(self, index: int, default: RtpPacket | None = None) -> RtpPacket | None:
        """What aiortc's ``_retransmit`` calls: the packet in slot ``index``, rebuilt."""
        entry = self.sent[index % RTP_HISTORY_SIZE]
        if entry is None:
            return default
        payload_type, marker, seq, timestamp, abs_send_time, level, payload, mid = entry
        rtp = RtpPacket(payload_type=payload_type, marker=int(marker), sequence_number=seq,
                        timestamp=timestamp, ssrc=self.ssrc, payload=payload)
        rtp.extensions.mid = mid
        rtp.extensions.abs_send_time = abs_send_time
        rtp.extensions.audio_level = level
        return rtp


READY_RECHECK = 256
"""Writes after which an :class:`OutputSender` that was ready looks again (a renegotiation
may have changed its direction; a closed transport shows at once, as a failed send)."""


class OutputSender:
    """Writes forwarded packets into the ``RTCRtpSender`` of ``transceiver`` (a subscriber's
    peer connection), as if aiortc had produced them.

    ``on_keyframe_request()`` is called when the subscriber sends PLI or FIR (S4). REMB and
    receiver reports from the subscriber (S5) update ``estimate_kbps`` (None until a REMB),
    ``loss`` (fraction 0..1) and ``rtt_ms``. ``wall_clock`` gives Unix time (for NTP stamps).

    The per-copy path is lean (it bounds subscribers per core): the header is packed by an
    :class:`RtpWriter` (no ``RtpPacket`` per copy; the RTX history keeps values and rebuilds a
    packet only when one is NACKed), readiness is cached while sends succeed, the private
    Sender Report counters are updated through the sender's ``__dict__`` directly, and the
    datagram goes out on the connection's :class:`SrtpWire` in the caller's own call
    (:meth:`send_copy`), built and protected in place, not through aiortc's chain of
    coroutines.
    """

    def __init__(
        self,
        transceiver: RTCRtpTransceiver,
        *,
        on_keyframe_request: Callable[[], None] | None = None,
        wall_clock: Callable[[], float] = time.time,
        direct: bool = True,
    ) -> None:
        self.transceiver = transceiver
        self.sender: RTCRtpSender = transceiver.sender
        self.kind: str = transceiver.kind
        self.on_keyframe_request = on_keyframe_request
        self.estimate_kbps: float | None = None
        self.loss: float | None = None
        self.rtt_ms: float | None = None
        self.keyframe_requests = 0
        self.reports = 0
        """Receiver reports about this sender's SSRC so far (each updates ``loss``)."""
        self.sent_packets = 0
        self.sent_bytes = 0
        self.dropped: Counter[str] = Counter()
        self.direct = direct
        """True: copies go out on the :class:`SrtpWire`, synchronously (:meth:`send`); False:
        through aiortc's RTP send chain, one awaited :meth:`write` per copy (the old path,
        kept as the benchmark's same-run baseline)."""
        self._wire: SrtpWire | None = None
        self._wall_clock = wall_clock
        self._payload_types: dict[tuple[str, int], int | None] = {}
        # The codec of the last copy sent, and its payload type here: (mime type, clock
        # rate, payload type); one source's packets all match it.
        self._last_codec: tuple[str | None, int, int] = (None, 0, 0)
        self._ready_for = 0  # writes left before readiness is looked at again
        self._writer: RtpWriter | None = None
        self._two_byte = False  # aiortc writes this sender's extensions in the two-byte form
        self._mid: str | None = None
        self._state = self.sender.__dict__  # S3, S6: the sender's private attributes
        history = self._state.get(_TX_HISTORY)
        if not isinstance(history, RtxHistory):  # (a reused slot keeps its history)
            history = RtxHistory(self.ssrc)
            self._state[_TX_HISTORY] = history  # S3
        self._history = history
        if self.sender.track is None:
            self.sender.replaceTrack(IdleTrack(self.kind))
        self.sender._send_keyframe = self._send_keyframe  # type: ignore[method-assign]  # S4
        self._original_rtcp = type(self.sender)._handle_rtcp_packet.__get__(self.sender)
        self.sender._handle_rtcp_packet = self._handle_rtcp_packet  # type: ignore[method-assign]
        self._original_send_rtcp = type(self.sender)._send_rtcp.__get__(self.sender)
        self.sender._send_rtcp = self._send_rtcp  # type: ignore[method-assign]  # S7

    @property
    def ssrc(self) -> int:
        """The SSRC this sender announced to the subscriber (S1)."""
        ssrc: int = self.sender._ssrc
        return ssrc

    @property
    def ready(self) -> bool:
        """True once negotiated for sending and the DTLS transport is connected (the
        :class:`Forwarder` holds the output paused until then, so it starts on a keyframe)."""
        if self._ready_for > 0:
            self._ready_for -= 1
            return True
        ready = (self.transceiver.currentDirection in ("sendonly", "sendrecv")
                 and self.sender.transport.state == "connected")
        if ready:
            self._ready_for = READY_RECHECK
            guard_transport(self.sender.transport)
            self._wire = SrtpWire.of(self.sender.transport)  # (bundling may have moved it)
            if self._writer is None and not self._two_byte:
                self._mid = self.transceiver.mid
                ids, self._two_byte = extension_ids(self._state[_TX_EXTENSIONS_MAP])
                if not self._two_byte:
                    self._writer = RtpWriter.for_ids(self.ssrc, self._mid, ids)
                    self._two_byte = self._writer is None
        return ready

    def close(self) -> None:
        """Give the sender back its own PLI and RTCP handlers."""
        self.sender.__dict__.pop("_send_keyframe", None)
        self.sender.__dict__.pop("_handle_rtcp_packet", None)
        self.sender.__dict__.pop("_send_rtcp", None)
        self.on_keyframe_request = None

    def _payload_type(self, mime_type: str, clock_rate: int) -> int | None:
        key = (mime_type.lower(), clock_rate)
        if key not in self._payload_types:
            codecs: list[RTCRtpCodecParameters] = self.transceiver._codecs
            self._payload_types[key] = next(
                (c.payloadType for c in codecs
                 if c.mimeType.lower() == key[0] and c.clockRate == clock_rate),
                None,
            )
        return self._payload_types[key]

    def send(self, packet: SourcePacket, forward: Forward, ntp: int) -> bool:
        """Send ``packet`` with the rewritten sequence number and timestamp now, on the
        connection's :class:`SrtpWire`; ``ntp`` is the NTP time (64-bit) to stamp it with (one
        reading per source packet serves all its copies). The caller has just seen
        :attr:`ready` (the :class:`Forwarder` holds outputs paused until it is). Returns False
        (and counts why) when it could not be sent."""
        return self.send_copy(packet, forward.sequence_number, forward.timestamp, ntp)

    def send_copy(self, packet: SourcePacket, sequence_number: int, timestamp: int,
                  ntp: int) -> bool:
        """:meth:`send` with the rewritten values as they are (the :class:`Forwarder`'s
        per-copy call: no result object in between)."""
        wire = self._wire
        if wire is None:
            self.dropped["not_ready"] += 1
            return False
        writer = self._writer
        mime_type, clock_rate = packet.mime_type, packet.clock_rate
        last = self._last_codec
        if last[0] is mime_type and last[1] == clock_rate:
            payload_type = last[2]
        else:
            found = self._payload_type_of(mime_type, clock_rate)
            if found is None:
                self.dropped["codec"] += 1
                return False
            payload_type = found
            self._last_codec = (mime_type, clock_rate, payload_type)
        # abs-send-time is the relay's send time: the subscriber's REMB then measures this hop.
        abs_send_time = (ntp >> 14) & 0x00FFFFFF
        marker = packet.info.marker
        payload = packet.payload
        level = packet.audio_level
        # S3: kept before sending, so a NACK for it is answered even if this send fails
        # (RtxHistory.put, inline).
        self._history.sent[sequence_number % RTP_HISTORY_SIZE] = (
            payload_type, marker, sequence_number, timestamp, abs_send_time, level, payload,
            self._mid)
        try:
            if writer is not None:
                sent = wire.send_rtp(writer, payload_type, marker, sequence_number, timestamp,
                                     abs_send_time, level, payload)
            else:  # the two-byte extension form: aiortc's own serializer
                sent = wire.send(self._aiortc_serialized(sequence_number))
        except (SrtpError, ValueError):  # libsrtp refused it (e.g. over its 1500-byte buffer)
            self.dropped["srtp"] += 1
            return False
        if not sent:
            self._ready_for = 0
            self.dropped["not_connected"] += 1
            return False
        # S6, as _count (inline: this runs once per copy).
        size = len(payload)
        state = self._state
        state[_TX_NTP] = ntp
        state[_TX_RTP_TS] = timestamp
        state[_TX_PACKETS] += 1
        state[_TX_OCTETS] += size
        self.sent_packets += 1
        self.sent_bytes += size
        return True

    async def write(self, packet: SourcePacket, forward: Forward) -> bool:
        """:meth:`send`, after checking :attr:`ready`, stamped with the time now; with
        ``direct`` False, through aiortc's own RTP send chain (``_send_rtp``, S2) instead of
        the wire (the benchmark measures both in one run). Returns False (and counts why)
        when it could not be sent."""
        if not self.ready:
            self.dropped["not_ready"] += 1
            return False
        ntp = _ntp_now(self._wall_clock())
        if self.direct:
            return self.send(packet, forward, ntp)
        data = self._serialize(packet, forward, ntp)
        if data is None:
            return False
        try:
            await self.sender.transport._send_rtp(data)  # S2
        except ConnectionError:
            self._ready_for = 0
            self.dropped["not_connected"] += 1
            return False
        self._count(ntp, forward.timestamp, len(packet.payload))
        return True

    def _payload_type_of(self, mime_type: str, clock_rate: int) -> int | None:
        """The subscriber's payload type for the codec, looked up once per spelling."""
        key = (mime_type, clock_rate)
        if key in self._payload_types:
            return self._payload_types[key]
        # (also kept under the name as the source spells it: no lower() next time)
        found = self._payload_types[key] = self._payload_type(mime_type, clock_rate)
        return found

    def _serialize(self, packet: SourcePacket, forward: Forward, ntp: int) -> bytes | None:
        """The RTP bytes of one copy (kept in the RTX history first), or None (counted)."""
        payload_type = self._payload_type_of(packet.mime_type, packet.clock_rate)
        if payload_type is None:
            self.dropped["codec"] += 1
            return None
        abs_send_time = (ntp >> 14) & 0x00FFFFFF
        marker = packet.info.marker
        payload = packet.payload
        sequence_number, timestamp = forward.sequence_number, forward.timestamp
        # S3: kept before sending, so a NACK for it is answered even if this send fails.
        self._history.put(payload_type, marker, sequence_number, timestamp, abs_send_time,
                          packet.audio_level, payload, self._mid)
        writer = self._writer
        if writer is not None:
            return writer.packet(payload_type, marker, sequence_number, timestamp,
                                 abs_send_time, packet.audio_level, payload)
        return self._aiortc_serialized(sequence_number)

    def _aiortc_serialized(self, sequence_number: int) -> bytes:
        """The copy just put in the RTX history, serialized by aiortc (the two-byte
        extension form, which :class:`RtpWriter` does not write)."""
        rtp = self._history.get(sequence_number)
        assert rtp is not None
        data: bytes = rtp.serialize(self._state[_TX_EXTENSIONS_MAP])
        return data

    def _count(self, ntp: int, timestamp: int, size: int) -> None:
        # S6: aiortc's Sender Reports read these.
        state = self._state
        state[_TX_NTP] = ntp
        state[_TX_RTP_TS] = timestamp
        state[_TX_PACKETS] += 1
        state[_TX_OCTETS] += size
        self.sent_packets += 1
        self.sent_bytes += size

    def _send_keyframe(self) -> None:
        """S4: aiortc calls this on the subscriber's PLI or FIR."""
        self.keyframe_requests += 1
        if self.on_keyframe_request is not None:
            self.on_keyframe_request()

    async def _send_rtcp(self, packets: list[Any]) -> None:
        """S7: what aiortc's RTCP loop sends for this sender (a Sender Report and SDES every
        0.5-1.5 s, a BYE when it stops), on the connection's :class:`SrtpWire` at once: the
        same SRTCP datagram, without aiortc's four coroutine layers down to ``sendto``
        (aiortc's own path until the wire exists)."""
        wire = self._wire
        if wire is None:
            await self._original_send_rtcp(packets)
            return
        # As aiortc does, not connected: nothing is sent, and no error.
        wire.send_rtcp(b"".join(bytes(packet) for packet in packets))

    async def _handle_rtcp_packet(self, packet: Any) -> None:
        """S5: aiortc's handling (NACK -> RTX, PLI -> S4), then our estimates."""
        await self._original_rtcp(packet)
        if isinstance(packet, RtcpPsfbPacket) and packet.fmt == RTCP_PSFB_APP:
            try:
                bitrate, ssrcs = unpack_remb_fci(packet.fci)
            except ValueError:
                self.dropped["rtcp_remb"] += 1
                return
            if self.ssrc in ssrcs:
                self.estimate_kbps = bitrate / 1000
        elif isinstance(packet, (RtcpRrPacket, RtcpSrPacket)):
            for report in packet.reports:
                if report.ssrc != self.ssrc:
                    continue
                self.reports += 1
                self.loss = report.fraction_lost / 256
                if report.lsr:
                    # RFC 3550 6.4.1: RTT = arrival - LSR - DLSR, in 1/65536 s (middle 32 bits).
                    arrival = (_ntp_now(self._wall_clock()) >> 16) & 0xFFFFFFFF
                    rtt = ((arrival - report.lsr - report.dlsr) & 0xFFFFFFFF) / 65536
                    if rtt < 60:
                        self.rtt_ms = rtt * 1000
