"""The relay's planner (pure): clients get the selector's plan, neighbour nodes get what they
ask for, a remote source is asked from one neighbour only (fewest hops), announcements never
go back where a source came from, and nothing goes beyond MAX_HOPS."""

from meshnode.media.planner import Announce, RoomState, Subscriber, decide_room
from meshnode.media.selection import Selector, SourceView, SubscriberView
from protocol.media import MAX_HOPS

P, Q = "12D3KooWPub", "12D3KooWQub"
CAM, MIC, FAR = f"{P}/cam", f"{P}/mic", f"{Q}/mic"


def client(name: str, audio_only: bool = False) -> Subscriber:
    return Subscriber(f"client:{name}", False,
                      SubscriberView(name, (0.0, 0.0, 0.0), None, audio_only, None))


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
