"""The ``[media]`` section of a scenario: who publishes what, who listens, how talk goes.

Parsed and checked here (every key; a mistake is a ``ScenarioError`` naming it); run by
``netsim.media``. The schema is documented in ``docs/netsim.md`` ("Media").
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from itertools import pairwise
from typing import Any

from meshnode.media.selection import SelectionConfig
from netsim.errors import ScenarioError

SPEAKING_PATTERNS = ("turns", "random", "none")
LAYOUTS = ("grid", "circle")


@dataclass(frozen=True)
class Publisher:
    """Nodes that publish: an audio track at ``audio_kbps`` (0 = none) and a video track whose
    cumulative temporal-layer bitrates are ``video_kbps`` (empty = none)."""

    nodes: tuple[int, ...]
    audio_kbps: float = 40.0
    video_kbps: tuple[float, ...] = ()


@dataclass(frozen=True)
class Prefs:
    """What some subscribers asked for (``room.set_media``)."""

    nodes: tuple[int, ...]
    audio_only: bool = False
    max_kbps: float | None = None


@dataclass(frozen=True)
class MediaSpec:
    """The whole ``[media]`` section (see ``docs/netsim.md``)."""

    publishers: tuple[Publisher, ...]
    prefs: tuple[Prefs, ...] = ()
    subscribers: tuple[int, ...] | None = None  # None: every node
    selection: SelectionConfig = field(default_factory=SelectionConfig)
    start_s: float = 1.0
    stop_s: float | None = None  # default: duration_s
    slice_ms: float = 100.0
    plan_interval_s: float = 0.5
    layout: str = "grid"
    spacing_m: float = 2.0
    positions: tuple[tuple[float, float, float], ...] | None = None
    speaking: str = "turns"
    turn_s: float = 4.0
    talk_s: float = 2.0
    pause_s: float = 8.0
    dtx_kbps: float = 2.0
    jitter_buffer_ms: float = 200.0
    stall_below: float = 0.9
    start_kbps: float = 300.0
    min_kbps: float = 30.0
    increase_per_s: float = 0.25
    additive_kbps_per_s: float = 20.0
    decrease_factor: float = 0.85
    loss_threshold: float = 0.02
    delay_threshold_ms: float = 100.0
    probe_backoff_s: float = 15.0


_FLOATS = ("start_s", "slice_ms", "plan_interval_s", "spacing_m", "turn_s", "talk_s",
           "pause_s", "dtx_kbps", "jitter_buffer_ms", "stall_below", "start_kbps", "min_kbps",
           "increase_per_s", "additive_kbps_per_s", "decrease_factor", "loss_threshold",
           "delay_threshold_ms", "probe_backoff_s")
_POSITIVE = ("slice_ms", "plan_interval_s", "turn_s", "talk_s", "pause_s", "start_kbps")
_FRACTIONS = ("stall_below", "decrease_factor", "loss_threshold")


def _error(message: str) -> Exception:
    return ScenarioError(message)


def _num(value: Any, where: str, *, positive: bool = False) -> float:
    ok = (isinstance(value, int | float) and not isinstance(value, bool)
          and math.isfinite(value) and value >= 0)
    if not ok or (positive and value <= 0):
        raise _error(f"{where} must be a finite number {'>' if positive else '>='} 0, "
                     f"not {value!r}")
    return float(value)


def _coord(value: Any) -> float:
    if (not isinstance(value, int | float) or isinstance(value, bool)
            or not math.isfinite(value)):
        raise _error(f"media.positions: coordinates must be finite numbers, not {value!r}")
    return float(value)


def _node_list(value: Any, n: int, where: str) -> tuple[int, ...]:
    if value == "all":
        return tuple(range(n))
    if (not isinstance(value, list) or not value
            or not all(isinstance(x, int) and not isinstance(x, bool) and 0 <= x < n
                       for x in value)):
        raise _error(f"{where} must be \"all\" or a non-empty list of node numbers below {n}, "
                     f"not {value!r}")
    return tuple(sorted(set(value)))


def _publisher(raw: Any, n: int, i: int) -> Publisher:
    where = f"media.publishers[{i}]"
    if not isinstance(raw, dict):
        raise _error(f"{where} must be a table ([[media.publishers]])")
    raw = dict(raw)
    nodes = _node_list(raw.pop("nodes", None), n, f"{where}.nodes")
    audio = _num(raw.pop("audio_kbps", 40.0), f"{where}.audio_kbps")
    video_raw = raw.pop("video_kbps", [])
    if isinstance(video_raw, int | float) and not isinstance(video_raw, bool):
        video_raw = [video_raw]
    if not isinstance(video_raw, list) or len(video_raw) > 4:
        raise _error(f"{where}.video_kbps must be a number or a list of at most 4 cumulative "
                     f"temporal-layer bitrates, not {video_raw!r}")
    video = tuple(_num(v, f"{where}.video_kbps", positive=True) for v in video_raw)
    if any(b < a for a, b in pairwise(video)):
        raise _error(f"{where}.video_kbps: layer bitrates are cumulative (layers 0..i "
                     f"together), so they must not decrease: {list(video)}")
    if raw:
        raise _error(f"{where}: unknown keys {sorted(raw)} (known: nodes, audio_kbps, "
                     "video_kbps)")
    return Publisher(nodes, audio, video)


def _prefs(raw: Any, n: int, i: int) -> Prefs:
    where = f"media.prefs[{i}]"
    if not isinstance(raw, dict):
        raise _error(f"{where} must be a table ([[media.prefs]])")
    raw = dict(raw)
    nodes = _node_list(raw.pop("nodes", None), n, f"{where}.nodes")
    audio_only = raw.pop("audio_only", False)
    if not isinstance(audio_only, bool):
        raise _error(f"{where}.audio_only must be true or false")
    max_kbps = raw.pop("max_kbps", None)
    if max_kbps is not None:
        max_kbps = _num(max_kbps, f"{where}.max_kbps")
    if raw:
        raise _error(f"{where}: unknown keys {sorted(raw)} (known: nodes, audio_only, max_kbps)")
    return Prefs(nodes, audio_only, max_kbps)


def _selection(raw: Any) -> SelectionConfig:
    if not isinstance(raw, dict):
        raise _error("media.selection must be a table")
    known = {f.name for f in fields(SelectionConfig)}
    bad = set(raw) - known
    if bad:
        raise _error(f"media.selection: unknown keys {sorted(bad)} (known: {sorted(known)})")
    for key, value in raw.items():
        if value is not None and not (isinstance(value, int | float)
                                      and not isinstance(value, bool)):
            raise _error(f"media.selection.{key} must be a number, not {value!r}")
    ints = {"max_audio", "last_n", "speaking_level"}
    for key in ints & set(raw):
        if not isinstance(raw[key], int):
            raise _error(f"media.selection.{key} must be an integer, not {raw[key]!r}")
    values: dict[str, Any] = {k: (v if k in ints or v is None else float(v))
                              for k, v in raw.items()}
    try:
        return SelectionConfig(**values)
    except ValueError as err:
        raise _error(f"media.selection: {err}") from None


def parse_media(raw: Any, n: int, duration_s: float) -> MediaSpec:
    """Check a ``[media]`` table for a scenario of ``n`` nodes."""
    if not isinstance(raw, dict):
        raise _error("media must be a table ([media])")
    raw = dict(raw)
    pubs_raw = raw.pop("publishers", None)
    if not isinstance(pubs_raw, list) or not pubs_raw:
        raise _error("media.publishers: at least one [[media.publishers]] table is required")
    publishers = tuple(_publisher(p, n, i) for i, p in enumerate(pubs_raw))
    seen: set[int] = set()
    for i, p in enumerate(publishers):
        if seen & set(p.nodes):
            raise _error(f"media.publishers[{i}]: node(s) {sorted(seen & set(p.nodes))} "
                         "already publish in an earlier table")
        seen |= set(p.nodes)
    prefs_raw = raw.pop("prefs", [])
    if not isinstance(prefs_raw, list):
        raise _error("media.prefs must be an array of tables ([[media.prefs]])")
    prefs = tuple(_prefs(p, n, i) for i, p in enumerate(prefs_raw))
    kw: dict[str, Any] = {}
    if "subscribers" in raw:
        kw["subscribers"] = _node_list(raw.pop("subscribers"), n, "media.subscribers")
    if "selection" in raw:
        kw["selection"] = _selection(raw.pop("selection"))
    for key in _FLOATS:
        if key in raw:
            kw[key] = _num(raw.pop(key), f"media.{key}", positive=key in _POSITIVE)
            if key in _FRACTIONS and kw[key] > 1:
                raise _error(f"media.{key} is a fraction in [0, 1], not {kw[key]!r}")
    if raw.get("stop_s") is not None:
        kw["stop_s"] = _num(raw.pop("stop_s"), "media.stop_s")
    raw.pop("stop_s", None)
    for key, allowed in (("layout", LAYOUTS), ("speaking", SPEAKING_PATTERNS)):
        if key in raw:
            value = raw.pop(key)
            if value not in allowed:
                raise _error(f"media.{key} must be one of {list(allowed)}, not {value!r}")
            kw[key] = value
    if "positions" in raw:
        pos = raw.pop("positions")
        if (not isinstance(pos, list) or len(pos) != n
                or not all(isinstance(p, list) and len(p) == 3 for p in pos)):
            raise _error(f"media.positions must list one [x, y, z] per node ({n})")
        kw["positions"] = tuple((_coord(x), _coord(y), _coord(z)) for x, y, z in pos)
    if raw:
        raise _error(f"media: unknown keys {sorted(raw)}")
    spec = MediaSpec(publishers=publishers, prefs=prefs, **kw)
    stop = spec.stop_s if spec.stop_s is not None else duration_s
    if not spec.start_s < stop:
        raise _error(f"media.start_s ({spec.start_s}) must be before media.stop_s ({stop})")
    if spec.min_kbps > spec.start_kbps:
        raise _error("media.min_kbps must not exceed media.start_kbps")
    return spec
