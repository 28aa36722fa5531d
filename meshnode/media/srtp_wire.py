"""The relay's synchronous send path for one media connection: :class:`SrtpWire` does what
aiortc's chain of ``_send_rtp`` coroutines does (SRTP-protect, then the selected ICE pair's
datagram transport, the DTLS transport's byte counters kept; W1, W2), and
:class:`SrtpPacker` builds each copy and protects it in its own C buffer with libsrtp (W3).

Part of the aiortc driver (``meshnode.media.aiortc_driver`` says how its files fit).
"""

from collections.abc import Callable
from typing import Any

from aioice.ice import CandidatePair, Connection, StunProtocol
from aiortc.rtcdtlstransport import RTCDtlsTransport
from aiortc.rtcdtlstransport import State as DtlsState
from aiortc.rtcicetransport import RTCIceTransport
from pylibsrtp import Error as SrtpError
from pylibsrtp import Session as SrtpSession
from pylibsrtp._binding import (  # type: ignore[import-not-found]  # (cffi, untyped)
    ffi as srtp_ffi,
)
from pylibsrtp._binding import lib as srtp_lib

from meshnode.media.aiortc_hooks import _DTLS_TX_BYTES, _DTLS_TX_PACKETS
from meshnode.media.rtp_out import RtpWriter

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
