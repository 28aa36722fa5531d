"""``netsim run`` and ``netsim sweep``: outputs, and clear errors for bad scenarios."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from netsim.cli import SWEEP_METRICS, main

REPO = Path(__file__).resolve().parents[2]

SMALL = """
# A tiny room for CLI tests.
name = "tiny"
seed = 21
duration_s = 12

[topology]
kind = "random"
nodes = 8
degree = 3

[links]
latency_ms = 20
jitter_ms = 2
loss = 0.01
bandwidth_kbps = 5000

[workload]
editors = 4
edits_per_s = 3

[[events]]
at_s = 3
kind = "partition"
groups = [[0, 1], "rest"]

[[events]]
at_s = 6
kind = "heal"
"""

REQUIRED = {
    "seed", "nodes", "changes_submitted", "changes_delivered", "delivery_ratio", "latency_ms",
    "shortest_path_latency_ms", "latency_stretch_p99", "converged",
    "convergence_time_after_heal_s", "payload_copies_per_node", "bytes_sent_per_node",
    "sim_time_s", "wall_time_s",
}
PLOTS = ("latency_cdf.png", "convergence.png", "bytes_per_node.png", "link_utilisation.png")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def small(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.toml"
    path.write_text(SMALL)
    return path


def test_run_writes_results_and_plots(small: Path, tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert main(["run", str(small), "--out", str(out), "--quiet"]) == 0
    r = json.loads((out / "results.json").read_text())
    assert set(r) >= REQUIRED
    assert r["seed"] == 21 and r["nodes"] == 8 and r["sim_time_s"] == 12.0
    assert isinstance(r["changes_submitted"], int) and r["changes_submitted"] > 0
    assert r["changes_delivered"] == r["changes_submitted"]
    assert r["delivery_ratio"] == 1.0 and r["converged"] is True
    assert set(r["latency_ms"]) == {"p50", "p90", "p99", "max"}
    assert r["latency_ms"]["p50"] <= r["latency_ms"]["p90"] <= r["latency_ms"]["p99"]
    assert r["latency_ms"]["p99"] <= r["latency_ms"]["max"]
    assert set(r["shortest_path_latency_ms"]) == {"p50", "p99"}
    assert r["latency_stretch_p99"] >= 1.0
    assert r["convergence_time_after_heal_s"] is not None
    assert r["payload_copies_per_node"] >= 1.0
    assert set(r["bytes_sent_per_node"]) == {"mean", "max"}
    assert 0 < r["bytes_sent_per_node"]["mean"] <= r["bytes_sent_per_node"]["max"]
    assert r["wall_time_s"] >= 0
    assert len(r["series"]["bytes_sent_per_node"]) == 8
    for name in PLOTS:
        data = (out / name).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 1000, name
    captured = capsys.readouterr()
    summary = json.loads(captured.out)  # stdout: the summary, without the long series
    assert "series" not in summary and summary["seed"] == 21
    assert "results.json" in captured.err


def test_run_seed_and_no_plots(small: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert main(["run", str(small), "--out", str(out), "--quiet", "--no-plots",
                 "--seed", "5"]) == 0
    r = json.loads((out / "results.json").read_text())
    assert r["seed"] == 5
    assert not list(out.glob("*.png"))


def test_results_file_is_byte_identical_on_rerun(small: Path, tmp_path: Path) -> None:
    texts = []
    for k in range(2):
        out = tmp_path / f"out{k}"
        assert main(["run", str(small), "--out", str(out), "--quiet", "--no-plots"]) == 0
        r = json.loads((out / "results.json").read_text())
        r.pop("wall_time_s")
        texts.append(json.dumps(r, sort_keys=True))
    assert texts[0] == texts[1]


def test_sweep_writes_table_json_and_plot(small: Path, tmp_path: Path) -> None:
    out = tmp_path / "sweep"
    code = main(["sweep", str(small), "--param", "links.loss=0,0.05",
                 "--param", "workload.edits_per_s=1,2", "--seeds", "2", "--workers", "2",
                 "--out", str(out)])
    assert code == 0
    with open(out / "sweep.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 4
    assert {(r["links.loss"], r["workload.edits_per_s"]) for r in rows} == {
        ("0", "1"), ("0", "2"), ("0.05", "1"), ("0.05", "2")}
    assert all(r["runs"] == "2" for r in rows)
    for m in SWEEP_METRICS:
        name = m.replace(".", "_")
        assert {f"{name}_mean", f"{name}_min", f"{name}_max"} <= set(rows[0])
    sweep = json.loads((out / "sweep.json").read_text())
    assert sweep["params"] == ["links.loss", "workload.edits_per_s"]
    assert sweep["seeds"] == [21, 22]
    assert len(sweep["runs"]) == 8
    assert sorted((tuple(r["overrides"].values()), r["seed"]) for r in sweep["runs"]) == sorted(
        ((loss, rate), seed) for loss in (0, 0.05) for rate in (1, 2) for seed in (21, 22))
    assert all(r["metrics"]["delivery_ratio"] == 1.0 for r in sweep["runs"])
    plot = out / "sweep_latency_ms_p99.png"
    assert plot.read_bytes().startswith(PNG_MAGIC)


def test_sweep_points_match_single_runs(small: Path, tmp_path: Path) -> None:
    """A sweep point is the same run as ``netsim run`` with that parameter and seed."""
    out = tmp_path / "sweep"
    assert main(["sweep", str(small), "--param", "links.latency_ms=35", "--seeds", "1",
                 "--workers", "1", "--metric", "delivery_ratio", "--out", str(out)]) == 0
    point = json.loads((out / "sweep.json").read_text())["runs"][0]["metrics"]
    assert (out / "sweep_delivery_ratio.png").exists()
    edited = tmp_path / "edited.toml"
    edited.write_text(SMALL.replace("latency_ms = 20", "latency_ms = 35"))
    single = tmp_path / "single"
    assert main(["run", str(edited), "--out", str(single), "--quiet", "--no-plots"]) == 0
    r = json.loads((single / "results.json").read_text())
    assert point["latency_ms.p99"] == r["latency_ms"]["p99"]
    assert point["bytes_sent_per_node.mean"] == r["bytes_sent_per_node"]["mean"]


def test_sweep_shows_runs_that_did_not_converge(small: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    """A point where some runs end split is reported with its share of converged runs (the
    issue: the table used to show only means, which hide a run that never converged)."""
    out = tmp_path / "sweep"
    # Ending at 5 s, before the heal at 6 s, leaves the two sides apart; at 12 s they are one.
    assert main(["sweep", str(small), "--param", "duration_s=5,12", "--seeds", "2",
                 "--workers", "2", "--out", str(out)]) == 0
    table = capsys.readouterr().out
    sweep = json.loads((out / "sweep.json").read_text())
    by_duration = {row["duration_s"]: row for row in sweep["rows"]}
    split, healed = by_duration[5], by_duration[12]
    for row in (split, healed):
        mine = [r for r in sweep["runs"] if r["overrides"]["duration_s"] == row["duration_s"]]
        done = [r["seed"] for r in mine if r["metrics"]["converged"] == 1.0]
        assert row["runs"] == 2
        assert row["converged_runs"] == len(done)
        assert row["converged_share"] == len(done) / 2
        assert row["unconverged_seeds"] == sorted({21, 22} - set(done))
    assert split["converged_share"] < 1.0
    assert healed["converged_share"] == 1.0
    lines = table.splitlines()
    assert "converged" in lines[0].split()
    split_line = next(ln for ln in lines[1:] if ln.split()[0] == "5")
    assert f"{split['converged_runs']}/2" in split_line.split()
    with open(out / "sweep.csv", newline="") as fh:
        csv_rows = {r["duration_s"]: r for r in csv.DictReader(fh)}
    assert csv_rows["5"]["converged_share"] == str(split["converged_share"])


BAD_FILES = {
    "unknown key": ("colour = 'red'\n" + SMALL, "colour"),
    "invalid toml": (SMALL + "seed = = 1\n", "not valid TOML"),
    "bad value": (SMALL.replace("loss = 0.01", "loss = 3"), "loss"),
    "unknown event kind": (SMALL + "[[events]]\nat_s = 1\nkind = 'explode'\n", "explode"),
    # Caught only when the graph is built, still before anything runs.
    "bad topology value": (SMALL.replace("degree = 3", "degree = -1"), "degree"),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_bad_scenario_exits_2_with_a_clear_message(case: str, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    text, needle = BAD_FILES[case]
    path = tmp_path / "bad.toml"
    path.write_text(text)
    out = tmp_path / "out"
    assert main(["run", str(path), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("netsim: ") and needle in err
    assert "Traceback" not in err
    assert not (out / "results.json").exists()


def test_missing_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", str(tmp_path / "nope.toml"), "--out", str(tmp_path / "o")]) == 2
    assert "nope.toml" in capsys.readouterr().err


@pytest.mark.parametrize(("param", "needle"), [
    ("links.bogus=1,2", "bogus"),
    ("links.loss", "KEY=V1,V2"),
    ("duration_s.x=1", "duration_s"),
])
def test_bad_sweep_param_exits_2_before_running(small: Path, tmp_path: Path, param: str,
                                                needle: str,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "sweep"
    assert main(["sweep", str(small), "--param", param, "--seeds", "1", "--workers", "1",
                 "--out", str(out)]) == 2
    assert needle in capsys.readouterr().err
    assert not out.exists()


def test_sweep_without_params_exits_2(small: Path, tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sweep", str(small), "--out", str(tmp_path / "s")]) == 2
    assert "--param" in capsys.readouterr().err


def test_console_script_runs(small: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "netsim", "run", str(small), "--out", str(out),
                           "--quiet", "--no-plots"], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads((out / "results.json").read_text())["converged"] is True
    bad = tmp_path / "bad.toml"
    bad.write_text("[topology]\nkind = 'ring'\nnodes = 1\n")
    proc = subprocess.run([sys.executable, "-m", "netsim", "run", str(bad), "--out", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "topology.nodes" in proc.stderr and "Traceback" not in proc.stderr
