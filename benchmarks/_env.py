"""The machine and package versions every benchmark records beside its figures."""

import os
import platform
from importlib import metadata
from typing import Any

PACKAGES = ("meshnode", "msgpack", "cryptography", "pynacl", "loro")


def _version(pkg: str) -> str | None:
    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return None


def environment() -> dict[str, Any]:
    """Python, platform, cores, the 1-minute load (figures mean little above the core count)
    and the versions of the packages that decide the figures."""
    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "load_average_1m": round(os.getloadavg()[0], 2),
        **{pkg: _version(pkg) for pkg in PACKAGES},
    }
