"""netsim speed benchmark: simulated seconds per wall (and CPU) second as the room grows.

Run ``python benchmarks/netsim_bench.py [--sizes 100,1000,5000] [--duration 20,20,10]``
(``--quick``: a smoke run of well under 30 s). It is not a test: it prints ONE JSON object and
exits 0 (1 if a run did not converge or deliver everything after its settle time). See
benchmarks/README.md for what each figure means.

For each size N, one ``netsim.simulation.Simulation`` runs the real meshnode cores
(``SceneReplica`` + ``RoomOverlay`` per node) on a random graph (average degree 4), every link
30 ms one way (fixed, no loss, no bandwidth limit), 20 editors making 10 edits/s in total
(Poisson) from t = 1 s to the end of the measured window. Phases, timed separately:

* **setup**: ``Simulation(scenario)``: identities, the owner's role grants, one template
  replica importing them and every node's replica cloned from it (``netsim/shared_setup.py``),
  the editors' first entities. Not part of the rate. ``memory`` gives the resident memory the
  set-up added and the peak during the run, per node.
* **bootstrap**: ``run()`` up to the first event: overlays started, links up at t = 0.
* **run** (the measured window): the event loop from t = 0 to ``duration``. The rates
  (``sim_s_per_wall_s``, ``sim_s_per_cpu_s``, events/s) are over this phase only.
* **settle**: ``--settle`` more simulated seconds without edits, then ``netsim.metrics``
  computes the delivery ratio and checks convergence (not timed into the rate).

Baselines, same process, same N:

* ``null_engine``: ``netsim.engine.Engine`` alone running as many events as the measured run,
  over the same simulated time, with a heap as large as the run's mean heap, each callback only
  scheduling its successor. Its time is the floor any workload pays for the event loop.
* ``setup_unshared`` (up to ``--unshared-max-nodes``): the same set-up with
  ``share_setup=False``, every replica applying every grant itself (quadratic): time and
  memory, against which the shared set-up is compared (``ratios``).
* ``idle_protocol``: the same scenario (same seed, so the same graph and identities) with
  ``edits_per_s = 0``: membership upkeep, anti-entropy and timers of N idle cores. Skipped above
  ``--idle-max-nodes`` (its set-up costs as much as the main run's).
"""

from __future__ import annotations

import argparse
import gc
import json
import multiprocessing
import os
import platform
import resource
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from netsim.engine import Engine
from netsim.metrics import results
from netsim.scenario import parse
from netsim.simulation import Simulation

TARGET_NODES = 1000
TARGET_RATE = 2.0  # simulated seconds per wall second, one core (issue 15, item 3)
MEMORY_NODES = 10_000
MEMORY_LIMIT_MB = 8 * 1024  # 10,000 nodes must run within 8 GB (issue 15, item 3)


def rss_mb() -> float:
    """Resident set size now (Linux ``/proc/self/statm``; the peak where that is missing)."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def scenario_raw(n: int, duration: float, edits_per_s: float, seed: int) -> dict[str, Any]:
    return {
        "name": f"bench-{n}",
        "seed": seed,
        "duration_s": duration,
        "sample_interval_s": 0.5,
        "topology": {"kind": "random", "nodes": n, "degree": 4},
        "links": {"latency_ms": 30},
        "workload": {
            "editors": 20,
            "edits_per_s": edits_per_s,
            "start_s": 1.0,
            "stop_s": duration,  # edit through the whole measured window
        },
    }


class _Clock:
    """Wall and CPU time of a phase."""

    def __init__(self) -> None:
        self.wall = time.perf_counter()
        self.cpu = time.process_time()

    def lap(self) -> dict[str, float]:
        wall, cpu = time.perf_counter(), time.process_time()
        out = {"wall_s": round(wall - self.wall, 3), "cpu_s": round(cpu - self.cpu, 3)}
        self.wall, self.cpu = wall, cpu
        return out


def _frames_in(sim: Simulation) -> int:
    return sum(st.frames_in for node in sim.nodes for st in sim.overlay_stats(node))


def _frames_sent(sim: Simulation) -> int:
    return sum(link.frames_sent for link in sim.links.values())


def _rate(sim_s: float, spent: float) -> float | None:
    return round(sim_s / spent, 3) if spent > 0 else None


def run_setup(n: int, seed: int, share_setup: bool) -> dict[str, Any]:
    """Only the set-up of the benchmark's scenario: its time and the memory it added."""
    gc.collect()
    before = rss_mb()
    clock = _Clock()
    sim = Simulation(parse(scenario_raw(n, 1.0, 10.0, seed)), share_setup=share_setup)
    out: dict[str, Any] = {**clock.lap()}
    gc.collect()
    added = rss_mb() - before
    out["rss_added_mb"] = round(added)
    out["kb_per_node"] = round(added * 1024 / n, 1)
    del sim
    gc.collect()
    return out


def run_protocol(n: int, duration: float, edits_per_s: float, seed: int,
                 settle: float) -> dict[str, Any]:
    """One simulation, phases timed separately."""
    gc.collect()
    rss_before = rss_mb()
    raw = scenario_raw(n, duration, edits_per_s, seed)
    scenario = parse(raw)
    heap_sizes: list[int] = []
    sim_box: list[Simulation] = []

    def progress(_t: float) -> None:  # called every 5,000 events by the engine
        heap_sizes.append(sim_box[0].engine.pending())

    clock = _Clock()
    sim = Simulation(scenario, progress=progress)
    sim_box.append(sim)
    setup = clock.lap()
    rss_setup = rss_mb() - rss_before

    # Split run() at its first event: everything before is bootstrap (overlays, t=0 links).
    marks: dict[str, Any] = {}

    class _Marked(Engine):
        __slots__ = ()

        def run_until(self, until: float, on_progress: Any = None) -> None:
            marks["bootstrap"] = clock.lap()
            marks["pending_at_start"] = self.pending()
            marks["frames_in_at_start"] = _frames_in(sim)
            Engine.run_until(self, until, on_progress)

    sim.engine.__class__ = _Marked
    sim.run()
    run = clock.lap()
    sim.engine.__class__ = Engine
    events = sim.engine.events_run
    frames_in = _frames_in(sim) - marks["frames_in_at_start"]
    frames_sent = _frames_sent(sim)
    changes = len(sim.obs.submitted)

    rss_run = rss_mb() - rss_before
    sim.engine.run_until(duration + settle)  # no edits after `duration`; let gossip finish
    settle_t = clock.lap()
    res = results(sim, 0.0)
    metrics_t = clock.lap()
    mean_heap = sum(heap_sizes) / len(heap_sizes) if heap_sizes else marks["pending_at_start"]
    return {
        "nodes": n,
        "edges": len(sim.topology.edges),
        "duration_s": duration,
        "edits_per_s": edits_per_s,
        "setup": setup,
        "bootstrap": marks["bootstrap"],
        "run": {
            **run,
            "sim_s_per_wall_s": _rate(duration, run["wall_s"]),
            "sim_s_per_cpu_s": _rate(duration, run["cpu_s"]),
            "events": events,
            "events_per_wall_s": _rate(events, run["wall_s"]),
            "events_per_cpu_s": _rate(events, run["cpu_s"]),
            "cpu_us_per_event": round(run["cpu_s"] / events * 1e6, 2) if events else None,
            "frames_delivered": frames_in,
            "frames_sent": frames_sent,
            "changes": changes,
            "mean_heap_size": round(mean_heap),
        },
        "settle": {"sim_s": settle, **settle_t},
        "metrics_s": metrics_t["wall_s"],
        "events_total": sim.engine.events_run,
        "frames_delivered_total": _frames_in(sim) - marks["frames_in_at_start"],
        "delivery_ratio": res["delivery_ratio"],
        "converged": res["converged"],
        "latency_ms": res["latency_ms"],
        "payload_copies_per_node": res["payload_copies_per_node"],
        "memory": {
            # Resident memory this size added (over the process before it): after the set-up,
            # and at the end of the measured window.
            "setup_mb": round(rss_setup),
            "setup_kb_per_node": round(rss_setup * 1024 / n, 1),
            "after_run_mb": round(rss_run),
            "after_run_kb_per_node": round(rss_run * 1024 / n, 1),
        },
        # This size's process (in_child): its peak, interpreter and imports included.
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }


def run_null_engine(events: int, heap: int, duration: float) -> dict[str, Any]:
    """``events`` trivial events over ``duration`` simulated seconds, ``heap`` of them pending."""
    gc.collect()
    heap = max(1, heap)
    delay = heap * duration / max(1, events)  # so that heap * duration / delay == events
    eng = Engine()
    at = eng.at

    def tick() -> None:
        at(eng.now + delay, tick)

    for k in range(heap):
        at(delay * k / heap, tick)
    clock = _Clock()
    eng.run_until(duration)
    t = clock.lap()
    return {
        **t,
        "events": eng.events_run,
        "heap_size": heap,
        "sim_s_per_wall_s": _rate(duration, t["wall_s"]),
        "sim_s_per_cpu_s": _rate(duration, t["cpu_s"]),
        "cpu_us_per_event": round(t["cpu_s"] / eng.events_run * 1e6, 3) if eng.events_run else None,
    }


def in_child(fn: Any, *args: Any) -> Any:
    """``fn(*args)`` in a fresh interpreter (spawned), so that each size's memory figures
    and peak RSS are its own, not what earlier sizes left in this process's heap."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as ex:
        return ex.submit(fn, *args).result()


def bench_size(n: int, duration: float, seed: int, settle: float, idle: bool,
               unshared: bool) -> dict[str, Any]:
    """One size: the run and its baselines (the run and the unshared set-up each in a
    process of their own)."""
    out: dict[str, Any] = in_child(bench_run, n, duration, seed, settle, idle)
    if unshared:
        base = in_child(run_setup, n, seed, False)
        out["setup_unshared"] = base
        out["ratios"]["setup_cpu_unshared_over_shared"] = (
            round(base["cpu_s"] / out["setup"]["cpu_s"], 1) if out["setup"]["cpu_s"] > 0
            else None)
        out["ratios"]["setup_memory_unshared_over_shared"] = (
            round(base["rss_added_mb"] / out["memory"]["setup_mb"], 1)
            if out["memory"]["setup_mb"] > 0 else None)
    return out


def bench_run(n: int, duration: float, seed: int, settle: float, idle: bool) -> dict[str, Any]:
    main = run_protocol(n, duration, 10.0, seed, settle)
    null = run_null_engine(main["run"]["events"], main["run"]["mean_heap_size"], duration)
    out: dict[str, Any] = {**main, "null_engine": null}
    ratios: dict[str, Any] = {
        "run_cpu_over_null_engine_cpu": (
            round(main["run"]["cpu_s"] / null["cpu_s"], 1) if null["cpu_s"] > 0 else None
        ),
        "null_engine_share_of_run_cpu": (
            round(null["cpu_s"] / main["run"]["cpu_s"], 4) if main["run"]["cpu_s"] > 0 else None
        ),
    }
    if idle:
        idle_run = run_protocol(n, duration, 0.0, seed, 0.0)
        out["idle_protocol"] = {
            "setup": idle_run["setup"],
            "run": {k: idle_run["run"][k] for k in (
                "wall_s", "cpu_s", "sim_s_per_wall_s", "sim_s_per_cpu_s", "events",
                "frames_delivered")},
        }
        ratios["idle_share_of_run_cpu"] = (
            round(idle_run["run"]["cpu_s"] / main["run"]["cpu_s"], 4)
            if main["run"]["cpu_s"] > 0 else None
        )
    out["ratios"] = ratios
    return out


def _floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="100,1000,5000", help="node counts (comma-separated)")
    ap.add_argument("--duration", default="",
                    help="measured simulated seconds, one value or one per size "
                         "(default 20 s, 10 s from 5,000 nodes)")
    ap.add_argument("--settle", type=float, default=10.0,
                    help="simulated seconds without edits before checking convergence")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--idle-max-nodes", type=int, default=1000,
                    help="run the idle-protocol baseline up to this size (default 1000)")
    ap.add_argument("--unshared-max-nodes", type=int, default=1000,
                    help="run the unshared (quadratic) set-up baseline up to this size "
                         "(default 1000)")
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: sizes 50,200, 5 s each, 5 s settle")
    args = ap.parse_args(argv)
    if args.quick:
        sizes = [50, 200]
        durations = [5.0, 5.0]
        args.settle = min(args.settle, 5.0)
    else:
        sizes = [int(x) for x in _floats(args.sizes)]
        if args.duration:
            durations = _floats(args.duration)
            if len(durations) == 1:
                durations = durations * len(sizes)
            if len(durations) != len(sizes):
                ap.error("--duration: give one value or one per size")
        else:
            durations = [20.0 if n < 5000 else 10.0 for n in sizes]

    load_start = os.getloadavg()
    started = time.perf_counter()
    runs = []
    for n, d in zip(sizes, durations, strict=True):
        runs.append(bench_size(n, d, args.seed, args.settle, n <= args.idle_max_nodes,
                               n <= args.unshared_max_nodes))
        print(f"netsim_bench: {n} nodes done "
              f"({runs[-1]['run']['sim_s_per_cpu_s']} sim s / CPU s)", file=sys.stderr)
    at_target = [r for r in runs if r["nodes"] >= TARGET_NODES]
    report = {
        "benchmark": "netsim",
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "loadavg_start": [round(x, 2) for x in load_start],
        "loadavg_end": [round(x, 2) for x in os.getloadavg()],
        "config": {
            "topology": "random, average degree 4",
            "link": "30 ms one way, fixed, no loss, unlimited bandwidth",
            "editors": 20,
            "edits_per_s": 10.0,
            "settle_s": args.settle,
            "seed": args.seed,
            "quick": args.quick,
        },
        "target": {
            "statement": f">= {TARGET_NODES} nodes at >= {TARGET_RATE} simulated s per wall s "
                         "on one core",
            "sizes_checked": [r["nodes"] for r in at_target],
            "met_wall": bool(at_target) and all(
                (r["run"]["sim_s_per_wall_s"] or 0) >= TARGET_RATE for r in at_target),
            "met_cpu": bool(at_target) and all(
                (r["run"]["sim_s_per_cpu_s"] or 0) >= TARGET_RATE for r in at_target),
        },
        "memory_target": {
            "statement": f"{MEMORY_NODES} nodes within {MEMORY_LIMIT_MB} MB",
            "sizes_checked": [r["nodes"] for r in runs if r["nodes"] >= MEMORY_NODES],
            "met": any(r["nodes"] >= MEMORY_NODES for r in runs) and all(
                r["peak_rss_mb"] <= MEMORY_LIMIT_MB for r in runs if r["nodes"] >= MEMORY_NODES),
        },
        "runs": runs,
        "total_wall_s": round(time.perf_counter() - started, 1),
    }
    print(json.dumps(report, indent=1))
    ok = all(r["converged"] and r["delivery_ratio"] == 1.0 for r in runs)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
