"""Participants, not PeerIDs: the browsers of one node publish under its PeerID, and the relay
tells them apart as ``PeerID#session`` (``meshnode.media.participants``)."""

from dataclasses import dataclass

from meshnode.media.endpoint import SourceInfo
from meshnode.media.participants import (
    participant_of,
    presence_participants,
    source_participant,
)
from meshnode.media.planner import Announce, RoomState, Subscriber, decide_room
from meshnode.media.selection import Selector, SourceView, SubscriberView
from meshnode.web.media import browser_source_id

N = "12D3KooWLRQSFLEwE3dE5VSqECWWSadt3QLiG1vsjSNszyVSCFux"  # a node with two browsers
ROOM = b"\1" * 32


@dataclass
class Client:
    peer_id: str


@dataclass
class Browser:
    peer_id: str
    participant: str


def test_a_browser_is_its_session_and_a_client_its_peer_id() -> None:
    assert participant_of(Client("12D3KooWC")) == "12D3KooWC"
    assert participant_of(Browser(N, f"{N}#browser-1")) == f"{N}#browser-1"
    cam = SourceInfo(browser_source_id(N, "browser-1", "0"), N, "video", ROOM)
    assert source_participant(cam) == f"{N}#browser-1"
    assert source_participant(SourceInfo(f"{N}/cam", N, "video", ROOM)) == N
    # A label that only looks like a browser's names no session: the PeerID then.
    assert source_participant(SourceInfo(f"{N}/web.x", N, "video", ROOM)) == N


def test_presence_of_a_nodes_browsers_is_one_entry_per_session() -> None:
    presence = {N: {"browsers": {"browser-1": {"position": [1, 0, 0]},
                                 "browser-2": {"position": [2, 0, 0]},
                                 "browser-3": "not fields"}},
                "12D3KooWC": {"position": [0, 0, 0]}}
    assert dict(presence_participants(presence)) == {
        f"{N}#browser-1": {"position": [1, 0, 0]},
        f"{N}#browser-2": {"position": [2, 0, 0]},
        "12D3KooWC": {"position": [0, 0, 0]},
    }


def test_two_browsers_of_one_node_get_each_others_streams_not_their_own() -> None:
    a, b = f"{N}#browser-1", f"{N}#browser-2"
    cam_a = browser_source_id(N, "browser-1", "0")
    mic_b = browser_source_id(N, "browser-2", "1")
    local = [SourceView(cam_a, a, "video", None, None, None, 300.0),
             SourceView(mic_b, b, "audio", None, 20, 0.0, 30.0)]

    def sub(who: str) -> Subscriber:
        return Subscriber(f"browser:{who}", False, SubscriberView(who, None, None, False, None))

    state = RoomState(local, {cam_a: f"browser:{a}", mic_b: f"browser:{b}"}, {},
                      [sub(a), sub(b)], ["node:M"])
    d = decide_room(state, Selector(), 1.0)
    assert d.outputs[f"browser:{a}"] == {mic_b: None}
    assert d.outputs[f"browser:{b}"] == {cam_a: None}  # all of it (its layers are not measured)
    # To a neighbour the sources are announced under their publisher's PeerID (a
    # participant is no PeerID: MediaSources would not carry it).
    assert d.announce["node:M"] == (Announce(cam_a, N, "video", 0),
                                    Announce(mic_b, N, "audio", 0))
