"""What the relay should forward where, decided from plain values and ``now``. Sans-I/O.

The relay (``meshnode.media.relay``) takes a ``RoomState`` snapshot of one room every tick
and applies the ``RoomDecision`` this module returns; everything here is pure, so the rules
are tested without a connection.

Sources of a room are *local* (a client or browser on this node publishes them, or they
already arrive here from a neighbour) or *remote*: a neighbour node announced it can send
them (``MediaSources``), with a hop count. Each remote source is reached through one
neighbour: the one announcing the fewest hops (ties: the smallest PeerID), so a stream
follows one path and never loops.

Per subscriber:

- a client or browser gets what the ``Selector`` plans for it (positions, audio levels,
  its bandwidth estimate and preferences; never its own sources). A video planned at its
  top measured layer is forwarded whole (layer ``None``); so is one whose layers are not
  measured yet (the selector sees one layer, 0, which to the forwarder would mean the base
  layer only);
- a neighbour node gets exactly the sources it asked for (``MediaPrefs.wanted``) that we
  have or can reach through another neighbour (never back where they came from).

Then, per neighbour: we *want* a remote source through it if a local subscriber's plan or
another neighbour's wish needs it; we *announce* to it every source we have or can reach
except those we reach through it (split horizon), one hop further. A source that crossed
``MAX_HOPS`` nodes is not announced further.

Finally the room's cap (``RoomState.cap_kbps``: what the operator lets this node send for the
room, ``max_room_kbps`` and what ``max_relay_kbps`` leaves after the other rooms): while the
planned outputs cost more, existing outputs are *demoted* rather than new ones refused: first
the farthest video (from its subscriber) loses its top temporal layer, again and again, then
the farthest video is paused for its subscriber (``RoomDecision.demoted``, reason
``relay_full``). Audio and trunk copies are never demoted: they are cheap, and a trunk copy
serves a whole node.
"""

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from meshnode.media.selection import Plan, Selector, SourceView, SubscriberView, layer_costs
from protocol.media import MAX_HOPS

__all__ = ["Announce", "RoomDecision", "RoomState", "Subscriber", "decide_room"]


@dataclass(frozen=True, slots=True)
class Announce:
    """One source as announced to a neighbour: what ``MediaSources`` lists."""

    source_id: str
    publisher: str
    kind: str
    hops: int


@dataclass(frozen=True, slots=True)
class Subscriber:
    """A receiving endpoint in the room. ``node``: a neighbour node (trunk), which names the
    sources it wants (``wanted``); otherwise a client or browser, planned by the selector
    from ``view``."""

    endpoint: str
    node: bool
    view: SubscriberView
    wanted: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class RoomState:
    """One room, as the relay sees it now.

    ``local``: the sources flowing into this node (``SourceView`` with their measured rates
    and levels), with the endpoint each arrives from in ``origin``; ``remote``: per
    neighbour endpoint, what it announced (source ID -> ``Announce``); ``cap_kbps``: the
    most the room's outputs may cost together (None: no cap)."""

    local: Sequence[SourceView]
    origin: Mapping[str, str]
    remote: Mapping[str, Mapping[str, Announce]]
    subscribers: Sequence[Subscriber]
    neighbours: Sequence[str]
    cap_kbps: float | None = None


@dataclass(frozen=True, slots=True)
class RoomDecision:
    """What to do in one room: ``outputs``: per subscriber endpoint, the sources to forward
    to it with their highest temporal layer (None: all); ``want``: per neighbour, the
    sources to ask it for; ``announce``: per neighbour, the sources to announce to it;
    ``plans``: the selector's plan per client subscriber (for metrics and logs);
    ``demoted``: per subscriber, the videos the room's cap paused (source ID -> reason);
    ``kbps``: what the outputs cost together, as planned."""

    outputs: dict[str, dict[str, int | None]]
    want: dict[str, frozenset[str]]
    announce: dict[str, tuple[Announce, ...]]
    plans: dict[str, Plan] = field(default_factory=dict)
    demoted: dict[str, dict[str, str]] = field(default_factory=dict)
    kbps: float = 0.0


def _routes(state: RoomState, local_ids: set[str]) -> dict[str, tuple[str, Announce]]:
    """Per remote source (not local): the neighbour we reach it through, and its entry."""
    best: dict[str, tuple[str, Announce]] = {}
    for neighbour in sorted(state.remote):
        for sid, ann in state.remote[neighbour].items():
            if sid in local_ids or ann.hops >= MAX_HOPS:
                continue
            have = best.get(sid)
            if have is None or ann.hops < have[1].hops:
                best[sid] = (neighbour, ann)
    return best


def decide_room(state: RoomState, selector: Selector, now: float) -> RoomDecision:
    """The decision for one room (see the module docstring)."""
    local = {s.source_id: s for s in state.local}
    routes = _routes(state, set(local))
    # What a client may be planned on: local sources and those we can reach.
    candidates: list[SourceView] = list(state.local)
    for sid, (_, ann) in routes.items():
        candidates.append(SourceView(sid, ann.publisher, "audio" if ann.kind == "audio"
                                     else "video", None, None, None, 0.0))
    outputs: dict[str, dict[str, int | None]] = {}
    plans: dict[str, Plan] = {}
    needed: set[str] = set()  # remote sources someone here needs
    for sub in state.subscribers:
        chosen: dict[str, int | None] = {}
        if sub.node:
            for sid in sub.wanted:
                if sid in local and state.origin.get(sid) != sub.endpoint:
                    chosen[sid] = None
                elif sid in routes and routes[sid][0] != sub.endpoint:
                    needed.add(sid)
        else:
            plan = selector.plan(sub.view, candidates, now)
            plans[sub.endpoint] = plan
            for sid in plan.audio:
                if sid in local:
                    chosen[sid] = None
                else:
                    needed.add(sid)
            for sid, tid in plan.video.items():
                if sid in local:
                    # The selector's top layer is every layer, None to the forwarder: for a
                    # source whose layers are not measured yet (one "layer", 0) a 0 would
                    # thin a layered stream to its base layer until they are.
                    top = len(layer_costs(local[sid])) - 1
                    chosen[sid] = None if tid >= top else tid
                else:
                    needed.add(sid)
        outputs[sub.endpoint] = chosen
    want: dict[str, set[str]] = {n: set() for n in state.neighbours}
    for sid in needed:
        neighbour = routes[sid][0]
        if neighbour in want:
            want[neighbour].add(sid)
    # A local source keeps flowing in from a neighbour while anyone here needs it.
    for sub_outputs in outputs.values():
        for sid in sub_outputs:
            origin = state.origin.get(sid)
            if origin in want:
                want[origin].add(sid)
    announce: dict[str, tuple[Announce, ...]] = {}
    for neighbour in state.neighbours:
        entries = [Announce(s.source_id, _peer_of(s.source_id), s.kind, 0 if state.origin.get(
            s.source_id) not in state.remote else _hops(state, s.source_id) + 1)
            for s in state.local if state.origin.get(s.source_id) != neighbour]
        entries += [Announce(sid, ann.publisher, ann.kind, ann.hops + 1)
                    for sid, (via, ann) in routes.items() if via != neighbour]
        announce[neighbour] = tuple(sorted(
            (a for a in entries if a.hops <= MAX_HOPS), key=lambda a: a.source_id))
    demoted, kbps = fit_room_cap(state, outputs)
    return RoomDecision(outputs, {n: frozenset(s) for n, s in want.items()}, announce, plans,
                        demoted, kbps)


def _cost(source: SourceView, tid: int | None) -> float:
    costs = layer_costs(source)
    return costs[-1] if tid is None else costs[min(tid, len(costs) - 1)]


def fit_room_cap(state: RoomState,
                 outputs: dict[str, dict[str, int | None]]) -> tuple[dict[str, dict[str, str]],
                                                                    float]:
    """Demote ``outputs`` in place until they cost at most ``state.cap_kbps`` (see the
    module docstring); returns the paused videos per subscriber and the final cost."""
    local = {s.source_id: s for s in state.local}
    subs = {s.endpoint: s for s in state.subscribers}
    total = sum(_cost(local[sid], tid) for chosen in outputs.values()
                for sid, tid in chosen.items() if sid in local)
    demoted: dict[str, dict[str, str]] = {}
    cap = state.cap_kbps
    if cap is None or total <= cap:
        return demoted, total

    def farthest(with_layers: bool) -> tuple[str, str] | None:
        best: tuple[float, str, str] | None = None
        for key, chosen in outputs.items():
            sub = subs.get(key)
            if sub is None or sub.node:
                continue
            for sid, tid in chosen.items():
                src = local.get(sid)
                if src is None or src.kind != "video":
                    continue
                if with_layers and (len(layer_costs(src)) < 2
                                    or (tid is not None and tid <= 0)):
                    continue
                d = _distance(sub.view.position, src.position)
                rank = (d, key, sid)
                if best is None or rank > best:
                    best = rank
        return None if best is None else (best[1], best[2])

    while total > cap:
        pick = farthest(with_layers=True)
        if pick is not None:
            key, sid = pick
            tid = outputs[key][sid]
            top = len(layer_costs(local[sid])) - 1 if tid is None else min(
                tid, len(layer_costs(local[sid])) - 1)
            total -= _cost(local[sid], top) - _cost(local[sid], top - 1)
            outputs[key][sid] = top - 1
            continue
        pick = farthest(with_layers=False)
        if pick is None:
            break  # only audio and trunk copies left: never demoted
        key, sid = pick
        total -= _cost(local[sid], outputs[key].pop(sid))
        demoted.setdefault(key, {})[sid] = "relay_full"
    return demoted, total


def _distance(a: tuple[float, float, float] | None,
              b: tuple[float, float, float] | None) -> float:
    """How far apart (unknown: infinitely, so demoted first)."""
    if a is None or b is None:
        return math.inf
    d = math.dist(a, b)
    return d if math.isfinite(d) else math.inf


def _hops(state: RoomState, source_id: str) -> int:
    """How many hops a local source that arrives from a neighbour had there."""
    origin = state.origin.get(source_id, "")
    ann = state.remote.get(origin, {}).get(source_id)
    return ann.hops if ann is not None else 0


def _peer_of(source_id: str) -> str:
    """The publisher's PeerID, which starts a source ID (a ``SourceView.publisher`` is a
    participant: ``PeerID#session`` for a browser, ``meshnode.media.participants``)."""
    return source_id.partition("/")[0]
