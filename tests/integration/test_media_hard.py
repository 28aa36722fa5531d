"""The media relay hardened, against real ``meshnode up`` processes and real aiortc clients
(issue 10, "Bad input and limits"):

- caps and refusals end to end: a second publication over ``max_publications_per_peer`` and a
  viewer's publication raise ``MediaRefusedError`` with a stable reason at the client (the
  viewer still receives); over ``max_relay_kbps`` existing videos are demoted (paused,
  ``relay_full``), each with a metric and a log line at the node;
- bad input from a real publisher (RTP on an unknown SSRC or payload type, malformed RTP and
  RTCP, a burst far over the ingest cap) and a subscriber's PLI flood are dropped, throttled
  and counted, while another subscriber keeps receiving;
- a subscriber that drops to ``max_kbps`` under the audio-only threshold has its video paused
  (no bytes), and back gets it again on the same track from the next keyframe;
- three nodes in a line A-B-C (C refuses A): a stream published at A crosses A->B->C once each
  for a subscriber at C, and stops crossing when it leaves;
- publications added and removed through a trunk until its media connection recycles, and
  media still flows afterwards.
"""

import asyncio
import fractions
import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from aiortc import RTCRtpTransceiver
from aiortc.mediastreams import AudioStreamTrack, MediaStreamTrack, VideoStreamTrack
from aiortc.rtp import RTCP_PSFB_PLI, RtcpPsfbPacket, RtpPacket
from av import VideoFrame

from meshnode.client import MediaRefusedError, RoomClient, connect
from meshnode.identity import Identity
from meshnode.media.aiortc_driver import IdleTrack
from tests.integration.nodeproc import LOOPBACK_CONFIG, NodeProcess, start_host
from tests.integration.test_line import ICE
from tests.integration.test_media_relay import until


class NoiseVideo(VideoStreamTrack):
    """320x240 noise (a few frames, cycled): VP8 cannot compress it, so it runs at the
    encoder's full rate, hundreds of kbps."""

    def __init__(self) -> None:
        super().__init__()
        rng = np.random.default_rng(7)
        self._frames = [rng.integers(0, 255, (240, 320, 3), dtype=np.uint8) for _ in range(4)]
        self._n = itertools.count()

    async def recv(self) -> VideoFrame:
        pts, time_base = await self.next_timestamp()
        frame = VideoFrame.from_ndarray(self._frames[next(self._n) % 4], format="rgb24")
        frame.pts, frame.time_base = pts, fractions.Fraction(time_base)
        return frame


class Frames:
    """Decodes every video track a client receives, counting frames (the client decodes;
    the node never does)."""

    def __init__(self, room: RoomClient) -> None:
        self.count = 0
        self.tracks: list[MediaStreamTrack] = []
        self._tasks: list[asyncio.Task[None]] = []
        room.on_track(self._got)

    def _got(self, peer: str, track: MediaStreamTrack) -> None:
        if track.kind == "video":
            self.tracks.append(track)
            self._tasks.append(asyncio.get_running_loop().create_task(self._read(track)))

    async def _read(self, track: MediaStreamTrack) -> None:
        while True:
            try:
                await track.recv()
            except Exception:
                return
            self.count += 1

    def close(self) -> None:
        for task in self._tasks:
            task.cancel()


def media_config(**keys: Any) -> str:
    body = "\n".join(f"{k} = {v}" for k, v in keys.items())
    return LOOPBACK_CONFIG + f"\n[media]\n{body}\n"


def metric(node: NodeProcess, name: str, **labels: str) -> float:
    inner = ",".join(f'{k}="{v}"' for k, v in labels.items())
    key = f"{name}{{{inner}}}" if inner else name
    return node.metrics().get(key, 0.0)


async def status(node: NodeProcess) -> dict[str, Any]:
    media: dict[str, Any] = (await asyncio.to_thread(node.get, "/api/status"))["media"]
    return media


def sending(room: RoomClient, kind: str) -> RTCRtpTransceiver:
    session = room.media.session
    assert session is not None and session._pc is not None
    return next(t for t in session._pc.getTransceivers()
                if t.sender.track is not None and t.sender.track.kind == kind)


# ---------------------------------------------------------------------- caps and refusals


async def test_caps_and_refusals_reach_the_client_typed_and_are_counted(
        tmp_path: Path) -> None:
    node = NodeProcess(tmp_path / "n", config=media_config(
        max_publications_per_peer=1, max_relay_kbps=150)).start()
    try:
        room = node.default_room
        assert room is not None
        viewer_token = node.post(f"/api/rooms/{room}/invites", {"role": "viewer"})["token"]
        async with connect(node.url, room, Identity.generate(), ice=ICE) as talker, \
                connect(node.url, room, Identity.generate(), ice=ICE) as camera, \
                connect(node.url, room, Identity.generate(), ice=ICE,
                        invite=viewer_token) as viewer:
            heard: list[str] = []
            viewer.on_track(lambda peer, track: heard.append(track.kind))
            await talker.publish(AudioStreamTrack())
            # One publication per peer: the second is refused, typed, with its reason.
            with pytest.raises(MediaRefusedError) as refused:
                await talker.publish(AudioStreamTrack())
            assert refused.value.reason == "too_many_publications"
            # A viewer receives, but may not publish.
            await until(lambda: "audio" in heard, "the viewer hears the talker")
            with pytest.raises(MediaRefusedError) as refused:
                await viewer.publish(AudioStreamTrack())
            assert refused.value.reason == "read_only"
            # A video far over what is left of max_relay_kbps: demoted for its subscribers
            # (paused; they are told relay_full), the audio goes on.
            await camera.publish(NoiseVideo())
            await until(lambda: any(r.reason == "relay_full" for r in viewer.media.refusals),
                        lambda: f"relay_full at the viewer\n{node.log()[-3000:]}")
            media = await status(node)
            assert media["paused"] >= 1
            assert media["kbps_out"] <= 150 * 1.5, media  # measured over a window: slack
        for reason in ("too_many_publications", "read_only", "relay_full"):
            assert metric(node, "meshnode_media_refusals_total", reason=reason) >= 1, reason
            assert f": {reason}" in node.log(), reason
    finally:
        node.kill()


# ---------------------------------------------------------------------- bad input, flood, switch


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    # Publishers' ingest cap: 2 x max_peer_kbps = 1 Mbps.
    node = NodeProcess(tmp_path_factory.mktemp("relay") / "n",
                       config=media_config(max_peer_kbps=500)).start()
    try:
        yield node
    finally:
        node.kill()


async def test_bad_input_and_a_keyframe_flood_are_counted_and_others_still_served(
        relay: NodeProcess) -> None:
    room = relay.default_room
    assert room is not None
    async with connect(relay.url, room, Identity.generate(), ice=ICE) as pub, \
            connect(relay.url, room, Identity.generate(), ice=ICE) as burster, \
            connect(relay.url, room, Identity.generate(), ice=ICE) as flooder, \
            connect(relay.url, room, Identity.generate(), ice=ICE) as other:
        frames = Frames(other)
        await pub.publish(VideoStreamTrack())
        await pub.publish(AudioStreamTrack())
        # The burster's track never yields: its SSRC (known to the node from the SDP) carries
        # only what the test writes, with sequence numbers of its own.
        await burster.publish(IdleTrack("video"))
        await until(lambda: frames.count > 10 and len(flooder.media.transceivers) >= 2,
                    "video at both subscribers")
        audio = sending(pub, "audio")
        transport = audio.sender.transport
        opus = audio._codecs[0].payloadType
        before = await status(relay)
        drops_before = dict(before["driver"]["drops"])

        def rtp(ssrc: int, pt: int, seq: int = 1, payload: bytes = bytes(100)) -> bytes:
            return RtpPacket(payload_type=pt, sequence_number=seq, timestamp=seq, ssrc=ssrc,
                             payload=payload).serialize()

        for i in range(20):  # (SRTP refuses to send one SSRC's sequence number twice)
            # An SSRC nobody announced, on the audio's payload type: it reaches the audio
            # receiver, whose tap knows its SSRC.
            await transport._send_rtp(rtp(0x5EED0000 + i, opus))
            await transport._send_rtp(rtp(0x5EED1000 + i, 127))  # nobody's payload type
            # Padding bit set, padding length 0 (SRTP carries it; aiortc cannot parse it).
            await transport._send_rtp(bytes([0xA0, opus, 0, 1, 0, 0, 0, 1])
                                      + (0x5EED2000 + i).to_bytes(4) + bytes(10))
            await transport._send_rtp(bytes([0x80, 201, 0, 40, 0, 0, 0, 1]))  # RTCP, truncated
        # Far over the ingest cap (1 Mbps, a 1 s bucket: 125 kB): 2.2 MB as fast as it goes.
        idle = sending(burster, "video")
        vp8 = idle._codecs[0].payloadType
        for i in range(2000):
            await idle.sender.transport._send_rtp(
                rtp(idle.sender._ssrc, vp8, i, b"\x10" + bytes(1099)))
        # The flooder asks for a keyframe 300 times as fast as it can.
        sub_video = next(t for sid, t in flooder.media.transceivers.items()
                         if t.kind == "video" and sid.startswith(pub.peer_id))
        relay_ssrc = sub_video.receiver.getSynchronizationSources()[0].source
        sub_transport = sub_video.receiver.transport
        for _ in range(300):
            await sub_transport._send_rtp(bytes(RtcpPsfbPacket(
                fmt=RTCP_PSFB_PLI, ssrc=1, media_ssrc=relay_ssrc)))
        counted = frames.count

        def drops() -> dict[str, int]:
            return {k: v - drops_before.get(k, 0)
                    for k, v in last["driver"]["drops"].items()}

        last = before

        async def refresh() -> None:
            nonlocal last
            last = await status(relay)

        deadline = asyncio.get_running_loop().time() + 60
        while asyncio.get_running_loop().time() < deadline:
            await refresh()
            d = drops()
            if (d.get("ssrc", 0) >= 19 and d.get("unrouted", 0) >= 20
                    and d.get("malformed_rtp", 0) >= 20 and d.get("malformed_rtcp", 0) >= 20
                    and d.get("rate", 0) >= 100 and d.get("keyframe_throttled", 0) >= 250):
                break
            await asyncio.sleep(0.5)
        else:
            raise AssertionError(f"drops not counted: {drops()}")
        # Throttled: at most one keyframe request upstream per 300 ms, not 300.
        upstream = last["driver"]["keyframe_requests"] - before["driver"]["keyframe_requests"]
        assert upstream < 30, upstream
        # The other subscriber goes on decoding, and the node never decoded.
        await until(lambda: frames.count > counted + 30,
                    lambda: f"frames after the bad input: {frames.count - counted}, "
                    f"{relay.get('/api/status')['media']}")
        assert last["driver"]["decoders"] == 0
        m = await asyncio.to_thread(relay.metrics)
        for reason in ("ssrc", "unrouted", "malformed_rtp", "malformed_rtcp", "rate",
                       "keyframe_throttled"):
            assert m.get(f'meshnode_media_drops_total{{reason="{reason}"}}', 0) >= 1, reason
        assert "dropping packets (rate)" in relay.log()
        frames.close()


async def test_below_the_threshold_video_pauses_and_resumes_on_the_same_track(
        relay: NodeProcess) -> None:
    room = relay.default_room
    assert room is not None
    async with connect(relay.url, room, Identity.generate(), ice=ICE) as pub, \
            connect(relay.url, room, Identity.generate(), ice=ICE) as sub:
        frames = Frames(sub)
        audio_tracks: list[MediaStreamTrack] = []
        sub.on_track(lambda peer, t: audio_tracks.append(t) if t.kind == "audio" else None)
        await pub.publish(VideoStreamTrack())
        await pub.publish(AudioStreamTrack())
        await until(lambda: frames.count > 20 and audio_tracks, "video and audio")
        video_in = next(t for t in sub.media.transceivers.values() if t.kind == "video")

        def received() -> int:
            stats = video_in.receiver._RTCRtpReceiver__remote_streams  # type: ignore[attr-defined]
            return sum(s.packets_received for s in stats.values())

        # A weak link: 50 kbps is under audio_only_below_kbps (100): audio only.
        sub.set_media(max_kbps=50)
        await until(lambda: relay.get("/api/status")["media"]["paused"] >= 1, "video paused")
        await asyncio.sleep(1.0)  # what was in flight arrives
        packets, decoded = received(), frames.count
        await asyncio.sleep(3.0)
        assert received() - packets <= 2, "video bytes while audio only"
        assert len(sub.media.tracks) == 2  # the line stays: no renegotiation to come back
        # Back to full: the same track decodes again, from the next keyframe.
        sub.set_media()
        await until(lambda: frames.count > decoded + 30, "video frames after resuming")
        assert len(frames.tracks) == 1  # no new track: resumed, not re-added
        assert (await status(relay))["paused"] == 0
        frames.close()


# ---------------------------------------------------------------------- three nodes in a line


def _bytes(node: NodeProcess, direction: str) -> float:
    return metric(node, "meshnode_media_bytes_total", direction=direction)


async def test_a_stream_crosses_a_line_of_three_nodes_once_each_and_stops(
        tmp_path: Path) -> None:
    a = NodeProcess(tmp_path / "a").start()
    nodes = [a]
    try:
        room = a.default_room
        assert room is not None
        b = start_host(tmp_path / "b", a, room, a)
        nodes.append(b)
        c = start_host(tmp_path / "c", a, room, b)
        nodes.append(c)
        # Then C refuses A (restarted with a federation policy): the only path from A to C
        # is through B.
        c.terminate()
        c.config_path.write_text(LOOPBACK_CONFIG + f'\n[federation]\ndeny = ["{a.peer_id}"]\n')
        c.start()
        c.wait_for(lambda: any(r["id"] == room and b.peer_id in r["peers"]
                               for r in c.get("/api/rooms")), "C shares the room with B")
        token = c.post(f"/api/rooms/{room}/invites", {"role": "viewer"})["token"]
        async with connect(a.url, room, Identity.generate(), ice=ICE) as pub:
            await pub.publish(AudioStreamTrack())
            async with connect(c.url, room, Identity.generate(), ice=ICE,
                               invite=token) as sub:
                await until(lambda: len(sub.media.tracks) == 1,
                            lambda: "the audio at C\n" + c.log()[-3000:] + b.log()[-3000:])
                start = {n: (_bytes(n, "in"), _bytes(n, "trunk"), _bytes(n, "out"))
                         for n in nodes}
                await asyncio.sleep(3)
                d = {n: tuple(x - y for x, y in zip(
                    (_bytes(n, "in"), _bytes(n, "trunk"), _bytes(n, "out")), start[n],
                    strict=True)) for n in nodes}
                one = d[a][0]  # one copy: what A took in from its publisher
                assert one > 200, d  # silence: Opus frames of a few bytes
                assert 0.8 * one < d[a][1] < 1.2 * one, ("A sends one copy to B", d)
                assert 0.8 * one < d[b][0] < 1.2 * one, ("B takes one copy in", d)
                assert 0.8 * one < d[b][1] < 1.2 * one, ("B relays one copy to C", d)
                assert d[b][2] == 0, ("B has no subscriber", d)
                assert 0.8 * one < d[c][0] < 1.2 * one and d[c][1] == 0, d
                assert 0.8 * one < d[c][2] < 1.2 * one, ("C's subscriber gets it", d)
                assert not any(r["id"] == room and a.peer_id in r["peers"]
                               for r in c.get("/api/rooms")), "C linked to A"
            # The subscriber left: the stream stops crossing B and C.
            await until(lambda: (a.get("/api/status")["media"]["outputs"] == 0
                                 and b.get("/api/status")["media"]["sources"] == 0),
                        "the trunk copies to stop")
            quiet = (_bytes(a, "trunk"), _bytes(b, "trunk"))
            await asyncio.sleep(2)
            assert (_bytes(a, "trunk"), _bytes(b, "trunk")) == quiet
    finally:
        for n in nodes:
            n.kill()


# ---------------------------------------------------------------------- recycling


async def test_a_trunk_recycles_after_many_publications_and_media_keeps_flowing(
        tmp_path: Path) -> None:
    config = media_config(recycle_sdp_chars=4000)
    a = NodeProcess(tmp_path / "a", config=config).start()
    b: NodeProcess | None = None
    try:
        room = a.default_room
        assert room is not None
        b = start_host(tmp_path / "b", a, room, a, config=config)
        token = b.post(f"/api/rooms/{room}/invites", {"role": "viewer"})["token"]
        async with connect(a.url, room, Identity.generate(), ice=ICE) as pub, \
                connect(b.url, room, Identity.generate(), ice=ICE, invite=token) as sub:
            trunk_recycles = 0
            for i in range(12):
                pubn = await pub.publish(AudioStreamTrack())
                await until(lambda: len(sub.media.tracks) == 1, f"publication {i} at B")
                await pubn.stop()
                await until(lambda: not sub.media.tracks, f"publication {i} to end at B")
                trunk_recycles = ((await status(a))["recycles"]["node"]
                                  + (await status(b))["recycles"]["node"])
                if trunk_recycles:
                    break
            assert trunk_recycles >= 1, "the trunk's media connection never recycled"
            frames = Frames(sub)
            await pub.publish(VideoStreamTrack())
            await until(lambda: frames.count > 30, "video through the recycled trunk")
            frames.close()
    finally:
        if b is not None:
            b.kill()
        a.kill()
