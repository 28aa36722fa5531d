"""Bandwidth adaptation through a real impaired path (issue 10, low-bandwidth peers).

A real ``meshnode up`` node, a publisher (noise video that VP8 cannot compress, and voice) and
a subscriber, both real aiortc clients. The subscriber's media connection runs through a
user-space UDP relay (``tests/integration/udp_impair.py``, ICE steered through it by
rewriting the host candidates in its SDP) that can put a bottleneck on the downlink: a
drop-tail queue drained at a set rate. Nothing tells the node about the bottleneck: it learns
it from the subscriber's RTCP (receiver-report loss, REMB), and

- drives the subscriber down to audio only (its video paused) while the bottleneck is under
  the audio-only threshold, the voice still arriving;
- brings the video back (from a keyframe) once the bottleneck is lifted.

Every wait is on a condition, with generous timeouts (no timing is asserted).
"""

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiortc.mediastreams import AudioStreamTrack, MediaStreamTrack

from meshnode.client import connect
from meshnode.identity import Identity
from tests.integration.nodeproc import NodeProcess
from tests.integration.test_line import ICE
from tests.integration.test_media_hard import Frames, NoiseVideo, media_config
from tests.integration.test_media_relay import until
from tests.integration.udp_impair import ImpairedPath

THRESHOLD_KBPS = 100  # the node's audio_only_below_kbps
BOTTLENECK_KBPS = 60


@pytest.fixture
def node(tmp_path: Path) -> Iterator[NodeProcess]:
    proc = NodeProcess(tmp_path / "relay",
                       config=media_config(audio_only_below_kbps=THRESHOLD_KBPS)).start()
    try:
        yield proc
    finally:
        proc.kill()


def packets_in(transceiver: Any) -> int:
    """RTP packets the receiver of ``transceiver`` got so far."""
    streams = transceiver.receiver._RTCRtpReceiver__remote_streams
    return sum(s.packets_received for s in streams.values())


async def test_a_downlink_bottleneck_drives_the_subscriber_to_audio_only_and_back(
        node: NodeProcess) -> None:
    room = node.default_room
    assert room is not None
    path = await ImpairedPath().start()
    try:
        async with connect(node.url, room, Identity.generate(), ice=ICE) as sub:
            assert sub.media.session is not None
            path.steer(sub.media.session)  # before the node's first offer
            frames = Frames(sub)
            audio: list[MediaStreamTrack] = []
            sub.on_track(lambda peer, t: audio.append(t) if t.kind == "audio" else None)
            async with connect(node.url, room, Identity.generate(), ice=ICE) as pub:
                await pub.publish(NoiseVideo())
                await pub.publish(AudioStreamTrack())

                def media() -> dict[str, Any]:
                    got: dict[str, Any] = node.get("/api/status")["media"]
                    return got

                def why() -> str:
                    m = media()
                    return (f"{path.describe()}; frames {frames.count}; node: paused "
                            f"{m['paused']}, estimates {m['estimates']}, rooms {m['rooms']}")

                def measured_video_kbps() -> float:
                    return max((s["kbps"] for r in media()["rooms"].values()
                                for s in r["streams"] if s["kind"] == "video"), default=0.0)

                await until(lambda: frames.count > 20 and audio, lambda: "video and audio "
                            "through the impaired path: " + why())
                # It really runs through the relay, both ways.
                assert path.node_addr is not None and path.counts["down"] > 100
                assert path.counts["up"] > 0
                # The video does not fit below the threshold, by the rate the node measures
                # (over a window of its own: the first frames can arrive before a figure).
                await until(lambda: measured_video_kbps() > 2 * THRESHOLD_KBPS,
                            lambda: "the video's rate measured at the node: " + why())
                video_kbps = measured_video_kbps()
                audio_line = next(t for t in sub.media.transceivers.values()
                                  if t.kind == "audio")

                # (1) A bottleneck under the threshold: the node finds out (loss in the
                # subscriber's receiver reports) and pauses the video: audio only.
                path.impair(rate_kbps=BOTTLENECK_KBPS, queue_bytes=6_000)
                await until(lambda: media()["paused"] >= 1,
                            lambda: "the video paused for the subscriber: " + why(), 120)
                estimates = media()["estimates"]
                print(f"video {video_kbps} kbps; audio only: {why()}")
                assert estimates and min(estimates.values()) < THRESHOLD_KBPS, why()
                assert path.counts["queue_drops"] > 0  # the bottleneck did lose packets
                # The voice goes on through the bottleneck.
                heard = packets_in(audio_line)
                await until(lambda: packets_in(audio_line) > heard + 100,
                            lambda: "voice while audio only: " + why())
                assert len(sub.media.tracks) == 2  # the video line stays, paused

                # (2) The bottleneck lifts: the estimate grows back (by steps, from what the
                # bottleneck let through), the video resumes and decodes (on the same track,
                # or on a new line if it stayed paused past the relay's PAUSED_KEEP_S).
                path.impair()
                decoded = frames.count
                await until(lambda: media()["paused"] == 0 and frames.count > decoded + 30,
                            lambda: "the video back after the bottleneck lifted: " + why(),
                            240)
                print(f"video back: {why()}")
                # No bound left, or one above the threshold.
                assert min(media()["estimates"].values(), default=THRESHOLD_KBPS + 1) \
                    > THRESHOLD_KBPS, why()
            frames.close()
    finally:
        path.close()
