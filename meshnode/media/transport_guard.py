"""What arrives on a relay media connection before any receiver sees it: the guard that
counts what aiortc drops silently (:data:`transport_drops`, T1, T2) and the RFC 7983
demultiplexer on the connection's ICE sockets (W4: media datagrams skip aioice's STUN parser).

Part of the aiortc driver (``meshnode.media.aiortc_driver`` says how its files fit).
"""

from collections import Counter
from collections.abc import Callable
from typing import Any, cast

from aioice.ice import Connection, StunProtocol
from aiortc.rtcdtlstransport import RTCDtlsTransport
from aiortc.rtp import RtcpPacket, RtpPacket

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
