"""``meshnode doctor`` against real things: a running node, a real coturn with a wrong
password, a clock set wrong by libfaketime, a world-readable key, a full tmpfs."""

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fakeclock import WallClock
from tests.integration.nodeproc import NodeProcess
from tests.turn import PASSWORD, USER, turn_server


def doctor(*args: str, env: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    """Run ``meshnode doctor --json ARGS``: its exit status and its report."""
    out = subprocess.run([sys.executable, "-m", "meshnode", "doctor", "--json", "--timeout",
                          "5", *args], capture_output=True, text=True, timeout=120,
                         env=dict(os.environ, **(env or {})))
    assert out.stdout, out.stderr
    return out.returncode, json.loads(out.stdout)


def findings(report: dict[str, Any], check: str) -> list[dict[str, Any]]:
    return [f for f in report["findings"] if f["check"] == check]


def status(report: dict[str, Any], check: str) -> str:
    found = findings(report, check)
    assert found, f"no {check} finding in {report}"
    order = ["ok", "skip", "warn", "fail"]
    return max((f["status"] for f in found), key=order.index)


def failed(report: dict[str, Any]) -> set[str]:
    return {f["check"] for f in report["findings"] if f["status"] == "fail"}


def test_healthy_node_passes_then_a_world_readable_key_fails(node: NodeProcess) -> None:
    at = ("--config", str(node.config_path), "--data-dir", str(node.data_dir),
          "--node", node.url)
    code, report = doctor(*at)
    assert code == 0 and report["ok"] is True, report
    assert not failed(report)
    for check in ("node.running", "admin.token", "files.identity", "files.database",
                  "disk.space", "udp.bind"):
        assert status(report, check) == "ok", findings(report, check)

    (node.data_dir / "identity.key").chmod(0o644)
    code, report = doctor(*at)
    assert code == 1 and report["ok"] is False
    assert failed(report) == {"files.identity"}
    (key,) = findings(report, "files.identity")
    assert "every user" in key["message"] and "chmod 600" in key["fix"]
    assert key["data"]["mode"] == "0644"


def _turn_config(path: Path, url: str, password: str) -> Path:
    path.write_text(f"""
[network]
host_addresses = ["127.0.0.1"]

[[network.ice_servers]]
urls = ["{url}"]
username = "{USER}"
credential = "{password}"
""")
    path.chmod(0o600)
    return path


def test_wrong_turn_password_is_found_by_a_real_allocation(tmp_path: Path) -> None:
    with turn_server() as turn:
        wrong = _turn_config(tmp_path / "wrong.toml", turn.url, "not-the-password")
        code, report = doctor("--config", str(wrong), "--data-dir", str(tmp_path / "d"))
        assert code == 1
        assert "ice.turn" in failed(report)
        (finding,) = findings(report, "ice.turn")
        assert finding["data"]["error_code"] == 401
        assert "refuses the credentials" in finding["message"]
        assert turn.allocations() == 0

        right = _turn_config(tmp_path / "right.toml", turn.url, PASSWORD)
        code, report = doctor("--config", str(right), "--data-dir", str(tmp_path / "d"))
        assert "ice.turn" not in failed(report) and status(report, "ice.turn") == "ok"
        assert turn.allocations() >= 1
        # A datagram from the relay reached the configured host address.
        assert status(report, "udp.reachable") == "ok"
        assert status(report, "files.config") == "ok"  # mode 0600, with the credential

        right.chmod(0o644)  # the TURN credential readable by every user
        code, report = doctor("--config", str(right), "--data-dir", str(tmp_path / "d"))
        assert code == 1 and "files.config" in failed(report)


def test_clock_skew_against_a_peer(tmp_path: Path, node: NodeProcess) -> None:
    config = tmp_path / "skewed.toml"
    config.write_text(f'[network]\nbootstrap = ["{node.url}"]\n')
    clock = WallClock(tmp_path / "clock", "+180")  # this machine 3 minutes ahead
    code, report = doctor("--config", str(config), "--data-dir", str(tmp_path / "d"),
                          env=clock.env())
    assert code == 1 and "clock.skew" in failed(report)
    (skew,) = findings(report, "clock.skew")
    assert -190 < skew["data"]["skew_s"][node.url] < -170
    assert "ahead of" in skew["message"] and "future_timestamp" in skew["message"]

    clock.set("+0")
    code, report = doctor("--config", str(config), "--data-dir", str(tmp_path / "d"),
                          env=clock.env())
    assert status(report, "clock.skew") == "ok"


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs, mounted for the test (as root) and unmounted after it."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    if os.geteuid() != 0:
        if os.environ.get("MESHNODE_REQUIRE_TURN"):  # CI runs as root
            pytest.fail("the full-disk test mounts a tmpfs: run it as root")
        pytest.skip("mounting a tmpfs needs root")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m,mode=0700", "tmpfs", str(mnt)],
                   check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_full_disk(small_tmpfs: Path) -> None:
    data = small_tmpfs / "data"
    data.mkdir(mode=0o700)
    with (small_tmpfs / "filler").open("wb") as f, pytest.raises(OSError):
        while True:  # until ENOSPC
            f.write(b"\0" * 65536)
            f.flush()
    code, report = doctor("--data-dir", str(data))
    assert code == 1 and "disk.space" in failed(report)
    (space,) = findings(report, "disk.space")
    assert space["data"]["free_bytes"] < 1 << 20
    assert "free space" in space["fix"]
