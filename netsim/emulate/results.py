"""Turn an emulation's observations into ``results.json``, with ``netsim run``'s keys.

Pure: the runner hands over what it saw (times in scenario seconds, 0 = the start of the
workload clock) and gets the same schema as :func:`netsim.metrics.results`, so that
``netsim compare`` and the plots read either. Keys the emulation cannot measure are ``null``
and listed in ``emulation.not_measured``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from netsim.links import LinkSpec
from netsim.metrics import by_hops_series, by_hops_summary, percentile
from netsim.topology import Topology, hop_distances, shortest_from


@dataclass
class EmulationObservations:
    """What the runner recorded."""

    submitted: dict[str, tuple[int, float]] = field(default_factory=dict)  # cid -> origin, t
    delivered: dict[str, dict[int, float]] = field(default_factory=dict)  # cid -> node -> t
    local: dict[str, float] = field(default_factory=dict)  # cid -> seen by the origin's watcher
    # cid -> node -> when that node applied it (``MESHNODE_TRACE_APPLIED``; empty: no trace)
    applied: dict[str, dict[int, float]] = field(default_factory=dict)
    heals: list[float] = field(default_factory=list)
    partitions: list[float] = field(default_factory=list)
    live_at_end: list[int] = field(default_factory=list)
    down: dict[int, list[tuple[float, float]]] = field(default_factory=dict)
    final_heads: dict[int, Any] = field(default_factory=dict)  # node -> version vector
    fabric: dict[str, Any] = field(default_factory=dict)
    trace: dict[str, Any] = field(default_factory=dict)  # netsim.emulate.trace.summary
    setup_s: float = 0.0
    warnings: list[str] = field(default_factory=list)


def _round(x: float | None, digits: int = 3) -> float | None:
    return None if x is None else round(x, digits)


def _summary(values: list[float], qs: tuple[int, ...]) -> dict[str, float | None]:
    return {f"p{q}": _round(percentile(values, q)) for q in qs}


def _up(down: dict[int, list[tuple[float, float]]], node: int, t: float) -> bool:
    return not any(a <= t < b for a, b in down.get(node, []))


def results(*, name: str, seed: int, duration_s: float, sample_interval_s: float,
            topology: Topology, default_spec: LinkSpec, obs: EmulationObservations,
            wall_time_s: float) -> dict[str, Any]:
    """The results of one emulation run (see ``docs/netsim.md``, Outputs)."""
    live = set(obs.live_at_end)
    latencies: list[float] = []
    shortest: list[float] = []
    stretch: list[float] = []
    expected = delivered = fully = 0
    cache: dict[int, list[float]] = {}
    raw: list[float] = []
    at_nodes = bool(obs.applied)
    missing_at_nodes = 0
    for cid, (origin, sent) in obs.submitted.items():
        # Node to node, as netsim measures: from the moment the origin node applied the change
        # to the moment the receiver did, read from the nodes' apply traces. Without them,
        # from the moment a client at the origin node sees it to the moment the client at the
        # receiver does: both readings include one node -> client hop, which cancels in the
        # median but not in the tails (a loaded machine delays client processes most).
        t0 = obs.local.get(cid, sent)
        got = obs.delivered.get(cid, {})
        at = obs.applied.get(cid, {})
        receivers = [j for j in sorted(live) if j != origin]
        expected += len(receivers)
        here = 0
        if origin not in cache:
            cache[origin] = shortest_from(topology, origin, default_spec)
        sp = cache[origin]
        for j in receivers:
            t = got.get(j)
            if t is None:
                continue
            here += 1
            raw.append((t - sent) * 1000.0)
            if at_nodes:
                if origin not in at or j not in at:
                    missing_at_nodes += 1
                    continue
                lat = max(0.0, (at[j] - at[origin]) * 1000.0)
            else:
                lat = max(0.0, (t - t0) * 1000.0)
            latencies.append(lat)
            shortest.append(sp[j])
            if sp[j] > 0:
                stretch.append(lat / sp[j])
        delivered += here
        fully += here == len(receivers)

    vvs = [obs.final_heads.get(j) for j in sorted(live)]
    converged = bool(vvs) and all(v is not None and v == vvs[0] for v in vvs)

    after_heal: float | None = None
    if obs.heals:
        heal = obs.heals[-1]
        latest = heal
        for cid, (origin, t0) in obs.submitted.items():
            if t0 > heal:
                continue
            got = obs.delivered.get(cid, {})
            missing = [j for j in live if j != origin and j not in got]
            if missing:
                latest = float("nan")
                break
            latest = max([latest, *(got[j] for j in live if j != origin)])
        after_heal = None if latest != latest else round(latest - heal, 3)

    samples = []
    n_steps = int(duration_s / sample_interval_s + 1e-9)
    for k in range(n_steps + 1):
        t = k * sample_interval_s
        up = [j for j in range(topology.n) if _up(obs.down, j, t)]
        subs = [(cid, o) for cid, (o, t0) in obs.submitted.items() if t0 <= t]
        exp = sum(1 for _, o in subs for j in up if j != o)
        got_pairs = sum(1 for cid, o in subs for j in up
                        if j != o and obs.delivered.get(cid, {}).get(j, float("inf")) <= t)
        states = {frozenset(cid for cid, o in subs
                            if o == j or obs.delivered.get(cid, {}).get(j, float("inf")) <= t)
                  for j in up}
        samples.append({"t": round(t, 6), "distinct_heads": float(len(states)),
                        "delivered_fraction": got_pairs / exp if exp else 1.0})

    client_hops = [(t - obs.submitted[cid][1]) * 1000.0 for cid, t in obs.local.items()
                   if cid in obs.submitted]
    hop_counts = {o: hop_distances(topology, o) for o in {o for o, _ in obs.submitted.values()}}
    by_hops: dict[int, list[float]] = {}
    for cid, (origin, sent) in obs.submitted.items():
        t0 = obs.local.get(cid, sent)
        at = obs.applied.get(cid, {})
        for j, t in obs.delivered.get(cid, {}).items():
            if j in live and j != origin:
                if not at_nodes:
                    lat = max(0.0, (t - t0) * 1000.0)
                elif origin in at and j in at:
                    lat = max(0.0, (at[j] - at[origin]) * 1000.0)
                else:
                    continue
                by_hops.setdefault(hop_counts[origin][j], []).append(lat)
    links = obs.fabric.get("links", {})
    bytes_by_node = [0.0] * topology.n
    util: dict[str, float] = {}
    for key, st in sorted(links.items()):
        a = int(key.split("-")[0])
        bytes_by_node[a] += float(st.get("bytes_out", 0))
        util[key] = float(st.get("utilisation", 0.0))
    uvals = list(util.values())
    return {
        "scenario": name,
        "seed": seed,
        "mode": "emulation",
        "nodes": topology.n,
        "honest_live_nodes": len(live),
        "edges": len(topology.edges),
        "changes_submitted": len(obs.submitted),
        "changes_delivered": fully,
        "delivery_ratio": _round(delivered / expected if expected else 1.0, 6),
        "latency_ms": {**_summary(latencies, (50, 90, 99)),
                       "max": _round(max(latencies) if latencies else None)},
        "shortest_path_latency_ms": _summary(shortest, (50, 99)),
        "latency_ms_by_hops": by_hops_summary(by_hops),
        "latency_stretch_p99": _round(percentile(stretch, 99)),
        "converged": converged,
        "convergence_time_after_heal_s": after_heal,
        "payload_copies_per_node": None,
        "presence": None,
        "bytes_sent_per_node": {"mean": _round(sum(bytes_by_node) / len(bytes_by_node)),
                                "max": _round(max(bytes_by_node))},
        "link_utilisation": {"mean": _round(sum(uvals) / len(uvals) if uvals else 0.0, 6),
                             "max": _round(max(uvals) if uvals else 0.0, 6)},
        "frames_cut_by_partitions": sum(int(st.get("cut", 0)) for st in links.values()),
        "hostile": {},
        "events_run": sum(int(st.get("packets_in", 0)) for st in links.values()),
        "sim_time_s": duration_s,
        "wall_time_s": round(wall_time_s, 3),
        "emulation": {
            "setup_s": round(obs.setup_s, 3),
            "latency_measured_at": "nodes" if at_nodes else "clients",
            "latency_samples_without_node_trace": missing_at_nodes,
            "client_hops_ms": _summary(client_hops, (50, 90, 99)),
            "client_to_client_latency_ms": _summary(raw, (50, 90, 99)),
            "not_measured": ["payload_copies_per_node", "presence"],
            "units": {"frames_cut_by_partitions": "IP packets", "events_run": "IP packets "
                      "offered to the fabric", "bytes_sent_per_node": "IP bytes delivered"},
            "fabric": obs.fabric,
            "trace": obs.trace,
            "warnings": obs.warnings,
        },
        "series": {
            "latency_ms": [round(x, 3) for x in sorted(latencies)],
            "latency_ms_by_hops": by_hops_series(by_hops),
            "samples": samples,
            "bytes_sent_per_node": bytes_by_node,
            "link_utilisation": util,
            "heals": obs.heals,
            "partitions": obs.partitions,
        },
    }
