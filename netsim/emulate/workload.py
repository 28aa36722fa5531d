"""The scenario's workload as a schedule, and the edits themselves (on a real client).

:func:`schedule` is pure: from the scenario and its seed it draws the Poisson edit times, which
editor makes each edit (among the editors whose node is up at that moment by the scenario's
crash schedule) and its kind, so a run's workload is the same every time. :class:`Editor`
makes one edit of a kind on anything with the ``RoomClient`` editing methods, as netsim does on a
replica (``netsim.simulation.Simulation._one_edit``).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Protocol

from meshnode.crdt import ROOT, EntityId
from netsim.scenario import Scenario


@dataclass(frozen=True)
class PlannedEdit:
    """One edit: when (scenario seconds), by which node's editor, of which kind."""

    at_s: float
    node: int
    kind: str


def down_intervals(scenario: Scenario) -> dict[int, list[tuple[float, float]]]:
    """When each node is down by the scenario's crash / restart / leave events."""
    out: dict[int, list[tuple[float, float]]] = {}
    down_since: dict[int, float] = {}
    for ev in scenario.events:
        for x in ev.nodes:
            if ev.kind in ("crash", "leave") and x not in down_since:
                down_since[x] = ev.at_s
            elif ev.kind == "restart" and x in down_since:
                out.setdefault(x, []).append((down_since.pop(x), ev.at_s))
    for x, since in down_since.items():
        out.setdefault(x, []).append((since, float("inf")))
    return out


def is_up(intervals: dict[int, list[tuple[float, float]]], node: int, t: float) -> bool:
    """Whether ``node`` is up at scenario time ``t``."""
    return not any(a <= t < b for a, b in intervals.get(node, []))


def schedule(scenario: Scenario) -> list[PlannedEdit]:
    """Every edit of the run, in time order (deterministic by the scenario's seed)."""
    wl = scenario.workload
    stop = wl.stop_s if wl.stop_s is not None else scenario.duration_s * 0.75
    rng = random.Random(f"emulate-workload:{scenario.seed}")
    if wl.edits_per_s <= 0 or wl.editors <= 0:
        return []
    down = down_intervals(scenario)
    kinds, weights = zip(*wl.mix.items(), strict=True)
    out = []
    t = wl.start_s + rng.expovariate(wl.edits_per_s)
    while t <= stop:
        editors = [i for i in range(wl.editors) if is_up(down, i, t)]
        kind = rng.choices(kinds, weights)[0]
        if editors:
            out.append(PlannedEdit(round(t, 6), rng.choice(editors), kind))
        t += rng.expovariate(wl.edits_per_s)
    return out


class EditTarget(Protocol):
    """The editing surface of ``meshnode.client.RoomClient``."""

    def create_entity(self, parent: Any = ROOT,
                      components: Any = None) -> EntityId: ...  # pragma: no cover

    def set_field(self, entity: Any, component: str, field: str,
                  value: object) -> None: ...  # pragma: no cover

    def delete(self, entity: Any) -> None: ...  # pragma: no cover

    def move(self, entity: Any, new_parent: Any) -> None: ...  # pragma: no cover

    def exists(self, entity: EntityId) -> bool: ...  # pragma: no cover


@dataclass
class Editor:
    """One editor's entities and random draws (seeded per node)."""

    seed: int
    node: int
    own: list[EntityId] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.rng = random.Random(f"emulate-editor:{self.seed}:{self.node}")

    def create_initial(self, target: EditTarget, count: int) -> None:
        """The entities an editor starts with (netsim: ``initial_entities`` / editors)."""
        for k in range(count):
            self.own.append(target.create_entity(
                ROOT, {"name": {"text": f"{self.node}-{k}"},
                       "transform": {"position": [0.0, 0.0, 0.0]}}))

    def edit(self, target: EditTarget, kind: str) -> None:
        """Make one edit of ``kind`` (as netsim's workload does)."""
        rng = self.rng
        own = self.own = [e for e in self.own if target.exists(e)]
        if not own or kind == "create":
            parent = rng.choice(own) if own and rng.random() < 0.5 else ROOT
            own.append(target.create_entity(parent,
                                            {"transform": {"position": [0.0, 0.0, 0.0]}}))
        elif kind == "transform":
            pos = [round(rng.uniform(-10, 10), 3) for _ in range(3)]
            target.set_field(rng.choice(own), "transform", "position", pos)
        elif kind == "field":
            target.set_field(rng.choice(own), "material", "color", rng.choice(["red", "blue"]))
        elif kind == "delete" and len(own) > 1:
            target.delete(own.pop(rng.randrange(len(own))))
        elif kind == "move" and len(own) > 1:
            e, p = rng.sample(own, 2)
            try:
                target.move(e, p)
            except ValueError:
                target.move(e, ROOT)
        else:
            target.set_field(rng.choice(own), "transform", "position", [0.0, 0.0, 0.0])
