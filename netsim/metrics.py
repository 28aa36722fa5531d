"""Turn a finished ``Simulation`` into ``results.json`` (see ``docs/netsim.md`` for each key)."""

from __future__ import annotations

from typing import Any

from netsim.simulation import Simulation
from netsim.topology import hop_distances, shortest_from


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (``q`` in 0..100) of unsorted values; None if empty."""
    if not values:
        return None
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(q / 100.0 * len(ordered) + 0.5) - 1))
    return ordered[k]


def _summary(values: list[float], qs: tuple[int, ...]) -> dict[str, float | None]:
    out: dict[str, float | None] = {f"p{q}": _round(percentile(values, q)) for q in qs}
    return out


def _round(x: float | None, digits: int = 3) -> float | None:
    return None if x is None else round(x, digits)


def by_hops_summary(by_hops: dict[int, list[float]]) -> dict[str, dict[str, float | None]]:
    """Latency percentiles per hop count between origin and receiver (``"1"``, ``"2"``...).

    Pooled over every receiver, a line's latencies are one mode per hop count, and the pooled
    median falls between two modes, where a few samples more on one side move it by the gap
    between them: the per-hop figures are the ones to compare runs on."""
    return {str(h): _summary(v, (50, 90, 99)) for h, v in sorted(by_hops.items()) if h >= 0}


def by_hops_series(by_hops: dict[int, list[float]]) -> dict[str, list[float]]:
    """The sorted latencies per hop count (the series behind ``by_hops_summary``)."""
    return {str(h): [round(x, 3) for x in sorted(v)] for h, v in sorted(by_hops.items())
            if h >= 0}


def results(sim: Simulation, wall_time_s: float) -> dict[str, Any]:
    """Everything a researcher reads after a run, as plain JSON-able data."""
    obs = sim.obs
    honest = sim.honest_live()
    honest_idx = {n.index for n in honest}
    submitted = obs.submitted
    shortest_cache: dict[int, list[float]] = {}
    hops_cache: dict[int, list[int]] = {}
    by_hops: dict[int, list[float]] = {}

    latencies: list[float] = []
    shortest: list[float] = []
    stretch: list[float] = []
    pairs_expected = 0
    pairs_delivered = 0
    fully_delivered = 0
    for cid, (origin, t0) in submitted.items():
        got = obs.delivered.get(cid, {})
        receivers = [j for j in honest_idx if j != origin]
        pairs_expected += len(receivers)
        delivered_here = 0
        if origin not in shortest_cache:
            shortest_cache[origin] = shortest_from(sim.topology, origin, sim.scenario.links)
        sp = shortest_cache[origin]
        if origin not in hops_cache:
            hops_cache[origin] = hop_distances(sim.topology, origin)
        hc = hops_cache[origin]
        for j in receivers:
            t = got.get(j)
            if t is None:
                continue
            delivered_here += 1
            lat_ms = (t - t0) * 1000.0
            latencies.append(lat_ms)
            by_hops.setdefault(hc[j], []).append(lat_ms)
            shortest.append(sp[j])
            if sp[j] > 0:
                stretch.append(lat_ms / sp[j])
        pairs_delivered += delivered_here
        if delivered_here == len(receivers):
            fully_delivered += 1

    heads = {tuple(n.replica.heads()) for n in honest}
    converged = len(heads) <= 1
    if converged and honest:
        readers = [n for n in honest if n.replica.readable]
        reference = (readers or honest)[0].replica.state()
        sample = honest if len(honest) <= 200 else honest[:: max(1, len(honest) // 200)]
        # A private room's blind hosts cannot read the scene: compare the readers' states.
        sample = [n for n in sample if n.replica.readable]
        converged = all(n.replica.state() == reference for n in sample)

    convergence_after_heal: float | None = None
    if obs.heals:
        heal = obs.heals[-1]
        latest = heal
        for cid, (origin, t0) in submitted.items():
            if t0 > heal:
                continue
            got = obs.delivered.get(cid, {})
            for j in honest_idx:
                if j == origin:
                    continue
                t = got.get(j)
                if t is None:
                    latest = float("nan")
                    break
                latest = max(latest, t)
        convergence_after_heal = None if latest != latest else round(latest - heal, 3)

    copies = 0
    for node in honest:
        for st in sim.overlay_stats(node):
            copies += st.payload_pushed_in + st.payload_pulled_in
    denom = len(submitted) * max(1, len(honest) - 1)
    bytes_by_node = [0.0] * len(sim.nodes)
    for (a, _), link in sim.links.items():
        bytes_by_node[a] += link.bytes_sent
    util = list(sim.link_utilisation().values())
    hostile = {
        str(n.index): {
            "behaviour": n.hostile,
            "cut_off": not any((n.index, y) in sim.connected for y in sim.adj[n.index]),
        }
        for n in sim.nodes if n.hostile
    }
    out: dict[str, Any] = {
        "scenario": sim.scenario.name,
        "seed": sim.scenario.seed,
        "nodes": len(sim.nodes),
        "honest_live_nodes": len(honest),
        "edges": len(sim.topology.edges),
        "changes_submitted": len(submitted),
        "changes_delivered": fully_delivered,
        "delivery_ratio": _round(pairs_delivered / pairs_expected if pairs_expected else 1.0, 6),
        "latency_ms": {**_summary(latencies, (50, 90, 99)),
                       "max": _round(max(latencies) if latencies else None)},
        "shortest_path_latency_ms": _summary(shortest, (50, 99)),
        "latency_ms_by_hops": by_hops_summary(by_hops),
        "latency_stretch_p99": _round(percentile(stretch, 99)),
        "converged": converged,
        "convergence_time_after_heal_s": convergence_after_heal,
        "payload_copies_per_node": _round(copies / denom if denom else 0.0),
        "bytes_sent_per_node": {
            "mean": _round(sum(bytes_by_node) / len(bytes_by_node)),
            "max": _round(max(bytes_by_node)),
        },
        "link_utilisation": {
            "mean": _round(sum(util) / len(util) if util else 0.0, 6),
            "max": _round(max(util) if util else 0.0, 6),
        },
        "frames_cut_by_partitions": obs.frames_cut,
        "hostile": hostile,
        "events_run": sim.engine.events_run,
        "sim_time_s": sim.scenario.duration_s,
        "wall_time_s": round(wall_time_s, 3),
        "series": {
            "latency_ms": [round(x, 3) for x in sorted(latencies)],
            "latency_ms_by_hops": by_hops_series(by_hops),
            "samples": obs.samples,
            "bytes_sent_per_node": bytes_by_node,
            "link_utilisation": sim.link_utilisation(),
            "heals": obs.heals,
            "partitions": obs.partitions,
        },
    }
    out["presence"] = _presence(sim)
    if sim.media is not None:
        from netsim.media_report import media_results

        out["media"] = media_results(sim.media)
    return out


def _presence(sim: Simulation) -> dict[str, Any]:
    """Presence bytes and messages sent to each node (the interest filter's effect), over
    the nodes that were up at the end; per node index in ``per_node``."""
    obs = sim.obs
    idx = [n.index for n in sim.nodes if n.alive]
    size = [float(obs.presence_bytes_to.get(i, 0)) for i in idx]
    msgs = [float(obs.presence_frames_to.get(i, 0)) for i in idx]
    d = max(sim.scenario.duration_s, 1e-9)

    def summary(values: list[float]) -> dict[str, float | None]:
        return {**_summary(values, (50, 99)),
                "mean": _round(sum(values) / len(values)) if values else None,
                "max": _round(max(values)) if values else None}

    return {
        "bytes_per_recipient": summary(size),
        "messages_per_recipient": summary(msgs),
        "bytes_per_recipient_per_s": summary([x / d for x in size]),
        "per_node": {str(i): {"bytes": int(b), "messages": int(m)}
                     for i, b, m in zip(idx, size, msgs, strict=True)},
    }
