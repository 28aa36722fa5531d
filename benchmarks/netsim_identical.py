"""Same seed, same bytes: run netsim scenarios with two source trees and compare results.json.

``python benchmarks/netsim_identical.py BEFORE_TREE AFTER_TREE [scenario names...]`` runs
``python -m netsim run netsim/scenarios/NAME.toml --no-plots`` once with each tree on
``PYTHONPATH`` (default scenarios: churn, hostile, private, partition) and prints ONE JSON
object: per scenario, whether the two results.json files are byte-identical once the one
field that measures the host (``wall_time_s``, the run's wall-clock time) is blanked, their
sizes and each run's CPU seconds. Exit 0 if every pair is identical, 1 otherwise. Use it
when a change must not move a simulation's results (a speed-up of the simulator or of a
core's hot path): export the old commit with ``git archive OLD | tar -x -C /tmp/before``
and pass that folder.
"""

from __future__ import annotations

import json
import os
import re
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

DEFAULT = ("churn", "hostile", "private", "partition")


WALL = re.compile(rb'"wall_time_s": [0-9.e+-]+')


def run(tree: Path, scenario: str, out: Path) -> float:
    """One ``netsim run`` with ``tree``'s sources; returns its CPU seconds."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    env = {**os.environ, "PYTHONPATH": str(tree)}
    subprocess.run(
        [sys.executable, "-m", "netsim", "run", str(tree / "netsim" / "scenarios" /
                                                   f"{scenario}.toml"),
         "--out", str(out), "--no-plots", "--quiet"],
        cwd=tree, env=env, check=True, stdout=subprocess.DEVNULL)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return round(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime, 2)


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    a, b = Path(argv[0]).resolve(), Path(argv[1]).resolve()
    names = argv[2:] or list(DEFAULT)
    report: dict[str, dict[str, object]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            outs = (Path(tmp) / f"{name}-a", Path(tmp) / f"{name}-b")
            cpu = (run(a, name, outs[0]), run(b, name, outs[1]))
            data = [WALL.sub(b'"wall_time_s": 0', (o / "results.json").read_bytes())
                    for o in outs]
            report[name] = {"identical": data[0] == data[1], "bytes": [len(d) for d in data],
                            "cpu_s": list(cpu)}
    print(json.dumps({"before": str(a), "after": str(b), "scenarios": report}, indent=1))
    return 0 if all(r["identical"] for r in report.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
