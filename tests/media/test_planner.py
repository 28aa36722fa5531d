"""The relay's planner (pure): clients get the selector's plan, neighbour nodes get what they
ask for, a remote source is asked from one neighbour only (fewest hops), announcements never
go back where a source came from, and nothing goes beyond MAX_HOPS."""

from meshnode.media.planner import Announce, RoomDecision, RoomState, Subscriber, decide_room
from meshnode.media.selection import Selector, SourceView, SubscriberView
from protocol.media import MAX_HOPS

P, Q = "12D3KooWPub", "12D3KooWQub"
CAM, MIC, FAR = f"{P}/cam", f"{P}/mic", f"{Q}/mic"


def client(name: str, audio_only: bool = False, estimate: float | None = None) -> Subscriber:
    return Subscriber(f"client:{name}", False,
                      SubscriberView(name, (0.0, 0.0, 0.0), estimate, audio_only, None))


def test_local_sources_fan_out_and_remote_ones_are_asked_from_one_neighbour() -> None:
    local = [SourceView(CAM, P, "video", (1.0, 0.0, 0.0), None, None, 800.0),
             SourceView(MIC, P, "audio", (1.0, 0.0, 0.0), 30, 0.0, 40.0)]
    remote = {"node:B": {FAR: Announce(FAR, Q, "audio", 2)},
              "node:C": {FAR: Announce(FAR, Q, "audio", 1)}}
    state = RoomState(local, {CAM: f"client:{P}", MIC: f"client:{P}"}, remote,
                      [client("s1"), client("s2", audio_only=True), client(P),
                       Subscriber("node:B", True, SubscriberView("node:B", None, None, False,
                                                                  None), frozenset({MIC}))],
                      ["node:B", "node:C"])
    d = decide_room(state, Selector(), 1.0)
    assert set(d.outputs["client:s1"]) == {CAM, MIC}
    assert set(d.outputs["client:s2"]) == {MIC}  # audio only: no video
    assert CAM not in d.outputs[f"client:{P}"] and MIC not in d.outputs[f"client:{P}"]
    assert d.outputs["node:B"] == {MIC: None}  # exactly what B asked for
    # FAR is needed here: asked from C (1 hop), not B (2 hops).
    assert d.want == {"node:B": frozenset(), "node:C": frozenset({FAR})}
    # Split horizon: FAR is announced to B (one hop further), never back to C.
    assert Announce(FAR, Q, "audio", 2) in d.announce["node:B"]
    assert all(a.source_id != FAR for a in d.announce["node:C"])
    assert {a.source_id for a in d.announce["node:C"]} == {CAM, MIC}


def test_sources_from_a_neighbour_are_not_sent_back_and_hops_are_bounded() -> None:
    far = SourceView(FAR, Q, "audio", None, None, None, 40.0)
    state = RoomState([far], {FAR: "node:B"}, {"node:B": {FAR: Announce(FAR, Q, "audio",
                                                                       MAX_HOPS - 1)}},
                      [Subscriber("node:B", True, SubscriberView("node:B", None, None, False,
                                                                  None), frozenset({FAR})),
                       client("s1")], ["node:B", "node:C"])
    d = decide_room(state, Selector(), 1.0)
    assert d.outputs["node:B"] == {}
    assert d.outputs["client:s1"] == {FAR: None}
    assert d.want["node:B"] == frozenset({FAR})  # keep it flowing in while needed here
    assert d.announce["node:C"] == (Announce(FAR, Q, "audio", MAX_HOPS),)
    deeper = RoomState([], {}, {"node:B": {FAR: Announce(FAR, Q, "audio", MAX_HOPS)}},
                       [client("s1")], ["node:B", "node:C"])
    d = decide_room(deeper, Selector(), 1.0)
    assert d.announce["node:C"] == () and d.want["node:B"] == frozenset()


def _video(sid: str, publisher: str, x: float, layers: tuple[float, ...] = ()) -> SourceView:
    return SourceView(sid, publisher, "video", (x, 0.0, 0.0), None, None,
                      layers[-1] if layers else 600.0, layers)


def test_the_room_cap_lowers_layers_of_the_farthest_video_first_then_pauses_it() -> None:
    near = _video("12D3KooWNear/cam", "12D3KooWNear", 1.0, (150.0, 300.0, 600.0))
    far = _video("12D3KooWFar/cam", "12D3KooWFar", 20.0, (150.0, 300.0, 600.0))
    mic = SourceView("12D3KooWFar/mic", "12D3KooWFar", "audio", (20.0, 0.0, 0.0), 30, 0.0,
                     40.0)
    trunk = Subscriber("node:B", True, SubscriberView("node:B", None, None, False, None),
                       frozenset({far.source_id}))
    origin = {s.source_id: f"client:{s.publisher}" for s in (near, far, mic)}

    def decide(cap: float | None) -> RoomDecision:
        return decide_room(RoomState([near, far, mic], origin, {}, [client("s1"), trunk],
                                     ["node:B"], cap), Selector(), 1.0)

    free = decide(None)
    assert free.outputs["client:s1"] == {near.source_id: None, far.source_id: None,
                                         mic.source_id: None}  # every layer
    assert free.kbps == 600 + 600 + 40 + 600  # the trunk copy carries every layer
    # 1500 (of 1840): the far video loses its top layers first, the near one keeps them.
    d = decide(1500.0)
    assert d.outputs["client:s1"] == {near.source_id: None, far.source_id: 0,
                                      mic.source_id: None}
    assert d.kbps == 1390 and not d.demoted
    # 1000: then the nearer one's layers go too.
    d = decide(1000.0)
    assert d.outputs["client:s1"] == {near.source_id: 0, far.source_id: 0, mic.source_id: None}
    assert d.kbps == 940 and not d.demoted
    # 900: both at their base layer are still too much: the far video pauses.
    d = decide(900.0)
    assert d.outputs["client:s1"] == {near.source_id: 0, mic.source_id: None}
    assert d.demoted == {"client:s1": {far.source_id: "relay_full"}}
    assert d.kbps == 790
    # Audio and the trunk copy are never demoted, even over the cap.
    d = decide(10.0)
    assert d.outputs["client:s1"] == {mic.source_id: None}
    assert d.outputs["node:B"] == {far.source_id: None}
    assert set(d.demoted["client:s1"]) == {near.source_id, far.source_id}


def test_a_video_is_forwarded_whole_until_its_layers_are_measured() -> None:
    """Regression (a Chromium subscriber's one freeze a second after its picture appeared):
    a new layered video has no layer rates measured yet, so the selector sees one layer and
    plans layer 0, meaning the whole stream; handed to the forwarder as 0 it thinned the
    stream to its base layer (~4 of 15 frames a second) until the rates were measured, and a
    subscriber whose first frames came before that saw the rate fall: a freeze. The
    forwarder gets None (every layer) for the top planned layer, measured or not."""
    unmeasured = _video("12D3KooWNew/cam", "12D3KooWNew", 1.0, ())
    measured = _video("12D3KooWOld/cam", "12D3KooWOld", 2.0, (150.0, 300.0, 600.0))
    origin = {s.source_id: f"client:{s.publisher}" for s in (unmeasured, measured)}
    for estimate in (None, 1e4):
        d = decide_room(RoomState([unmeasured, measured], origin, {},
                                  [client("s1", estimate=estimate)], []), Selector(), 1.0)
        assert d.outputs["client:s1"] == {unmeasured.source_id: None,
                                          measured.source_id: None}
    # A budget that fits the measured video's two lower layers only: layer 1 of it, and the
    # unmeasured one (one "layer") still whole.
    d = decide_room(RoomState([unmeasured, measured], origin, {},
                              [client("s1", estimate=900.0)], []), Selector(), 1.0)
    assert d.outputs["client:s1"] == {unmeasured.source_id: None, measured.source_id: 1}
