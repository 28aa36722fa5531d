"""The relay's direct send path (``SrtpWire``) against aiortc's own RTP send chain, on a real
aiortc connection over loopback: the subscriber gets the same packets either way, the DTLS
transport's ``bytesSent``/``packetsSent`` grow exactly as aiortc's chain grows them, the Sender
Reports count every copy, and once the connection is closed nothing is sent (counted). The
wire's ``SrtpPacker`` (header and payload built and protected in its own buffer, libsrtp
called directly) gives exactly the bytes pylibsrtp's ``protect`` gives.
"""

import asyncio
import hashlib
import os
import time
from typing import Any

import pytest
from aiortc import RTCPeerConnection
from pylibsrtp import Policy, Session

from meshnode.media.aiortc_driver import (
    SRTP_ROOM,
    OutputSender,
    SourcePacket,
    SrtpPacker,
    SrtpWire,
    _ntp_now,
)
from meshnode.media.forwarding import Forward, PacketInfo
from meshnode.media.rtp_out import ExtensionIds, RtpWriter
from meshnode.transport.ice import IceSettings
from tests.media.test_driver_relay import hash_received_payloads, negotiate, until

ICE = IceSettings(host_addresses=("127.0.0.1",))
COPIES = 20


pytestmark = pytest.mark.usefixtures("loopback_only")  # tests/media/conftest.py


def opus_packet(i: int) -> SourcePacket:
    payload = os.urandom(40 + i % 7)  # sizes vary, so counters must add the real lengths
    info = PacketInfo(sequence_number=i, timestamp=i * 960, marker=False, keyframe=True,
                      frame_start=True, tid=None, size=len(payload))
    return SourcePacket(info, payload, 111, 4321, "audio/opus", 48000, (True, 30), None)


async def transport_sent(pc: RTCPeerConnection) -> tuple[int, int]:
    report = await pc.getStats()
    stats = [s for s in report.values() if s.type == "transport"]
    assert len(stats) == 1, stats  # MAX_BUNDLE: one transport
    return stats[0].bytesSent, stats[0].packetsSent


async def remote_outbound(pc: RTCPeerConnection) -> Any:
    report = await pc.getTransceivers()[0].receiver.getStats()
    return next((s for s in report.values() if s.type == "remote-outbound-rtp"), None)


async def sender_report_counting(pc: RTCPeerConnection, packets: int) -> Any:
    """The first Sender Report ``pc`` receives that counts ``packets`` or more (aiortc's RTCP
    loop sends one every 0.5-1.5 s)."""
    deadline = time.monotonic() + 30
    report = await remote_outbound(pc)
    while report is None or report.packetsSent < packets:
        assert time.monotonic() < deadline, f"no Sender Report counting all: {report}"
        await asyncio.sleep(0.1)
        report = await remote_outbound(pc)
    return report


async def test_the_wire_sends_what_aiortcs_chain_sends_and_counts_it() -> None:
    relay, subscriber = RTCPeerConnection(ICE.rtc_configuration()), RTCPeerConnection(
        ICE.rtc_configuration())
    try:
        sender = OutputSender(relay.addTransceiver("audio", direction="sendonly"))
        await negotiate(relay, subscriber)
        received: dict[int, list[bytes]] = {}
        hash_received_payloads(subscriber.getTransceivers()[0], received)
        await until(lambda: sender.ready, "the sender ready")

        packets = [opus_packet(i) for i in range(2 * COPIES)]
        bytes0, count0 = await transport_sent(relay)
        for i, packet in enumerate(packets[:COPIES]):  # the wire, as the Forwarder calls it
            assert sender.send(packet, Forward(1000 + i, 5000 + i * 960),
                               _ntp_now(time.time()))
        bytes1, count1 = await transport_sent(relay)
        sender.direct = False  # aiortc's chain (RTCDtlsTransport._send_rtp)
        for i, packet in enumerate(packets[COPIES:], start=COPIES):
            assert await sender.write(packet, Forward(1000 + i, 5000 + i * 960))
        bytes2, count2 = await transport_sent(relay)

        assert count1 - count0 == COPIES and count2 - count1 == COPIES
        # Same header and SRTP overhead per packet on both paths: the byte counts differ only
        # by the payloads' sizes.
        payloads = [len(p.payload) for p in packets]
        overhead_wire = (bytes1 - bytes0 - sum(payloads[:COPIES])) / COPIES
        overhead_chain = (bytes2 - bytes1 - sum(payloads[COPIES:])) / COPIES
        assert overhead_wire == overhead_chain > 0

        want = [hashlib.sha256(p.payload).digest() for p in packets]
        await until(lambda: len(received.get(sender.ssrc, [])) >= len(want),
                    "every packet at the subscriber")
        assert received[sender.ssrc] == want  # both paths, in order, intact

        # aiortc's Sender Reports (S6) count the copies of both paths (one every 0.5-1.5 s).
        report = await sender_report_counting(subscriber, len(packets))
        assert report.packetsSent == len(packets)
        assert report.bytesSent == sum(payloads)
        assert sender.sent_packets == len(packets) and sender.sent_bytes == sum(payloads)
        assert not sender.dropped

        # Closed: the wire sends nothing, and says so.
        wire = SrtpWire.of(relay.getTransceivers()[0].sender.transport)
        await relay.close()
        assert not wire.send(b"\x80" + bytes(11))
        sender.direct = True
        assert not sender.send(packets[0], Forward(5000, 0), _ntp_now(time.time()))
        assert sender.dropped["not_connected"] == 1
    finally:
        await relay.close()
        await subscriber.close()


PROFILES = ((Policy.SRTP_PROFILE_AEAD_AES_256_GCM, 44), (Policy.SRTP_PROFILE_AES128_CM_SHA1_80, 30))


def srtp_pair(profile: int, key_len: int) -> tuple[Session, Session, Session]:
    """Two outbound sessions with one key (the packer's and pylibsrtp's own), and the
    receiver's inbound session."""
    key = os.urandom(key_len)
    sessions = []
    for direction in (Policy.SSRC_ANY_OUTBOUND, Policy.SSRC_ANY_OUTBOUND,
                      Policy.SSRC_ANY_INBOUND):
        sessions.append(Session(Policy(key=key, ssrc_type=direction, srtp_profile=profile)))
    return sessions[0], sessions[1], sessions[2]


@pytest.mark.parametrize(("profile", "key_len"), PROFILES)
def test_the_packer_protects_exactly_as_pylibsrtp(profile: int, key_len: int) -> None:
    ours, theirs, inbound = srtp_pair(profile, key_len)
    writer = RtpWriter.for_ids(0x1234, "1", ExtensionIds(mid=1, abs_send_time=2, audio_level=3))
    assert writer is not None
    packer = SrtpPacker()
    for i, (size, level) in enumerate([(1100, None), (40, (True, 30)), (0, None),
                                       (SRTP_ROOM - 40, (False, 127)), (7, (True, 0))]):
        payload = os.urandom(size)
        args = (96, i % 2 == 0, 1000 + i, 90000 * i, 0x123456, level)
        protected = packer.protect(ours, writer, *args, payload)
        plain = writer.packet(*args, payload)
        assert protected == theirs.protect(plain)  # byte for byte, tag included
        assert inbound.unprotect(protected) == plain
    # Over what libsrtp can protect in place: refused before libsrtp, as pylibsrtp does.
    with pytest.raises(ValueError):
        packer.protect(ours, writer, 96, False, 2000, 0, 0, None, bytes(SRTP_ROOM))


async def test_sender_reports_leave_on_the_wire_not_through_aiortcs_chain() -> None:
    relay, subscriber = RTCPeerConnection(ICE.rtc_configuration()), RTCPeerConnection(
        ICE.rtc_configuration())
    try:
        sender = OutputSender(relay.addTransceiver("audio", direction="sendonly"))
        await negotiate(relay, subscriber)
        await until(lambda: sender.ready, "the sender ready")
        dtls = relay.getTransceivers()[0].sender.transport
        chain: list[bytes] = []
        original = dtls._send_rtp

        async def counting(data: bytes) -> None:
            chain.append(data)
            await original(data)

        dtls._send_rtp = counting  # (only what still goes through aiortc's chain)
        packets = [opus_packet(i) for i in range(COPIES)]
        for i, packet in enumerate(packets):
            assert sender.send(packet, Forward(1000 + i, 5000 + i * 960), _ntp_now(time.time()))
        _, count0 = await transport_sent(relay)
        # aiortc's RTCP loop (S7) sends one every 0.5-1.5 s: a Sender Report counting them all.
        report = await sender_report_counting(subscriber, len(packets))
        assert report.packetsSent == len(packets)
        assert report.bytesSent == sum(len(p.payload) for p in packets)
        _, count1 = await transport_sent(relay)
        assert count1 > count0  # the reports are counted as the transport's packets
        assert not chain, "a Sender Report went through aiortc's send chain"

        # Not connected: aiortc's loop goes on, nothing is sent and nothing raises.
        await subscriber.close()
        await until(lambda: dtls.state != "connected", "the DTLS transport closed")
        await sender.sender._send_rtcp([])
        assert not chain
    finally:
        await relay.close()
        await subscriber.close()
