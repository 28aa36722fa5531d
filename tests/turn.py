"""A real TURN server (Debian's coturn) on loopback, for tests of relayed links.

Without ``/usr/sbin/turnserver``/``/usr/bin/turnserver`` the tests that need it skip, unless
``MESHNODE_REQUIRE_TURN`` is set (CI sets it), in which case they fail.
"""

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

USER, PASSWORD = "mesh", "turn-secret"


@dataclass
class TurnServer:
    """Where the server listens and what it logged."""

    url: str
    log: Path

    def allocations(self) -> int:
        """How many relay allocations the server granted so far."""
        text = self.log.read_text(errors="replace")
        return text.count("ALLOCATE processed, success")


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def turnserver_path() -> str:
    """The coturn binary, or skip/fail the test (see the module docstring)."""
    path = shutil.which("turnserver") or (
        "/usr/bin/turnserver" if os.path.exists("/usr/bin/turnserver") else None)
    if path is None:
        if os.environ.get("MESHNODE_REQUIRE_TURN"):
            pytest.fail("turnserver (Debian's coturn) is missing and MESHNODE_REQUIRE_TURN is "
                        "set: apt-get install -y coturn")
        pytest.skip("turnserver is missing: apt-get install -y coturn to run the TURN tests")
    return path


@contextmanager
def turn_server() -> Iterator[TurnServer]:
    """A coturn process on 127.0.0.1 with one long-term user, killed afterwards."""
    binary = turnserver_path()
    port = _free_udp_port()
    relay_base = 50_000 + (os.getpid() % 100) * 100
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "turn.log"
        proc = subprocess.Popen(
            [binary, "-n", "--listening-ip=127.0.0.1", f"--listening-port={port}",
             "--relay-ip=127.0.0.1", f"--min-port={relay_base}",
             f"--max-port={relay_base + 99}", f"--user={USER}:{PASSWORD}",
             "--realm=meshnode", "--lt-cred-mech", "--fingerprint", "--no-tls", "--no-dtls",
             "--no-cli", "--allow-loopback-peers", "--verbose", f"--log-file={log}",
             "--simple-log", f"--pidfile={tmp}/turn.pid",
             f"--userdb={tmp}/turn.db"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 10
            while not (log.exists() and "UDP listener opened" in log.read_text(errors="replace")):
                if proc.poll() is not None or time.monotonic() > deadline:
                    text = log.read_text(errors="replace") if log.exists() else ""
                    raise RuntimeError(f"turnserver did not start:\n{text[-2000:]}")
                time.sleep(0.05)
            yield TurnServer(f"turn:127.0.0.1:{port}", log)
        finally:
            proc.kill()
            proc.wait(10)
