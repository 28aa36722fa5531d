"""The contract of the media driver with the pinned aiortc (and aioice, pylibsrtp): every
private attribute it reads, replaces or wraps (:data:`PRIVATE_HOOKS`), the aiortc code that must
still reach them the way the driver expects (:data:`CALL_SITES`), and the classes that carry
them (:data:`HOOK_OWNERS`). ``tests/media/test_aiortc_contract.py`` checks all three against
the installed aiortc and names the hook an upgrade moved. The lines of the driver that use a
hook say its label in a comment (``# W2``, ``# S7``, ...).

Part of the aiortc driver (``meshnode.media.aiortc_driver`` says how its files fit).
"""

from dataclasses import dataclass

from aioice.ice import CandidatePair, Connection, StunProtocol
from aiortc import RTCRtpReceiver, RTCRtpSender, RTCRtpTransceiver
from aiortc.rtcdtlstransport import RTCDtlsTransport
from aiortc.rtcicetransport import RTCIceTransport
from pylibsrtp import Session as SrtpSession

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
