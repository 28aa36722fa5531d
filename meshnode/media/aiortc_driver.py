"""The thin aiortc driver of the media relay: tap receivers, write RTP into senders.

aiortc has no public RTP API (aiortc#627), so forwarding packets without decoding them goes
through a few private attributes of aiortc 1.16 (and of aioice and pylibsrtp), all listed in
:data:`PRIVATE_HOOKS` (and the call sites they rely on in :data:`CALL_SITES`);
``tests/media/test_aiortc_contract.py`` fails, naming the attribute, if an upgrade moves one.
pyproject pins ``aiortc<1.17``.

- :class:`SourceTap` sits on a publisher's ``RTCRtpReceiver``: its jitter buffer is replaced by
  one that never yields a frame (so nothing is ever decoded), and each packet, after aiortc's
  SRTP, statistics, NACK/REMB generation and RTX unwrapping, is handed to ``on_packet``.
- :class:`OutputSender` sits on an ``RTCRtpSender`` of a subscriber's peer connection: aiortc's
  own RTP loop idles on a track that never yields, and we write rewritten RTP (our SSRC, the
  negotiated payload type and header-extension IDs) on the connection's :class:`SrtpWire`
  (the DTLS transport's SRTP session, then the selected ICE pair's UDP socket, synchronously;
  each copy built and protected in place by an :class:`SrtpPacker`),
  keep the RTX history (NACKs are answered), the Sender Report counters (the reports
  themselves leave on the wire too) and the DTLS transport's byte counters, and read REMB
  and receiver reports into ``estimate_kbps``, ``loss`` and ``rtt_ms``.
- :func:`guard_transport` counts what aiortc drops silently on a relay connection and gives
  its ICE sockets an RFC 7983 demultiplexer (:func:`demux_datagrams`): media datagrams skip
  aioice's STUN parser.
- :class:`Forwarder` glues one tap to any number of senders through
  :class:`meshnode.media.forwarding.Output` (sequence/timestamp rewriting, keyframe gate,
  temporal-layer filter) and one :class:`KeyframeThrottle` per source. One source packet is
  written to every output in one synchronous pass: no task, no ``await`` per copy.

Bad input from a peer (unknown payload type or SSRC, far over its rate, a malformed VP8
descriptor) is dropped and counted in ``dropped`` by reason; nothing raises into aiortc.
"""

import asyncio
import logging
import random
import struct
import time
import weakref
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any, cast

from aioice.ice import CandidatePair, Connection, StunProtocol
from aiortc import (
    RTCConfiguration,
    RTCPeerConnection,
    RTCRtpReceiver,
    RTCRtpSender,
    RTCRtpTransceiver,
)
from aiortc.codecs import is_rtx
from aiortc.mediastreams import MediaStreamTrack
from aiortc.rtcconfiguration import RTCBundlePolicy
from aiortc.rtcdtlstransport import RTCDtlsTransport
from aiortc.rtcdtlstransport import State as DtlsState
from aiortc.rtcicetransport import RTCIceTransport
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtp import (
    RTCP_PSFB_APP,
    RTP_HISTORY_SIZE,
    HeaderExtensionsMap,
    RtcpPacket,
    RtcpPsfbPacket,
    RtcpRrPacket,
    RtcpSrPacket,
    RtpPacket,
    unpack_remb_fci,
)
from av.frame import Frame
from av.packet import Packet
from pylibsrtp import Error as SrtpError
from pylibsrtp import Session as SrtpSession
from pylibsrtp._binding import (  # type: ignore[import-not-found]  # (cffi, untyped)
    ffi as srtp_ffi,
)
from pylibsrtp._binding import lib as srtp_lib

from meshnode.media.forwarding import (
    Forward,
    KeyframeThrottle,
    Output,
    OutputEnd,
    PacketInfo,
    RateLimit,
)
from meshnode.media.rtp import MediaDecodeError, Vp8Info, parse_vp8
from meshnode.media.rtp_out import ExtensionIds, RtpWriter

logger = logging.getLogger(__name__)

NTP_UNIX_OFFSET = 2_208_988_800  # seconds from 1900 (NTP) to 1970 (Unix)
DEFAULT_CLOCK_RATE = {"audio": 48000, "video": 90000}


# -- the private aiortc names this driver uses ------------------------------------------------


@dataclass(frozen=True, slots=True)
class PrivateHook:
    """One private aiortc attribute the driver reads, replaces or wraps.

    ``owner`` is the aiortc class whose instances carry ``attribute`` (name-mangled names are
    written as Python stores them, e.g. ``_RTCRtpReceiver__jitter_buffer``).
    """

    label: str
    owner: str
    attribute: str
    why: str


@dataclass(frozen=True, slots=True)
class CallSite:
    """aiortc code that must still reach a hook the way the driver expects: the source of
    ``owner.function`` must contain ``text``."""

    label: str
    owner: str
    function: str
    text: str


_RX_JITTER_BUFFER = "_RTCRtpReceiver__jitter_buffer"
_TX_EXTENSIONS_MAP = "_RTCRtpSender__rtp_header_extensions_map"
_TX_HISTORY = "_RTCRtpSender__rtp_history"
_TX_NTP = "_RTCRtpSender__ntp_timestamp"
_TX_RTP_TS = "_RTCRtpSender__rtp_timestamp"
_TX_PACKETS = "_RTCRtpSender__packet_count"
_TX_OCTETS = "_RTCRtpSender__octet_count"
_DTLS_TX_BYTES = "_RTCDtlsTransport__tx_bytes"
_DTLS_TX_PACKETS = "_RTCDtlsTransport__tx_packets"

PRIVATE_HOOKS: tuple[PrivateHook, ...] = (
    PrivateHook("R1", "RTCRtpReceiver", _RX_JITTER_BUFFER,
                "replaced by a tap that keeps each packet and never yields a frame"),
    PrivateHook("R2", "RTCRtpReceiver", "_handle_rtp_packet",
                "wrapped on the instance: admit, then hand the tapped packet on"),
    PrivateHook("R3", "RTCRtpReceiver", "_send_rtcp_pli", "ask the publisher for a keyframe"),
    PrivateHook("S1", "RTCRtpSender", "_ssrc", "the SSRC the subscriber negotiated"),
    PrivateHook("S1", "RTCRtpTransceiver", "_codecs", "negotiated codecs and payload types"),
    PrivateHook("S2", "RTCDtlsTransport", "_send_rtp", "SRTP-protect and send our RTP"),
    PrivateHook("S2", "RTCRtpSender", _TX_EXTENSIONS_MAP, "negotiated header-extension IDs"),
    PrivateHook("S3", "RTCRtpSender", _TX_HISTORY, "history aiortc answers NACKs (RTX) from"),
    PrivateHook("S4", "RTCRtpSender", "_send_keyframe",
                "replaced: a subscriber's PLI/FIR goes upstream"),
    PrivateHook("S5", "RTCRtpSender", "_handle_rtcp_packet",
                "wrapped: REMB, loss and RTT per subscriber"),
    PrivateHook("S6", "RTCRtpSender", _TX_NTP, "Sender Report: NTP time of the last packet"),
    PrivateHook("S6", "RTCRtpSender", _TX_RTP_TS, "Sender Report: RTP time of the last packet"),
    PrivateHook("S6", "RTCRtpSender", _TX_PACKETS, "Sender Report: packet count"),
    PrivateHook("S6", "RTCRtpSender", _TX_OCTETS, "Sender Report: octet count"),
    PrivateHook("T1", "RTCDtlsTransport", "_handle_rtp_data",
                "wrapped on the instance: count malformed and unroutable RTP"),
    PrivateHook("T1", "RTCDtlsTransport", "_rtp_router", "routes RTP to a receiver"),
    PrivateHook("T1", "RTCDtlsTransport", "_rtp_header_extensions_map",
                "header-extension IDs to parse RTP with"),
    PrivateHook("T2", "RTCDtlsTransport", "_handle_rtcp_data",
                "replaced on the instance: aiortc's routing, malformed RTCP counted"),
    PrivateHook("W1", "RTCDtlsTransport", "_state", "send only while DTLS is connected"),
    PrivateHook("W1", "RTCDtlsTransport", "_tx_srtp", "the SRTP session our RTP is protected with"),
    PrivateHook("W1", "RTCDtlsTransport", _DTLS_TX_BYTES, "transport stats: bytes sent"),
    PrivateHook("W1", "RTCDtlsTransport", _DTLS_TX_PACKETS, "transport stats: packets sent"),
    PrivateHook("W2", "RTCIceTransport", "_connection", "the aioice connection under DTLS"),
    PrivateHook("W2", "Connection", "_nominated", "aioice: the selected pair per component"),
    PrivateHook("W2", "CandidatePair", "protocol", "aioice: the pair's local socket protocol"),
    PrivateHook("W2", "CandidatePair", "remote_addr", "aioice: the pair's remote address"),
    PrivateHook("W2", "StunProtocol", "transport", "aioice: the pair's datagram transport"),
    PrivateHook("W3", "Session", "_srtp",
                "pylibsrtp: the libsrtp context, protected into the wire's own buffer"),
    PrivateHook("W4", "Connection", "_protocols", "aioice: the connection's socket protocols"),
    PrivateHook("S7", "RTCRtpSender", "_send_rtcp",
                "replaced on the instance: Sender Reports out on the SrtpWire, no await"),
    PrivateHook("W4", "StunProtocol", "datagram_received",
                "replaced on the instance: RFC 7983 demux, STUN parsed only if it can be STUN"),
    PrivateHook("W4", "StunProtocol", "receiver", "aioice: the connection datagrams go to"),
    PrivateHook("W4", "StunProtocol", "local_candidate", "aioice: the socket's ICE component"),
)

CALL_SITES: tuple[CallSite, ...] = (
    CallSite("R1", "RTCRtpReceiver", "_handle_rtp_packet", "self.__jitter_buffer.add(packet)"),
    CallSite("R2", "RTCDtlsTransport", "_handle_rtp_data", "receiver._handle_rtp_packet("),
    CallSite("S3", "RTCRtpSender", "_retransmit", "self.__rtp_history.get("),
    CallSite("S4", "RTCRtpSender", "_handle_rtcp_packet", "self._send_keyframe()"),
    CallSite("S5", "RTCDtlsTransport", "_handle_rtcp_data", "recipient._handle_rtcp_packet("),
    CallSite("S6", "RTCRtpSender", "_run_rtcp", "packet_count=self.__packet_count"),
    CallSite("idle", "RTCRtpSender", "_next_encoded_frame", "await self.__track.recv()"),
    CallSite("T1", "RTCDtlsTransport", "_recv_next", "await self._handle_rtp_data("),
    CallSite("T1", "RTCDtlsTransport", "_handle_rtp_data", "self._rtp_router.route_rtp(packet)"),
    CallSite("T2", "RTCDtlsTransport", "_recv_next", "await self._handle_rtcp_data("),
    CallSite("T2", "RTCDtlsTransport", "_handle_rtcp_data",
             "for recipient in self._rtp_router.route_rtcp(packet):"),
    # W1, W2: SrtpWire does what aiortc's RTP send chain does, minus the awaits.
    CallSite("W1", "RTCDtlsTransport", "_send_rtp", "data = self._tx_srtp.protect(data)"),
    CallSite("W1", "RTCDtlsTransport", "_send_rtp", "self.__tx_bytes += len(data)"),
    CallSite("W1", "RTCDtlsTransport", "_send_rtp", "if self._state != State.CONNECTED:"),
    CallSite("W2", "RTCDtlsTransport", "_send_rtp", "await self.transport._send(data)"),
    CallSite("W2", "RTCIceTransport", "__init__", "self._send = self._connection.send"),
    CallSite("W2", "Connection", "send", "await self.sendto(data, 1)"),
    CallSite("W2", "Connection", "sendto", "active_pair = self._nominated.get(component)"),
    CallSite("W2", "Connection", "sendto",
             "await active_pair.protocol.send_data(data, active_pair.remote_addr)"),
    CallSite("W2", "StunProtocol", "send_data", "self.transport.sendto(data, addr)"),
    # W3: SrtpWire.send_rtp calls libsrtp as pylibsrtp's protect does, minus its copies.
    CallSite("W3", "Session", "protect", "self.__process(packet, lib.srtp_protect"),
    CallSite("W3", "Session", "_Session__process",
             "_srtp_assert(func(self._srtp[0], self._cdata, len_p))"),
    # S7: the Sender Reports (and the BYE) aiortc's RTCP loop sends, and how.
    CallSite("S7", "RTCRtpSender", "_run_rtcp", "await self._send_rtcp(packets)"),
    CallSite("S7", "RTCRtpSender", "_send_rtcp", "payload += bytes(packet)"),
    CallSite("S7", "RTCRtpSender", "_send_rtcp", "await self.transport._send_rtp(payload)"),
    CallSite("S7", "RTCDtlsTransport", "_send_rtp", "data = self._tx_srtp.protect_rtcp(data)"),
    # W4: what aioice does with a datagram that does not parse as STUN, which the demux does
    # at once for one whose first byte says it cannot be STUN.
    CallSite("W4", "StunProtocol", "datagram_received", "message = stun.parse_message(data)"),
    CallSite("W4", "StunProtocol", "datagram_received",
             "self.receiver.data_received(data, self.local_candidate.component)"),
    CallSite("W4", "Connection", "data_received", "self._queue.put_nowait((data, component))"),
)

HOOK_OWNERS: dict[str, type] = {
    "RTCRtpReceiver": RTCRtpReceiver,
    "RTCRtpSender": RTCRtpSender,
    "RTCRtpTransceiver": RTCRtpTransceiver,
    "RTCDtlsTransport": RTCDtlsTransport,
    "RTCIceTransport": RTCIceTransport,
    "Connection": Connection,
    "CandidatePair": CandidatePair,
    "StunProtocol": StunProtocol,
    "Session": SrtpSession,
}


def make_media_pc(configuration: RTCConfiguration | None = None) -> RTCPeerConnection:
    """An ``RTCPeerConnection`` for media: ``configuration`` (ICE servers and policy; None:
    host candidates only, never aiortc's public STUN default) with ``bundlePolicy=MAX_BUNDLE``.

    MAX_BUNDLE is required: with aiortc's default (BALANCED), a remote offer with two m-lines
    of one kind leaves the second on a transport that never connects.
    """
    base = configuration if configuration is not None else RTCConfiguration(iceServers=[])
    return RTCPeerConnection(replace(base, bundlePolicy=RTCBundlePolicy.MAX_BUNDLE))


def _codec_map(transceiver: RTCRtpTransceiver) -> dict[int, RTCRtpCodecParameters]:
    codecs: list[RTCRtpCodecParameters] = transceiver._codecs
    return {c.payloadType: c for c in codecs if c.payloadType is not None}


# -- what arrives on a media connection, before any receiver ------------------------------

transport_drops: Counter[str] = Counter()
"""Packets dropped on this process's guarded media connections before reaching a receiver:
``malformed_rtp`` (aiortc cannot parse it), ``unrouted`` (no receiver takes its SSRC and
payload type), ``malformed_rtcp``. aiortc drops these silently; the guard counts them."""


STUN_FIRST_BYTE_MAX = 3
"""RFC 7983 (section 7): on a socket shared by ICE, DTLS and SRTP, a datagram whose first byte
is 0-3 is STUN (20-63 DTLS, 128-191 RTP/RTCP); no other first byte is STUN."""


def demux_datagrams(connection: Connection) -> int:
    """Give each of ``connection``'s sockets (aioice's ``StunProtocol``, W4) an RFC 7983
    demultiplexer: a datagram whose first byte cannot start a STUN message (SRTP, SRTCP,
    DTLS) goes straight to the connection's ``data_received``, where aioice would send it
    after failing to parse it as STUN (a ``ValueError`` raised and caught per datagram);
    anything else (STUN, and an empty datagram) still goes through aioice's own
    ``datagram_received``. Only this connection's sockets change, nothing process-wide.
    Idempotent; returns how many sockets got it now.

    For media nothing else changes: the RTP payload types and RTCP packet types WebRTC uses
    are no STUN method, so aioice's parser always failed on them. A datagram with a first
    byte over 3 that aioice's parser did accept (a matching length field, a known method)
    was taken for STUN there and is not here, as RFC 7983 says; and one that made the
    parser raise something else than ``ValueError`` (an attribute too short to unpack) no
    longer reaches the event loop's exception handler.
    """
    installed = 0
    for protocol in connection._protocols:  # W4
        if type(protocol) is not StunProtocol or "datagram_received" in protocol.__dict__:
            continue
        protocol.__dict__["datagram_received"] = _demux(protocol)  # W4 (on the instance)
        installed += 1
    return installed


def _demux(protocol: StunProtocol) -> Callable[[bytes | str, tuple[Any, ...]], None]:
    stun_path = StunProtocol.datagram_received.__get__(protocol)  # aioice's own (W4)
    connection: Connection = protocol.receiver  # W4
    component = protocol.local_candidate.component  # W4 (fixed for the socket's life)

    def datagram_received(data: bytes | str, addr: tuple[Any, ...]) -> None:
        data = cast(bytes, data)  # (a datagram socket's: asyncio's typing allows str)
        if data and data[0] > STUN_FIRST_BYTE_MAX:
            # (looked up per datagram, as aioice does: a wrapper set later still applies)
            connection.data_received(data, component)
        else:
            stun_path(data, addr)

    return datagram_received


def guard_transport(transport: RTCDtlsTransport) -> None:
    """Count what aiortc would drop silently on ``transport`` (T1, T2) in
    :data:`transport_drops`, and give its ICE sockets the RFC 7983 demultiplexer
    (:func:`demux_datagrams`, W4). Idempotent. The RTP and RTCP paths are aiortc's own
    ``_handle_rtp_data`` and ``_handle_rtcp_data`` with counting added (one parse per
    packet, as before)."""
    if transport.__dict__.get("_meshnode_guarded"):
        return
    transport.__dict__["_meshnode_guarded"] = True
    # (called once the transport carries media: ICE has gathered, its sockets all exist)
    demux_datagrams(transport.transport._connection)  # W2

    async def handle_rtp_data(data: bytes, arrival_time_ms: int) -> None:
        try:
            packet = RtpPacket.parse(data, transport._rtp_header_extensions_map)
        except ValueError:
            transport_drops["malformed_rtp"] += 1
            return
        receiver = transport._rtp_router.route_rtp(packet)
        if receiver is None:
            transport_drops["unrouted"] += 1
            return
        await receiver._handle_rtp_packet(packet, arrival_time_ms=arrival_time_ms)

    async def handle_rtcp_data(data: bytes) -> None:
        # aiortc's own _handle_rtcp_data with counting added (one parse, as before: every
        # subscriber sends a few compound RTCP packets a second).
        try:
            packets = RtcpPacket.parse(data)
        except ValueError:
            transport_drops["malformed_rtcp"] += 1
            return
        router = transport._rtp_router
        for packet in packets:
            for recipient in router.route_rtcp(packet):
                await recipient._handle_rtcp_packet(packet)

    transport._handle_rtp_data = handle_rtp_data  # type: ignore[method-assign]
    transport._handle_rtcp_data = handle_rtcp_data  # type: ignore[method-assign]


_DTLS_CONNECTED = DtlsState.CONNECTED  # (an enum member looked up per copy costs ~0.1 µs)
SRTP_BUFFER = 1500  # pylibsrtp's own buffer size
SRTP_ROOM = SRTP_BUFFER - (16 + 128)  # minus SRTP_MAX_TRAILER_LEN: the largest RTP it protects


class SrtpPacker:
    """Builds RTP packets in its own C buffer and SRTP-protects them there (W3): the header
    packed by an :class:`RtpWriter`, the payload copied after it, then libsrtp's
    ``srtp_protect`` with the session's libsrtp context, as pylibsrtp's ``protect`` calls it.
    No packet bytes are built first: one copy (the protected datagram) instead of three
    (header + payload, into pylibsrtp's buffer, out of it), and no pylibsrtp wrapper.
    """

    __slots__ = ("_buffer", "_cdata", "_context", "_length", "_session")

    def __init__(self) -> None:
        self._session: SrtpSession | None = None
        self._context: Any = None  # W3: the session's libsrtp context (srtp_t)
        self._cdata: Any = srtp_ffi.new("char[]", SRTP_BUFFER)
        self._buffer: Any = srtp_ffi.buffer(self._cdata)
        self._length: Any = srtp_ffi.new("int *")

    def protect(self, session: SrtpSession, writer: RtpWriter, payload_type: int,
                marker: bool, sequence_number: int, timestamp: int, abs_send_time: int,
                audio_level: tuple[bool, int] | None, payload: bytes) -> bytes:
        """The SRTP datagram (``session``'s protection) of the packet ``writer`` makes of
        these values. Raises ``ValueError`` for a packet over what libsrtp can protect,
        ``SrtpError`` if libsrtp refuses it."""
        if session is not self._session:
            self._session = session
            self._context = session._srtp[0]  # W3
        buffer = self._buffer
        start = writer.pack_into(buffer, payload_type, marker, sequence_number, timestamp,
                                 abs_send_time, audio_level)
        end = start + len(payload)
        if end > SRTP_ROOM:
            raise ValueError("packet is too long")
        buffer[start:end] = payload
        length = self._length
        length[0] = end
        status = srtp_lib.srtp_protect(self._context, self._cdata, length)  # W3
        if status:
            raise SrtpError(f"libsrtp status {status}")
        protected: bytes = buffer[0:length[0]]
        return protected


class SrtpWire:
    """The relay's send path for the RTP of one media connection (``dtls``, its bundled DTLS
    transport): what aiortc's ``RTCDtlsTransport._send_rtp`` does, synchronously.

    aiortc sends each RTP packet through four coroutines (``_send_rtp`` -> the ICE transport's
    ``_send`` -> aioice ``Connection.sendto`` -> ``StunProtocol.send_data``), none of which ever
    waits for anything: the last one calls the datagram transport's ``sendto``. On the relay
    that chain runs once per copy, so it is cut short here (W1, W2): protect with the DTLS
    transport's SRTP session, look the selected candidate pair up in aioice's ``_nominated``
    (as ``sendto`` does, every packet: a new pair is used at once), hand the datagram to that
    pair's transport, and count it in the DTLS transport's ``bytesSent`` / ``packetsSent``.
    RTCP (Sender Reports, NACK answers) still goes through aiortc's own chain, on the same
    SRTP session. One wire per DTLS transport (:meth:`of`), shared by its senders.

    :meth:`send_rtp` (the relay's per-copy call) goes one step further: the packet is built
    and protected in place by an :class:`SrtpPacker`.
    """

    __slots__ = ("_addr", "_counters", "_nominated", "_packer", "_pair", "_sendto", "dtls")

    def __init__(self, dtls: RTCDtlsTransport) -> None:
        self.dtls = dtls
        ice: RTCIceTransport = dtls.transport
        connection: Connection = ice._connection  # W2
        self._nominated: dict[int, CandidatePair] = connection._nominated  # W2
        self._counters = dtls.__dict__  # W1: bytesSent / packetsSent of the transport's stats
        self._pair: CandidatePair | None = None
        self._sendto: Callable[[bytes, tuple[str, int]], None] | None = None
        self._addr: tuple[str, int] = ("", 0)
        self._packer = SrtpPacker()

    @classmethod
    def of(cls, dtls: RTCDtlsTransport) -> "SrtpWire":
        """The wire of ``dtls`` (made on first use)."""
        wire = dtls.__dict__.get("_meshnode_wire")
        if not isinstance(wire, SrtpWire):
            wire = dtls.__dict__["_meshnode_wire"] = cls(dtls)
        return wire

    def _bind(self, pair: CandidatePair) -> None:
        """Send on ``pair`` (the selected ICE pair) from now on."""
        self._pair = pair
        protocol: StunProtocol = pair.protocol  # W2
        self._sendto = protocol.transport.sendto
        self._addr = pair.remote_addr

    def send(self, data: bytes) -> bool:
        """SRTP-protect the RTP packet ``data`` and send it now. False: not connected (DTLS not
        up or closed, no selected ICE pair); nothing was sent."""
        if self.dtls._state is not _DTLS_CONNECTED:  # W1
            return False
        pair = self._nominated.get(1)  # W2: aiortc sends on ICE component 1
        if pair is None:
            return False
        if pair is not self._pair:
            self._bind(pair)
        protected = self.dtls._tx_srtp.protect(data)  # W1
        assert self._sendto is not None
        self._sendto(protected, self._addr)
        counters = self._counters
        counters[_DTLS_TX_BYTES] += len(protected)
        counters[_DTLS_TX_PACKETS] += 1
        return True

    def send_rtcp(self, data: bytes) -> bool:
        """SRTCP-protect the compound RTCP packet ``data`` and send it now, as aiortc's
        ``_send_rtp`` does for RTCP. False: not connected; nothing was sent."""
        if self.dtls._state is not _DTLS_CONNECTED:  # W1
            return False
        pair = self._nominated.get(1)  # W2
        if pair is None:
            return False
        if pair is not self._pair:
            self._bind(pair)
        protected = self.dtls._tx_srtp.protect_rtcp(data)  # W1
        self._sendto(protected, self._addr)  # type: ignore[misc]  # (set by _bind)
        counters = self._counters
        counters[_DTLS_TX_BYTES] += len(protected)
        counters[_DTLS_TX_PACKETS] += 1
        return True

    def send_rtp(self, writer: RtpWriter, payload_type: int, marker: bool,
                 sequence_number: int, timestamp: int, abs_send_time: int,
                 audio_level: tuple[bool, int] | None, payload: bytes) -> bool:
        """:meth:`send` of the packet ``writer`` makes of these values (its
        :meth:`RtpWriter.packet`), built and protected by the wire's :class:`SrtpPacker`.
        Raises ``ValueError`` for a packet over what libsrtp can protect, ``SrtpError`` if
        libsrtp refuses it; False: not connected, nothing sent."""
        dtls = self.dtls
        if dtls._state is not _DTLS_CONNECTED:  # W1
            return False
        pair = self._nominated.get(1)  # W2
        if pair is None:
            return False
        if pair is not self._pair:
            self._bind(pair)
        protected = self._packer.protect(dtls._tx_srtp, writer, payload_type, marker,  # W1
                                         sequence_number, timestamp, abs_send_time,
                                         audio_level, payload)
        self._sendto(protected, self._addr)  # type: ignore[misc]  # (set by _bind)
        counters = self._counters
        counters[_DTLS_TX_BYTES] += len(protected)
        counters[_DTLS_TX_PACKETS] += 1
        return True


# -- the publisher side -------------------------------------------------------------------


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


# -- the subscriber side ------------------------------------------------------------------


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


# -- the glue -----------------------------------------------------------------------------


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
