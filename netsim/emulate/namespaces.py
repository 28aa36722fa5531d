"""Network namespaces, addresses and device names of one emulation run, and their teardown.

Every name carries the runner's PID (``mnemu-<pid>-<i>`` for namespaces, ``mne<pid>t<i>`` for
TUN devices), so a run only ever removes what it made, and :func:`stale` can tell the leftovers of
a run that was killed outright (SIGKILL: no ``finally`` ran) from those of a live one.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from dataclasses import dataclass

PREFIX = "mnemu"
SUBNET_PREFIX_LEN = 16


@dataclass(frozen=True)
class Plan:
    """Names and addresses of one run's nodes."""

    pid: int
    nodes: int

    def namespace(self, i: int) -> str:
        """Node ``i``'s network namespace."""
        return f"{PREFIX}-{self.pid}-{i}"

    def tun(self, i: int) -> str:
        """Node ``i``'s TUN device (at most 15 characters, the kernel's limit)."""
        return f"mne{self.pid}t{i}"

    @staticmethod
    def address(i: int) -> str:
        """Node ``i``'s IPv4 address (10.213.0.1 for node 0)."""
        return f"10.213.{i // 250}.{i % 250 + 1}"

    @property
    def namespaces(self) -> list[str]:
        """Every namespace of the run."""
        return [self.namespace(i) for i in range(self.nodes)]


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], check=check, capture_output=True, text=True)


def create(plan: Plan) -> None:
    """Create the run's namespaces (each with loopback up)."""
    for ns in plan.namespaces:
        _ip("netns", "add", ns)
        _ip("-n", ns, "link", "set", "lo", "up")


def ours(pid: int | None = None) -> list[str]:
    """Namespaces an emulation made (of run ``pid`` only, if given) that still exist."""
    out = _ip("netns", "list", check=False).stdout
    names = [line.split()[0] for line in out.splitlines() if line.strip()]
    head = f"{PREFIX}-{pid}-" if pid is not None else f"{PREFIX}-"
    return [n for n in names if n.startswith(head)]


def pids_in(ns: str) -> list[int]:
    """Processes running in namespace ``ns``."""
    out = _ip("netns", "pids", ns, check=False).stdout
    return [int(x) for x in out.split() if x.isdigit()]


def remove(names: list[str]) -> None:
    """Kill what still runs in these namespaces (they are ours: we made them) and delete them.
    The TUN devices inside go with them."""
    for ns in names:
        for pid in pids_in(ns):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    for ns in names:
        _ip("netns", "del", ns, check=False)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stale() -> list[str]:
    """Namespaces left by emulation runs whose runner no longer exists."""
    out = []
    for ns in ours():
        parts = ns.split("-")
        if len(parts) == 3 and parts[1].isdigit() and not _alive(int(parts[1])):
            out.append(ns)
    return out


def tun_devices(pid: int | None = None) -> list[str]:
    """TUN devices of an emulation run still in the root namespace (normally none: they live
    in the node namespaces, and vanish with the fabric process)."""
    out = _ip("-o", "link", "show", check=False).stdout
    head = f"mne{pid}t" if pid is not None else "mne"
    names = []
    for line in out.splitlines():
        parts = line.split(":")
        if len(parts) > 1:
            name = parts[1].strip().split("@")[0]
            if name.startswith(head) and "t" in name[3:]:
                names.append(name)
    return names
