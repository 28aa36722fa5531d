"""DataDirLock: one process per data directory; the holder's PID in the error; a crash frees it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from meshnode.store import DataDirInUse, DataDirLock, StoreErrorReason

pytestmark = pytest.mark.timeout(60)

HOLD = """
import sys, time
from pathlib import Path
from meshnode.store import DataDirLock
lock = DataDirLock(Path(sys.argv[1])).acquire()
print("locked", flush=True)
time.sleep(60)
"""


def test_second_lock_is_refused_with_the_holders_pid(tmp_path: Path) -> None:
    first = DataDirLock(tmp_path).acquire()
    try:
        with pytest.raises(DataDirInUse) as info:
            DataDirLock(tmp_path).acquire()
        assert info.value.pid == os.getpid()
        assert info.value.reason is StoreErrorReason.LOCKED
        assert f"process {os.getpid()}" in str(info.value)
        assert "--data-dir" in str(info.value)
        assert "\n" not in str(info.value)
    finally:
        first.release()
    with DataDirLock(tmp_path) as again:  # released: free to take
        assert again.held
    assert not again.held
    assert (tmp_path / "lock").stat().st_mode & 0o777 == 0o600


def test_a_killed_holder_leaves_no_stale_lock(tmp_path: Path) -> None:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)],
                            stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "locked\n"
        with pytest.raises(DataDirInUse) as info:
            DataDirLock(tmp_path).acquire()
        assert info.value.pid == proc.pid
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        with DataDirLock(tmp_path) as lock:
            assert lock.held
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
