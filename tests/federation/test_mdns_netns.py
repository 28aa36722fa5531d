"""LAN discovery for real: two ``meshnode up`` processes in two network namespaces joined by
a veth pair, no bootstrap and no DHT, find each other by mDNS, link, and sync a room once one
invites the other.

Needs root (``ip netns``). Without root it is skipped, unless ``MESHNODE_REQUIRE_NETNS=1``
(CI runs as root and sets it): then it fails, so that it can never be skipped silently.
"""

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from meshnode.identity import Identity
from tests.integration.nodeproc import NodeProcess

PORT = 8470  # each namespace has its own ports
ADDRS = ("10.77.0.1", "10.77.0.2")
CONFIG = """
[network]
host_addresses = ["{addr}"]

[discovery]
enabled = false
mdns = true

[log]
level = "info"
"""


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=20)


def _namespaces() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                         timeout=20).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def _unavailable(why: str) -> None:
    if os.environ.get("MESHNODE_REQUIRE_NETNS") == "1":
        pytest.fail(f"network namespaces are required (MESHNODE_REQUIRE_NETNS=1): {why}")
    pytest.skip(f"needs network namespaces: {why}")


@pytest.fixture
def netns_pair() -> Iterator[tuple[str, str]]:
    """Two namespaces, ``10.77.0.1/24`` and ``10.77.0.2/24`` on the two ends of one veth
    pair; deleted afterwards (with every process left in them), even on failure."""
    if os.geteuid() != 0:
        _unavailable("not root")
    tag = f"{os.getpid() % 100000}"
    names = (f"mn{tag}a", f"mn{tag}b")
    made: list[str] = []
    try:
        for ns in names:
            _ip("netns", "add", ns)
            made.append(ns)
        _ip("link", "add", f"mnv{tag}a", "type", "veth", "peer", "name", f"mnv{tag}b")
        for ns, end, addr in zip(names, "ab", ADDRS, strict=True):
            dev = f"mnv{tag}{end}"
            _ip("link", "set", dev, "netns", ns)
            _ip("-n", ns, "addr", "add", f"{addr}/24", "dev", dev)
            _ip("-n", ns, "link", "set", dev, "up")
            _ip("-n", ns, "link", "set", "lo", "up")
    except (subprocess.CalledProcessError, FileNotFoundError) as err:
        _cleanup(made)
        detail = getattr(err, "stderr", "") or str(err)
        _unavailable(f"ip netns/veth set-up failed: {detail.strip()}")
    try:
        yield names
    finally:
        _cleanup(made)
        assert not set(made) & _namespaces(), "a network namespace was left behind"


def _cleanup(names: list[str]) -> None:
    for ns in names:
        pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True,
                              timeout=20).stdout.split()
        for pid in pids:
            subprocess.run(["kill", "-9", pid], capture_output=True, timeout=20)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=20)


_API = f"""
import json, sys, urllib.request
method, path, body, token = sys.argv[1:5]
req = urllib.request.Request("http://127.0.0.1:{PORT}" + path, method=method,
                             data=body.encode() if body else None,
                             headers={{"Authorization": "Bearer " + token,
                                       "Content-Type": "application/json"}})
print(urllib.request.urlopen(req, timeout=10).read().decode())
"""


class LanNode:
    """A node inside a namespace, reached through its admin API from inside it."""

    def __init__(self, tmp: Path, name: str, ns: str, addr: str, extra_config: str = "",
                 identity: Identity | None = None) -> None:
        self.ns = ns
        self.proc = NodeProcess(
            tmp / name, config=CONFIG.format(addr=addr) + extra_config,
            prefix=["ip", "netns", "exec", ns],
            args=["--listen", f"0.0.0.0:{PORT}", "--public-url", f"http://{addr}:{PORT}"])
        if identity is not None:
            identity.save(self.proc.data_dir / "identity.key")

    def api(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        out = subprocess.run(
            ["ip", "netns", "exec", self.ns, sys.executable, "-c", _API, method, path,
             json.dumps(body) if body is not None else "", self.proc.admin_token],
            capture_output=True, text=True, timeout=30)
        if out.returncode != 0:
            raise OSError(out.stderr.strip().splitlines()[-1] if out.stderr else "failed")
        return json.loads(out.stdout)

    def text(self, path: str) -> str:
        out = subprocess.run(
            ["ip", "netns", "exec", self.ns, sys.executable, "-c",
             _API, "GET", path, "", self.proc.admin_token],
            capture_output=True, text=True, timeout=30, check=True)
        return out.stdout

    def peers(self) -> set[str]:
        return {p["peer"] for p in self.api("GET", "/api/peers")}

    def room(self, room: str) -> dict[str, Any] | None:
        return next((r for r in self.api("GET", "/api/rooms") if r["id"] == room), None)


def test_two_lan_nodes_find_each_other_by_mdns_and_sync_a_room(
        netns_pair: tuple[str, str], tmp_path: Path) -> None:
    a = LanNode(tmp_path, "a", netns_pair[0], ADDRS[0])
    b = LanNode(tmp_path, "b", netns_pair[1], ADDRS[1])
    try:
        a.proc.start()
        b.proc.start()
        A, B = a.proc.peer_id, b.proc.peer_id
        for n in (a, b):
            assert "mDNS on: announcing" in n.proc.log()
            assert "--bootstrap" not in " ".join(n.proc.args)
        # Nothing told either node of the other: only mDNS can link them.
        a.proc.wait_for(lambda: B in a.peers() and A in b.peers(), "an mDNS-found link")
        assert f"mDNS: found node {B} at http://{ADDRS[1]}:{PORT}" in a.proc.log()
        assert f"mDNS: found node {A} at http://{ADDRS[0]}:{PORT}" in b.proc.log()
        metrics = a.text("/metrics") + b.text("/metrics")
        assert 'meshnode_mdns_dials_total{result="ok"}' in metrics
        # The LAN link carries the room once A invites B. (B presents the invite by dialling
        # A again: a hello within 1 s of the first link's is taken for a simultaneous dial and
        # refused as a duplicate, so the invite must not come sooner; a test-speed artefact.)
        time.sleep(1.5)
        room = a.api("POST", "/api/rooms", {"name": "village", "admit": "invite",
                                            "private": False})["id"]
        token = a.api("POST", f"/api/rooms/{room}/invites", {"role": "editor"})["token"]
        b.api("POST", "/api/rooms/join", {"token": token})

        def synced() -> bool:
            ra, rb = a.room(room), b.room(room)
            return (ra is not None and rb is not None and rb["role"] == "editor"
                    and ra["changes"] == rb["changes"] and A in rb["peers"])
        b.proc.wait_for(synced, "the room synced between A and B")
        hosts = next(r["hosts"] for r in b.api("GET", "/api/status")["federation"]["rooms"]
                     if r["room"] == room)
        assert hosts == [A]
    finally:
        a.proc.kill()
        b.proc.kill()


def _metric(text: str, sample: str) -> float:
    for line in text.splitlines():
        if line.startswith(sample + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_a_denied_node_found_by_mdns_is_never_dialled(
        netns_pair: tuple[str, str], tmp_path: Path) -> None:
    idb = Identity.generate()
    B = idb.public_id
    a = LanNode(tmp_path, "a", netns_pair[0], ADDRS[0],
                extra_config=f'[federation]\ndeny = ["{B}"]\n')
    b = LanNode(tmp_path, "b", netns_pair[1], ADDRS[1], identity=idb)
    try:
        a.proc.start()
        b.proc.start()
        A = a.proc.peer_id
        # A hears B's announcement and drops it (the policy, before the table); B, which
        # denies no one, dials A, and A refuses B's offer before answering it.
        a.proc.wait_for(lambda: _metric(a.text("/metrics"),
                                        'meshnode_mdns_rejected_total{reason="denied"}') >= 1,
                        "A to find B by mDNS and ignore it")
        b.proc.wait_for(lambda: _metric(b.text("/metrics"),
                                        'meshnode_mdns_dials_total{result="failed"}') >= 1,
                        "B's dial to A to be refused")
        assert f"mDNS: ignored '{B}._meshnode._tcp.local.': denied" in a.proc.log()
        assert f"federation: refused a link with {B} (denied" in a.proc.log()
        a_metrics = a.text("/metrics")
        assert _metric(a_metrics, 'meshnode_mdns_dials_total{result="ok"}') == 0
        assert _metric(a_metrics, 'meshnode_mdns_dials_total{result="failed"}') == 0
        assert "mDNS: found node" not in a.proc.log()  # never in A's table: never dialled
        assert B not in a.peers() and A not in b.peers()
        for n, other in ((a, B), (b, A)):
            assert f"link up with {other}" not in n.proc.log()
    finally:
        a.proc.kill()
        b.proc.kill()
