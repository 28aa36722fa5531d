"""The processes an emulation run starts: :class:`Child`, and how they are started and awaited.

Every node, agent and the fabric is a child process of the runner, in a session of its own so
that one ``killpg`` stops it with everything it started; before exec it asks the kernel to kill
it when the runner dies (``PR_SET_PDEATHSIG``) and raises its priority. Apart from the runner
(:mod:`netsim.emulate.runner`) because this is the process plumbing, not the run's order of
events; re-exported there.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TextIO

__all__ = ["NICE", "PR_SET_PDEATHSIG", "Child"]

PR_SET_PDEATHSIG = 1
NICE = -15  # CFS weight 29,154 against 1,024 at nice 0: ahead of ~28 unrelated busy tasks


def _die_with_parent() -> None:
    """In the child, before exec: SIGKILL me if the runner dies (even by SIGKILL); and run
    ahead of unrelated work on the machine (each emulated node stands for a host of its own)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    with contextlib.suppress(OSError):
        os.nice(NICE)


async def _ready_or_exit(ready: asyncio.Future[None], child: Child, timeout: float) -> bool:
    """Wait until ``ready`` is set; False if the process exits first or ``timeout`` passes."""
    exited: asyncio.Future[Any] = asyncio.ensure_future(child.proc.wait())
    waiting: list[asyncio.Future[Any]] = [ready, exited]
    try:
        await asyncio.wait(waiting, timeout=timeout, return_when="FIRST_COMPLETED")
    finally:
        exited.cancel()
    return ready.done()


@dataclass
class Child:
    """A process this run started (in a namespace or not), its output and its log file."""

    name: str
    proc: asyncio.subprocess.Process
    log: TextIO
    on_line: Callable[[str], None] | None = None
    reader: asyncio.Task[None] | None = None
    lines: list[str] = field(default_factory=list)

    def start_reading(self) -> None:
        """Follow stdout: every line to the log, and to ``on_line``."""
        self.reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        while line_b := await self.proc.stdout.readline():
            line = line_b.decode(errors="replace").rstrip("\n")
            self.lines.append(line)
            self.log.write(line + "\n")
            self.log.flush()
            if self.on_line is not None:
                self.on_line(line)

    def kill(self) -> None:
        """SIGKILL its process group (it was started in a session of its own)."""
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)

    def tail(self, n: int = 30) -> str:
        """The last lines it printed."""
        return "\n".join(self.lines[-n:])

