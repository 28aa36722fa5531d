"""netsim against the real stack: the reference cases of issue 12, in both modes.

Each case (``cases/*.toml``: a line of 3 nodes, a client editing at 20/s at node 0, 16-54 s)
runs once with real ``meshnode up`` processes through the packet fabric, then in netsim (3
seeds, pooled) with what that run measured and netsim cannot know (its packet trace: the
per-hop time, and the phase of each bootstrap loop), on the same loss draws (``link_seed``);
both read latency node to node (the real nodes trace their applies); the shared metrics must
agree within the issue's tolerances (``netsim.compare``): without loss, latency within 10% or
5 ms per hop; with loss, p50/p90 within 25% and p99 within 40%; convergence after a heal within
max(1 s, 30%); delivery exact. A latency percentile is compared as the 99% confidence interval
of each run's sample of it (``percentile_interval``), so a tail that a few samples decide does
not fail on sampling noise; a real gap (well-sampled distributions apart) still does. A case
with a known gap (``KNOWN_GAPS``, empty now) would xfail on it. The measured table is printed
(``-s``) and written to ``$FIDELITY_OUT`` if set, with the load average and the measured hop
time.
"""

import json
import os
import tomllib
from pathlib import Path
from typing import Any

import pytest

from netsim.cli import run_scenario
from netsim.compare import (
    DELIVERY_TOLERANCE,
    HEAL_TOLERANCE,
    Tolerance,
    agreement,
    latency_tolerances,
    table,
)
from netsim.emulate import namespaces
from netsim.emulate.runner import emulate
from netsim.metrics import percentile
from netsim.scenario import parse

CASES = Path(__file__).parent / "cases"
HOPS = 2  # a line of 3: the far receiver is two hops from the editor


def tolerances(name: str) -> list[Tolerance]:
    """The issue's rule for each case."""
    if name == "partition":
        return [HEAL_TOLERANCE, DELIVERY_TOLERANCE]
    lossy = name in ("loss5", "bursty")
    return [*latency_tolerances(lossy, HOPS), DELIVERY_TOLERANCE]


SIM_SEEDS = 3


def pooled(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """netsim over several seeds as one result: latency percentiles of all (change, receiver)
    pairs together, the worst delivery, the mean convergence after the heal."""
    lat = sorted(x for r in runs for x in r["series"]["latency_ms"])
    heals = [r["convergence_time_after_heal_s"] for r in runs]
    out = dict(runs[0])
    out["latency_ms"] = {f"p{q}": percentile(lat, q) for q in (50, 90, 99)}
    out["latency_ms"]["max"] = lat[-1] if lat else None
    by: dict[str, list[float]] = {}
    for r in runs:
        for h, v in r["series"]["latency_ms_by_hops"].items():
            by.setdefault(h, []).extend(v)
    by = {h: sorted(v) for h, v in by.items()}
    out["latency_ms_by_hops"] = {h: {f"p{q}": percentile(v, q) for q in (50, 90, 99)}
                                 for h, v in by.items()}
    out["delivery_ratio"] = min(r["delivery_ratio"] for r in runs)
    out["converged"] = all(r["converged"] for r in runs)
    out["convergence_time_after_heal_s"] = (
        None if any(h is None for h in heals) else sum(heals) / len(heals))
    out["series"] = {**runs[0]["series"], "latency_ms": lat, "latency_ms_by_hops": by}
    return out


def run_both(name: str, out: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    raw = tomllib.loads((CASES / f"{name}.toml").read_text())
    emu = emulate(parse(raw), out, echo=lambda msg: None)
    (out / "results.json").write_text(json.dumps(emu, indent=1), encoding="utf-8")
    # Nothing of the run is left: no namespace, no TUN device (processes die with them).
    assert namespaces.ours(os.getpid()) == []
    assert namespaces.tun_devices(os.getpid()) == []
    # netsim gets the per-hop time this machine had during the emulation (the relaying node's
    # packet-in to packet-out time and the fabric's lateness, from the packet trace): the
    # machine is shared, and a hop costs 1.6 ms at load 1 but 4.5 ms at load 6. Everything
    # else (links, SCTP, overlay, workload) netsim models on its own.
    raw["node"] = node_section(emu)
    # ...and the phase of its bootstrap loops (when a node that lost its link redialled, from
    # the SYNs in the trace): an accident of how long the set-up took, which decides which
    # SYN retransmission the dial after a heal waits for.
    raw["liveness"] = {**raw.get("liveness", {}), **emu["emulation"]["trace"]["liveness_section"]}
    # Every netsim run meets the emulation's loss draws (the fabric's per-direction draws from
    # time 0, netsim's ``link_seed``): with 4% loss in bursts a 24 s run holds a dozen bursts
    # that hit data, and the tail percentiles move with their number; two independent draws
    # of it differed by more than the tolerance (see KNOWN_GAPS' history in docs/netsim.md).
    raw["link_seed"] = int(raw["seed"])
    # netsim is cheap: pool a few seeds, so that its side of the comparison is not one draw.
    sim = pooled([run_scenario(raw, seed=int(raw["seed"]) + k) for k in range(SIM_SEEDS)])
    # The emulation reads latency at the nodes (their apply traces), as netsim does.
    assert emu["emulation"]["latency_measured_at"] == "nodes"
    assert emu["emulation"]["latency_samples_without_node_trace"] == 0
    return sim, emu


def node_section(emu: dict[str, Any]) -> dict[str, Any]:
    """The ``[node]`` table the emulation's packet trace measured (``netsim.emulate.trace``)."""
    section = emu["emulation"]["trace"]["node_section"]
    assert section, "the packet trace gave no per-hop sample (no relayed data packet)"
    return dict(section)


# Cases with a gap still outside tolerance on some runs: (what is known, the metrics it may
# fail on; every other metric stays strict). Such a case xfails (non-strict) with the run's
# numbers rather than widen the tolerances. Empty since issue 12's last two gaps closed (see
# docs/netsim.md, "How far to trust netsim"): partition convergence (the bootstrap dial's SYN
# retransmissions, the loop's phase, the resync's slow start) and bursty loss (the SCTP
# packets' order on a direction, the same loss draws in both modes, 48 s of edits).
KNOWN_GAPS: dict[str, tuple[str, tuple[str, ...]]] = {}


@pytest.mark.parametrize("name", ["noloss", "loss5", "bursty", "bandwidth", "partition"])
def test_netsim_agrees_with_the_real_stack(name: str, tmp_path: Path) -> None:
    sim, emu = run_both(name, tmp_path / name)
    verdicts = agreement(sim, emu, tolerances(name))
    report = f"== {name}\n{table(sim, emu, 'sim', 'emu')}\n" + "\n".join(map(str, verdicts))
    print(report)
    target = os.environ.get("FIDELITY_OUT")
    if target:
        with open(target, "a", encoding="utf-8") as fh:
            fh.write(report + "\n")
            fh.write(json.dumps({"case": name, "sim": _summary(sim), "emu": _summary(emu),
                                 "load": os.getloadavg(), "hop": emu["emulation"]["trace"][
                                     "hop_ms"]}) + "\n")
    assert emu["delivery_ratio"] == 1.0, "the real nodes must deliver every change"
    assert emu["converged"] is True
    failed = [v for v in verdicts if not v.ok]
    if failed and name in KNOWN_GAPS and all(
            v.tolerance.metric.startswith(KNOWN_GAPS[name][1]) for v in failed):
        # Only the known gap (delivery and every other metric stay strict): xfail, saying
        # what this run measured.
        pytest.xfail(f"{name}: known gap: {KNOWN_GAPS[name][0]}; this run: "
                     + "; ".join(map(str, failed)))
    assert not failed, f"{name}: netsim disagrees with the real stack:\n" + "\n".join(
        map(str, failed))


def _summary(result: dict[str, Any]) -> dict[str, Any]:
    return {k: result.get(k) for k in ("latency_ms", "delivery_ratio",
                                       "convergence_time_after_heal_s", "changes_submitted")}
