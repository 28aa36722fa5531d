"""Discovery never holds a node up: a taken libp2p port turns discovery off (saying why), a DHT
with no peers answers lookups at once, and ``meshnode room hosts`` gives up cleanly, with a
sentence, when the node does not answer in time."""

import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.nodeproc import LOOPBACK_CONFIG, NodeProcess

pytest.importorskip("libp2p", reason="discovery needs py-libp2p (pip install libp2p==0.8.1)")


def _hosts_cli(url: str, data_dir: Path, room: str, timeout: str = "2"
               ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "meshnode", "room", "hosts", room,
                           "--node", url, "--data-dir", str(data_dir), "--timeout", timeout],
                          capture_output=True, text=True, timeout=60)


def test_a_taken_libp2p_port_or_an_empty_dht_never_holds_the_node_up(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        busy = NodeProcess(tmp_path / "busy",
                           config=LOOPBACK_CONFIG + f"[discovery]\nport = {port}\n")
        alone = NodeProcess(tmp_path / "alone")  # discovery on, no bootstrap: an empty DHT
        try:
            busy.start()
            alone.start()
            state = busy.get("/api/status")["discovery"]["state"]
            assert state.startswith(f"discovery off: the libp2p host could not listen on "
                                    f"/ip4/127.0.0.1/tcp/{port}")
            assert "set [discovery] port = 0" in state and "discovery off" in busy.log()
            assert alone.get("/api/status")["discovery"]["state"] == "on"
            for node in (busy, alone):
                assert node.default_room is not None
                # Its own room: itself, live; a room nobody announces: nothing, no error.
                own = _hosts_cli(node.url, node.data_dir, node.default_room)
                assert own.returncode == 0, own.stderr
                assert [h["peer_id"] for h in json.loads(own.stdout)] == [node.peer_id]
                other = _hosts_cli(node.url, node.data_dir, os.urandom(32).hex())
                assert other.returncode == 0 and json.loads(other.stdout) == [], other.stderr
            assert busy.proc is not None and busy.proc.poll() is None  # still running
        finally:
            busy.kill()
            alone.kill()


@pytest.fixture
def silent_node() -> Iterator[str]:
    """A TCP server that accepts and reads, and never answers: a node stuck in a lookup."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    held: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            held.append(conn)

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}"
    finally:
        server.close()
        for conn in held:
            conn.close()


def test_room_hosts_gives_up_cleanly_when_the_node_does_not_answer(
        silent_node: str, tmp_path: Path) -> None:
    (tmp_path / "admin.token").write_text("x" * 43)
    room = os.urandom(32).hex()
    out = _hosts_cli(silent_node, tmp_path, room, timeout="0.5")
    assert out.returncode == 1 and out.stdout == ""
    assert out.stderr.startswith(f"meshnode: the node at {silent_node} did not answer within "
                                 f"10.5 s (looking up room {room[:16]}")
    assert "Traceback" not in out.stderr and len(out.stderr.splitlines()) == 1
    bad = _hosts_cli(silent_node, tmp_path, room, timeout="99")
    assert bad.returncode == 2 and "--timeout is 0.5 to 30 seconds" in bad.stderr
