"""``MediaRelay``'s ``relay_full`` notices when the room's cap demotes a video: told once per
demotion, not once per subscriber and video for ever. A video that was demoted, came back when
the room had room again, and was demoted a second time is announced again.

The relay runs for real (its planner, selector, caps and refusal bookkeeping); the link
manager, the driver and the endpoints are stand-ins recording what the relay does to them.
"""

from typing import Any, cast

from aiortc import RTCRtpTransceiver

from meshnode.media.config import MediaConfig
from meshnode.media.endpoint import Preferences, SourceInfo
from meshnode.media.relay import MediaDriver, MediaRelay
from meshnode.metrics import NodeMetrics
from meshnode.runtime.links import LinkManager

ROOM = b"r" * 32
PUB, SUB = "12D3KooWPub", "12D3KooWSub"
CAM = f"{PUB}/cam"


class Links:
    def register(self, service: Any) -> None:
        pass


class Tap:
    def __init__(self) -> None:
        self.kbps = 500.0
        self.audio_level: int | None = None
        self.last_spoke: float | None = None
        self.layer_kbps: tuple[float, ...] = ()

    def close(self) -> None:
        pass


class Output:
    estimate_kbps = loss = rtt_ms = None
    reports = sent_bytes = 0

    def __init__(self) -> None:
        self.paused = False

    def set_max_tid(self, tid: int | None) -> None:
        pass

    def pause(self) -> None:
        self.paused = True

    def resume(self) -> None:
        self.paused = False

    def close(self) -> None:
        pass


class Driver:
    def __init__(self) -> None:
        self.tap_ = Tap()
        self.outputs: list[Output] = []

    def make_pc(self) -> Any:
        raise AssertionError("no connection in this test")

    def tap(self, source: SourceInfo, transceiver: RTCRtpTransceiver) -> Tap:
        return self.tap_

    def output(self, tap: Any, transceiver: RTCRtpTransceiver, key: str,
               trunk: bool) -> Output:
        self.outputs.append(Output())
        return self.outputs[-1]

    def stats(self) -> dict[str, Any]:
        return {}


class Endpoint:
    kind = "client"

    def __init__(self, peer_id: str) -> None:
        self.peer_id = peer_id
        self.refused: list[tuple[str, str]] = []
        self.asked: list[str] = []

    def rooms(self) -> frozenset[bytes]:
        return frozenset((ROOM,))

    def preferences(self, room_id: bytes) -> Preferences:
        return Preferences()

    def add_output(self, source: SourceInfo) -> None:
        self.asked.append(source.source_id)

    def remove_output(self, source_id: str) -> None:
        pass

    def refuse(self, room_id: bytes, reason: str, detail: str, source_id: str = "") -> None:
        self.refused.append((reason, source_id))


def test_a_video_demoted_again_after_recovering_is_announced_again() -> None:
    now = [0.0]
    driver = Driver()
    relay = MediaRelay(cast(LinkManager, Links()), MediaConfig(max_room_kbps=300.0),
                       NodeMetrics(), cast(MediaDriver, driver),
                       access=lambda *a, **k: None,
                       positions=lambda room: {PUB: (1.0, 0.0, 0.0), SUB: (0.0, 0.0, 0.0)},
                       hosted=lambda: {ROOM}, clock=lambda: now[0])
    pub, sub = Endpoint(PUB), Endpoint(SUB)
    relay.attach(pub)
    relay.attach(sub)
    transceiver = cast(RTCRtpTransceiver, object())
    assert relay.publish(pub, SourceInfo(CAM, PUB, "video", ROOM), transceiver) is None

    def tick() -> None:
        now[0] += 0.5
        relay.tick()
        for sid in sub.asked:  # the endpoint negotiated the line it was asked for
            relay.output_ready(sub, sid, transceiver)
        sub.asked.clear()

    # 500 kbps over the room's 300: demoted before it ever flows, and told so.
    tick()
    tick()
    assert sub.refused == [("relay_full", CAM)]
    # The video gets cheaper (the publisher's encoder slows down): it flows.
    driver.tap_.kbps = 200.0
    tick()
    tick()
    assert driver.outputs and not driver.outputs[-1].paused
    assert sub.refused == [("relay_full", CAM)]
    # Dearer again: demoted (paused, its line kept) and told again, once.
    driver.tap_.kbps = 500.0
    tick()
    tick()
    tick()
    assert driver.outputs[-1].paused
    assert sub.refused == [("relay_full", CAM), ("relay_full", CAM)]
    assert relay.refusals["relay_full"] >= 2
