"""The browser's voice and video (``meshnode.web.media``): the media messages, the node's
side of one browser's media, and two headless Chromium pages negotiating media with a node
whose relay is a recording ``RelayPort``."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpTransceiver
from hypothesis import given, settings
from hypothesis import strategies as st

from meshnode.client import connect
from meshnode.identity import Identity
from meshnode.media.endpoint import MediaEndpoint, SourceInfo
from meshnode.transport.ice import IceSettings
from meshnode.web.media import (
    BrowserMedia,
    MediaLimits,
    MediaRights,
    browser_source_id,
    person_key,
)
from meshnode.web.media_messages import (
    BadMediaMessage,
    MediaOffer,
    MediaPrefsRequest,
    MediaPublish,
    MediaRefusal,
    parse_media_message,
)
from meshnode.web.routes import add_web_routes
from tests.integration.nodeproc import LOOPBACK_CONFIG, NodeProcess, start_host

from .chromium import Chromium
from .conftest import MEDIA_FLAGS
from .test_web_client import FakeRoom, Wire, loopback_ice, until

__all__ = ["loopback_ice"]  # the fixture, imported so pytest finds it here

PEER = "12D3KooWLRQSFLEwE3dE5VSqECWWSadt3QLiG1vsjSNszyVSCFux"


# ---------------------------------------------------------------------- the messages


def test_media_messages_parse_to_typed_requests() -> None:
    assert parse_media_message({"t": "media_offer", "req": 1, "sdp": "v=0\r\nm=application"}) \
        == MediaOffer(1, "v=0\r\nm=application")
    publish = parse_media_message({"t": "media_publish", "req": 2,
                                   "tracks": [{"mid": "1", "kind": "video"}]})
    assert isinstance(publish, MediaPublish) and publish.tracks[0].kind == "video"
    assert parse_media_message({"t": "media_prefs", "req": 3, "audio_only": True,
                                "max_kbps": 1e12}) == MediaPrefsRequest(3, True, 1_000_000.0)


@pytest.mark.parametrize(("msg", "reason"), [
    ({"t": "media_offer", "sdp": "v=0 m=application"}, MediaRefusal.BAD_MESSAGE),
    ({"t": "media_offer", "req": -1, "sdp": "v=0"}, MediaRefusal.BAD_MESSAGE),
    ({"t": "media_offer", "req": 1, "sdp": 5}, MediaRefusal.BAD_MESSAGE),
    ({"t": "media_offer", "req": 1, "sdp": "v=0\r\nm=audio 9"}, MediaRefusal.BAD_SDP),
    ({"t": "media_offer", "req": 1, "sdp": "v=0 m=application" + "x" * 70_000},
     MediaRefusal.BAD_SDP),
    ({"t": "media_publish", "req": 1, "tracks": {}}, MediaRefusal.BAD_MESSAGE),
    ({"t": "media_publish", "req": 1, "tracks": [{"mid": "1", "kind": "text"}]},
     MediaRefusal.BAD_MESSAGE),
    ({"t": "media_publish", "req": 1, "tracks": [{"mid": "a b", "kind": "audio"}]},
     MediaRefusal.BAD_MESSAGE),
    ({"t": "media_publish", "req": 1, "tracks": [{"mid": "1", "kind": "audio"}] * 2},
     MediaRefusal.BAD_MESSAGE),
    ({"t": "media_publish", "req": 1,
      "tracks": [{"mid": str(i), "kind": "audio"} for i in range(9)]},
     MediaRefusal.TOO_MANY_TRACKS),
    ({"t": "media_prefs", "req": 1, "audio_only": "yes"}, MediaRefusal.BAD_MESSAGE),
    ({"t": "media_prefs", "req": 1, "max_kbps": 0}, MediaRefusal.BAD_MESSAGE),
    ({"t": "media_prefs", "req": 1, "max_kbps": True}, MediaRefusal.BAD_MESSAGE),
    ({"t": "media_prefs", "req": 1, "max_kbps": float("nan")}, MediaRefusal.BAD_MESSAGE),
])
def test_bad_media_messages_are_refused_with_a_reason(msg: dict[str, Any],
                                                      reason: MediaRefusal) -> None:
    with pytest.raises(BadMediaMessage) as caught:
        parse_media_message(msg)
    assert caught.value.reason is reason


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(kind=st.sampled_from(["media_offer", "media_publish", "media_prefs"]),
       fields=st.dictionaries(st.sampled_from(["req", "sdp", "tracks", "audio_only",
                                               "max_kbps", "mid", "kind"]), _json))
def test_any_media_message_parses_or_is_refused(kind: str, fields: dict[str, Any]) -> None:
    try:
        request = parse_media_message({**fields, "t": kind})
    except BadMediaMessage as bad:
        assert isinstance(bad.reason, MediaRefusal) and bad.text
    else:
        assert request.req == fields["req"]


def test_sources_of_browsers_map_to_people() -> None:
    source = browser_source_id(PEER, "browser-7", "3")
    assert source == f"{PEER}/web.browser-7.3"
    assert person_key(SourceInfo(source, PEER, "video", b"r")) == f"{PEER}#browser-7"
    assert person_key(SourceInfo(f"{PEER}/cam", PEER, "video", b"r")) == PEER
    with pytest.raises(ValueError):
        browser_source_id(PEER, "browser 7", "3")


# ---------------------------------------------------------------------- a recording relay


class RecordingPort:
    """A ``RelayPort`` that records what endpoints tell it (the relay's own logic is tested
    with the relay); ``refuse_kinds`` makes ``publish`` refuse those kinds."""

    def __init__(self) -> None:
        self.endpoints: list[MediaEndpoint] = []
        self.published: dict[str, tuple[SourceInfo, RTCRtpTransceiver]] = {}
        self.outputs: dict[tuple[int, str], RTCRtpTransceiver] = {}
        self.prefs_changes = 0
        self.detached = 0
        self.refuse_kinds: set[str] = set()

    def attach(self, endpoint: MediaEndpoint) -> None:
        self.endpoints.append(endpoint)

    def detach(self, endpoint: MediaEndpoint) -> None:
        self.detached += 1

    def publish(self, endpoint: MediaEndpoint, source: SourceInfo,
                transceiver: RTCRtpTransceiver) -> str | None:
        if source.kind in self.refuse_kinds:
            endpoint.refuse(source.room_id, "publications_cap", "one is enough", source.source_id)
            return "publications_cap"
        self.published[source.source_id] = (source, transceiver)
        return None

    def unpublish(self, endpoint: MediaEndpoint, source_id: str) -> None:
        self.published.pop(source_id, None)

    def output_ready(self, endpoint: MediaEndpoint, source_id: str,
                     transceiver: RTCRtpTransceiver) -> None:
        self.outputs[(id(endpoint), source_id)] = transceiver

    def output_ended(self, endpoint: MediaEndpoint, source_id: str) -> None:
        self.outputs.pop((id(endpoint), source_id), None)

    def preferences_changed(self, endpoint: MediaEndpoint, room_id: bytes) -> None:
        self.prefs_changes += 1


class OneRelay:
    """``BrowserMediaHost`` with one relay for every room."""

    def __init__(self, port: RecordingPort) -> None:
        self.port = port

    def relay_for(self, room_id: bytes) -> RecordingPort:
        return self.port


def new_media(*, publish: bool = True, port: RecordingPort | None = None,
              limits: MediaLimits | None = None) -> tuple[BrowserMedia, Wire, RTCPeerConnection]:
    wire = Wire()
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    media = BrowserMedia(
        pc, lambda m: wire(json.dumps(m)), name="browser-1", node_peer=PEER, room_id=b"\1" * 32,
        rights=MediaRights(receive=True, publish=publish, role="editor" if publish else "viewer"),
        port=port, limits=limits,
    )
    media.start()
    return media, wire, pc


async def browser_offer(*, audio: int = 0, video: int = 0, send: tuple[str, ...] = ()) -> str:
    """An offer like the page's: a data channel, ``send`` kinds sendonly and receive slots."""
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.createDataChannel("client")
    for kind in send:
        pc.addTransceiver(kind, direction="sendonly")
    for kind, n in (("audio", audio), ("video", video)):
        for _ in range(n):
            pc.addTransceiver(kind, direction="recvonly")
    await pc.setLocalDescription(await pc.createOffer())
    sdp: str = pc.localDescription.sdp
    await pc.close()
    return sdp


async def test_a_browser_without_a_relay_is_told_media_is_off() -> None:
    media, wire, pc = new_media()
    try:
        assert wire.sent[0]["t"] == "media_hello" and wire.sent[0]["enabled"] is False
        await media.handle({"t": "media_prefs", "req": 4, "audio_only": True})
        assert wire.last() == {"t": "media_refused", "req": 4, "reason": "media_off",
                               "error": "this node relays no voice or video in this room"}
        assert media.counters["media_media_off"] == 1
    finally:
        await pc.close()


async def test_the_node_refuses_what_a_page_may_not_do() -> None:
    port = RecordingPort()
    media, wire, pc = new_media(publish=False, port=port,
                                limits=MediaLimits(max_receive_video=1, message_rate=0.001,
                                                  message_burst=6))
    try:
        assert wire.sent[0]["publish"] is False
        # The relay knows of the page from its first media message on.
        assert port.endpoints == []
        # A viewer's page may not publish...
        await media.handle({"t": "media_offer", "req": 1,
                            "sdp": await browser_offer(send=("audio",))})
        assert wire.last()["reason"] == "no_role"
        assert port.endpoints == [media]
        # ...nor take more receive slots than its cap, nor publish an m-line it never offered.
        await media.handle({"t": "media_offer", "req": 2, "sdp": await browser_offer(video=2)})
        assert wire.last()["reason"] == "too_many_tracks"
        await media.handle({"t": "media_publish", "req": 3, "tracks": []})
        assert wire.last() == {"t": "ack", "req": 3, "ok": True}
        await media.handle({"t": "media_offer", "req": 4, "sdp": "v=0\r\nm=application x\r\n"
                            "m=text 9 RTP/AVP 0\r\n"})
        assert wire.last()["reason"] == "bad_sdp"
        await media.handle({"t": "media_unknown", "req": 5})
        assert wire.last()["reason"] == "bad_message"
        # Over its rate: refused, not queued.
        await media.handle({"t": "media_prefs", "req": 6})
        await media.handle({"t": "media_prefs", "req": 7})
        assert wire.last()["reason"] == "rate_limited"
        assert pc.signalingState == "stable" and port.published == {}
        assert media.counters["media_no_role"] == 1 and media.counters["media_rate_limited"] == 1
    finally:
        media.close()
        await pc.close()
    assert port.detached == 1


# ---------------------------------------------------------------------- in Chromium


@pytest.fixture
async def media_app(loopback_ice: IceSettings
                    ) -> AsyncIterator[tuple[TestClient[Any, Any], FakeRoom, RecordingPort]]:
    room = FakeRoom()
    port = RecordingPort()
    app = web.Application()
    add_web_routes(
        app,
        rooms=lambda hex_id: room if hex_id == room.room_id.hex() else None,
        default_room=lambda: room.room_id.hex(),
        ice=loopback_ice,
        media=OneRelay(port),
    )
    client: TestClient[Any, Any] = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    try:
        yield client, room, port
    finally:
        await client.close()


async def test_pages_publish_and_get_receive_slots_by_renegotiation(
    media_chromium: Chromium,
    media_app: tuple[TestClient[Any, Any], FakeRoom, RecordingPort],
) -> None:
    client, room, port = media_app
    url = f"http://127.0.0.1:{client.port}/?room={room.room_id.hex()}"
    speaker = await media_chromium.new_page()
    listener = await media_chromium.new_page()
    try:
        for page in (speaker, listener):
            await page.goto(url)
            await page.evaluate("window.meshnode.ready")
        await until(lambda: len(port.endpoints) == 2)
        hello = await speaker.evaluate("window.meshnode.media.hello()")
        assert hello["enabled"] and hello["publish"] and hello["receive"]
        who = hello["publisher"]

        # The speaker's camera (VP8, three temporal layers) and microphone become sources.
        await speaker.evaluate("window.meshnode.media.camera(true)")
        await speaker.evaluate("window.meshnode.media.microphone(true)")
        published = await speaker.evaluate("window.meshnode.media.published()")
        assert published == {"audio": True, "video": True, "scalabilityMode": "L1T3"}
        assert sorted(s.kind for s, _ in port.published.values()) == ["audio", "video"]
        for source, transceiver in port.published.values():
            assert person_key(source) == who and transceiver.receiver.track.kind == source.kind

        # The relay sends them to the listener: it is asked for slots, offers, gets them.
        speaker_end, listener_end = port.endpoints
        assert isinstance(listener_end, BrowserMedia)
        for source, _ in list(port.published.values()):
            listener_end.add_output(source)
        await until(lambda: len([k for k in port.outputs if k[0] == id(listener_end)]) == 2)
        streams = await listener.evaluate("""new Promise((resolve) => {
            const poll = () => window.meshnode.media.streams().length === 2
              ? resolve(window.meshnode.media.streams()) : setTimeout(poll, 20);
            poll(); })""")
        assert {s["publisher"] for s in streams} == {who}
        assert {s["kind"] for s in streams} == {"audio", "video"}
        for s in streams:
            transceiver = port.outputs[(id(listener_end), s["source"])]
            assert transceiver.mid == s["mid"] and transceiver.direction == "sendonly"
        assert listener_end.counters["media_renegotiate"] == 1

        # A slot freed by one source is reused by the next, without renegotiating.
        video = next(s for s in streams if s["kind"] == "video")
        listener_end.remove_output(video["source"])
        other = SourceInfo(f"{PEER}/cam", PEER, "video", room.room_id)
        listener_end.add_output(other)
        assert port.outputs[(id(listener_end), other.source_id)].mid == video["mid"]
        assert listener_end.counters["media_renegotiate"] == 1

        # Preferences reach the relay; the camera going off unpublishes it.
        await listener.evaluate("window.meshnode.media.setPrefs({audio_only: true})")
        # (each page sent its preferences on the node's hello, then the listener's change)
        assert port.prefs_changes == 3 and listener_end.preferences(b"").audio_only
        await speaker.evaluate("window.meshnode.media.camera(false)")
        assert [s.kind for s, _ in port.published.values()] == ["audio"]

        # The relay's refusal reaches the page as a refused request.
        port.refuse_kinds.add("video")
        with pytest.raises(Exception, match="publications_cap"):
            await speaker.evaluate("window.meshnode.media.camera(true)")
        errors = [m for p in (speaker, listener) for m in p.console
                  if m.kind in ("exception", "log:error")]
        assert not errors, [str(m) for m in errors]
        assert speaker_end.counters["media_relay_refused"] == 2  # its refusal and the answer
    finally:
        await speaker.close()
        await listener.close()
        await asyncio.sleep(0)


# ---------------------------------------------------------------------- through a real node

# Pages of one Chromium in the background must not be throttled (timers, decoding).
NODE_MEDIA_FLAGS = (*MEDIA_FLAGS, "--disable-background-timer-throttling",
                    "--disable-renderer-backgrounding",
                    "--disable-backgrounding-occluded-windows")

# The browser and the node of these tests carry live media, judged frame by frame (no
# freeze): they run ahead of the other tests on the machine (as netsim emulate's nodes do),
# each standing for a machine of its own. (Root only; otherwise at the usual priority.)
REALTIME_NICE = -10

# The page's receiving streams and their getStats rows, once `cond(rows)` holds (polled).
WAIT_ROWS = """new Promise((resolve, reject) => {
    const cond = (rows) => COND;
    const t = setTimeout(async () => reject(new Error(
        "timed out: " + JSON.stringify(await window.meshnode.media.stats()))), TIMEOUT_MS);
    const poll = async () => {
      const rows = await window.meshnode.media.stats();
      if (cond(rows)) { clearTimeout(t); resolve(rows); } else setTimeout(poll, 200);
    };
    poll(); })"""


async def wait_rows(page: Any, cond: str, timeout_s: float = 90.0) -> list[dict[str, Any]]:
    """The page's receiving stats rows once the JavaScript ``cond`` (over ``rows``) holds."""
    rows: list[dict[str, Any]] = await page.evaluate(
        WAIT_ROWS.replace("COND", cond).replace("TIMEOUT_MS", str(int(timeout_s * 1000))),
        timeout=timeout_s + 10)
    return rows


def row(rows: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [r for r in rows if r["kind"] == kind]
    assert len(found) == 1, rows
    return found[0]


MEDIA_CONFIG = """
[media]
audio_only_below_kbps = 30
"""


@pytest.fixture
def media_node(tmp_path: Path) -> Iterator[NodeProcess]:
    """One real ``meshnode up`` node (media on, as by default) with its default room."""
    # The fake camera's picture is simple: its video is ~200 kbps in all, so the budget that
    # fits its base layer is under the default audio-only threshold (100 kbps).
    node = NodeProcess(tmp_path / "node", config=LOOPBACK_CONFIG + MEDIA_CONFIG,
                       prefix=["nice", "-n", str(REALTIME_NICE)]).start()
    try:
        yield node
    finally:
        node.kill()


async def open_page(browser: Chromium, node: NodeProcess, invite: str, *,
                    audio_only: bool = False) -> Any:
    page = await browser.new_page(width=800, height=600)
    if audio_only:
        # The tab's audio-only choice is kept in its sessionStorage: set before the page
        # connects, so the node never plans a video for it.
        await page.goto(f"{node.url}/api/ice")
        await page.evaluate('sessionStorage.setItem("meshnode-audio-only", "1")')
    await page.goto(f"{node.url}/?room={node.default_room}#invite={invite}")
    await page.evaluate("window.meshnode.ready")
    return page


async def test_chromium_publishes_through_the_node_to_chromium_subscribers(
        media_node: NodeProcess, chromium_path: str) -> None:
    node = media_node
    room = node.default_room
    editor = node.post(f"/api/rooms/{room}/invites", {"role": "editor"})["token"]
    viewer = node.post(f"/api/rooms/{room}/invites", {"role": "viewer"})["token"]
    browser = await Chromium.launch(chromium_path, extra_flags=NODE_MEDIA_FLAGS,
                                     nice=REALTIME_NICE)
    pages: list[Any] = []
    try:
        # Three pages on one node: all three publish under the node's PeerID, so the relay
        # must tell them apart as participants (PeerID#session).
        speaker = await open_page(browser, node, editor)
        full = await open_page(browser, node, viewer)
        base = await open_page(browser, node, viewer)
        pages += [speaker, full, base]
        who = (await speaker.evaluate("window.meshnode.media.hello()"))["publisher"]
        marks: list[tuple[str, float]] = []

        async def mark(phase: str) -> None:
            marks.append((phase, await full.evaluate("Date.now()")))

        for page in (speaker, full):
            await page.evaluate(TRACE_VIDEO)
        await mark("camera on")
        await speaker.evaluate("window.meshnode.media.camera(true)")
        await speaker.evaluate("window.meshnode.media.microphone(true)")
        published = await speaker.evaluate("window.meshnode.media.published()")
        assert published == {"audio": True, "video": True, "scalabilityMode": "L1T3"}

        # (a) Both subscribers receive the speaker's voice and video through the relay.
        decoding = ('rows.length === 2 && rows.some((r) => r.kind === "video" && '
                    'r.framesDecoded > 30) && rows.some((r) => r.kind === "audio" && '
                    'r.totalSamplesReceived > 48000)')
        for page in (full, base):
            rows = await wait_rows(page, decoding)
            assert {r["publisher"] for r in rows} == {who}
        assert await speaker.evaluate("window.meshnode.media.streams()") == []

        # (b) The base subscriber's budget fits the voice and the base layer only, by the
        # rates the relay measures (TL0, TL0+1, all: L1T3 layers 1:1:2 in frames). The
        # speaker's encoder is held at a steady rate (as a sender on a capped uplink): a rate
        # still ramping up would move the layers' costs across the budget.
        await mark("encoder capped")
        await speaker.evaluate(CAP_VIDEO.replace("KBPS", str(PUBLISHER_KBPS)))
        streams = await wait_for_layers(node, room, min_video_kbps=0.85 * PUBLISHER_KBPS)
        audio_kbps = next(s["kbps"] for s in streams if s["kind"] == "audio")
        layers = next(s["layer_kbps"] for s in streams if s["kind"] == "video")
        # Midway between the base layer and the two lower ones, at the cap (where the rate
        # is heading; the layers' shares of it are what the relay measured).
        budget = audio_kbps + PUBLISHER_KBPS * (layers[0] + layers[1]) / 2 / layers[2]
        print(f"relay measures audio {audio_kbps} kbps, video layers {layers}: "
              f"base subscriber max_kbps {budget:.0f}")
        # The operator's status page shows the relay's streams and load.
        status_page = await browser.new_page(width=1000, height=600)
        pages.append(status_page)
        await status_page.goto(f"{node.url}/status#token={node.admin_token}")
        shown = await status_page.evaluate(STATUS_STREAMS)
        by_kind = {r[2]: r for r in shown}
        assert set(by_kind) == {"audio", "video"}, shown
        assert len(by_kind["video"][4].split(" / ")) == 3, shown  # three temporal layers
        assert int(by_kind["video"][5]) >= 2 and float(by_kind["audio"][3]) > 0, shown
        load = await status_page.evaluate('document.getElementById("media-load").textContent')
        assert "2 source(s) in" in load and "decoders 0" in load, load
        await mark("base subscriber's budget")
        await base.evaluate(f"window.meshnode.media.setPrefs({{max_kbps: {budget:.1f}}})")
        # Thinned: the base page decodes well under the full page's frame rate.
        await wait_rows(base, 'rows.some((r) => r.kind === "video" && r.framesPerSecond > 0 '
                              '&& r.framesPerSecond < 6)')
        before = {p: row(await p.evaluate("window.meshnode.media.stats()"), "video")
                  for p in (full, base)}
        await wait_rows(full, f'rows.some((r) => r.kind === "video" && '
                              f'r.framesDecoded >= {before[full]["framesDecoded"] + 150})')
        after = {p: row(await p.evaluate("window.meshnode.media.stats()"), "video")
                 for p in (full, base)}
        frames = {p: after[p]["framesDecoded"] - before[p]["framesDecoded"] for p in (full, base)}
        ratio = frames[base] / frames[full]
        print(f"frames decoded in the same window: full {frames[full]}, base {frames[base]}, "
              f"ratio {ratio:.3f}")
        assert 0.15 <= ratio <= 0.45, (frames, layers, budget)

        # No loss, no freeze on the full subscriber; its audio barely concealed.
        rows = await full.evaluate("window.meshnode.media.stats()")
        video, audio = row(rows, "video"), row(rows, "audio")
        print(f"full subscriber: video {video}, audio {audio}")
        assert video["framesDecoded"] > 0 and video["frameWidth"] > 0
        assert video["packetsLost"] == 0 and audio["packetsLost"] == 0
        # (A freeze the publisher's own skipped frames explain is not the relay's: on a busy
        # machine its encoder's rate control or capture skips some.)
        relay_freezes, report = freezes_by_side(marks, *await video_traces(speaker, full))
        print(report)
        assert relay_freezes == 0, report
        assert audio["concealedSamples"] <= 0.05 * audio["totalSamplesReceived"], audio
        base_video = row(await base.evaluate("window.meshnode.media.stats()"), "video")
        # Thinned without a gap: the relay renumbers what it forwards. (Its freezeCount is
        # not asserted: dropping from 15 to ~4 frames a second is a "freeze" by definition.)
        assert base_video["packetsLost"] == 0, base_video
        await base.close()
        pages.remove(base)

        # (c) An audio-only page gets the voice and not a byte of video.
        listener = await open_page(browser, node, viewer, audio_only=True)
        pages.append(listener)
        assert (await listener.evaluate("window.meshnode.media.prefs()"))["audio_only"]
        await wait_rows(listener, 'rows.some((r) => r.kind === "audio" && '
                                  'r.totalSamplesReceived > 96000)')
        # Meanwhile the full page decoded more video: there was video to send.
        frames_full = row(await full.evaluate("window.meshnode.media.stats()"),
                          "video")["framesDecoded"]
        await wait_rows(full, f'rows.some((r) => r.kind === "video" && '
                              f'r.framesDecoded >= {frames_full + 30})')
        streams_heard = await listener.evaluate("window.meshnode.media.streams()")
        assert [s["kind"] for s in streams_heard] == ["audio"]
        video_in = await listener.evaluate(VIDEO_INBOUND)
        assert video_in == {"lines": 0, "bytes": 0}, video_in

        errors = [m for p in pages for m in p.console if m.kind in ("exception", "log:error")
                  and "favicon.ico" not in m.text]  # (the JSON page visited for its origin)
        assert not errors, [str(m) for m in errors]
    finally:
        for page in pages:
            await page.close()
        await browser.close()


async def test_a_chromium_publisher_on_one_node_reaches_an_aiortc_subscriber_on_another(
        tmp_path: Path, chromium_path: str, loopback_ice: IceSettings) -> None:
    """A browser's sources cross a trunk: Chromium publishes on node A, an aiortc client
    subscribes on node B, and the voice and video arrive through A's relay, one trunk copy,
    and B's relay (which decode nothing), and decode at the client."""
    config = LOOPBACK_CONFIG + MEDIA_CONFIG
    a = NodeProcess(tmp_path / "a", config=config).start()
    b: NodeProcess | None = None
    browser: Chromium | None = None
    try:
        room = a.default_room
        assert room is not None
        b = start_host(tmp_path / "b", a, room, a, config=config)
        editor = a.post(f"/api/rooms/{room}/invites", {"role": "editor"})["token"]
        browser = await Chromium.launch(chromium_path, extra_flags=NODE_MEDIA_FLAGS,
                                     nice=REALTIME_NICE)
        page = await open_page(browser, a, editor)
        who = (await page.evaluate(WAIT_FOR_HELLO))["publisher"]
        await page.evaluate("window.meshnode.media.camera(true)")
        await page.evaluate("window.meshnode.media.microphone(true)")
        viewer = b.post(f"/api/rooms/{room}/invites", {"role": "viewer"})["token"]
        async with connect(b.url, room, Identity.generate(), ice=loopback_ice,
                           invite=viewer) as sub:
            seen: list[tuple[str, str]] = []
            sub.media.on_track(lambda publisher, track: seen.append((publisher, track.kind)))
            try:
                await until(lambda: len(sub.media.tracks) == 2, timeout=90.0)
            except AssertionError:
                raise AssertionError(f"B's subscriber got {list(sub.media.tracks)}\n"
                                     f"A: {a.get('/api/status').get('media')}\n"
                                     f"B: {b.get('/api/status').get('media')}") from None
            # The browser's sources: published under A's PeerID, labelled by its session.
            assert all(sid.startswith(f"{a.peer_id}/web.") for sid in sub.media.tracks)
            assert who.startswith(f"{a.peer_id}#")
            assert sorted(kind for _, kind in seen) == ["audio", "video"]
            tracks = {t.kind: t for t in sub.media.tracks.values()}
            sizes = set()
            for _ in range(10):
                frame = await asyncio.wait_for(tracks["video"].recv(), 30)
                sizes.add((frame.width, frame.height))  # type: ignore[union-attr]
            assert all(w > 0 and h > 0 for w, h in sizes), sizes
            audio = await asyncio.wait_for(tracks["audio"].recv(), 30)
            assert audio.sample_rate == 48000  # type: ignore[union-attr]
        media_a = a.get("/api/status")["media"]
        media_b = b.get("/api/status")["media"]
        # Into A from the browser, one copy on the trunk to B, out of B to its client; no
        # relay decoded anything.
        assert media_a["driver"]["bytes"].get("trunk", 0) > 10_000, media_a
        assert media_b["driver"]["bytes"].get("out", 0) > 10_000, media_b
        assert media_a["driver"]["decoders"] == 0 and media_b["driver"]["decoders"] == 0
        errors = [m for m in page.console if m.kind in ("exception", "log:error")]
        assert not errors, [str(m) for m in errors]
    finally:
        if browser is not None:
            await browser.close()
        if b is not None:
            b.kill()
        a.kill()


PUBLISHER_KBPS = 150

# The node's media_hello, once the page has it (it follows the welcome).
WAIT_FOR_HELLO = """new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error("no media_hello")), 20000);
    const poll = () => {
      const hello = window.meshnode.media.hello();
      if (hello) { clearTimeout(t); resolve(hello); } else setTimeout(poll, 20);
    };
    poll(); })"""

# The status page's media streams, once it shows two (cells of each row).
STATUS_STREAMS = """new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(document.body.innerText)), 20000);
    const poll = () => {
      const rows = [...document.querySelectorAll("#media-streams tbody tr")];
      if (rows.length >= 2) {
        clearTimeout(t);
        resolve(rows.map((r) => [...r.cells].map((c) => c.textContent)));
      } else setTimeout(poll, 50);
    };
    poll(); })"""

# Every 100 ms, the page's video counters (received: decoded frames and freezes; sent: frames
# encoded and sent, and what limits the encoder), kept in window.__videoTrace: when a frame
# freezes, they say when, and on which side of the relay.
TRACE_VIDEO = """(() => { window.__videoTrace = [];
  setInterval(async () => {
    const pc = window.meshnode.media.connection();
    if (!pc) return;
    const row = {t: Date.now()};
    (await pc.getStats()).forEach((s) => {
      if (s.kind !== "video") return;
      if (s.type === "inbound-rtp") Object.assign(row, {decoded: s.framesDecoded,
        freezes: s.freezeCount, keyframes: s.keyFramesDecoded, packets: s.packetsReceived});
      if (s.type === "outbound-rtp") Object.assign(row, {encoded: s.framesEncoded,
        sent: s.framesSent, limit: s.qualityLimitationReason});
    });
    window.__videoTrace.push(row);
  }, 100); })()"""


PUBLISHER_GAP_FRAMES = 2
"""A freeze needs a gap of over 3 frame intervals (Chromium: ``max(3 x mean, mean + 150
ms)``): a publisher that encoded at least this many frames fewer than its own mean rate in the
1.5 s before a freeze skipped them itself (its encoder's rate control, or its capture on a
busy machine), and the relay only forwarded the gap."""


def freezes_by_side(marks: list[tuple[str, float]], pub: list[dict[str, Any]],
                    sub: list[dict[str, Any]]) -> tuple[int, str]:
    """How many of the subscriber's freezes the relay's path made (those the publisher's own
    frames do not explain), and a report of each: the test's phase, and the frames the
    publisher encoded and the subscriber decoded in the 1.5 s before it."""
    t0 = marks[0][1]
    out = [f"phases (s): {[(name, round((t - t0) / 1000, 1)) for name, t in marks]}"]
    encoded = [r for r in pub if "encoded" in r]
    rate = ((encoded[-1]["encoded"] - encoded[0]["encoded"])
            / max(1.0, encoded[-1]["t"] - encoded[0]["t"]) if len(encoded) > 1 else 0.0)
    relay = last = 0
    for row in sub:
        if row.get("freezes", 0) <= last:
            continue
        last = row["freezes"]
        t = row["t"]
        phase = [name for name, at in marks if at <= t][-1:] or ["start"]
        before = [r for r in sub if t - 1500 <= r["t"] <= t and "decoded" in r]
        sent = [r for r in encoded if t - 1500 <= r["t"] <= t]
        missing = (rate * (sent[-1]["t"] - sent[0]["t"]) - (sent[-1]["encoded"] - sent[0][
            "encoded"]) if len(sent) > 1 else 0.0)
        publisher_gap = missing >= PUBLISHER_GAP_FRAMES
        relay += not publisher_gap
        out.append(
            f"freeze {last} at {(t - t0) / 1000:.1f} s (after {phase[0]!r}): decoded "
            f"{before[-1]['decoded'] - before[0]['decoded'] if before else '?'} frames in the "
            f"1.5 s before; the publisher encoded "
            f"{sent[-1]['encoded'] - sent[0]['encoded'] if sent else '?'}, {missing:.1f} "
            f"fewer than its mean rate (limited by {sent[-1]['limit'] if sent else '?'}): "
            + ("the publisher's gap" if publisher_gap else "the relay's path"))
    return relay, "\n".join(out)


async def video_traces(publisher: Any, subscriber: Any) -> tuple[list[dict[str, Any]],
                                                                  list[dict[str, Any]]]:
    """The ``TRACE_VIDEO`` rows of a publishing and a subscribing page."""
    pub = await publisher.evaluate("window.__videoTrace")
    sub = await subscriber.evaluate("window.__videoTrace")
    return pub, sub


def test_a_freeze_is_the_relays_unless_the_publisher_skipped_frames() -> None:
    marks = [("camera on", 0.0), ("capped", 2000.0)]
    # 15 frames a second, sampled every 100 ms (1.5 frames a sample).
    steady = [{"t": 100.0 * i, "encoded": 1.5 * i, "limit": "none"} for i in range(100)]
    frozen = [{"t": 100.0 * i, "decoded": i, "freezes": int(i >= 60)} for i in range(100)]
    relay, report = freezes_by_side(marks, steady, frozen)
    assert relay == 1 and "the relay's path" in report and "after 'capped'" in report
    # The publisher encoded nothing for 300 ms just before: its own gap.
    skipping = [dict(r, encoded=r["encoded"] - min(4.5, max(0.0, 1.5 * (i - 54))))
                if i >= 55 else r for i, r in enumerate(steady)]
    relay, report = freezes_by_side(marks, skipping, frozen)
    assert relay == 0 and "the publisher's gap" in report
    assert freezes_by_side(marks, steady, [{"t": 0.0, "decoded": 0, "freezes": 0}])[0] == 0


# Cap the page's camera encoder at KBPS.
CAP_VIDEO = """(async () => {
    const pc = window.meshnode.media.connection();
    const sender = pc.getSenders().find((s) => s.track && s.track.kind === "video");
    const params = sender.getParameters();
    params.encodings[0].maxBitrate = KBPS * 1000;
    await sender.setParameters(params);
    return sender.getParameters().encodings[0].maxBitrate;
  })()"""

# What arrived on the page's video m-lines at all (whoever's), from its own connection.
VIDEO_INBOUND = """(async () => {
    const pc = window.meshnode.media.connection();
    let lines = 0;
    for (const t of pc.getTransceivers()) if (t.receiver.track.kind === "video") lines += 1;
    let bytes = 0;
    (await pc.getStats()).forEach((s) => {
      if (s.type === "inbound-rtp" && s.kind === "video") bytes += s.bytesReceived || 0;
    });
    return { lines, bytes };
  })()"""


SETTLE_READS = 10


async def wait_for_layers(node: NodeProcess, room: str | None, *, min_video_kbps: float = 0.0,
                          timeout_s: float = 90.0) -> list[dict[str, Any]]:
    """The room's streams in the node's status once its video has had three temporal layers
    measured, at ``min_video_kbps`` or more (and the audio a rate), in ``SETTLE_READS``
    reads in a row (the relay smooths the layers' rates over a few seconds)."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    settled = 0
    while True:
        status = await asyncio.to_thread(node.get, "/api/status")
        streams: list[dict[str, Any]] = status.get("media", {}).get("rooms", {}).get(
            room, {}).get("streams", [])
        kinds = {s["kind"]: s for s in streams}
        layers = kinds.get("video", {}).get("layer_kbps", [])
        if (len(layers) == 3 and layers[2] >= min_video_kbps
                and kinds.get("audio", {}).get("kbps", 0) > 0):
            settled += 1
            if settled >= SETTLE_READS:
                return streams
        else:
            settled = 0
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"no layered video in the node's status: {status.get('media')}")
        await asyncio.sleep(0.5)
