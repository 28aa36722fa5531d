"""The media selection core: budget, caps, nearest speakers first, hysteresis, determinism."""

from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meshnode.media.selection import (
    DROP_REASONS,
    MediaKind,
    Plan,
    SelectionConfig,
    Selector,
    SourceView,
    SubscriberView,
    budget_of,
    layer_costs,
)

KINDS: tuple[MediaKind, ...] = ("audio", "video")
SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))

coords = st.floats(min_value=-100, max_value=100, allow_nan=False)
positions = st.one_of(st.none(), st.tuples(coords, coords, coords))
rates = st.floats(min_value=0, max_value=3000, allow_nan=False)
publishers = st.sampled_from(["alice", "bob", "carol", "dave", "erin", "me"])


@st.composite
def sources(draw: st.DrawFn) -> list[SourceView]:
    n = draw(st.integers(min_value=0, max_value=14))
    out: list[SourceView] = []
    for i in range(n):
        kind = draw(st.sampled_from(KINDS))
        layers: tuple[float, ...] = ()
        if kind == "video" and draw(st.booleans()):
            base = draw(st.floats(min_value=1, max_value=500))
            steps = draw(st.lists(st.floats(min_value=0, max_value=800), max_size=2))
            acc = [base]
            for s in steps:
                acc.append(acc[-1] + s)
            layers = tuple(acc)
        out.append(SourceView(
            source_id=f"s{i}", publisher=draw(publishers), kind=kind,
            position=draw(positions),
            audio_level=draw(st.one_of(st.none(), st.integers(0, 127))),
            last_spoke=draw(st.one_of(st.none(), st.floats(0, 20))),
            kbps=layers[-1] if layers else draw(st.floats(min_value=0, max_value=1500)),
            layer_kbps=layers))
    return out


subscribers = st.builds(
    SubscriberView, subscriber=st.just("me"), position=positions,
    estimate_kbps=st.one_of(st.none(), rates), audio_only=st.booleans(),
    max_kbps=st.one_of(st.none(), rates))

configs = st.builds(
    SelectionConfig, audio_radius=st.one_of(st.none(), st.floats(0, 200)),
    max_audio=st.integers(0, 6), video_radius=st.one_of(st.none(), st.floats(0, 200)),
    last_n=st.integers(0, 4), audio_only_below_kbps=st.floats(0, 300))


def cost(plan: Plan, srcs: list[SourceView]) -> float:
    by_id = {s.source_id: s for s in srcs}
    total = sum(by_id[a].kbps for a in plan.audio)
    total += sum(layer_costs(by_id[v])[layer] for v, layer in plan.video.items())
    return total


def audio(sid: str, pub: str, pos: tuple[float, float, float] | None, *, kbps: float = 40.0,
          spoke: float | None = None) -> SourceView:
    return SourceView(sid, pub, "audio", pos, None, spoke, kbps)


def video(sid: str, pub: str, pos: tuple[float, float, float] | None, *,
          layers: tuple[float, ...] = (150.0, 300.0, 600.0),
          spoke: float | None = None) -> SourceView:
    return SourceView(sid, pub, "video", pos, None, spoke, layers[-1] if layers else 500.0,
                      layers)


def sub(pos: tuple[float, float, float] | None = (0.0, 0.0, 0.0), *,
        estimate: float | None = None, audio_only: bool = False,
        max_kbps: float | None = None) -> SubscriberView:
    return SubscriberView("me", pos, estimate, audio_only, max_kbps)


@SETTINGS
@given(subscribers, sources(), configs, st.floats(0, 30))
def test_budget_caps_own_and_reasons(subscriber: SubscriberView, srcs: list[SourceView],
                                     config: SelectionConfig, now: float) -> None:
    plan = Selector(config).plan(subscriber, srcs, now)
    by_id = {s.source_id: s for s in srcs}
    chosen = set(plan.audio) | set(plan.video)
    # Own sources are never selected, and never reported.
    assert all(by_id[c].publisher != "me" for c in chosen)
    assert all(by_id[d].publisher != "me" for d in plan.dropped)
    # Every other source is either chosen or dropped with a known reason.
    others = {s.source_id for s in srcs if s.publisher != "me"}
    assert chosen | set(plan.dropped) == others
    assert not chosen & set(plan.dropped)
    assert set(plan.dropped.values()) <= set(DROP_REASONS)
    assert all(by_id[a].kind == "audio" for a in plan.audio)
    assert all(by_id[v].kind == "video" for v in plan.video)
    # Caps.
    assert len(plan.audio) <= config.max_audio
    assert len(plan.video) <= config.last_n
    assert all(0 <= layer < max(1, len(by_id[v].layer_kbps)) for v, layer in plan.video.items())
    # Budget: never over it unless the plan is the minimum possible (one audio, the first).
    budget = budget_of(subscriber)
    assert plan.budget_kbps == budget
    assert math.isclose(plan.kbps, cost(plan, srcs), rel_tol=1e-9, abs_tol=1e-6)
    if budget is not None and plan.kbps > budget + 1e-6:
        assert not plan.video and len(plan.audio) == 1
    # Audio only: asked for, or the budget is below the threshold => no video.
    if subscriber.audio_only or (budget is not None and budget < config.audio_only_below_kbps):
        assert plan.audio_only and not plan.video
        assert all(plan.dropped[s.source_id] == "audio_only" for s in srcs
                   if s.kind == "video" and s.source_id in plan.dropped
                   and plan.dropped[s.source_id] != "out_of_radius")
    else:
        assert not plan.audio_only


@SETTINGS
@given(subscribers, sources(), configs, st.floats(0, 30))
def test_budget_not_wasted_when_cheaper_fits(subscriber: SubscriberView,
                                             srcs: list[SourceView], config: SelectionConfig,
                                             now: float) -> None:
    """A video dropped for budget really did not fit even at its base layer, and every chosen
    video's next layer up would not have fitted either."""
    plan = Selector(config).plan(subscriber, srcs, now)
    budget = budget_of(subscriber)
    by_id = {s.source_id: s for s in srcs}
    for sid, reason in plan.dropped.items():
        if reason == "budget":
            assert budget is not None
            assert plan.kbps + layer_costs(by_id[sid])[0] > budget
    for sid, layer in plan.video.items():
        costs = layer_costs(by_id[sid])
        if layer + 1 < len(costs) and budget is not None:
            assert plan.kbps - costs[layer] + costs[layer + 1] > budget


@SETTINGS
@given(subscribers, sources(), configs, st.lists(st.floats(0, 30), min_size=1, max_size=5))
def test_deterministic(subscriber: SubscriberView, srcs: list[SourceView],
                       config: SelectionConfig, times: list[float]) -> None:
    a, b = Selector(config), Selector(config)
    for now in sorted(times):
        assert a.plan(subscriber, srcs, now) == b.plan(subscriber, list(srcs), now)


@SETTINGS
@given(st.lists(st.tuples(coords, coords, coords), min_size=2, max_size=10, unique=True),
       st.integers(1, 4), st.sets(st.integers(0, 9)))
def test_nearest_speakers_first(points: list[tuple[float, float, float]], max_audio: int,
                                speaking: set[int]) -> None:
    """Under the cap and under a tight budget, the chosen audio is a prefix of
    (speakers by distance, then the silent by distance)."""
    now = 10.0
    srcs = [audio(f"a{i}", f"p{i}", p, spoke=now - 1 if i in speaking else None)
            for i, p in enumerate(points)]
    order = sorted(range(len(points)),
                   key=lambda i: (i not in speaking, math.dist(points[i], (0, 0, 0)), f"a{i}"))
    cfg = SelectionConfig(audio_radius=None, max_audio=max_audio)
    plan = Selector(cfg).plan(sub(), srcs, now)
    assert plan.audio == frozenset(f"a{i}" for i in order[:max_audio])
    # Budget for two voices only: the first two of the order.
    tight = Selector(SelectionConfig(audio_radius=None, max_audio=8)).plan(
        sub(estimate=80.0), srcs, now)
    assert tight.audio == frozenset(f"a{i}" for i in order[:2])
    # Budget for less than one voice: still the first one.
    starved = Selector(SelectionConfig(audio_radius=None)).plan(sub(estimate=5.0), srcs, now)
    assert starved.audio == frozenset({f"a{order[0]}"})
    assert starved.audio_only and not starved.video


def test_radius_and_unknown_positions() -> None:
    srcs = [audio("near", "a", (3.0, 0.0, 0.0)), audio("far", "b", (300.0, 0.0, 0.0)),
            audio("nowhere", "c", None), video("v-near", "a", (3.0, 0.0, 0.0)),
            video("v-nowhere", "c", None)]
    plan = Selector(SelectionConfig(audio_radius=50.0, max_audio=1, last_n=1)).plan(
        sub(), srcs, 0.0)
    assert plan.audio == {"near"}
    assert plan.dropped == {"far": "out_of_radius", "nowhere": "audio_cap",
                            "v-nowhere": "last_n"}
    assert plan.video == {"v-near": 2}
    # Unknown distance is still selectable when there is room.
    roomy = Selector(SelectionConfig(audio_radius=50.0)).plan(sub(), srcs, 0.0)
    assert roomy.audio == {"near", "nowhere"} and set(roomy.video) == {"v-near", "v-nowhere"}
    # A subscriber without a position hears everyone (all distances unknown).
    lost = Selector(SelectionConfig(audio_radius=50.0)).plan(sub(None), srcs, 0.0)
    assert lost.audio == {"near", "far", "nowhere"}


def test_audio_only_threshold_and_request() -> None:
    srcs = [audio("a", "alice", (1.0, 0, 0)), video("v", "alice", (1.0, 0, 0))]
    sel = Selector(SelectionConfig(audio_only_below_kbps=100.0))
    low = sel.plan(sub(estimate=99.0), srcs, 0.0)
    assert low.audio_only and low.video == {} and low.audio == {"a"}
    assert low.dropped == {"v": "audio_only"}
    asked = sel.plan(sub(estimate=5000.0, audio_only=True), srcs, 1.0)
    assert asked.audio_only and asked.video == {}
    # max_kbps caps the estimate; both count.
    capped = sel.plan(sub(estimate=5000.0, max_kbps=90.0), srcs, 2.0)
    assert capped.audio_only and capped.budget_kbps == 90.0
    full = sel.plan(sub(estimate=5000.0), srcs, 3.0)
    assert not full.audio_only and full.video == {"v": 2}


def test_layers_fit_budget() -> None:
    srcs = [audio("a", "alice", (1.0, 0, 0), kbps=40.0),
            video("v1", "alice", (1.0, 0, 0), layers=(150.0, 300.0, 600.0)),
            video("v2", "bob", (2.0, 0, 0), layers=(150.0, 300.0, 600.0))]
    sel = Selector()
    # 40 audio + 150 + 150 bases = 340; 500 leaves 160: v1 (nearer) up to layer 1 (+150).
    plan = sel.plan(sub(estimate=500.0), srcs, 0.0)
    assert plan.video == {"v1": 1, "v2": 0} and plan.kbps == 40 + 300 + 150
    # Only one base fits: the better-scored one; the other is dropped for budget.
    one = Selector().plan(sub(estimate=250.0), srcs, 0.0)
    assert one.video == {"v1": 0} and one.dropped == {"v2": "budget"}
    # A single-layer source is all or nothing.
    flat = SourceView("f", "carol", "video", (1.0, 0, 0), None, None, 700.0)
    assert Selector().plan(sub(estimate=600.0), [flat], 0.0).dropped == {"f": "budget"}
    assert Selector().plan(sub(estimate=700.0), [flat], 0.0).video == {"f": 0}


def test_hysteresis_no_flapping_then_switch() -> None:
    cfg = SelectionConfig(last_n=1, switch_hold_s=4.0, switch_margin=0.25)
    sel = Selector(cfg)
    near, far = (1.0, 0.0, 0.0), (6.0, 0.0, 0.0)

    def scene(x_near: bool) -> list[SourceView]:
        return [video("x", "xavier", near if x_near else far),
                video("y", "yvonne", far if x_near else near)]

    assert sel.plan(sub(), scene(True), 0.0).video.keys() == {"x"}
    # The two swap order every 0.5 s inside the hold: x stays, no keyframe churn.
    for step in range(1, 8):
        now = step * 0.5
        assert sel.plan(sub(), scene(step % 2 == 0), now).video.keys() == {"x"}
    # After the hold, y (clearly better) takes the slot...
    assert sel.plan(sub(), scene(False), 4.0).video.keys() == {"y"}
    # ...and keeps it for another hold even though x is better again.
    for step in range(1, 8):
        assert sel.plan(sub(), scene(True), 4.0 + step * 0.5).video.keys() == {"y"}
    assert sel.plan(sub(), scene(True), 8.0).video.keys() == {"x"}


def test_hysteresis_margin_and_leaving() -> None:
    sel = Selector(SelectionConfig(last_n=1, switch_hold_s=1.0, switch_margin=0.25))
    a = video("a", "ann", (4.0, 0, 0))
    b = video("b", "ben", (3.5, 0, 0))  # 1/4.5 vs 1/5: only 11 % better, under the margin
    assert sel.plan(sub(), [a], 0.0).video.keys() == {"a"}
    assert sel.plan(sub(), [a, b], 10.0).video.keys() == {"a"}
    assert sel.plan(sub(), [a, b], 10.0).dropped == {"b": "last_n"}
    # A source that leaves entirely is replaced at once, hold or not.
    sel2 = Selector(SelectionConfig(last_n=1, switch_hold_s=100.0))
    assert sel2.plan(sub(), [a], 0.0).video.keys() == {"a"}
    assert sel2.plan(sub(), [b], 0.1).video.keys() == {"b"}
    assert sel2.held("me") == {"b": 0.1}
    sel2.forget("me")
    assert sel2.held("me") == {}


def test_recent_speaker_video_wins_slot() -> None:
    sel = Selector(SelectionConfig(last_n=1, switch_hold_s=2.0, speaker_window_s=3.0))
    quiet = video("q", "quinn", (1.0, 0, 0))
    talker_audio = audio("t-a", "tara", (40.0, 0, 0), spoke=None)
    talker = video("t", "tara", (40.0, 0, 0))
    assert sel.plan(sub(), [quiet, talker, talker_audio], 0.0).video.keys() == {"q"}
    spoke = audio("t-a", "tara", (40.0, 0, 0), spoke=5.0)
    # The publisher's audio source speaking counts for its video source too.
    assert sel.plan(sub(), [quiet, talker, spoke], 5.0).video.keys() == {"t"}
    # A loud current audio level counts as speaking before last_spoke catches up.
    sel3 = Selector(SelectionConfig(last_n=1))
    loud = SourceView("t-a", "tara", "audio", (40.0, 0, 0), 20, None, 40.0)
    assert sel3.plan(sub(), [quiet, talker, loud], 0.0).video.keys() == {"t"}


def test_own_sources_and_duplicates() -> None:
    srcs = [audio("mine", "me", (0.0, 0, 0)), video("mine-v", "me", (0.0, 0, 0)),
            audio("x", "xavier", (1.0, 0, 0)), audio("x", "xavier", (999.0, 0, 0))]
    plan = Selector().plan(sub(), srcs, 0.0)
    assert plan.audio == {"x"} and plan.video == {} and plan.dropped == {}


def test_bad_measurements_do_not_crash() -> None:
    srcs = [SourceView("n", "nan", "video", (math.nan, 0, 0), None, math.nan, math.nan,
                       (math.nan, -5.0)),
            SourceView("i", "inf", "audio", (math.inf, 0, 0), 300, math.inf, -1.0)]
    plan = Selector().plan(sub(estimate=math.nan), srcs, 0.0)
    assert plan.audio == {"i"}
    assert set(plan.video) | set(plan.dropped) == {"n"}


@pytest.mark.parametrize("kwargs", [{"max_audio": -1}, {"last_n": -2}, {"audio_radius": -1.0},
                                    {"switch_hold_s": math.nan}, {"speaking_level": 200},
                                    {"switch_margin": math.inf}])
def test_config_rejects_nonsense(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="SelectionConfig"):
        SelectionConfig(**kwargs)  # type: ignore[arg-type]
