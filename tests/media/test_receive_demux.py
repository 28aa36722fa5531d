"""The RFC 7983 demultiplexer on the relay's ICE sockets (``demux_datagrams``, hook W4), on a
real aiortc connection over loopback: SRTP, SRTCP and DTLS datagrams reach the connection
without aioice's STUN parse; STUN (consent checks both ways) still goes through aioice; a
datagram that is none of these is dropped further on and counted as before; only the
connection it was installed on changes.
"""

import asyncio
import os
import time
from typing import Any

import aioice.ice
import aioice.stun
import pytest
from aiortc import RTCPeerConnection
from hypothesis import given
from hypothesis import strategies as st

from meshnode.media.aiortc_driver import (
    STUN_FIRST_BYTE_MAX,
    OutputSender,
    SourcePacket,
    SourceTap,
    demux_datagrams,
    guard_transport,
    make_media_pc,
)
from meshnode.media.forwarding import Forward, PacketInfo
from meshnode.transport.ice import IceSettings
from tests.media.test_driver_relay import negotiate, until

ICE = IceSettings(host_addresses=("127.0.0.1",))
AIOICE_DATAGRAM_RECEIVED = aioice.ice.StunProtocol.datagram_received


pytestmark = pytest.mark.usefixtures("loopback_only")  # tests/media/conftest.py


@pytest.fixture
def stun_parses(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Every datagram aioice tries to parse as STUN (``ice.py`` calls ``stun.parse_message``
    through the module, so this sees them all)."""
    seen: list[bytes] = []
    original = aioice.stun.parse_message

    def parse(data: bytes) -> aioice.stun.Message:
        seen.append(bytes(data))
        return original(data)

    monkeypatch.setattr(aioice.stun, "parse_message", parse)
    return seen


def opus_packet(i: int) -> SourcePacket:
    payload = os.urandom(40)
    info = PacketInfo(sequence_number=i, timestamp=i * 960, marker=False, keyframe=True,
                      frame_start=True, tid=None, size=len(payload))
    return SourcePacket(info, payload, 111, 4321, "audio/opus", 48000, None, None)


def ice_of(pc: RTCPeerConnection) -> aioice.ice.Connection:
    dtls = pc.getTransceivers()[0].sender.transport
    connection: aioice.ice.Connection = dtls.transport._connection
    return connection


async def test_media_skips_the_stun_parse_and_stun_still_works(stun_parses: list[bytes]) -> None:
    # The relay receives (a tap, as on a publisher's connection); the peer sends on the wire.
    relay, peer = make_media_pc(ICE.rtc_configuration()), make_media_pc(ICE.rtc_configuration())
    try:
        peer_sender = OutputSender(peer.addTransceiver("audio", direction="sendonly"))
        await negotiate(peer, relay)
        transceiver = relay.getTransceivers()[0]
        tapped: list[bytes] = []

        async def on_packet(tap: SourceTap, packet: SourcePacket, now: float) -> None:
            tapped.append(packet.payload)

        SourceTap(transceiver, on_packet=on_packet)
        await until(lambda: peer_sender.ready, "the peer's sender ready")
        relay_dtls = transceiver.receiver.transport
        await until(lambda: relay_dtls.state == "connected", "the relay's DTLS connected")
        connection = ice_of(relay)
        assert demux_datagrams(connection) == len(connection._protocols) == 1
        assert demux_datagrams(connection) == 0  # idempotent
        guard_transport(relay_dtls)  # (what the tap does on the first packet: no second one)
        assert demux_datagrams(connection) == 0
        # Only the sockets of the connections it was given: aioice's class is untouched.
        assert aioice.ice.StunProtocol.datagram_received is AIOICE_DATAGRAM_RECEIVED

        # RTP (and the peer's RTCP): through the demux, never parsed as STUN.
        stun_parses.clear()
        sent = [opus_packet(i) for i in range(30)]
        for i, packet in enumerate(sent):
            assert peer_sender.send(packet, Forward(100 + i, 960 * i), 0)
        await until(lambda: len(tapped) == len(sent), "every RTP packet at the tap")
        assert tapped == [p.payload for p in sent]
        assert not [d for d in stun_parses if d[0] > 3], "a media datagram was parsed as STUN"

        # STUN, both ways, on the demuxed socket: a consent check from the relay (its
        # response comes back through the demux) and one from the peer (answered by it).
        stun_parses.clear()
        for checker in (connection, ice_of(peer)):
            pair = checker._nominated[1]
            request = checker.build_request(pair, nominate=False)
            assert checker.remote_password is not None
            response, _ = await pair.protocol.request(
                request, pair.remote_addr,
                integrity_key=checker.remote_password.encode("utf8"), retransmissions=2)
            assert response.message_class == aioice.stun.Class.RESPONSE
        assert stun_parses and all(d[0] <= 3 for d in stun_parses)
    finally:
        await relay.close()
        await peer.close()


async def test_each_kind_of_datagram_reaches_its_handler(stun_parses: list[bytes]) -> None:
    relay, peer = make_media_pc(ICE.rtc_configuration()), make_media_pc(ICE.rtc_configuration())
    try:
        sender = OutputSender(relay.addTransceiver("audio", direction="sendonly"))
        await negotiate(relay, peer)
        await until(lambda: sender.ready, "the relay's sender ready")  # (guards: demux on)
        connection = ice_of(relay)
        protocol = connection._protocols[0]
        assert "datagram_received" in protocol.__dict__
        delivered: list[tuple[bytes, int]] = []
        requests: list[Any] = []
        connection.data_received = lambda data, component: delivered.append(  # type: ignore[method-assign]
            (data, component))
        connection.request_received = lambda message, addr, protocol: requests.append(  # type: ignore[method-assign]
            message)
        addr = ("127.0.0.1", 9)
        binding = aioice.stun.Message(message_method=aioice.stun.Method.BINDING,
                                      message_class=aioice.stun.Class.REQUEST)
        dtls_record = bytes((23, 0xFE, 0xFD)) + os.urandom(40)  # application data, DTLS 1.2
        rtp = bytes((0x80, 111)) + os.urandom(50)
        rtcp = bytes((0x80, 201, 0, 1)) + os.urandom(4)  # an empty receiver report
        for data in (bytes(binding), dtls_record, rtp, rtcp):
            stun_parses.clear()
            protocol.datagram_received(data, addr)
            if data[0] <= 3:
                assert stun_parses == [data] and len(requests) == 1  # aioice's STUN path
                assert requests[0].transaction_id == binding.transaction_id
            else:
                assert not stun_parses and delivered[-1] == (data, 1)
        # What cannot be read as STUN and is no media either: handed on as aioice would
        # (the DTLS transport drops it, below); an empty datagram still takes aioice's path.
        stun_parses.clear()
        protocol.datagram_received(b"", addr)
        assert stun_parses == [b""] and delivered[-1] == (b"", 1)
        assert len(delivered) == 4
    finally:
        await relay.close()
        await peer.close()


async def test_a_stray_datagram_is_dropped_and_counted_as_before() -> None:
    relay, peer = make_media_pc(ICE.rtc_configuration()), make_media_pc(ICE.rtc_configuration())
    try:
        sender = OutputSender(relay.addTransceiver("audio", direction="sendonly"))
        await negotiate(relay, peer)
        await until(lambda: sender.ready, "the relay's sender ready")
        dtls = relay.getTransceivers()[0].sender.transport
        rx = "_RTCDtlsTransport__rx_packets"
        before = getattr(dtls, rx)
        peer_pair = ice_of(peer)._nominated[1]
        for first in (4, 19, 64, 127, 192, 255):  # RFC 7983: none of STUN, DTLS, RTP/RTCP
            peer_pair.protocol.transport.sendto(bytes((first,)) + os.urandom(60),
                                                peer_pair.remote_addr)
        deadline = time.monotonic() + 5
        while getattr(dtls, rx) < before + 6:
            assert time.monotonic() < deadline, "the stray datagrams never reached DTLS"
            await asyncio.sleep(0.01)
        # Nothing broke: the connection still carries media.
        assert dtls.state == "connected"
        assert sender.send(opus_packet(1), Forward(7, 960), 0)
    finally:
        await relay.close()
        await peer.close()


class _Receiver:
    """What a StunProtocol hands datagrams to (aioice's ``Connection``): records them."""

    def __init__(self) -> None:
        self.data: list[tuple[bytes, int]] = []
        self.requests: list[aioice.stun.Message] = []

    def data_received(self, data: bytes, component: int) -> None:
        self.data.append((data, component))

    def request_received(self, message: aioice.stun.Message, addr: tuple[str, int],
                         protocol: aioice.ice.StunProtocol) -> None:
        self.requests.append(message)


def _socket_protocol(receiver: _Receiver) -> aioice.ice.StunProtocol:
    # (built without its loop-bound close future: only its receive path runs here)
    protocol = aioice.ice.StunProtocol.__new__(aioice.ice.StunProtocol)
    protocol.id, protocol.receiver, protocol.transactions = 1, receiver, {}  # type: ignore[assignment]
    protocol.local_candidate = aioice.Candidate(
        foundation="1", component=2, transport="udp", priority=1, host="127.0.0.1",
        port=9, type="host")
    return protocol


def _delivered(data: bytes, demuxed: bool) -> tuple[list[tuple[bytes, int]], int]:
    receiver = _Receiver()
    protocol = _socket_protocol(receiver)
    if demuxed:
        demux_datagrams(type("Connection", (), {"_protocols": [protocol]})())  # type: ignore[arg-type]
    try:
        protocol.datagram_received(data, ("127.0.0.1", 9))
    except Exception:  # aioice's parser can raise past ValueError: the loop logs it
        return [], -1
    return receiver.data, len(receiver.requests)


@given(st.one_of(st.binary(max_size=120),
                 st.builds(lambda first, rest: bytes((first,)) + rest,
                           st.integers(0, 255), st.binary(max_size=120))))
def test_the_demux_hands_media_on_unparsed_and_the_rest_to_aioice(data: bytes) -> None:
    got, requests = _delivered(data, demuxed=True)
    if data and data[0] > STUN_FIRST_BYTE_MAX:
        assert got == [(data, 2)] and requests == 0  # unparsed, on the socket's component
    else:
        assert (got, requests) == _delivered(data, demuxed=False)  # exactly aioice's path
