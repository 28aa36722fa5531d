"""The media relay against real ``meshnode up`` processes, real aiortc clients (issue 10):
one publisher, a relay node, three subscribers: the RTP payloads arrive byte-identical and the
node decodes nothing; an audio-only subscriber gets no video; a removed member's media stops
and it is refused; two nodes with a trunk carry one copy of each source between them."""

import asyncio
import hashlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiortc import RTCRtpTransceiver
from aiortc.mediastreams import AudioStreamTrack, MediaStreamTrack, VideoStreamTrack

from meshnode.client import MediaRefusedError, RoomClient, connect
from meshnode.identity import Identity
from meshnode.media.aiortc_driver import SourcePacket, SourceTap
from meshnode.media.rtp import parse_rtp
from tests.integration.nodeproc import NodeProcess, start_host
from tests.integration.test_line import ICE


async def until(predicate: Callable[[], Any], what: str | Callable[[], str],
                timeout: float = 60.0) -> None:
    """Poll without blocking the event loop; ``what`` may be a callable (read on failure)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            said = what if isinstance(what, str) else what()
            raise AssertionError(f"timed out waiting for {said}")
        await asyncio.sleep(0.05)


@pytest.fixture
def relay(tmp_path: Path) -> Iterator[NodeProcess]:
    node = NodeProcess(tmp_path / "relay").start()
    try:
        yield node
    finally:
        node.kill()


class Published:
    """Hashes of every RTP payload the publisher's client sends (before SRTP)."""

    def __init__(self, room: RoomClient) -> None:
        self.hashes: set[bytes] = set()
        assert room.media.session is not None
        self._room = room

    def hook(self) -> None:
        session = self._room.media.session
        assert session is not None and session._pc is not None
        for t in session._pc.getTransceivers():
            transport = t.sender.transport
            if getattr(transport, "_meshnode_hooked", False):
                continue
            original = transport._send_rtp

            async def send(data: bytes, original=original) -> None:  # type: ignore[no-untyped-def]
                if len(data) >= 12 and not 192 <= data[1] <= 223:  # RTP, not RTCP
                    self.hashes.add(hashlib.sha256(parse_rtp_payload(data)).digest())
                await original(data)

            transport._send_rtp = send
            transport._meshnode_hooked = True


def parse_rtp_payload(data: bytes) -> bytes:
    header = parse_rtp(data)
    return data[header.header_len:len(data) - (data[-1] if data[0] & 0x20 else 0)]


class Received:
    """Taps a subscriber's receiving lines and hashes the payloads (test side only)."""

    def __init__(self) -> None:
        self.hashes: dict[str, list[bytes]] = {}
        self.taps: list[SourceTap] = []

    def tap(self, source_id: str, transceiver: RTCRtpTransceiver) -> None:
        async def got(tap: SourceTap, packet: SourcePacket, now: float) -> None:
            self.hashes.setdefault(tap.kind, []).append(hashlib.sha256(packet.payload).digest())

        self.taps.append(SourceTap(transceiver, source_id=source_id, on_packet=got))


async def test_one_publisher_three_subscribers_byte_identical_no_decoder(
        relay: NodeProcess) -> None:
    room = relay.default_room
    assert room is not None
    pub_id = Identity.generate()
    subs = [Identity.generate() for _ in range(3)]
    async with connect(relay.url, room, pub_id, ice=ICE) as pub, \
            connect(relay.url, room, subs[0], ice=ICE) as s0, \
            connect(relay.url, room, subs[1], ice=ICE) as s1, \
            connect(relay.url, room, subs[2], ice=ICE) as s2:
        received = [Received() for _ in range(3)]
        got_tracks: list[list[tuple[str, MediaStreamTrack]]] = [[], [], []]
        for sub, rec, tracks in zip((s0, s1, s2), received, got_tracks, strict=True):
            sub.on_track(lambda peer, track, tracks=tracks: tracks.append((peer, track)))
            media = sub.media
            original = media.receiving

            def receiving(source_id: str, t: RTCRtpTransceiver, rec: Received = rec,
                          original=original) -> None:  # type: ignore[no-untyped-def]
                original(source_id, t)
                rec.tap(source_id, t)

            media.receiving = receiving  # type: ignore[method-assign]
        s2.set_media(audio_only=True)
        video = await pub.publish(VideoStreamTrack())
        audio = await pub.publish(AudioStreamTrack())
        sent = Published(pub)
        sent.hook()

        def counts() -> list[dict[str, int]]:
            return [{k: len(v) for k, v in r.hashes.items()} for r in received]

        await until(lambda: all(len(r.hashes.get("audio", [])) > 50 for r in received)
                    and all(len(r.hashes.get("video", [])) > 30 for r in received[:2]),
                    lambda: f"media at every subscriber: {counts()}\n{relay.log()[-6000:]}", 60)
        # Every payload a subscriber got is one the publisher sent, byte for byte.
        for rec in received:
            for kind, hashes in rec.hashes.items():
                late = [h for h in hashes[5:] if h not in sent.hashes]
                assert not late, f"{len(late)} {kind} payloads changed on the way"
        assert [p for p, _ in got_tracks[0]] == [pub_id.public_id] * 2
        # The audio-only subscriber got no video line and no video bytes.
        assert "video" not in received[2].hashes
        assert [t.kind for _, t in got_tracks[2]] == ["audio"]
        status = await asyncio.to_thread(relay.get, "/api/status")
        media = status["media"]
        assert media["sources"] == 2 and media["outputs"] == 5
        assert media["driver"]["packets_tapped"] > 50
        assert media["driver"]["decoders"] == 0  # the relay never decoded a frame
        metrics = await asyncio.to_thread(relay.metrics)
        assert metrics['meshnode_media_streams{direction="out",kind="video"}'] == 2
        assert metrics["meshnode_media_decoders"] == 0

        # The publisher stops its video: every subscriber's video line ends.
        await video.stop()
        await until(lambda: all("video" not in [t.kind for t in s.media.tracks.values()]
                                for s in (s0, s1)), "the video to end")
        await audio.stop()
        for rec in received:
            for tap in rec.taps:
                tap.detach()


async def test_a_removed_member_loses_its_media_and_is_refused_more(
        tmp_path: Path) -> None:
    node = NodeProcess(tmp_path / "n", args=["--no-default-room"]).start()
    try:
        room = node.post("/api/rooms", {"name": "closed", "admit": "invite",
                                        "private": False})["id"]
        member = Identity.generate()
        token = node.post(f"/api/rooms/{room}/invites", {"role": "editor"})["token"]
        listener_token = node.post(f"/api/rooms/{room}/invites", {"role": "viewer"})["token"]
        async with connect(node.url, room, member, ice=ICE, invite=token) as m, \
                connect(node.url, room, Identity.generate(), ice=ICE,
                        invite=listener_token) as listener:
            tracks: list[str] = []
            listener.on_track(lambda peer, track: tracks.append(peer))
            await m.publish(AudioStreamTrack())
            await until(lambda: tracks == [member.public_id], "the member's audio")
            # The operator removes the member: their media stops, and they are told why.
            await asyncio.to_thread(node.post, f"/api/rooms/{room}/members",
                                    {"peer": member.public_id, "role": "none"})
            await until(lambda: not listener.media.tracks, "the removed member's audio to end")
            await until(lambda: any(r.reason in ("removed", "not_shared")
                                    for r in m.media.refusals), "the refusal")
            with pytest.raises(MediaRefusedError):
                await m.publish(AudioStreamTrack())
        refusals = node.metrics()
        assert sum(v for k, v in refusals.items()
                   if k.startswith("meshnode_media_refusals_total")) >= 1
    finally:
        node.kill()


def _bytes(node: NodeProcess, direction: str) -> float:
    return node.metrics().get(f'meshnode_media_bytes_total{{direction="{direction}"}}', 0.0)


async def test_two_nodes_one_trunk_copy_for_five_subscribers(tmp_path: Path) -> None:
    a = NodeProcess(tmp_path / "a").start()
    b: NodeProcess | None = None
    try:
        room = a.default_room
        assert room is not None
        b = start_host(tmp_path / "b", a, room, a)
        publisher = Identity.generate()
        async with connect(a.url, room, publisher, ice=ICE) as pub:
            # B hosts the room invite-only (it joined with an invite): B invites its listeners.
            subs = [connect(b.url, room, Identity.generate(), ice=ICE, invite=b.post(
                f"/api/rooms/{room}/invites", {"role": "viewer"})["token"]) for _ in range(5)]
            for sub in subs:
                await sub.__aenter__()
            try:
                audio = await pub.publish(AudioStreamTrack())
                await until(lambda: all(len(s.media.tracks) == 1 for s in subs),
                            lambda: "the audio at B's five subscribers\n" + b.log()[-4000:])
                # A track added while running crosses too, then goes away.
                video = await pub.publish(VideoStreamTrack())
                await until(lambda: all(len(s.media.tracks) == 2 for s in subs),
                            "the video at B's subscribers")
                for sub in subs:
                    assert await asyncio.wait_for(
                        next(t for t in sub.media.tracks.values() if t.kind == "video").recv(),
                        20) is not None
                before_in, before_trunk = _bytes(a, "in"), _bytes(a, "trunk")
                before_out_b = _bytes(b, "out")
                await asyncio.sleep(3)
                sent_in = _bytes(a, "in") - before_in
                on_trunk = _bytes(a, "trunk") - before_trunk
                fanned_out = _bytes(b, "out") - before_out_b
                # One copy of each source crosses A-B; B fans out five.
                assert sent_in > 2_000, (sent_in, on_trunk, fanned_out)
                assert 0.8 * sent_in < on_trunk < 1.2 * sent_in, (sent_in, on_trunk, fanned_out)
                assert fanned_out > 4 * on_trunk
                await video.stop()
                await until(lambda: all(len(s.media.tracks) == 1 for s in subs),
                            "the video to end at B's subscribers")
                await audio.stop()
            finally:
                for sub in subs:
                    await sub.__aexit__(None, None, None)
    finally:
        if b is not None:
            b.kill()
        a.kill()
