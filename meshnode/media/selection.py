"""Which streams each subscriber receives: the media relay's selection core. Sans-I/O.

The relay forwards RTP packets and never re-encodes, so the only knobs it has per subscriber are
*which* sources to forward and, for a video with VP8 temporal layers, *how many* layers. This
module decides both, from plain values (presence positions, recent speakers, each subscriber's
bandwidth estimate and preference) and ``now``; it keeps no clock and draws no randomness, so the
node and netsim drive the very same code.

One :meth:`Selector.plan` call decides for one subscriber:

1. **Budget**: ``min(estimate_kbps, max_kbps)`` of those known (``None``: unlimited).
2. **Audio**: the audio sources of other publishers within ``audio_radius``, recent speakers
   first, then nearest first (unknown distance after known ones), at most ``max_audio``. Audio
   is paid from the budget first, in that order; a source that does not fit is dropped
   (``budget``) and cheaper ones further down may still fit. The first-ranked audio is always
   kept, even over budget: a subscriber that cannot carry even one voice gets the nearest
   speaker rather than silence (the estimate may be pessimistic, and audio is cheap).
3. **Audio only**: if the subscriber asked for it, or the budget is below
   ``audio_only_below_kbps``, no video at all (every video dropped ``audio_only``).
4. **Video**: last-N by score (a recent speaker beats any silent one; then nearer is better;
   unknown distance scores lowest). Every switch costs the subscriber a keyframe, so the choice
   has hysteresis: a selected video stays at least ``switch_hold_s`` unless it disappears (no
   longer a candidate), and after that a challenger replaces the weakest selected one only when
   its score beats it by ``switch_margin`` (relative). Free slots are filled right away.
5. **Layers**: in score order, each selected video first gets its base layer if it fits what
   audio left (else it is dropped ``budget``); then, again in score order, each is raised to the
   highest temporal layer that still fits.

Own sources (``publisher == subscriber``) are never selected and never reported as dropped.
:attr:`Plan.dropped` says why every other source was left out (a stable reason, one of
:data:`DROP_REASONS`) so the node and netsim can count it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

MediaKind = Literal["audio", "video"]
Position = tuple[float, float, float]

#: Why a source is not (or not fully) forwarded to a subscriber; stable metric labels.
DROP_REASONS = ("out_of_radius", "audio_cap", "last_n", "budget", "audio_only")


@dataclass(frozen=True, slots=True)
class SourceView:
    """One published track as the selector sees it.

    ``audio_level`` is the last RFC 6464 level (0 loudest .. 127 silence), ``last_spoke`` the
    last time the publisher was heard speaking (``now`` timeline). ``layer_kbps[i]`` is the
    bitrate of temporal layers ``0..i`` together; empty means one layer at ``kbps``."""

    source_id: str
    publisher: str
    kind: MediaKind
    position: Position | None
    audio_level: int | None
    last_spoke: float | None
    kbps: float
    layer_kbps: tuple[float, ...] = ()


@dataclass(frozen=True, slots=True)
class SubscriberView:
    """One receiving participant: where it is, what its link carries (``estimate_kbps``, from
    REMB or receiver reports; ``None`` = unknown) and what it asked for."""

    subscriber: str
    position: Position | None
    estimate_kbps: float | None
    audio_only: bool
    max_kbps: float | None


@dataclass(frozen=True, slots=True)
class SelectionConfig:
    """Selection thresholds. Distances are in scene units (metres); ``None`` radius = no limit.

    ``speaking_level``: an ``audio_level`` at or below it (louder) counts as speaking now, even
    before ``last_spoke`` is updated. ``speaker_bonus``: score added to a recent speaker's video
    (distance scores are in (0, 1], so the default 1.0 puts every speaker ahead).
    ``switch_margin``: a challenger needs ``score > weakest * (1 + switch_margin)``."""

    audio_radius: float | None = 30.0
    max_audio: int = 8
    video_radius: float | None = None
    last_n: int = 4
    audio_only_below_kbps: float = 100.0
    switch_hold_s: float = 4.0
    switch_margin: float = 0.25
    speaker_window_s: float = 3.0
    speaking_level: int = 50
    speaker_bonus: float = 1.0

    def __post_init__(self) -> None:
        for name in ("audio_radius", "video_radius"):
            value = getattr(self, name)
            if value is not None and not value >= 0:
                raise ValueError(f"SelectionConfig.{name} must be >= 0 or None, got {value!r}")
        for name in ("max_audio", "last_n"):
            if getattr(self, name) < 0:
                raise ValueError(f"SelectionConfig.{name} must be >= 0, got {getattr(self, name)}")
        for name in ("audio_only_below_kbps", "switch_hold_s", "switch_margin",
                     "speaker_window_s", "speaker_bonus"):
            value = getattr(self, name)
            if not (value >= 0 and math.isfinite(value)):
                raise ValueError(f"SelectionConfig.{name} must be a finite number >= 0, "
                                 f"got {value!r}")
        if not 0 <= self.speaking_level <= 127:
            raise ValueError("SelectionConfig.speaking_level is an RFC 6464 level (0..127), "
                             f"got {self.speaking_level}")


@dataclass(frozen=True, slots=True)
class Plan:
    """What one subscriber receives.

    ``video`` maps a source to the highest temporal layer to forward (0 = base layer; for a
    source without ``layer_kbps`` it is always 0 and means the whole stream). ``dropped`` gives
    the reason each other candidate is not forwarded. ``kbps`` is the planned total and
    ``budget_kbps`` the budget it was planned against (``None`` = unlimited)."""

    audio: frozenset[str]
    video: dict[str, int]
    audio_only: bool
    dropped: dict[str, str] = field(default_factory=dict)
    kbps: float = 0.0
    budget_kbps: float | None = None


def _rate(value: float) -> float:
    """A bitrate as a cost: negative or NaN (a broken measurement) costs nothing extra."""
    return value if value >= 0 else 0.0


def layer_costs(source: SourceView) -> tuple[float, ...]:
    """Cumulative cost of forwarding layers ``0..i`` of ``source`` (never decreasing)."""
    raw = source.layer_kbps or (source.kbps,)
    costs: list[float] = []
    top = 0.0
    for value in raw:
        top = max(top, _rate(value))
        costs.append(top)
    return tuple(costs)


def budget_of(subscriber: SubscriberView) -> float | None:
    """``min(estimate_kbps, max_kbps)`` of those known; ``None`` when neither is."""
    known = [_rate(v) for v in (subscriber.estimate_kbps, subscriber.max_kbps) if v is not None]
    return min(known) if known else None


def _distance(a: Position | None, b: Position | None) -> float | None:
    if a is None or b is None:
        return None
    d = math.dist(a, b)
    return d if math.isfinite(d) else None


@dataclass(frozen=True, slots=True)
class _Candidate:
    source: SourceView
    distance: float | None
    speaking: bool
    score: float


class Selector:
    """Plans per subscriber; remembers each subscriber's selected videos (and since when) for
    hysteresis. Call :meth:`forget` when a subscriber leaves."""

    __slots__ = ("_held", "config")

    def __init__(self, config: SelectionConfig | None = None) -> None:
        self.config = config or SelectionConfig()
        # subscriber -> {video source_id: time it was (re)selected}
        self._held: dict[str, dict[str, float]] = {}

    def forget(self, subscriber: str) -> None:
        """Drop the hysteresis state of ``subscriber`` (it left)."""
        self._held.pop(subscriber, None)

    def held(self, subscriber: str) -> dict[str, float]:
        """The videos currently held for ``subscriber`` and since when (a copy)."""
        return dict(self._held.get(subscriber, {}))

    def plan(self, subscriber: SubscriberView, sources: Sequence[SourceView],
             now: float) -> Plan:
        """Decide what ``subscriber`` receives at ``now`` (see the module docstring).
        A repeated ``source_id`` keeps its first occurrence."""
        cfg = self.config
        me = subscriber.subscriber
        budget = budget_of(subscriber)
        dropped: dict[str, str] = {}

        last_spoke: dict[str, float] = {}
        unique: dict[str, SourceView] = {}
        for s in sources:
            if s.source_id in unique:
                continue
            unique[s.source_id] = s
            if s.last_spoke is not None and math.isfinite(s.last_spoke):
                last_spoke[s.publisher] = max(last_spoke.get(s.publisher, s.last_spoke),
                                              s.last_spoke)
        loud: set[str] = {s.publisher for s in unique.values()
                          if s.audio_level is not None and s.audio_level <= cfg.speaking_level}

        audio: list[_Candidate] = []
        videos: list[_Candidate] = []
        for s in unique.values():
            if s.publisher == me:
                continue
            d = _distance(subscriber.position, s.position)
            spoke = last_spoke.get(s.publisher)
            speaking = s.publisher in loud or (
                spoke is not None and now - spoke <= cfg.speaker_window_s)
            radius = cfg.audio_radius if s.kind == "audio" else cfg.video_radius
            if radius is not None and d is not None and d > radius:
                dropped[s.source_id] = "out_of_radius"
                continue
            score = (cfg.speaker_bonus if speaking else 0.0) + (
                0.0 if d is None else 1.0 / (1.0 + d))
            (audio if s.kind == "audio" else videos).append(_Candidate(s, d, speaking, score))

        # Audio: speakers, then nearest; unknown distance last; id breaks ties.
        audio.sort(key=lambda c: (not c.speaking, c.distance is None, c.distance or 0.0,
                                  c.source.source_id))
        chosen_audio: list[str] = []
        used = 0.0
        for i, c in enumerate(audio):
            if len(chosen_audio) >= cfg.max_audio:
                dropped[c.source.source_id] = "audio_cap"
                continue
            cost = _rate(c.source.kbps)
            if budget is None or used + cost <= budget or i == 0:
                chosen_audio.append(c.source.source_id)
                used += cost
            else:
                dropped[c.source.source_id] = "budget"

        audio_only = subscriber.audio_only or (
            budget is not None and budget < cfg.audio_only_below_kbps)
        held = self._held.setdefault(me, {})
        video: dict[str, int] = {}
        if audio_only or cfg.last_n == 0:
            held.clear()
            for c in videos:
                dropped[c.source.source_id] = "audio_only" if audio_only else "last_n"
        else:
            ranked = sorted(videos, key=lambda c: (-c.score, c.source.source_id))
            selected = self._last_n(held, ranked, now)
            for c in ranked:
                if c.source.source_id not in selected:
                    dropped[c.source.source_id] = "last_n"
            picks = [c for c in ranked if c.source.source_id in selected]
            used, video = self._fit_layers(picks, budget, used, dropped)
            for sid in list(held):
                if sid not in video:
                    del held[sid]
        return Plan(frozenset(chosen_audio), video, audio_only, dropped, used, budget)

    def _last_n(self, held: dict[str, float], ranked: list[_Candidate],
                now: float) -> set[str]:
        """Update ``held`` (source -> since) to the new last-N set, with hysteresis."""
        cfg = self.config
        by_id = {c.source.source_id: c for c in ranked}
        for sid in [sid for sid in held if sid not in by_id]:
            del held[sid]  # it left entirely: no hold
        if len(held) > cfg.last_n:  # last_n shrank: keep the best
            keep = sorted(held, key=lambda sid: (-by_id[sid].score, sid))[:cfg.last_n]
            for sid in [sid for sid in held if sid not in keep]:
                del held[sid]
        for c in ranked:
            sid = c.source.source_id
            if sid in held:
                continue
            if len(held) < cfg.last_n:
                held[sid] = now
                continue
            # Challenger: the weakest selected whose hold is over.
            free = [h for h in held if now - held[h] >= cfg.switch_hold_s]
            if not free:
                break  # ranked is best-first: later challengers are weaker still
            weakest = min(free, key=lambda h: (by_id[h].score, h))
            w = by_id[weakest].score
            if c.score > w and c.score > w * (1.0 + cfg.switch_margin):
                del held[weakest]
                held[sid] = now
        return set(held)

    @staticmethod
    def _fit_layers(picks: list[_Candidate], budget: float | None, used: float,
                    dropped: dict[str, str]) -> tuple[float, dict[str, int]]:
        """Base layers in score order, then each raised as far as the budget allows."""
        layers: dict[str, int] = {}
        costs: dict[str, tuple[float, ...]] = {}
        for c in picks:
            sid = c.source.source_id
            cost = layer_costs(c.source)
            if budget is None or used + cost[0] <= budget:
                layers[sid] = 0
                costs[sid] = cost
                used += cost[0]
            else:
                dropped[sid] = "budget"
        for sid, cost in costs.items():
            top = 0
            for i in range(1, len(cost)):
                if budget is None or used - cost[0] + cost[i] <= budget:
                    top = i
            used += cost[top] - cost[0]
            layers[sid] = top
        return used, layers
