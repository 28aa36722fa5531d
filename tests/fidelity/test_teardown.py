"""An emulation leaves nothing behind: no namespace, no TUN device, no process, whether it ends
normally (tests/fidelity/test_fidelity.py checks that), on Ctrl+C, or on a failure."""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from netsim.emulate import namespaces
from netsim.emulate.runner import EmulationFailed, emulate
from netsim.scenario import parse

TINY = """
name = "teardown"
seed = 1
duration_s = 60
[topology]
kind = "line"
nodes = 2
[links]
latency_ms = 10
[workload]
editors = 1
edits_per_s = 5
"""


def processes_mentioning(text: str) -> list[int]:
    """PIDs whose command line contains ``text``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if text in cmdline:
                found.append(int(entry.name))
    return found


def signal_dispositions(pid: int) -> str:
    """The process' blocked, ignored and caught signal masks (``/proc/PID/status``): what
    a signal sent to it will meet."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError as err:
        return f"(no status: {err})"
    return "".join(line + "\n" for line in status.splitlines()
                   if line.startswith(("SigBlk", "SigIgn", "SigCgt", "ShdPnd", "SigPnd")))


def assert_nothing_left(pid: int, work: str | None) -> None:
    assert namespaces.ours(pid) == []
    assert namespaces.tun_devices(pid) == []
    if work is not None:
        deadline = time.monotonic() + 10
        while processes_mentioning(work) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert processes_mentioning(work) == []


def test_ctrl_c_in_the_middle_of_a_run_removes_everything(tmp_path: Path) -> None:
    scenario = tmp_path / "tiny.toml"
    scenario.write_text(TINY)
    proc = subprocess.Popen(
        [sys.executable, "-m", "netsim", "emulate", str(scenario), "--out",
         str(tmp_path / "out"), "--no-plots"],
        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
        env=dict(os.environ, PYTHONUNBUFFERED="1"))
    work = None
    lines = []
    try:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line)
            m = re.search(r"work dir (\S+),", line)
            if m:
                work = m.group(1)
            if "running:" in line:
                break
        assert work is not None, "".join(lines)
        assert namespaces.ours(proc.pid), "the run had namespaces while running"
        assert processes_mentioning(work), "the run had processes while running"
        dispositions = signal_dispositions(proc.pid)
        proc.send_signal(signal.SIGINT)
        rest = proc.stderr.read()
        assert proc.wait(60) == 130, "".join(lines) + rest + dispositions
        assert "interrupted" in rest
    finally:
        if proc.poll() is None:
            proc.kill()
    assert_nothing_left(proc.pid, work)


def test_a_failure_during_set_up_removes_everything(tmp_path: Path) -> None:
    messages: list[str] = []
    with pytest.raises(EmulationFailed, match="fabric did not start"):
        # /bin/false as the interpreter: the fabric exits at once.
        emulate(parse({**_tiny(), "duration_s": 5}), tmp_path / "out", echo=messages.append,
                python="/bin/false")
    work = re.search(r"work dir (\S+),", messages[0])
    assert work is not None
    assert_nothing_left(os.getpid(), work.group(1))
    assert not Path(work.group(1)).exists()


def test_namespaces_of_a_killed_run_are_found_and_removed() -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    name = f"{namespaces.PREFIX}-{dead.pid}-0"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        assert name in namespaces.stale()
        namespaces.remove([name])
        assert name not in namespaces.ours()
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


def _tiny() -> dict[str, object]:
    import tomllib

    return tomllib.loads(TINY)
