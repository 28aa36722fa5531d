"""Three real ``meshnode up`` processes find a room's hosts through the DHT (issue 11).

A founds a room; B hosts it (A's invite, bootstrapped to A); C, bootstrapped only to B,
finds A through the DHT (``meshnode room hosts``) and links to A when it joins with B's
invite. C never hears of A's URL from anyone but the DHT and the room.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.nodeproc import NodeProcess, start_host

pytest.importorskip("libp2p", reason="discovery needs py-libp2p (pip install libp2p==0.8.1)")


def room_hosts(node: NodeProcess, room: str) -> list[dict[str, object]]:
    """``meshnode room hosts ROOM`` against ``node``, as the operator would run it."""
    out = subprocess.run([sys.executable, "-m", "meshnode", "room", "hosts", room,
                          "--node", node.url, "--data-dir", str(node.data_dir),
                          "--timeout", "3"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    hosts = json.loads(out.stdout)
    assert isinstance(hosts, list)
    return hosts


def test_joiner_finds_and_links_to_a_host_only_the_dht_names(tmp_path: Path) -> None:
    a = NodeProcess(tmp_path / "a", args=["--no-default-room"]).start()
    nodes = [a]
    try:
        assert a.get("/api/status")["discovery"]["state"] == "on"
        room = a.post("/api/rooms", {"name": "dht", "admit": "invite", "private": False})["id"]
        b = start_host(tmp_path / "b", a, room, bootstrap=a)
        nodes.append(b)
        c = NodeProcess(tmp_path / "c", args=["--no-default-room", "--bootstrap", b.url])
        nodes.append(c.start())
        # C hosts nothing and knows only B: A can come from the DHT alone.
        assert a.url not in c.log()

        found: list[dict[str, object]] = []

        def finds_a() -> bool:
            found[:] = room_hosts(c, room)
            return a.peer_id in {h["peer_id"] for h in found}

        c.wait_for(finds_a, "C to find A through the DHT", timeout=90)
        by_peer = {h["peer_id"]: h for h in found}
        assert by_peer[a.peer_id]["urls"] == [a.url] and by_peer[a.peer_id]["live"] is True
        assert b.peer_id in by_peer  # both hosts, each once
        assert len(found) == len(by_peer)

        token = b.post(f"/api/rooms/{room}/invites", {"role": "editor"})["token"]
        c.post("/api/rooms/join", {"token": token})
        c.wait_for(lambda: a.peer_id in {p["peer"] for p in c.get("/api/peers")},
                   "C to link to A", timeout=90)
        c.wait_for(lambda: any(r["id"] == room and r["role"] == "editor"
                               for r in c.get("/api/rooms")), "C admitted", timeout=60)
        assert "dialling" in c.log() and "found in the DHT" in c.log()
    finally:
        for n in reversed(nodes):
            n.kill()


def test_without_libp2p_the_node_runs_and_says_discovery_is_off(tmp_path: Path) -> None:
    # A `libp2p` that fails to import, first on the path: as if it were not installed.
    shadow = tmp_path / "shadow"
    shadow.mkdir()
    (shadow / "libp2p.py").write_text("raise ImportError('No module named libp2p')\n")
    path = os.pathsep.join([str(shadow), os.environ.get("PYTHONPATH", "")])
    node = NodeProcess(tmp_path / "n").start(env={"PYTHONPATH": path})
    try:
        state = node.get("/api/status")["discovery"]["state"]
        assert state.startswith("discovery off: py-libp2p is not installed")
        assert "pip install libp2p==0.8.1" in state and "discovery off" in node.log()
        hosts = room_hosts(node, node.default_room or "")
        assert [h["peer_id"] for h in hosts] == [node.peer_id]  # still knows itself
    finally:
        node.kill()
