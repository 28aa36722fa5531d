"""The apply trace (``MESHNODE_TRACE_APPLIED``): what a node writes and how it is read back."""

import os
import subprocess
import sys
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from meshnode.runtime.apply_trace import TRACE_ENV, read_trace


def test_a_node_process_appends_each_change_it_applies(tmp_path: Path) -> None:
    # In a process of its own: the tap reads the environment once, at first use.
    trace = tmp_path / "applied.trace"
    code = ("import time\n"
            "from meshnode.runtime.apply_trace import record_applied\n"
            "record_applied(bytes.fromhex('0a0b'))\n"
            "record_applied(bytes.fromhex('ff'))\n"
            "record_applied(bytes.fromhex('0a0b'))\n")
    env = dict(os.environ, **{TRACE_ENV: str(trace)})
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, check=True)
    assert "measurements only" in out.stderr  # said at start
    lines = trace.read_text().splitlines()
    assert [line.split()[0] for line in lines] == ["0a0b", "ff", "0a0b"]
    times = read_trace(trace.read_text())
    assert set(times) == {"0a0b", "ff"}
    assert times["0a0b"] <= times["ff"]  # the first time a change appears is kept


def test_off_by_default_nothing_is_written(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != TRACE_ENV}
    code = ("from meshnode.runtime import apply_trace\n"
            "apply_trace.record_applied(b'x')\n"
            "assert apply_trace._TAP.file() is None\n")
    subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path, check=True)
    assert list(tmp_path.iterdir()) == []


def test_torn_and_malformed_lines_are_skipped() -> None:
    text = "0a 1.5\nzz 2.0\n0b notanumber\n0c 3.0 extra\n\n0d 4.25\n0e 5"
    assert read_trace(text) == {"0a": 1.5, "0d": 4.25, "0e": 5.0}


@given(st.text())
def test_any_text_reads_without_raising(text: str) -> None:
    for cid, t in read_trace(text).items():
        bytes.fromhex(cid)
        assert isinstance(t, float)
