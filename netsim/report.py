"""Plots of a run (PNG, matplotlib: ``pip install -e .[plots]``).

Each plot answers one question a researcher asks; ``docs/netsim.md`` says how to read them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


class PlotsUnavailable(RuntimeError):
    """matplotlib is not installed."""


def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise PlotsUnavailable(
            "plots need matplotlib: pip install -e '.[plots]' (results.json was still written)"
        ) from err
    return plt


def write_plots(result: dict[str, Any], out: Path) -> list[Path]:
    """Write the four standard plots of one run into ``out``; return their paths."""
    plt = _pyplot()
    series = result["series"]
    title = f"{result['scenario']} (seed {result['seed']}, {result['nodes']} nodes)"
    paths = []

    fig, ax = plt.subplots(figsize=(6, 4))
    lat = series["latency_ms"]
    if lat:
        ys = [(i + 1) / len(lat) for i in range(len(lat))]
        ax.plot(lat, ys, drawstyle="steps-post", label="delivered (change, receiver) pairs")
        ax.set_xscale("log")
    # What physics allows for the same pairs: the guide reads the curve against these.
    sp = result.get("shortest_path_latency_ms") or {}
    for q, style in (("p50", "--"), ("p99", ":")):
        if lat and sp.get(q):
            ax.axvline(sp[q], color="gray", linestyle=style, linewidth=1,
                       label=f"shortest path {q} ({sp[q]:g} ms)")
    if lat:
        ax.legend(loc="lower right", fontsize=8)
    ax.set_xlabel("delivery latency, submit to applied (ms, log)")
    ax.set_ylabel("fraction of delivered (change, receiver) pairs")
    ax.set_title(f"Latency CDF - {title}", fontsize=9)
    ax.grid(True, alpha=0.3)
    paths.append(_save(fig, out / "latency_cdf.png", plt))

    fig, ax = plt.subplots(figsize=(6, 4))
    samples = series["samples"]
    ts = [s["t"] for s in samples]
    ax.plot(ts, [s["delivered_fraction"] for s in samples],
            label="(change, receiver) pairs delivered (fraction)")
    ax2 = ax.twinx()
    heads = [s["distinct_heads"] for s in samples]
    ax2.plot(ts, heads, color="tab:red", alpha=0.7, label="distinct replica states (heads)")
    for k, cut in enumerate(series.get("partitions", [])):
        ax.axvline(cut, color="tab:orange", linestyle=":", linewidth=1,
                   label="partition" if k == 0 else None)
    for k, heal in enumerate(series["heals"]):
        ax.axvline(heal, color="gray", linestyle="--", linewidth=1,
                   label="heal" if k == 0 else None)
    ax.set_xlabel("simulated time (s)")
    ax.set_ylabel("delivered fraction")
    ax2.set_ylabel("distinct states (1 = converged)")
    # Headroom above both curves for the legend; the states axis starts at 0 so that
    # "converged" (1) sits at the bottom, where the eye looks for it.
    ax.set_ylim(0, 1.4)
    ax2.set_ylim(0, max([1.0, *heads]) * 1.4)
    ax.set_title(f"Convergence over time - {title}", fontsize=9)
    lines, labels = ax.get_legend_handles_labels()
    lines2, labels2 = ax2.get_legend_handles_labels()
    ax.legend(lines + lines2, labels + labels2, loc="upper center", ncol=2, fontsize=7)
    paths.append(_save(fig, out / "convergence.png", plt))

    fig, ax = plt.subplots(figsize=(6, 4))
    per_node = series["bytes_sent_per_node"]
    ax.bar(range(len(per_node)), [b / 1024 for b in per_node], width=1.0)
    ax.set_xlabel("node")
    ax.set_ylabel("KiB sent (wire, incl. headers and retransmissions)")
    ax.set_title(f"Bytes sent per node - {title}", fontsize=9)
    paths.append(_save(fig, out / "bytes_per_node.png", plt))

    fig, ax = plt.subplots(figsize=(6, 4))
    util = sorted(series["link_utilisation"].values(), reverse=True)
    ax.plot(range(len(util)), [u * 100 for u in util])
    ax.set_xlabel("link direction (sorted by utilisation)")
    ax.set_ylabel("busy time (% of the run)")
    ax.set_title(f"Per-link utilisation - {title}", fontsize=9)
    ax.grid(True, alpha=0.3)
    paths.append(_save(fig, out / "link_utilisation.png", plt))
    return paths


def write_sweep_plot(rows: list[dict[str, Any]], params: list[str], metric: str,
                     out: Path) -> Path:
    """One plot of ``metric`` (mean over seeds, with min-max bars) against the first swept
    parameter, one line per combination of the others."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    x_param = params[0]
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        key = ", ".join(f"{p}={row[p]}" for p in params[1:]) or metric
        groups.setdefault(key, []).append(row)
    for label, grp in groups.items():
        grp.sort(key=lambda r: r[x_param])
        xs = [r[x_param] for r in grp]
        ys = [r[f"{metric}_mean"] for r in grp]
        lo = [r[f"{metric}_mean"] - r[f"{metric}_min"] for r in grp]
        hi = [r[f"{metric}_max"] - r[f"{metric}_mean"] for r in grp]
        ax.errorbar(xs, ys, yerr=[lo, hi], marker="o", capsize=3, label=label)
    ax.set_xlabel(x_param)
    ax.set_ylabel(f"{metric} (mean over seeds; bars: min-max)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, out / f"sweep_{metric}.png", plt)


def _save(fig: Any, path: Path, plt: Any) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
