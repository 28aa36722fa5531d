"""netsim media: the selection core over bandwidth-limited links, congestion, determinism."""

from __future__ import annotations

import copy
import json
import tomllib
from pathlib import Path
from typing import Any

import pytest

from netsim.cli import run_scenario
from netsim.links import LinkSpec
from netsim.media import expected_loss, layout
from netsim.media_spec import MediaSpec, Publisher
from netsim.scenario import ScenarioError, parse

SCENARIOS = Path(__file__).resolve().parents[2] / "netsim" / "scenarios"

# A hub (node 0) and seven peers: 1-5 on fast links publish audio + three-layer video; 6 sits
# on a 450 kbit/s link, 7 on a 130 kbit/s link (both publish audio only); 4 asks for at most
# 90 kbit/s.
LIMITED: dict[str, Any] = {
    "seed": 3,
    "duration_s": 30,
    "topology": {"kind": "star", "nodes": 8},
    "links": {"latency_ms": 20, "bandwidth_kbps": 20000},
    "link_overrides": [
        {"edges": [[0, 6]], "bandwidth_kbps": 450, "queue_bytes": 32768},
        {"edges": [[0, 7]], "bandwidth_kbps": 130, "queue_bytes": 16384},
    ],
    "workload": {"editors": 3, "edits_per_s": 2, "presence_hz": 0.5},
    "media": {
        "start_s": 1.0,
        "turn_s": 3.0,
        "publishers": [
            {"nodes": [1, 2, 3, 4, 5], "audio_kbps": 40, "video_kbps": [150, 300, 600]},
            {"nodes": [6, 7], "audio_kbps": 40},
        ],
        "prefs": [{"nodes": [4], "max_kbps": 90}],
    },
}


def limited(**media: Any) -> dict[str, Any]:
    data = copy.deepcopy(LIMITED)
    data["media"].update(media)
    return data


@pytest.fixture(scope="module")
def limited_run() -> dict[str, Any]:
    return run_scenario(LIMITED)


def test_limited_peers_get_audio_and_base_layers(limited_run: dict[str, Any]) -> None:
    nodes = limited_run["media"]["nodes"]
    fast, mid, slow, capped = nodes["1"], nodes["6"], nodes["7"], nodes["4"]
    # The fast peer gets several videos, above the base layer on average.
    assert fast["video_streams_mean"] > 2.5 and fast["video_layer_mean"] > 0.4
    assert fast["stalls"]["count"] == 0
    # 450 kbit/s: videos at the base layer only.
    assert mid["video_streams_mean"] > 1.0 and mid["video_layer_mean"] < 0.1
    # 130 kbit/s: (almost) no video at all: audio-only or no video within the budget.
    assert slow["video_streams_mean"] < 0.1
    assert slow["dropped"].get("budget", 0) + slow["dropped"].get("audio_only", 0) > 100
    # A peer that asked for 90 kbit/s is audio-only all the time and gets no video.
    assert capped["audio_only_share"] == 1.0 and capped["video_streams_mean"] == 0.0
    assert capped["dropped"].get("audio_only", 0) > 0
    # Audio survives: the wanted voices arrive, on time, at every peer.
    for key in ("1", "4", "6"):
        assert nodes[key]["wanted_audio_share"] >= 0.95, key
    assert slow["wanted_audio_share"] >= 0.9
    # Video degrades with the link, audio does not.
    assert fast["media_kbps_received"] > mid["media_kbps_received"] > slow["media_kbps_received"]
    assert slow["media_kbps_received"] < 130
    # One copy per source on each link: the slow link carries no more than it can.
    assert limited_run["media"]["links"]["0-7"]["media_kbps"] <= 130.0


def test_over_bandwidth_link_shows_congestion() -> None:
    """A subscriber whose estimate cannot fall (min_kbps = start_kbps) overloads its link: the
    link tail-drops, its video stalls and its audio suffers too."""
    blind = run_scenario(limited(start_kbps=3000, min_kbps=3000))["media"]
    slow = blind["nodes"]["7"]
    assert blind["links"]["0-7"]["tail_dropped_share"] > 0.3
    assert slow["stalls"]["count"] > 0 and slow["stalls"]["seconds"] > 5
    assert slow["wanted_audio_share"] < 0.7
    # The adaptive run of the same room does far better on the same link.
    adaptive = run_scenario(LIMITED)["media"]["nodes"]["7"]
    assert adaptive["wanted_audio_share"] > slow["wanted_audio_share"]


def test_media_shares_links_with_scene_traffic() -> None:
    with_media = run_scenario(LIMITED)
    data = copy.deepcopy(LIMITED)
    del data["media"]
    without = run_scenario(data)
    assert "media" not in without
    util = with_media["series"]["link_utilisation"]["0-7"]
    assert util > 5 * without["series"]["link_utilisation"]["0-7"]
    assert with_media["converged"] and with_media["delivery_ratio"] == 1.0


def strip(result: dict[str, Any]) -> str:
    return json.dumps({k: v for k, v in result.items() if k != "wall_time_s"}, sort_keys=True)


def test_deterministic_per_seed() -> None:
    data = limited(speaking="random", talk_s=1.5, pause_s=4.0)
    a, b = run_scenario(data), run_scenario(data)
    assert strip(a) == strip(b)
    c = run_scenario(data, seed=9)
    assert c["media"] != a["media"]


def test_relay_tree_one_copy_per_source() -> None:
    """Line 0-1-2-3: node 0 publishes, 2 and 3 subscribe; link 1->2 carries the source once,
    link 2->3 once, and nothing flows back."""
    data = {
        "seed": 1, "duration_s": 10, "topology": {"kind": "line", "nodes": 4},
        "links": {"latency_ms": 10, "bandwidth_kbps": 10000},
        "workload": {"editors": 1, "edits_per_s": 1},
        "media": {"publishers": [{"nodes": [0], "audio_kbps": 40, "video_kbps": 500}],
                  "subscribers": [2, 3], "speaking": "none", "start_kbps": 1000},
    }
    media = run_scenario(data)["media"]
    links = media["links"]
    assert set(links) == {"0-1", "1-2", "2-3"}
    kbps = [links[k]["media_kbps"] for k in ("0-1", "1-2", "2-3")]
    assert max(kbps) - min(kbps) < 1.0  # the same single copy on every hop
    received = media["nodes"]["2"]["media_kbps_received"]
    assert 495 < received < 505  # 500 video + 2 DTX audio (payload), one copy
    assert set(media["nodes"]) == {"2", "3"}


def test_satellite_example_parses() -> None:
    with open(SCENARIOS / "media_satellite.toml", "rb") as fh:
        sc = parse(tomllib.load(fh))
    assert sc.media is not None and sc.nodes == 30
    assert sc.media.publishers[0].video_kbps == (150.0, 300.0, 600.0)


@pytest.mark.parametrize(("media", "message"), [
    ({}, "media.publishers"),
    ({"publishers": [{"nodes": [99]}]}, "media.publishers[0].nodes"),
    ({"publishers": [{"nodes": "all", "video_kbps": [300, 100]}]}, "cumulative"),
    ({"publishers": [{"nodes": "all", "colour": 1}]}, "unknown keys"),
    ({"publishers": [{"nodes": [1]}, {"nodes": [1, 2]}]}, "already publish"),
    ({"publishers": [{"nodes": "all"}], "speaking": "shout"}, "media.speaking"),
    ({"publishers": [{"nodes": "all"}], "selection": {"last_n": -1}}, "last_n"),
    ({"publishers": [{"nodes": "all"}], "selection": {"nope": 1}}, "media.selection"),
    ({"publishers": [{"nodes": "all"}], "slice_ms": 0}, "media.slice_ms"),
    ({"publishers": [{"nodes": "all"}], "stall_below": 2}, "fraction"),
    ({"publishers": [{"nodes": "all"}], "positions": [[0, 0, 0]]}, "media.positions"),
    ({"publishers": [{"nodes": "all"}], "prefs": [{"nodes": [1], "audio_only": 1}]},
     "audio_only"),
    ({"publishers": [{"nodes": "all"}], "start_s": 50}, "start_s"),
    ({"publishers": [{"nodes": "all"}], "volume": 11}, "unknown keys"),
])
def test_bad_media_sections_are_named(media: dict[str, Any], message: str) -> None:
    data = copy.deepcopy(LIMITED)
    data["media"] = media
    with pytest.raises(ScenarioError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse(data)


def test_layout_and_expected_loss() -> None:
    spec = MediaSpec(publishers=(Publisher((0,)),), spacing_m=2.0)
    grid = layout(spec, 5)
    assert grid[:4] == [(0.0, 0.0, 0.0), (2.0, 0.0, 0.0), (4.0, 0.0, 0.0), (0.0, 2.0, 0.0)]
    circle = layout(MediaSpec(publishers=(Publisher((0,)),), layout="circle"), 4)
    assert len({round(x, 6) for p in circle for x in p[:2]}) > 1
    assert expected_loss(LinkSpec(loss=0.1)) == pytest.approx(0.1)
    bursty = LinkSpec(ge_p_good_bad=0.1, ge_p_bad_good=0.3, ge_loss_bad=0.5)
    assert expected_loss(bursty) == pytest.approx(0.25 * 0.5)
