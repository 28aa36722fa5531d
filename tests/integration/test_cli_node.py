"""The ``meshnode`` command line against real node processes: ``room create|list|invite|join``,
``status``, ``peers``, a node that is not there, ``up`` with a bad configuration, ``keygen``."""

import json
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from meshnode.identity import Identity
from meshnode.rooms.invite import PREFIX, parse_invite
from tests.integration.nodeproc import NodeProcess


def meshnode(*args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    """Run the CLI as a user would."""
    return subprocess.run([sys.executable, "-m", "meshnode", *args], capture_output=True,
                          text=True, timeout=timeout)


def at(node: NodeProcess) -> list[str]:
    """The flags that point the CLI at ``node``: its URL and its data dir (the admin token)."""
    return ["--node", node.url, "--data-dir", str(node.data_dir)]


def ok(*args: str) -> str:
    done = meshnode(*args)
    assert done.returncode == 0, f"meshnode {' '.join(args)} failed:\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[NodeProcess, NodeProcess]]:
    base = tmp_path_factory.mktemp("cli")
    a = NodeProcess(base / "a")
    b = NodeProcess(base / "b", args=["--no-default-room"])
    try:
        a.start()
        b.start()
        yield a, b
    finally:
        a.kill()
        b.kill()


def test_status(nodes: tuple[NodeProcess, NodeProcess]) -> None:
    a, _ = nodes
    status = json.loads(ok("status", *at(a)))
    assert status["peer_id"] == a.peer_id and status["peer_id"].startswith("12D3KooW")
    assert status["url"] == a.url
    assert [r["id"] for r in status["rooms"]] == [a.default_room]


def test_room_create_list_invite(nodes: tuple[NodeProcess, NodeProcess]) -> None:
    a, _ = nodes
    room = json.loads(ok("room", "create", "design review", *at(a)))
    rid = room["id"]
    assert len(rid) == 64 and bytes.fromhex(rid)
    assert room["name"] == "design review" and room["role"] == "owner"
    assert room["private"] and room["this_node"] == "reader"  # the default for invite rooms

    listed = ok("room", "list", *at(a)).splitlines()
    ids = {line.split()[0] for line in listed}
    assert {a.default_room, rid} <= ids
    assert any("'design review'" in line and "role=owner" in line for line in listed)

    token = ok("room", "invite", rid, "--role", "viewer", *at(a)).strip()
    assert token.startswith(PREFIX) and len(token.splitlines()) == 1
    invite = parse_invite(token)
    assert invite.role == "viewer"
    assert invite.room_id.hex() == rid
    assert invite.verify(int(time.time() * 1000)) is None
    assert a.url in invite.urls

    short = parse_invite(ok("room", "invite", rid, "--ttl", "60", *at(a)).strip())
    assert short.role == "editor"
    assert short.expires_ms <= int((time.time() + 120) * 1000)


def test_invite_for_an_unknown_room_fails(nodes: tuple[NodeProcess, NodeProcess]) -> None:
    a, _ = nodes
    done = meshnode("room", "invite", "00" * 32, *at(a))
    assert done.returncode != 0
    assert "404" in done.stderr and "Traceback" not in done.stderr


def test_join_a_bad_token_fails(nodes: tuple[NodeProcess, NodeProcess]) -> None:
    _, b = nodes
    done = meshnode("room", "join", "mninv1notatoken0", *at(b))
    assert done.returncode != 0
    assert "400" in done.stderr and "invite" in done.stderr
    assert "Traceback" not in done.stderr


def test_peers_then_join_makes_the_second_node_host_the_room(
        nodes: tuple[NodeProcess, NodeProcess]) -> None:
    a, b = nodes
    assert ok("peers", *at(b)) == ""
    assert ok("room", "list", *at(b)) == ""
    assert json.loads(ok("status", *at(b)))["rooms"] == []

    # --public: a private room's name is sealed, so B could not show it before its keys.
    rid = json.loads(ok("room", "create", "shared lab", "--public", *at(a)))["id"]
    token = ok("room", "invite", rid, "--role", "editor", *at(a)).strip()
    joined = json.loads(ok("room", "join", token, *at(b)))
    assert joined["id"] == rid and joined["name"] == "shared lab"

    assert [line.split()[0] for line in ok("room", "list", *at(b)).splitlines()] == [rid]
    assert rid in {r["id"] for r in b.get("/api/rooms")}
    # joining again is harmless
    assert json.loads(ok("room", "join", token, *at(b)))["id"] == rid
    assert len(b.get("/api/rooms")) == 1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


@pytest.mark.parametrize("command", [["status"], ["peers"], ["room", "list"],
                                     ["room", "create", "x"]])
def test_no_node_listening(command: list[str]) -> None:
    url = f"http://127.0.0.1:{_free_port()}"
    done = meshnode(*command, "--node", url)
    assert done.returncode != 0
    assert f"no node answers at {url}" in done.stderr
    assert "meshnode up" in done.stderr and "--node" in done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""


@pytest.mark.parametrize(("toml", "named"), [
    ("[rooms]\nadmit = 'sometimes'\n", "rooms.admit"),
    ("[network]\nmax_links = 0\n", "network.max_links"),
    ("[network]\nmax_peers = 3\n", "max_peers"),
    ("[node]\nlisten = 'localhost'\n", "node.listen"),
    ("[node\n", "not valid TOML"),
])
def test_up_with_a_bad_config_exits_2(tmp_path: Path, toml: str, named: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(toml, encoding="utf-8")
    done = meshnode("up", "--config", str(path), "--data-dir", str(tmp_path / "data"),
                    "--listen", "127.0.0.1:0")
    assert done.returncode == 2, done.stderr
    assert named in done.stderr and done.stderr.startswith("meshnode up: ")
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "data").exists()


def test_up_with_a_missing_config_or_bad_listen_exits_2(tmp_path: Path) -> None:
    done = meshnode("up", "--config", str(tmp_path / "nope.toml"))
    assert done.returncode == 2 and "does not exist" in done.stderr
    done = meshnode("up", "--listen", "127.0.0.1:http", "--data-dir", str(tmp_path / "d"))
    assert done.returncode == 2 and "listen must be HOST:PORT" in done.stderr


def test_keygen(tmp_path: Path) -> None:
    out = tmp_path / "keys" / "node.key"
    done = meshnode("keygen", "--out", str(out))
    assert done.returncode == 0, done.stderr
    peer_id = done.stdout.strip()
    assert peer_id.startswith("12D3KooW")
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert Identity.load(out).public_id == peer_id
    again = meshnode("keygen", "--out", str(out))
    assert again.returncode == 1 and "--force" in again.stderr
    assert Identity.load(out).public_id == peer_id
