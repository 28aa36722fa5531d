"""Real ``meshnode up`` processes for integration tests (loopback only)."""

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from meshnode.crdt import SceneReplica
    from meshnode.store import ChangeStore

LOOPBACK_CONFIG = """
[network]
host_addresses = ["127.0.0.1"]

[log]
level = "info"
"""

_URL = re.compile(r"Open (http://\S+)/\?room=([0-9a-f]{64})")
_UP = re.compile(r"meshnode (\S+) is up\.")
_METRICS = re.compile(r"Metrics: (http://\S+)/metrics")


@contextlib.contextmanager
def stopped_node_room(data_dir: Path, room_hex: str
                      ) -> Iterator[tuple["ChangeStore", "SceneReplica", bytes]]:
    """A stopped node's store and its replica of room ``room_hex``, replayed from its log,
    with the room ID: to write history into the node before it starts again."""
    from meshnode.crdt import SceneReplica
    from meshnode.identity import Identity
    from meshnode.store import ChangeStore

    identity = Identity.load(data_dir / "identity.key")
    room_id = bytes.fromhex(room_hex)
    with ChangeStore.open(data_dir / "meshnode.db") as store:
        genesis = next(r.genesis for r in store.rooms() if r.room_id == room_id)
        replica = SceneReplica.from_genesis(genesis, identity)
        assert replica.replay(store.changes(room_id)).ok
        yield store, replica, room_id


class NodeProcess:
    """One node in its own process, with its own data directory."""

    def __init__(self, data_dir: Path, *, args: list[str] | None = None,
                 config: str = LOOPBACK_CONFIG, prefix: list[str] | None = None) -> None:
        """``prefix``: a command the node runs under (``["ip", "netns", "exec", NS]``)."""
        self.data_dir = data_dir
        self.args = args or []
        self.prefix = prefix or []
        data_dir.mkdir(parents=True, exist_ok=True)
        self.config_path = data_dir.parent / f"{data_dir.name}.toml"
        self.config_path.write_text(config)
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""
        self.peer_id = ""
        self.default_room: str | None = None
        self.lines: list[str] = []

    def start(self, timeout: float = 60.0, extra: list[str] | None = None,
              env: dict[str, str] | None = None) -> "NodeProcess":
        """Start and wait until it prints its URL (``env``: extra environment variables, e.g.
        a ``tests.fakeclock.WallClock``'s)."""
        cmd = [*self.prefix, sys.executable, "-m", "meshnode", "up", "--config",
               str(self.config_path), "--data-dir", str(self.data_dir), "--listen", "127.0.0.1:0",
               *self.args, *(extra or [])]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, env=dict(os.environ, PYTHONUNBUFFERED="1",
                                                         **(env or {})),
                                     start_new_session=True)
        self.lines = []
        ready = threading.Event()

        def reader() -> None:
            assert self.proc is not None and self.proc.stdout is not None
            for line in self.proc.stdout:
                self.lines.append(line.rstrip("\n"))
                m = _UP.search(line)
                if m:
                    self.peer_id = m.group(1)
                m = _URL.search(line)
                if m:
                    self.url, self.default_room = m.group(1), m.group(2)
                m = _METRICS.search(line)
                if m:
                    self.url = m.group(1)
                    ready.set()
            ready.set()

        threading.Thread(target=reader, daemon=True).start()
        if not ready.wait(timeout) or not self.url:
            self.kill()
            raise RuntimeError("node did not start:\n" + "\n".join(self.lines[-40:]))
        return self

    def log(self) -> str:
        """Everything the node printed so far."""
        return "\n".join(self.lines)

    @property
    def admin_token(self) -> str:
        """The node's admin token (it writes the file on first start)."""
        return (self.data_dir / "admin.token").read_text(encoding="ascii").strip()

    def get(self, path: str) -> Any:
        """GET a JSON endpoint, as the operator (with the admin token)."""
        req = urllib.request.Request(self.url + path,
                                     headers={"Authorization": f"Bearer {self.admin_token}"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            body = resp.read()
        return json.loads(body) if body[:1] in (b"{", b"[") else body.decode()

    def post(self, path: str, body: dict[str, Any]) -> Any:
        """POST JSON, return JSON (as the operator)."""
        req = urllib.request.Request(self.url + path, data=json.dumps(body).encode(),
                                     method="POST",
                                     headers={"Content-Type": "application/json",
                                              "Authorization": f"Bearer {self.admin_token}"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read())

    def metrics(self, path: str = "/metrics") -> dict[str, float]:
        """Parsed public /metrics samples: ``name{labels}`` -> value (``path="/api/metrics"``:
        the operator's per-room series)."""
        req = urllib.request.Request(self.url + path,
                                     headers={"Authorization": f"Bearer {self.admin_token}"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            text = resp.read().decode()
        out: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                key, _, value = line.rpartition(" ")
                out[key] = float(value)
        return out

    def wait_for(self, predicate: Any, what: str, timeout: float = 60.0) -> None:
        """Poll ``predicate()`` until true (fail with the node's log otherwise)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if predicate():
                    return
            except (OSError, ValueError):
                pass
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {what}; node log:\n" +
                             "\n".join(self.lines[-60:]))

    def terminate(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait; returns the exit status."""
        if self.proc is None:
            return 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError("node did not stop on SIGTERM:\n" + self.log()) from None

    def kill(self) -> None:
        """SIGKILL the whole process group (the kill -9 test, and cleanup)."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


def start_host(data_dir: Path, inviter: NodeProcess, room: str, bootstrap: NodeProcess,
               config: str = LOOPBACK_CONFIG) -> NodeProcess:
    """Start a node that hosts ``room`` with an admin invite from ``inviter``, bootstrapped to
    ``bootstrap``, and wait until it has been admitted as an admin."""
    token = inviter.post(f"/api/rooms/{room}/invites", {"role": "admin"})["token"]
    node = NodeProcess(data_dir, config=config,
                       args=["--no-default-room", "--bootstrap", bootstrap.url, "--join", token])
    node.start()
    try:
        node.wait_for(lambda: any(r["id"] == room and r["role"] == "admin"
                                  for r in node.get("/api/rooms")),
                      f"{data_dir.name} admitted as admin")
    except BaseException:
        node.kill()
        raise
    return node
