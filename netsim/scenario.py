"""Scenario files: what a researcher writes (TOML), parsed and checked into dataclasses.

The schema is documented in ``docs/netsim.md``; every key is checked here, and a mistake is a
``ScenarioError`` that names the key, never a crash in the middle of a run.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from meshnode.overlay import OverlayConfig
from netsim.errors import ScenarioError as ScenarioError
from netsim.links import PRESETS, LinkSpec
from netsim.node_model import LivenessSpec, NodeSpec, parse_section
from netsim.topology import KINDS

if TYPE_CHECKING:
    from netsim.media_spec import MediaSpec

EVENT_KINDS = frozenset(
    {"partition", "heal", "degrade", "restore", "crash", "restart", "join", "leave", "hostile",
     "remove", "rotate"}
)
HOSTILE_BEHAVIOURS = frozenset({"flood", "garbage", "withhold", "equivocate"})
DEFAULT_MIX = {"transform": 0.70, "field": 0.15, "create": 0.05, "delete": 0.05, "move": 0.05}


@dataclass(frozen=True)
class Workload:
    """Clients editing the scene."""

    editors: int = 1
    edits_per_s: float = 1.0  # total over all editors (Poisson arrivals)
    mix: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_MIX))
    start_s: float = 1.0
    stop_s: float | None = None  # default: duration_s * 0.75, leaving time to settle
    initial_entities: int = 20
    presence_hz: float = 0.0  # presence updates per second per editor
    private: bool = False  # a private room (sealed scene and presence; docs/protocol.md)
    hosts: int = 0  # the last `hosts` nodes are blind hosts (role host; private rooms)


@dataclass(frozen=True)
class Event:
    """Something that happens to the network at ``at_s``."""

    at_s: float
    kind: str
    groups: list[list[int]] = field(default_factory=list)
    nodes: list[int] = field(default_factory=list)
    edges: list[tuple[int, int]] = field(default_factory=list)
    link: dict[str, Any] = field(default_factory=dict)
    behaviour: str = ""
    rate_per_s: float = 200.0


@dataclass(frozen=True)
class Scenario:
    """A whole simulation: topology, links, overlay settings, workload and events."""

    seed: int
    duration_s: float
    topology: dict[str, Any]
    links: LinkSpec
    link_overrides: list[tuple[list[tuple[int, int]], LinkSpec]]
    overlay: dict[str, Any]
    workload: Workload
    events: list[Event]
    name: str = "scenario"
    sample_interval_s: float = 0.5
    media: MediaSpec | None = None  # the [media] section (netsim/media_spec.py)
    node: NodeSpec = field(default_factory=NodeSpec)  # [node]: per-hop processing
    # The seed of the links' random draws (loss, bursts, jitter), None: ``seed``. Each direction
    # ``a -> b`` draws from ``random.Random(f"{link_seed}:{a}->{b}")``, as the emulation's
    # fabric does from scenario time 0: runs with the same link seed meet the same loss
    # pattern (the n-th packet of a direction has the same fate) whatever their other seeds.
    link_seed: int | None = None
    liveness: LivenessSpec = field(default_factory=LivenessSpec)  # [liveness]

    @property
    def nodes(self) -> int:
        """Number of nodes."""
        return int(self.topology["nodes"])


def _number(value: Any, where: str, *, positive: bool = False) -> float:
    """A number >= 0 (> 0 with ``positive``), or a ``ScenarioError`` naming ``where``."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0
    if not ok or (positive and value <= 0):
        raise ScenarioError(f"{where} must be a number {'>' if positive else '>='} 0, "
                            f"not {value!r}")
    return float(value)


def _table(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ScenarioError(f"{where} must be a table")
    return dict(value)


def _tables(value: Any, where: str) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not all(isinstance(x, dict) for x in value):
        raise ScenarioError(f"{where} must be an array of tables ([[{where}]])")
    return value


def _link_spec(table: dict[str, Any], base: LinkSpec, where: str) -> LinkSpec:
    table = _table(table, where)
    preset = table.pop("preset", None)
    if preset is not None:
        if preset not in PRESETS:
            raise ScenarioError(f"{where}.preset: unknown preset {preset!r} ({sorted(PRESETS)})")
        base = PRESETS[preset]
    if not table:
        return base
    try:
        merged = {f.name: getattr(base, f.name) for f in fields(base)}
        merged.update(table)
        return LinkSpec.from_dict(merged)
    except ValueError as err:
        raise ScenarioError(f"{where}: {err}") from None


def _edges(value: Any, n: int, where: str) -> list[tuple[int, int]]:
    if not isinstance(value, list):
        raise ScenarioError(f"{where} must be a list of [a, b] pairs")
    out = []
    for e in value:
        if (
            not isinstance(e, list) or len(e) != 2
            or not all(isinstance(x, int) and 0 <= x < n for x in e)
        ):
            raise ScenarioError(f"{where}: {e!r} is not a pair of node numbers below {n}")
        out.append((min(e), max(e)))
    return out


def _nodes(value: Any, n: int, where: str) -> list[int]:
    if not isinstance(value, list) or not all(isinstance(x, int) and 0 <= x < n for x in value):
        raise ScenarioError(f"{where} must be a list of node numbers below {n}")
    return list(value)


def _event(raw: dict[str, Any], n: int, i: int) -> Event:
    where = f"events[{i}]"
    raw = dict(raw)
    at = raw.pop("at_s", None)
    kind = raw.pop("kind", None)
    if not isinstance(at, (int, float)) or at < 0:
        raise ScenarioError(f"{where}.at_s must be a number >= 0")
    if kind not in EVENT_KINDS:
        raise ScenarioError(f"{where}.kind must be one of {sorted(EVENT_KINDS)}, not {kind!r}")
    ev: dict[str, Any] = {"at_s": float(at), "kind": kind}
    if kind == "partition":
        groups = raw.pop("groups", None)
        if not isinstance(groups, list) or not groups:
            raise ScenarioError(f"{where}.groups must list node groups (\"rest\" allowed once)")
        listed: set[int] = set()
        rest_at = None
        resolved: list[list[int]] = []
        for gi, g in enumerate(groups):
            if g == "rest":
                if rest_at is not None:
                    raise ScenarioError(f"{where}.groups: \"rest\" may appear once")
                rest_at = gi
                resolved.append([])
            else:
                members = _nodes(g, n, f"{where}.groups[{gi}]")
                if listed & set(members):
                    raise ScenarioError(f"{where}.groups: a node is in two groups")
                listed |= set(members)
                resolved.append(members)
        if rest_at is not None:
            resolved[rest_at] = [x for x in range(n) if x not in listed]
        ev["groups"] = resolved
    elif kind in ("crash", "restart", "join", "leave", "remove", "rotate"):
        ev["nodes"] = _nodes(raw.pop("nodes", None), n, f"{where}.nodes")
    elif kind in ("degrade", "restore"):
        if "edges" in raw:
            ev["edges"] = _edges(raw.pop("edges"), n, f"{where}.edges")
        if kind == "degrade":
            link = {k: raw.pop(k) for k in list(raw)}
            if not link:
                raise ScenarioError(f"{where}: degrade needs link keys (e.g. loss = 0.2)")
            _link_spec(link, LinkSpec(), where)  # validate now
            ev["link"] = link
    elif kind == "hostile":
        ev["nodes"] = _nodes(raw.pop("nodes", None), n, f"{where}.nodes")
        behaviour = raw.pop("behaviour", None)
        if behaviour not in HOSTILE_BEHAVIOURS:
            raise ScenarioError(
                f"{where}.behaviour must be one of {sorted(HOSTILE_BEHAVIOURS)}, not {behaviour!r}"
            )
        ev["behaviour"] = behaviour
        if "rate_per_s" in raw:
            ev["rate_per_s"] = _number(raw.pop("rate_per_s"), f"{where}.rate_per_s",
                                       positive=True)
    if raw:
        raise ScenarioError(f"{where}: unknown keys {sorted(raw)} for kind {kind!r}")
    return Event(**ev)


def parse(data: dict[str, Any], *, seed: int | None = None) -> Scenario:
    """Check a scenario given as a dict (as read from TOML)."""
    data = dict(data)
    known = {"seed", "duration_s", "name", "topology", "links", "link_overrides", "overlay",
             "workload", "events", "sample_interval_s", "media", "node", "liveness", "link_seed"}
    unknown = set(data) - known
    if unknown:
        raise ScenarioError(f"unknown top-level keys: {sorted(unknown)}")
    topo = data.get("topology")
    if not isinstance(topo, dict) or "kind" not in topo:
        raise ScenarioError("[topology] with a kind is required")
    n = topo.get("nodes")
    if not isinstance(n, int) or n < 2:
        raise ScenarioError("topology.nodes must be an integer >= 2")
    if topo["kind"] not in KINDS:
        raise ScenarioError(f"topology.kind: unknown {topo['kind']!r} ({sorted(KINDS)})")
    bad = set(topo) - {"kind", "nodes"} - set(KINDS[topo["kind"]])
    if bad:
        raise ScenarioError(f"topology: unknown keys {sorted(bad)} for kind {topo['kind']!r}")
    duration = data.get("duration_s", 60.0)
    if not isinstance(duration, (int, float)) or duration <= 0:
        raise ScenarioError("duration_s must be a positive number")
    links = _link_spec(data.get("links", {}), LinkSpec(), "links")
    overrides = []
    for i, ov in enumerate(_tables(data.get("link_overrides", []), "link_overrides")):
        ov = dict(ov)
        edges = _edges(ov.pop("edges", None), n, f"link_overrides[{i}].edges")
        overrides.append((edges, _link_spec(ov, links, f"link_overrides[{i}]")))
    overlay = _table(data.get("overlay", {}), "overlay")
    valid = {f.name for f in fields(OverlayConfig)}
    bad = set(overlay) - valid
    if bad:
        raise ScenarioError(f"overlay: unknown keys {sorted(bad)}")
    for key, value in overlay.items():
        _number(value, f"overlay.{key}")
    wl_raw = _table(data.get("workload", {}), "workload")
    wl_valid = {f.name for f in fields(Workload)}
    bad = set(wl_raw) - wl_valid
    if bad:
        raise ScenarioError(f"workload: unknown keys {sorted(bad)}")
    mix = wl_raw.get("mix")
    if mix is not None:
        if not isinstance(mix, dict) or set(mix) - set(DEFAULT_MIX) or not mix:
            raise ScenarioError(f"workload.mix: keys must be among {sorted(DEFAULT_MIX)}")
        if any(not isinstance(v, (int, float)) or v < 0 for v in mix.values()):
            raise ScenarioError("workload.mix: weights must be numbers >= 0")
        if not sum(mix.values()) > 0:
            raise ScenarioError("workload.mix: at least one weight must be > 0")
    for key in ("edits_per_s", "start_s", "presence_hz"):
        if key in wl_raw:
            _number(wl_raw[key], f"workload.{key}")
    if wl_raw.get("stop_s") is not None:
        _number(wl_raw["stop_s"], "workload.stop_s")
    if type(wl_raw.get("private", False)) is not bool:
        raise ScenarioError("workload.private must be true or false")
    for key in ("editors", "initial_entities", "hosts"):
        value = wl_raw.get(key, 0)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ScenarioError(f"workload.{key} must be an integer >= 0, not {value!r}")
    workload = Workload(**wl_raw)
    if not 0 <= workload.editors <= n:
        raise ScenarioError(f"workload.editors must be between 0 and {n}")
    if workload.hosts and (not workload.private or workload.editors + workload.hosts > n):
        raise ScenarioError("workload.hosts needs private = true and at most nodes - editors "
                            "hosts (the last nodes host blind)")
    events = [_event(e, n, i) for i, e in enumerate(_tables(data.get("events", []), "events"))]
    events.sort(key=lambda e: e.at_s)
    the_seed = seed if seed is not None else data.get("seed", 1)
    if not isinstance(the_seed, int):
        raise ScenarioError("seed must be an integer")
    link_seed = data.get("link_seed")
    if link_seed is not None and (not isinstance(link_seed, int) or isinstance(link_seed, bool)):
        raise ScenarioError(f"link_seed must be an integer, not {link_seed!r}")
    try:
        node = parse_section(NodeSpec, data.get("node", {}), "node")
        liveness = parse_section(LivenessSpec, data.get("liveness", {}), "liveness")
    except ValueError as err:
        raise ScenarioError(str(err)) from None
    media = None
    if "media" in data:
        from netsim.media_spec import parse_media

        media = parse_media(data["media"], n, float(duration))
    return Scenario(
        seed=the_seed,
        duration_s=float(duration),
        topology=topo,
        links=links,
        link_overrides=overrides,
        overlay=overlay,
        workload=workload,
        events=events,
        name=str(data.get("name", "scenario")),
        sample_interval_s=_number(data.get("sample_interval_s", 0.5), "sample_interval_s",
                                  positive=True),
        media=media,
        node=node,
        liveness=liveness,
        link_seed=link_seed,
    )


def load(path: str | Path, *, seed: int | None = None) -> Scenario:
    """Read and check a scenario TOML file."""
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except tomllib.TOMLDecodeError as err:
        raise ScenarioError(f"{path}: not valid TOML: {err}") from None
    return parse(data, seed=seed)


def set_param(data: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``links.loss``-style dotted keys in a raw scenario dict (for sweeps)."""
    parts = dotted.split(".")
    node = data
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ScenarioError(f"--param {dotted}: {p} is not a table")
    node[parts[-1]] = value
