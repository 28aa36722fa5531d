"""``MediaSession`` with real aiortc on loopback: one fixed offerer, tracks added and removed by
renegotiation in both directions, recycling to a fresh connection when the description grows,
and bad signals counted, never crashing."""

import asyncio
from collections import Counter
from collections.abc import Callable

from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpTransceiver
from aiortc.mediastreams import AudioStreamTrack, VideoStreamTrack
from aiortc.rtcconfiguration import RTCBundlePolicy

from meshnode.media.session import RECV, SEND, MediaSession
from meshnode.transport.ice import install_host_addresses
from protocol.link import decode_link, encode_link
from protocol.media import MediaSignal

PUB = "12D3KooWLJNUdScypGX5ivp7CZAJpfhZko6t5sC4fnSubu1G21mi"


def make_pc() -> RTCPeerConnection:
    return RTCPeerConnection(RTCConfiguration(bundlePolicy=RTCBundlePolicy.MAX_BUNDLE))


class Side:
    """A session owner that feeds its sending lines with a synthetic track and records what
    it hears."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []
        self.received: dict[str, RTCRtpTransceiver] = {}
        self.bad: Counter[str] = Counter()

    def sending(self, source_id: str, transceiver: RTCRtpTransceiver) -> None:
        self.events.append(("sending", source_id))
        track = AudioStreamTrack() if transceiver.kind == "audio" else VideoStreamTrack()
        transceiver.sender.replaceTrack(track)

    def receiving(self, source_id: str, transceiver: RTCRtpTransceiver) -> None:
        self.events.append(("receiving", source_id))
        self.received[source_id] = transceiver  # (the offerer's track exists after the answer)

    def ended(self, source_id: str, direction: str, replaced: bool) -> None:
        self.events.append(("ended" + ("_replaced" if replaced else ""), source_id))


def pair() -> tuple[MediaSession, Side, MediaSession, Side]:
    install_host_addresses(("127.0.0.1",))
    a_side, b_side = Side(), Side()
    box: dict[str, MediaSession] = {}

    def to(name: str):  # the wire: encode and decode each signal, like the link does
        def send(msg: MediaSignal) -> bool:
            back = decode_link(encode_link(msg))
            assert isinstance(back, MediaSignal)
            asyncio.get_running_loop().call_soon(box[name].handle, back)
            return True
        return send

    a = MediaSession(offerer=True, send_signal=to("b"), make_pc=make_pc, hooks=a_side,
                     on_bad=lambda r: a_side.bad.update([r]), recycle_sdp_chars=6_000)
    b = MediaSession(offerer=False, send_signal=to("a"), make_pc=make_pc, hooks=b_side,
                     on_bad=lambda r: b_side.bad.update([r]))
    box.update(a=a, b=b)
    return a, a_side, b, b_side


async def until(cond: Callable[[], bool], what: str | Callable[[], str],
                timeout: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not cond():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out: {what if isinstance(what, str) else what()}")
        await asyncio.sleep(0.02)


async def test_lines_both_ways_added_removed_and_recycled() -> None:
    a, a_side, b, b_side = pair()
    try:
        cam, mic, mic2 = f"{PUB}/cam", f"{PUB}/mic", f"{PUB}/mic2"
        a.add(cam, "video", SEND)  # a forwards a camera to b
        a.add(mic, "audio", RECV)  # b publishes a microphone to a
        await until(lambda: cam in b_side.received and mic in a_side.received, "two lines")
        frame = await asyncio.wait_for(b_side.received[cam].receiver.track.recv(), 10)
        assert frame is not None
        assert await asyncio.wait_for(a_side.received[mic].receiver.track.recv(), 10) is not None
        assert ("sending", mic) in b_side.events and ("sending", cam) in a_side.events

        # a second track of one kind on the same connection (MAX_BUNDLE), then removal
        a.add(mic2, "audio", SEND)
        await until(lambda: mic2 in b_side.received, "a second audio line")
        assert await asyncio.wait_for(b_side.received[mic2].receiver.track.recv(), 10) is not None
        a.remove(mic2, SEND)
        await until(lambda: ("ended", mic2) in b_side.events, "the removal")
        assert [ln for ln in b.lines() if ln[0] == mic2] == []

        # churn until the description passes the threshold: a fresh connection follows
        for i in range(6):
            a.add(f"{PUB}/t{i}", "audio", SEND)
            await until(lambda i=i: f"{PUB}/t{i}" in b_side.received, f"line t{i}")
            a.remove(f"{PUB}/t{i}", SEND)
        await until(lambda: a.recycles >= 1, "a recycle")
        assert a.generation == b.generation >= 1
        a.add(f"{PUB}/late", "audio", SEND)
        await until(lambda: f"{PUB}/late" in b_side.received
                    and b_side.events.count(("receiving", cam)) >= 2,
                    lambda: f"live lines on the new connection: {a.lines()} {b.lines()}")
        assert await asyncio.wait_for(b_side.received[cam].receiver.track.recv(), 10) is not None
        assert ("ended_replaced", cam) in a_side.events
        assert a.sdp_chars < 6_000 + 2_000

        # hostile signals are counted and ignored
        a.handle(MediaSignal(a.generation, "offer", "v=0\r\n"))
        b.handle(MediaSignal(b.generation, "answer", "v=0\r\n"))
        b.handle(MediaSignal(b.generation, "offer", "not an sdp"))
        await until(lambda: b_side.bad["media_bad_offer"] == 1, "the bad offer counted")
        assert a_side.bad["media_unexpected_offer"] == 1
        assert b_side.bad["media_unexpected_answer"] == 1
        assert not a.closed and not b.closed
    finally:
        await a.close()
        await b.close()
    assert ("ended", cam) in b_side.events and ("ended", mic) in a_side.events
