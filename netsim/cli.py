"""``netsim run``, ``sweep``, ``emulate`` and ``compare``: the researcher's commands (see
``docs/netsim.md``)."""

from __future__ import annotations

import argparse
import csv
import importlib
import itertools
import json
import os
import sys
import time
import tomllib
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from netsim.compare import dig
from netsim.scenario import ScenarioError, parse, set_param

# Metrics summarised by a sweep, as dotted paths into results.json.
SWEEP_METRICS = (
    "latency_ms.p50",
    "latency_ms.p99",
    "latency_stretch_p99",
    "delivery_ratio",
    "convergence_time_after_heal_s",
    "payload_copies_per_node",
    "bytes_sent_per_node.mean",
    "converged",
)


def _progress_bar(total: float) -> Callable[[float], None]:
    last = [0.0]

    def show(t: float) -> None:
        now = time.monotonic()
        if now - last[0] < 0.5:
            return
        last[0] = now
        frac = min(1.0, t / total) if total else 1.0
        bar = "#" * int(frac * 30)
        print(f"\r[{bar:<30}] {frac:6.1%}  sim {t:8.1f} / {total:.0f} s", end="",
              file=sys.stderr, flush=True)

    return show


def run_scenario(raw: dict[str, Any], *, seed: int | None = None,
                 progress: bool = False) -> dict[str, Any]:
    """Run one scenario given as a raw dict; return its results (with ``series``)."""
    from netsim.metrics import results
    from netsim.simulation import Simulation

    scenario = parse(raw, seed=seed)
    started = time.perf_counter()
    sim = Simulation(scenario, progress=_progress_bar(scenario.duration_s) if progress else None)
    sim.run()
    if progress:
        print(file=sys.stderr)
    return results(sim, time.perf_counter() - started)


def _read(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as err:
        raise ScenarioError(f"{path}: not valid TOML: {err}") from None
    except OSError as err:
        raise ScenarioError(f"{path}: cannot read: {err.strerror or err}") from None


def cmd_run(args: argparse.Namespace) -> int:
    """``netsim run``: one scenario, results.json and plots."""
    raw = _read(args.scenario)
    result = run_scenario(raw, seed=args.seed, progress=not args.quiet)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
    summary = {k: v for k, v in result.items() if k != "series"}
    print(json.dumps(summary, indent=1, sort_keys=True))
    if not args.no_plots:
        from netsim.report import PlotsUnavailable, write_plots

        try:
            for p in write_plots(result, out):
                print(f"wrote {p}", file=sys.stderr)
        except PlotsUnavailable as err:
            print(f"note: {err}", file=sys.stderr)
    print(f"wrote {out / 'results.json'}", file=sys.stderr)
    return 0


def _literal(text: str) -> Any:
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    if text in ("true", "false"):
        return text == "true"
    return text



def sweep_one(raw: dict[str, Any], overrides: dict[str, Any], seed: int) -> dict[str, Any]:
    """One point of a sweep (a top-level function, so process pools and clusters can run it)."""
    data = json.loads(json.dumps(raw))
    for key, value in overrides.items():
        set_param(data, key, value)
    result = run_scenario(data, seed=seed)
    return {"overrides": overrides, "seed": seed,
            "metrics": {m: dig(result, m) for m in SWEEP_METRICS}}


def _cluster_module(name: str) -> Any:
    """Import an optional cluster library (typed as Any: it may not be installed)."""
    try:
        return importlib.import_module(name)
    except ImportError:
        raise SystemExit(
            f"netsim: this backend needs {name}: pip install -e '.[cluster]'"
        ) from None


def _map(backend: str, address: str | None, workers: int, jobs: list[tuple[Any, ...]]
         ) -> list[dict[str, Any]]:
    if backend == "ray":
        ray = _cluster_module("ray")
        ray.init(address=address, ignore_reinit_error=True)
        remote = ray.remote(sweep_one)
        return list(ray.get([remote.remote(*job) for job in jobs]))
    if backend == "dask":
        distributed = _cluster_module("dask.distributed")
        client = distributed.Client(address) if address else distributed.Client(
            n_workers=workers
        )
        try:
            futures = client.map(sweep_one, *zip(*jobs, strict=True), pure=False)
            return list(client.gather(futures))
        finally:
            client.close()
    with ProcessPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(sweep_one, *zip(*jobs, strict=True)))


def cmd_sweep(args: argparse.Namespace) -> int:
    """``netsim sweep``: a grid of parameters x seeds, in parallel; one table, one plot."""
    raw = _read(args.scenario)
    grid: list[tuple[str, list[Any]]] = []
    for item in args.param:
        key, sep, values = item.partition("=")
        if not sep or not values:
            raise ScenarioError(f"--param {item!r}: expected KEY=V1,V2,...")
        grid.append((key, [_literal(v) for v in values.split(",")]))
    if not grid:
        raise ScenarioError("sweep needs at least one --param KEY=V1,V2,...")
    base_seed = int(raw.get("seed", 1))
    seeds = [base_seed + k for k in range(args.seeds)]
    combos = [dict(zip([k for k, _ in grid], vals, strict=True))
              for vals in itertools.product(*[v for _, v in grid])]
    for combo in combos:  # fail fast on a bad key, before starting any process
        data = json.loads(json.dumps(raw))
        for key, value in combo.items():
            set_param(data, key, value)
        parse(data)
    jobs = [(raw, combo, seed) for combo in combos for seed in seeds]
    print(f"netsim sweep: {len(jobs)} runs ({len(combos)} points x {len(seeds)} seeds) on "
          f"{args.backend}", file=sys.stderr)
    started = time.perf_counter()
    runs = _map(args.backend, args.address, args.workers, jobs)
    params = [k for k, _ in grid]
    rows = []
    for combo in combos:
        mine = [r for r in runs if r["overrides"] == combo]
        row: dict[str, Any] = dict(combo)
        row["runs"] = len(mine)
        # Every run is counted: one that did not converge (or has no value for a metric)
        # shows here and in the share, not only as a missing sample in the means below.
        done = [r for r in mine if r["metrics"]["converged"] == 1.0]
        row["converged_runs"] = len(done)
        row["converged_share"] = round(len(done) / len(mine), 4) if mine else None
        row["unconverged_seeds"] = sorted(r["seed"] for r in mine
                                          if r["metrics"]["converged"] != 1.0)
        for m in SWEEP_METRICS:
            vals = [r["metrics"][m] for r in mine if r["metrics"][m] is not None]
            name = m.replace(".", "_")
            row[f"{name}_mean"] = round(sum(vals) / len(vals), 4) if vals else None
            row[f"{name}_min"] = round(min(vals), 4) if vals else None
            row[f"{name}_max"] = round(max(vals), 4) if vals else None
        rows.append(row)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "sweep.json").write_text(json.dumps(
        {"params": params, "seeds": seeds, "rows": rows, "runs": runs,
         "wall_time_s": round(time.perf_counter() - started, 3)}, indent=1) + "\n")
    with open(out / "sweep.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows({k: " ".join(map(str, v)) if isinstance(v, list) else v
                          for k, v in row.items()} for row in rows)
    _print_table(rows, params)
    metric = args.metric.replace(".", "_")
    from netsim.report import PlotsUnavailable, write_sweep_plot

    try:
        plottable = [r for r in rows if r.get(f"{metric}_mean") is not None]
        if plottable:
            print(f"wrote {write_sweep_plot(plottable, params, metric, out)}", file=sys.stderr)
    except PlotsUnavailable as err:
        print(f"note: {err}", file=sys.stderr)
    print(f"wrote {out / 'sweep.csv'} and {out / 'sweep.json'}", file=sys.stderr)
    return 0


def cmd_emulate(args: argparse.Namespace) -> int:
    """``netsim emulate``: the scenario with real nodes (netsim/emulate/runner.py)."""
    from netsim.emulate.runner import EmulationFailed, emulate

    scenario = parse(_read(args.scenario), seed=args.seed)
    out = Path(args.out)
    try:
        result = emulate(scenario, out, node_limit=args.max_nodes)
    except EmulationFailed as err:
        print(f"netsim emulate: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("netsim emulate: interrupted; everything it started is stopped", file=sys.stderr)
        return 130
    _write_results(result, out, args.no_plots)
    return 0


def _write_results(result: dict[str, Any], out: Path, no_plots: bool) -> None:
    (out / "results.json").write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "series"}, indent=1,
                     sort_keys=True))
    if not no_plots:
        from netsim.report import PlotsUnavailable, write_plots

        try:
            for p in write_plots(result, out):
                print(f"wrote {p}", file=sys.stderr)
        except PlotsUnavailable as err:
            print(f"note: {err}", file=sys.stderr)
    print(f"wrote {out / 'results.json'}", file=sys.stderr)


def cmd_compare(args: argparse.Namespace) -> int:
    """``netsim compare``: two runs' shared metrics side by side (netsim/compare.py)."""
    from netsim.compare import load, table, write_plot

    a, b = load(args.a), load(args.b)
    print(table(a, b, args.label_a, args.label_b))
    if not args.no_plots:
        from netsim.report import PlotsUnavailable

        try:
            path = write_plot(a, b, Path(args.out or args.b), args.label_a, args.label_b)
            print(f"wrote {path}", file=sys.stderr)
        except PlotsUnavailable as err:
            print(f"note: {err}", file=sys.stderr)
    return 0


def _print_table(rows: list[dict[str, Any]], params: list[str]) -> None:
    """The sweep's table: one line per point; ``converged`` is converged runs / runs (the
    means of the other columns are over the runs that have a value, e.g. convergence time
    only over runs that converged)."""
    cols = [*params, "converged", "latency_ms_p99_mean", "delivery_ratio_mean",
            "convergence_time_after_heal_s_mean", "payload_copies_per_node_mean"]
    print("  ".join(f"{c:>22}" for c in cols))
    for row in rows:
        share = row["converged_share"]
        cells = {**row, "converged": f"{row['converged_runs']}/{row['runs']}"
                 + (f" ({share:.0%})" if share is not None else "")}
        print("  ".join(f"{cells.get(c)!s:>22}" for c in cols))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``netsim`` command."""
    parser = argparse.ArgumentParser(prog="netsim", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run one scenario; write results.json and plots")
    run.add_argument("scenario", help="scenario TOML file")
    run.add_argument("--seed", type=int, help="override the scenario's seed")
    run.add_argument("--out", default="netsim-out", help="output folder (default netsim-out)")
    run.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    run.set_defaults(func=cmd_run)
    sw = sub.add_parser("sweep", help="run a grid of parameters x seeds in parallel")
    sw.add_argument("scenario", help="scenario TOML file")
    sw.add_argument("--param", action="append", default=[],
                    help="KEY=V1,V2,... with KEY a dotted scenario key, e.g. links.loss=0,0.05")
    sw.add_argument("--seeds", type=int, default=3, help="seeds per point (default 3)")
    sw.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                    help="local processes (default: one per core)")
    sw.add_argument("--backend", choices=("local", "ray", "dask"), default="local",
                    help="where runs execute (ray/dask need the 'cluster' extra)")
    sw.add_argument("--address", help="ray or dask scheduler address (default: start locally)")
    sw.add_argument("--metric", default="latency_ms.p99", help="metric for the sweep plot")
    sw.add_argument("--out", default="netsim-sweep", help="output folder")
    sw.set_defaults(func=cmd_sweep)
    em = sub.add_parser("emulate", help="run a scenario with real nodes in network namespaces "
                        "(root, /dev/net/tun); same results.json and plots")
    em.add_argument("scenario", help="scenario TOML file")
    em.add_argument("--seed", type=int, help="override the scenario's seed")
    em.add_argument("--out", default="netsim-emulate", help="output folder")
    em.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    em.add_argument("--max-nodes", type=int, help="override the node limit for this machine")
    em.set_defaults(func=cmd_emulate)
    cmp = sub.add_parser("compare", help="two runs' shared metrics side by side")
    cmp.add_argument("a", help="first run's folder (e.g. netsim run --out)")
    cmp.add_argument("b", help="second run's folder (e.g. netsim emulate --out)")
    cmp.add_argument("--label-a", default="sim", help="column name of the first run")
    cmp.add_argument("--label-b", default="emu", help="column name of the second run")
    cmp.add_argument("--out", help="where the plot goes (default: the second folder)")
    cmp.add_argument("--no-plots", action="store_true", help="skip the plot")
    cmp.set_defaults(func=cmd_compare)
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except ScenarioError as err:
        print(f"netsim: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
