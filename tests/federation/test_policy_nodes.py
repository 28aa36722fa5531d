"""The federation policy across real ``meshnode up`` processes: a node never links to a node
its ``[federation]`` section refuses, by any way a link gets made, while the room still
reaches it through the nodes it does federate with, and its clients are unaffected."""

import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from meshnode.client import connect
from meshnode.identity import Identity
from tests.integration.nodeproc import LOOPBACK_CONFIG, NodeProcess
from tests.integration.test_line import ICE


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _policy(*, deny: tuple[str, ...] = (), allow: tuple[str, ...] | None = None) -> str:
    lines = ["[federation]", f"deny = {list(deny)!r}".replace("'", '"')]
    if allow is not None:
        lines.append(f"allow = {list(allow)!r}".replace("'", '"'))
    return LOOPBACK_CONFIG + "\n".join(lines) + "\n"


class _Mesh:
    """Nodes of one test, all killed at the end."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.nodes: list[NodeProcess] = []

    def node(self, name: str, identity: Identity, port: int, args: list[str],
             config: str = LOOPBACK_CONFIG) -> NodeProcess:
        n = NodeProcess(self.tmp / name, config=config,
                        args=["--listen", f"127.0.0.1:{port}", *args])
        identity.save(n.data_dir / "identity.key")  # PeerIDs known before anyone starts
        self.nodes.append(n)
        return n

    def kill(self) -> None:
        for n in self.nodes:
            n.kill()


@pytest.fixture
def mesh(tmp_path: Path) -> Iterator[_Mesh]:
    m = _Mesh(tmp_path)
    try:
        yield m
    finally:
        m.kill()


def _peers(n: NodeProcess) -> set[str]:
    return {p["peer"] for p in n.get("/api/peers")}


def _role(n: NodeProcess, room: str) -> str:
    return next((r["role"] for r in n.get("/api/rooms") if r["id"] == room), "none")


def _refusals(n: NodeProcess, peer: str, way: str) -> int:
    return n.log().count(f"federation: refused a link with {peer} ({way}")


def test_deny_holds_for_bootstrap_both_ways_and_overlay_relay(mesh: _Mesh) -> None:
    ida, idb = Identity.generate(), Identity.generate()
    A, B = ida.public_id, idb.public_id
    pa, pb = _free_port(), _free_port()
    c = mesh.node("c", Identity.generate(), _free_port(), []).start()
    room = c.post("/api/rooms", {"name": "shared", "admit": "invite", "private": False})["id"]
    invite = {"role": "admin"}
    a = mesh.node("a", ida, pa, [
        "--no-default-room", "--bootstrap", c.url, "--bootstrap", f"http://127.0.0.1:{pb}",
        "--join", c.post(f"/api/rooms/{room}/invites", invite)["token"]],
        config=_policy(deny=(B,)))
    b = mesh.node("b", idb, pb, [
        "--no-default-room", "--bootstrap", c.url, "--bootstrap", f"http://127.0.0.1:{pa}",
        "--join", c.post(f"/api/rooms/{room}/invites", invite)["token"]])
    a.start()
    b.start()
    for n in (a, b):
        n.wait_for(lambda n=n: _role(n, room) == "admin", f"{n.data_dir.name} admitted")

    def no_link() -> None:
        # A never counts a link with B. B (no policy) counts the one link A dialled at start
        # for the moment between the hellos (A sends its hello before it has read B's) and
        # A closing it; A never dials B again.
        assert B not in _peers(a) and f"link up with {B}" not in a.log()
        assert b.log().count(f"link up with {A}") <= 1

    # A's bootstrap dial to B: B answers, its hello names it, A closes the link.
    a.wait_for(lambda: _refusals(a, B, "denied; hello of a link we offered") >= 1,
               "A refusing its own bootstrap link to B")
    # B's bootstrap dials to A name B in the offer: refused before A answers, every 5 s.
    a.wait_for(lambda: _refusals(a, B, "denied; HTTP offer, before answering") >= 2,
               "A refusing B's offers over HTTP (twice)")
    b.wait_for(lambda: A not in _peers(b), "B's end of A's refused link closed")
    no_link()
    # The room's overlay learns of B through C and asks for a relayed link (A's side, or B's
    # offer relayed by C): refused before any offer is answered.
    a.wait_for(lambda: (_refusals(a, B, "denied; relayed dial asked by a room")
                        + _refusals(a, B, "denied; relayed offer, before answering")) >= 1,
               "A refusing a relayed link with B")
    # Refused once, A's bootstrap to B is not dialled again (B's offers kept coming meanwhile).
    assert _refusals(a, B, "denied; hello of a link we offered") == 1
    assert "its node is refused by the federation policy (denied); not dialling" in a.log()
    no_link()
    # The room still reaches both through C: C's grants of A and B are on every replica.
    def counts() -> set[int]:
        return {next(r["changes"] for r in n.get("/api/rooms") if r["id"] == room)
                for n in (a, b, c)}
    a.wait_for(lambda: len(counts()) == 1, "the room converging on A, B and C")
    status = a.get("/api/status")["federation"]
    assert status["policy"]["deny"] == [B]
    assert status["rooms"] == [{"room": room, "name": "shared", "hosts": [c.peer_id]}]
    assert any(r["peer"] == B and r["reason"] == "denied" for r in status["refused"])
    assert a.metrics()['meshnode_federation_refused_total{reason="denied"}'] >= 4
    out = subprocess.run([sys.executable, "-m", "meshnode", "peers", "--node", a.url,
                          "--data-dir", str(a.data_dir)], capture_output=True, text=True,
                         timeout=30, check=True).stdout
    assert f"shared: {c.peer_id}" in out and f"federation policy: deny {B}" in out
    assert f"refused {B}: denied" in out
    no_link()


async def test_allow_list_federates_with_the_listed_nodes_only(mesh: _Mesh) -> None:
    ida, idb, idc = Identity.generate(), Identity.generate(), Identity.generate()
    A, B = ida.public_id, idb.public_id
    pa, pb = _free_port(), _free_port()
    c = mesh.node("c", idc, _free_port(), []).start()
    a = mesh.node("a", ida, pa, ["--bootstrap", c.url, "--bootstrap", f"http://127.0.0.1:{pb}"],
                  config=_policy(allow=(idc.public_id,)))
    b = mesh.node("b", idb, pb, ["--bootstrap", f"http://127.0.0.1:{pa}"])
    a.start()
    b.start()
    a.wait_for(lambda: c.peer_id in _peers(a), "A linked to C (allowed)")
    a.wait_for(lambda: _refusals(a, B, "not_allowed; hello of a link we offered") >= 1,
               "A refusing its bootstrap link to B")
    # B's offer does not say it is a node; its hello does, and A closes the link then.
    a.wait_for(lambda: _refusals(a, B, "not_allowed; hello of a link we answered") >= 1,
               "A refusing B's link once its hello names it")
    assert B not in _peers(a) and f"link up with {B}" not in a.log()
    # B counts each of its links for the moment between the hellos; A closes every one.
    b.wait_for(lambda: A not in _peers(b), "B's ends of the refused links closed")
    # A's clients are people, not operators: the allow-list does not bind them.
    assert a.default_room is not None
    async with connect(a.url, a.default_room, Identity.generate(), ice=ICE) as client:
        assert client.role() == "editor"
    assert a.get("/api/status")["federation"]["policy"]["allow"] == [c.peer_id]


def _room_hosts(n: NodeProcess, room: str) -> list[str]:
    out = subprocess.run([sys.executable, "-m", "meshnode", "room", "hosts", room, "--node",
                          n.url, "--data-dir", str(n.data_dir), "--timeout", "3"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return [h["peer_id"] for h in json.loads(out.stdout)]


def test_deny_holds_when_the_dht_names_the_denied_host(mesh: _Mesh) -> None:
    """B hosts the room and is a provider of it in the DHT; A (deny = [B]) finds B there,
    before and after it joins: B is never listed by A, never checked, never dialled, and no
    link between them ever comes up (the room reaches both through C)."""
    pytest.importorskip("libp2p", reason="the DHT needs py-libp2p")
    idb = Identity.generate()
    B = idb.public_id
    c = mesh.node("c", Identity.generate(), _free_port(), []).start()
    room = c.post("/api/rooms", {"name": "dht", "admit": "invite", "private": False})["id"]
    b = mesh.node("b", idb, _free_port(), [
        "--no-default-room", "--bootstrap", c.url,
        "--join", c.post(f"/api/rooms/{room}/invites", {"role": "admin"})["token"]]).start()
    b.wait_for(lambda: _role(b, room) == "admin", "B admitted")
    # B's provider record and card are in the DHT: C's lookup lists it.
    c.wait_for(lambda: B in _room_hosts(c, room), "C to find B through the DHT", 90)
    a = mesh.node("a", Identity.generate(), _free_port(),
                  ["--no-default-room", "--bootstrap", c.url], config=_policy(deny=(B,)))
    a.start()
    A = a.peer_id

    def denied_in_a_lookup() -> bool:
        hosts = _room_hosts(a, room)
        assert B not in hosts  # filtered, never "marked": A would never link to it anyway
        return a.metrics().get(
            'meshnode_discovery_rejected_total{reason="denied"}', 0) >= 1
    a.wait_for(denied_in_a_lookup, "A's DHT lookup to name B (and skip it)", 90)
    assert f"discovery ignored input: denied: {B}" in a.log()
    # A joins: its join rounds look the room up again and dial the hosts found, never B.
    a.post("/api/rooms/join", {"token": c.post(f"/api/rooms/{room}/invites",
                                               {"role": "editor"})["token"]})
    a.wait_for(lambda: _role(a, room) == "editor", "A admitted")

    def counts() -> set[int]:
        return {next(r["changes"] for r in n.get("/api/rooms") if r["id"] == room)
                for n in (a, b, c)}
    a.wait_for(lambda: len(counts()) == 1, "the room converging on A, B and C")
    assert B not in _room_hosts(a, room)
    for n, other in ((a, B), (b, A)):
        assert other not in _peers(n) and f"link up with {other}" not in n.log()
        hosts = next(r["hosts"] for r in n.get("/api/status")["federation"]["rooms"]
                     if r["room"] == room)
        assert hosts == [c.peer_id]
    assert f"dialling 1 host(s) found in the DHT ({B}" not in a.log()
