"""The aiortc driver end to end, in one process over loopback: real aiortc peer connections,
real VP8/Opus from a publisher, a relay made of the driver's SourceTap -> Forwarder ->
OutputSender, and subscribers that decode.

- payloads arrive at every subscriber byte-identical to what the publisher sent (hashes taken
  before SRTP on the publisher and after SRTP on the subscriber), and the relay never creates a
  decoder;
- pausing a subscriber's video and resuming it asks the publisher for a keyframe, the
  subscriber decodes frames again, and it saw no gap in sequence numbers;
- two video tracks of one publisher reach one subscriber over one connection (two m-lines of
  one kind: needs MAX_BUNDLE).
"""

import asyncio
import fractions
import hashlib
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from aiortc import RTCPeerConnection, RTCRtpTransceiver
from aiortc import rtcrtpreceiver as aiortc_receiver
from aiortc.codecs import get_decoder
from aiortc.mediastreams import AudioStreamTrack, MediaStreamTrack, VideoStreamTrack
from aiortc.rtp import RtpPacket, is_rtcp
from av import VideoFrame

from meshnode.media.aiortc_driver import Forwarder, OutputSender, SourceTap, make_media_pc
from meshnode.media.rtp import parse_rtp
from meshnode.transport.ice import IceSettings

ICE = IceSettings(host_addresses=("127.0.0.1",))
WAIT_S = 30.0
SUBSCRIBERS = 3


pytestmark = pytest.mark.usefixtures("loopback_only")  # tests/media/conftest.py


async def until(condition: Callable[[], bool], what: str, timeout: float = WAIT_S) -> None:
    """Wait until ``condition()`` holds; fail after a generous ``timeout`` (not a measurement)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


class CounterVideo(VideoStreamTrack):
    """Synthetic 160x120 video whose frames draw a counter (a moving bar), so VP8 has work."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    async def recv(self) -> VideoFrame:
        pts, time_base = await self.next_timestamp()
        image = np.zeros((120, 160, 3), dtype=np.uint8)
        image[:, self.count % 160] = 255
        image[:8, :] = self.count % 256
        self.count += 1
        frame = VideoFrame.from_ndarray(image, format="rgb24")
        frame.pts, frame.time_base = pts, fractions.Fraction(time_base)
        return frame


async def negotiate(offerer: RTCPeerConnection, answerer: RTCPeerConnection) -> None:
    await offerer.setLocalDescription(await offerer.createOffer())
    await answerer.setRemoteDescription(offerer.localDescription)
    await answerer.setLocalDescription(await answerer.createAnswer())
    await offerer.setRemoteDescription(answerer.localDescription)


def hash_sent_payloads(pc: RTCPeerConnection, sink: dict[int, set[bytes]]) -> None:
    """Record the hash of every RTP payload ``pc`` sends, by SSRC, before SRTP."""
    transport = pc.getSenders()[0].transport
    original = transport._send_rtp

    async def send(data: bytes) -> None:
        if not is_rtcp(data):
            header = parse_rtp(data)
            sink.setdefault(header.ssrc, set()).add(
                hashlib.sha256(header.payload_of(data)).digest())
        await original(data)

    transport._send_rtp = send  # type: ignore[method-assign]


def hash_received_payloads(transceiver: RTCRtpTransceiver, sink: dict[int, list[bytes]]) -> None:
    """Record the hash of every RTP payload the receiver gets, by SSRC, after SRTP."""
    receiver = transceiver.receiver
    original = receiver._handle_rtp_packet

    async def handle(packet: RtpPacket, arrival_time_ms: int) -> None:
        sink.setdefault(packet.ssrc, []).append(hashlib.sha256(packet.payload).digest())
        await original(packet, arrival_time_ms=arrival_time_ms)

    receiver._handle_rtp_packet = handle  # type: ignore[method-assign]


class Subscriber:
    """An ordinary aiortc peer that decodes what the relay sends it."""

    def __init__(self) -> None:
        self.pc = make_media_pc(ICE.rtc_configuration())
        self.frames: dict[str, int] = {}  # decoded frames per track id
        self.kinds: dict[str, str] = {}
        self.received: dict[int, list[bytes]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self.pc.on("track", self._on_track)

    def _on_track(self, track: MediaStreamTrack) -> None:
        self.frames[track.id] = 0
        self.kinds[track.id] = track.kind
        self._tasks.append(asyncio.ensure_future(self._consume(track)))

    async def _consume(self, track: MediaStreamTrack) -> None:
        while True:
            try:
                await track.recv()
            except Exception:
                return
            self.frames[track.id] += 1

    def video_frames(self) -> list[int]:
        return [n for t, n in self.frames.items() if self.kinds[t] == "video"]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await self.pc.close()


class Relay:
    """The relay: one ingress PC per publisher (taps), one egress PC per subscriber."""

    def __init__(self) -> None:
        self.ingress = make_media_pc(ICE.rtc_configuration())
        self.egress: list[RTCPeerConnection] = []
        self.taps: list[SourceTap] = []
        self.forwarders: list[Forwarder] = []
        self.senders: dict[tuple[int, str], OutputSender] = {}

    async def accept(self, publisher: RTCPeerConnection) -> None:
        await self.ingress.setRemoteDescription(await _offer(publisher))
        for i, transceiver in enumerate(self.ingress.getTransceivers()):
            tap = SourceTap(transceiver, source_id=f"source-{i}", max_kbps=20_000)
            self.taps.append(tap)
            self.forwarders.append(Forwarder(tap))
        await self.ingress.setLocalDescription(await self.ingress.createAnswer())
        await publisher.setRemoteDescription(self.ingress.localDescription)

    async def add_subscriber(self, key: str, subscriber: Subscriber) -> None:
        pc = make_media_pc(ICE.rtc_configuration())
        self.egress.append(pc)
        for i, tap in enumerate(self.taps):
            transceiver = pc.addTransceiver(tap.kind, direction="sendonly")
            sender = OutputSender(transceiver)
            self.senders[(i, key)] = sender
            self.forwarders[i].add_output(key, sender)
        await pc.setLocalDescription(await pc.createOffer())
        await subscriber.pc.setRemoteDescription(pc.localDescription)
        for transceiver in subscriber.pc.getTransceivers():
            hash_received_payloads(transceiver, subscriber.received)
        await subscriber.pc.setLocalDescription(await subscriber.pc.createAnswer())
        await pc.setRemoteDescription(subscriber.pc.localDescription)

    def decoder_threads(self) -> set[threading.Thread]:
        threads = set()
        for t in self.ingress.getTransceivers():
            thread = getattr(t.receiver, "_RTCRtpReceiver__decoder_thread", None)
            if thread is not None:
                threads.add(thread)
        return threads

    async def close(self) -> None:
        for forwarder in self.forwarders:
            forwarder.close()
        for pc in [self.ingress, *self.egress]:
            await pc.close()


async def _offer(pc: RTCPeerConnection) -> Any:
    await pc.setLocalDescription(await pc.createOffer())
    return pc.localDescription


@pytest.fixture
def decoder_calls(monkeypatch: pytest.MonkeyPatch) -> list[threading.Thread]:
    """The thread of every aiortc decoder creation (relay and subscribers share a process)."""
    calls: list[threading.Thread] = []
    original = get_decoder

    def counting(codec: Any) -> Any:
        calls.append(threading.current_thread())
        return original(codec)

    monkeypatch.setattr(aiortc_receiver, "get_decoder", counting)
    return calls


async def test_relay_forwards_identical_payloads_without_decoding_and_resumes_on_keyframe(
    decoder_calls: list[threading.Thread], caplog: pytest.LogCaptureFixture
) -> None:
    publisher = RTCPeerConnection(ICE.rtc_configuration())
    publisher.addTrack(CounterVideo())
    publisher.addTrack(AudioStreamTrack())
    sent: dict[int, set[bytes]] = {}
    relay = Relay()
    subscribers = [Subscriber() for _ in range(SUBSCRIBERS)]
    try:
        await relay.accept(publisher)
        hash_sent_payloads(publisher, sent)
        for n, sub in enumerate(subscribers):
            await relay.add_subscriber(f"sub{n}", sub)
        video = next(i for i, t in enumerate(relay.taps) if t.kind == "video")
        audio = 1 - video

        await until(lambda: all(min(s.frames.values(), default=0) >= 10 and len(s.frames) == 2
                                for s in subscribers), "every subscriber decoding audio and video")

        # Byte-identical payloads: every payload a subscriber got on the relay's SSRC is one
        # the publisher sent (hashes), and plenty of them arrived.
        for n, sub in enumerate(subscribers):
            for i in (video, audio):
                published = relay.taps[i].ssrc
                assert published is not None
                got = sub.received.get(relay.senders[(i, f"sub{n}")].ssrc, [])
                assert len(got) >= 10, (n, i, len(got))
                assert set(got) <= sent[published], f"sub{n} got a payload never published"

        # The relay never decodes: its receivers hold the tap, and no decoder was created on
        # their threads (the subscribers' decoders prove the counting works).
        assert decoder_calls, "subscribers decode: get_decoder must have been seen"
        assert not set(decoder_calls) & relay.decoder_threads()
        assert all(tap.attached for tap in relay.taps)

        # Bad input from the publisher, on the wire: an unknown SSRC, an unknown payload
        # type, a VP8 packet with a truncated descriptor, a burst over the rate, a forwarding
        # error. Each is dropped and counted; nothing stops the stream.
        vtap, atap = relay.taps[video], relay.taps[audio]
        assert vtap.ssrc is not None and vtap.payload_type is not None
        wire = publisher.getSenders()[0].transport
        stranger = RtpPacket(payload_type=vtap.payload_type, ssrc=vtap.ssrc ^ 1, payload=b"x")
        await wire._send_rtp(stranger.serialize())
        # Packets on the publisher's own SSRC go in where aiortc's transport hands them over
        # after SRTP (the publisher's SRTP context would refuse to resend a sequence number):
        # an unknown payload type, a payload aiortc cannot depayload, a VP8 descriptor with
        # no payload after it.
        assert vtap.last_sequence_number is not None
        for payload_type, payload in ((127, b"\x10x"), (vtap.payload_type, b"\x90\x80"),
                                      (vtap.payload_type, b"\x10")):
            packet = RtpPacket(payload_type=payload_type, ssrc=vtap.ssrc, payload=payload,
                               sequence_number=vtap.last_sequence_number)
            await vtap.receiver._handle_rtp_packet(packet, arrival_time_ms=0)
        await until(lambda: {"ssrc", "payload_type", "malformed", "vp8_descriptor"}
                    <= set(vtap.dropped), "the bad packets counted")
        atap.set_max_kbps(1)  # far below what the publisher sends
        await until(lambda: atap.dropped["rate"] >= 5, "over-rate packets dropped")
        atap.set_max_kbps(None)

        async def broken(tap: SourceTap, packet: object, now: float) -> None:
            raise RuntimeError("forwarding bug")

        atap.on_packet, healthy = broken, atap.on_packet
        await until(lambda: atap.dropped["error"] >= 3, "forwarding errors counted")
        atap.on_packet = healthy
        frames_now = [min(s.frames.values()) for s in subscribers]
        await until(lambda: all(min(s.frames.values()) > f + 5
                                for s, f in zip(subscribers, frames_now, strict=True)),
                    "the stream goes on after bad input")

        # Pause sub0's video, then resume: a keyframe is requested and frames decode again.
        forwarder, tap = relay.forwarders[video], relay.taps[video]
        forwarder.pause("sub0")
        await until(lambda: forwarder.stats("sub0").dropped.get("paused", 0) >= 20,
                    "packets dropped while paused")
        requests, frames = tap.keyframe_requests, sum(subscribers[0].video_frames())
        forwarder.resume("sub0")
        await until(lambda: tap.keyframe_requests > requests, "a keyframe request upstream")
        await until(lambda: sum(subscribers[0].video_frames()) >= frames + 5,
                    "decoded frames after resume")
        assert not forwarder.stats("sub0").paused
        # No gap: the subscriber's receiver counted no lost packet across the pause.
        report = await subscribers[0].pc.getTransceivers()[video].receiver.getStats()
        inbound = [s for s in report.values() if s.type == "inbound-rtp"]
        assert inbound and all(s.packetsLost == 0 for s in inbound), inbound
        # ... and never a corrupt frame: no frame cut short, every start on a keyframe.
        failures = [r.message for r in caplog.records if "failed to decode" in r.message]
        assert not failures, failures
    finally:
        for sub in subscribers:
            await sub.close()
        await relay.close()
        await publisher.close()


async def test_two_video_tracks_on_one_connection() -> None:
    # Audio first, then two videos (as Chromium offers): with aiortc's default bundle policy
    # the second video m-line stays on a transport that never connects.
    publisher = make_media_pc(ICE.rtc_configuration())
    publisher.addTrack(AudioStreamTrack())
    publisher.addTrack(CounterVideo())
    publisher.addTrack(CounterVideo())
    sent: dict[int, set[bytes]] = {}
    relay = Relay()
    subscriber = Subscriber()
    try:
        await relay.accept(publisher)
        hash_sent_payloads(publisher, sent)
        assert [t.kind for t in relay.taps] == ["audio", "video", "video"]
        await relay.add_subscriber("sub", subscriber)
        await until(lambda: len(subscriber.frames) == 3
                    and min(subscriber.frames.values()) >= 10,
                    "audio and both videos decoded by the subscriber")
        for i, tap in enumerate(relay.taps):
            got = subscriber.received.get(relay.senders[(i, "sub")].ssrc, [])
            assert tap.ssrc is not None and got and set(got) <= sent[tap.ssrc]
    finally:
        await subscriber.close()
        await relay.close()
        await publisher.close()
