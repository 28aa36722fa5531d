"""A wall clock the test sets, for real node processes (Debian's libfaketime).

``WallClock(path).env()`` is the environment that makes a process read its wall clock
(``time.time()``, ``datetime.now()``) shifted by the offset written in ``path``, re-read on
every call, while its monotonic clock stays the machine's: the clock of a Raspberry Pi
without a real-time clock before NTP syncs, or a VM restored from a snapshot. ``set("-10m")``
steps it while the process runs. Without libfaketime the tests that need it skip, unless
``MESHNODE_REQUIRE_FAKETIME`` is set (CI sets it), in which case they fail.
"""

import os
from pathlib import Path

import pytest

LIBFAKETIME = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1")


def require_faketime() -> Path:
    """The libfaketime library, or skip/fail the test as the module docstring says."""
    candidates = [LIBFAKETIME, *Path("/usr/lib").glob("*/faketime/libfaketime.so.1")]
    for lib in candidates:
        if lib.exists():
            return lib
    if os.environ.get("MESHNODE_REQUIRE_FAKETIME"):
        pytest.fail("libfaketime is missing and MESHNODE_REQUIRE_FAKETIME is set: "
                    "apt-get install faketime (python3 dev.py test does it as root)")
    pytest.skip("libfaketime is missing: apt-get install faketime to run the clock tests")


class WallClock:
    """An offset for a process's wall clock, kept in a file it re-reads."""

    def __init__(self, path: Path, offset: str = "+0") -> None:
        self.lib = require_faketime()
        self.path = path
        self.set(offset)

    def set(self, offset: str) -> None:
        """Step the clock: ``"+0"`` (the machine's), ``"-10m"``, ``"+1d"``, ``"-600"`` ..."""
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(offset + "\n")
        tmp.replace(self.path)  # atomic: a reader never sees an empty file

    def env(self) -> dict[str, str]:
        """The environment variables that put a process on this clock."""
        return {
            "LD_PRELOAD": str(self.lib),
            "FAKETIME_TIMESTAMP_FILE": str(self.path),
            "FAKETIME_NO_CACHE": "1",
            # Monotonic time stays real: deadlines must not move with the wall clock.
            "FAKETIME_DONT_FAKE_MONOTONIC": "1",
        }
