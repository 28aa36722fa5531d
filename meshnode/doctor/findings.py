"""What a check finds (``Finding``), how bad it is (``Status``), and what checks are given
(``DoctorContext``).

Each check is an ``async`` function of a ``DoctorContext`` returning ``Finding``s; a check
never raises for a problem it finds (that is a ``FAIL`` finding that says how to fix it), and
the runner turns anything it does raise into a ``FAIL`` naming the check (a bug, not a
verdict on the node).
"""

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from meshnode.config import NodeConfig

__all__ = ["Check", "DoctorContext", "Finding", "Status"]


class Status(StrEnum):
    """How a finding weighs (stable: the ``status`` of ``meshnode doctor --json``)."""

    OK = "ok"
    """Checked, and fine."""
    WARN = "warn"
    """Works now, but something will bite (a clock not synchronised, disk filling up)."""
    FAIL = "fail"
    """Broken: the node cannot do part of its job until it is fixed (exit status 1)."""
    SKIP = "skip"
    """Could not be checked here (nothing configured to check, or no tool to check with)."""


ORDER = {Status.OK: 0, Status.SKIP: 0, Status.WARN: 1, Status.FAIL: 2}


@dataclass(frozen=True, slots=True)
class Finding:
    """One verdict: ``check`` is a stable dotted name (``clock.skew``, ``ice.turn``...),
    ``message`` what was found, ``fix`` what to do (empty when nothing), ``data`` the
    measured values for scripts."""

    check: str
    status: Status
    message: str
    fix: str = ""
    data: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The JSON form of ``meshnode doctor --json``."""
        return {"check": self.check, "status": str(self.status), "message": self.message,
                "fix": self.fix, "data": self.data}


@dataclass(frozen=True, slots=True)
class DoctorContext:
    """What the checks look at: the node's configuration (``config_path``: its file, if
    any), where its admin API answers (``node_url``) and the admin token file; every network
    probe gives up after ``timeout_s``."""

    config: NodeConfig
    config_path: Path | None
    node_url: str
    token_path: Path
    timeout_s: float = 5.0


Check = Callable[[DoctorContext], Awaitable[list[Finding]]]
"""A check: one or more findings about one subject."""
