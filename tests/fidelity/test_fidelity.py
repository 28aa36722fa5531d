"""netsim against the real stack: the reference cases of issue 12, in both modes.

Each case (``cases/*.toml``: a line of 3 nodes, a client editing at 20/s at node 0, 16-28 s) runs
once in netsim and once with real ``meshnode up`` processes through the packet fabric, and the
shared metrics must agree within the issue's tolerances (``netsim.compare``): without loss,
latency within 10% or 5 ms per hop; with loss, p50/p90 within 25% and p99 within 40%;
convergence after a heal within max(1 s, 30%); delivery exact. The measured table is printed
(``-s``) and written to ``$FIDELITY_OUT`` if set.
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
from netsim.scenario import parse

CASES = Path(__file__).parent / "cases"
HOPS = 2  # a line of 3: the far receiver is two hops from the editor


def tolerances(name: str) -> list[Tolerance]:
    """The issue's rule for each case."""
    if name == "partition":
        return [HEAL_TOLERANCE, DELIVERY_TOLERANCE]
    lossy = name in ("loss5", "bursty")
    return [*latency_tolerances(lossy, HOPS), DELIVERY_TOLERANCE]


def run_both(name: str, out: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    raw = tomllib.loads((CASES / f"{name}.toml").read_text())
    sim = run_scenario(raw)
    emu = emulate(parse(raw), out, echo=lambda msg: None)
    # Nothing of the run is left: no namespace, no TUN device (processes die with them).
    assert namespaces.ours(os.getpid()) == []
    assert namespaces.tun_devices(os.getpid()) == []
    return sim, emu


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
            fh.write(json.dumps({"case": name, "sim": _summary(sim), "emu": _summary(emu)})
                     + "\n")
    assert emu["delivery_ratio"] == 1.0, "the real nodes must deliver every change"
    assert emu["converged"] is True
    failed = [str(v) for v in verdicts if not v.ok]
    assert not failed, f"{name}: netsim disagrees with the real stack:\n" + "\n".join(failed)


def _summary(result: dict[str, Any]) -> dict[str, Any]:
    return {k: result.get(k) for k in ("latency_ms", "delivery_ratio",
                                       "convergence_time_after_heal_s", "changes_submitted")}
