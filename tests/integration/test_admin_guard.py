"""The admin API is the operator's and invite-only rooms give a stranger nothing over HTTP
(issue 9 items 1 and 2, HTTP limits of item 6): real ``meshnode up`` processes, real HTTP
requests, a real aiortc peer in the role of a browser, raw sockets for slow senders."""

import asyncio
import base64
import http.client
import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from meshnode.client import connect
from meshnode.identity import Identity, public_key_from_peer_id
from meshnode.signaling.signed_request import SIGNATURE_HEADER, sign_request
from meshnode.transport.ice import install_host_addresses
from meshnode.web.people import identify_payload
from protocol.change import signing_payload
from tests.integration.nodeproc import LOOPBACK_CONFIG, NodeProcess
from tests.integration.test_line import ICE

FOREIGN = "attacker.example"
NOT_HOSTED = '{"error": "no such room on this node"}'

GUARDED_CONFIG = LOOPBACK_CONFIG + """
[store]
snapshot_every = 1
"""
TIGHT_CONFIG = LOOPBACK_CONFIG + """
[http]
offers_per_s = 0.05
offer_burst = 3
header_timeout_s = 2
body_timeout_s = 2
"""


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[NodeProcess, str]]:
    """A node with an invite-only room (and a snapshot after every stored change)."""
    node = NodeProcess(tmp_path_factory.mktemp("guard") / "a", config=GUARDED_CONFIG).start()
    try:
        room = node.post("/api/rooms", {"name": "private lab", "admit": "invite",
                                        "private": False})["id"]
        yield node, room
    finally:
        node.kill()


def request(node: NodeProcess, method: str, path: str, *, body: bytes | None = None,
            headers: dict[str, str] | None = None, host: str | None = None,
            token: bool | str = True) -> tuple[int, dict[str, str], bytes]:
    """One HTTP request with full control of the headers (``host``: the Host header's
    host part; ``token``: send the node's admin token, another one, or none)."""
    parts = urlsplit(node.url)
    assert parts.hostname is not None and parts.port is not None
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=15)
    sent = {"Host": f"{host or parts.hostname}:{parts.port}", **(headers or {})}
    if token is True:
        sent["Authorization"] = f"Bearer {node.admin_token}"
    elif isinstance(token, str):
        sent["Authorization"] = f"Bearer {token}"
    try:
        conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        for k, v in sent.items():
            conn.putheader(k, v)
        if body is not None:
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


def refused(node: NodeProcess, reason: str) -> float:
    return node.metrics().get(f'meshnode_http_refused_total{{reason="{reason}"}}', 0.0)


JSON = {"Content-Type": "application/json"}


# ---------------------------------------------------------------------- item 2: admin API


def test_a_foreign_host_is_misdirected_everywhere(guarded: tuple[NodeProcess, str]) -> None:
    node, room = guarded
    rooms_before = len(node.get("/api/rooms"))
    asks = [("GET", "/api/status", None), ("GET", "/status", None), ("GET", "/api/rooms", None),
            ("POST", f"/api/rooms/{room}/invites", b'{"role": "admin", "ttl_s": 31536000}'),
            ("POST", "/api/rooms", b'{"name": "rebound"}'),
            ("GET", f"/api/rooms/{room}/genesis", None),
            ("POST", "/api/browser/offer", json.dumps({"room": room, "sdp": "v=0"}).encode())]
    for method, path, body in asks:
        status, _, answer = request(node, method, path, body=body, host=FOREIGN,
                                    headers=JSON if body else None)
        assert status == 421, (path, status, answer)
        reply = json.loads(answer)
        assert reply["reason"] == "misdirected_host" and FOREIGN in reply["error"]
        assert b"mninv1" not in answer
    assert refused(node, "misdirected_host") >= len(asks)
    assert len(node.get("/api/rooms")) == rooms_before
    # The node's own names still work: the Host check is not a lock-out.
    for host in ("127.0.0.1", "localhost"):
        assert request(node, "GET", "/api/status", host=host)[0] == 200
    assert "misdirected_host" in node.log()


def test_admin_routes_want_the_token(guarded: tuple[NodeProcess, str]) -> None:
    node, _ = guarded
    status, _, body = request(node, "GET", "/api/status", token=False)
    assert status == 401 and "admin.token" in json.loads(body)["error"]
    assert request(node, "GET", "/api/rooms", token="mnadm1-guessed")[0] == 403
    assert request(node, "GET", "/api/metrics", token=False)[0] == 401
    assert request(node, "POST", "/api/rooms/join", body=b'{"token": "x"}', headers=JSON,
                   token=False)[0] == 401
    assert request(node, "GET", "/api/status")[0] == 200
    assert refused(node, "admin_token_missing") >= 3
    assert refused(node, "admin_token_wrong") >= 1


def test_admin_posts_take_json_from_the_nodes_own_pages_only(
        guarded: tuple[NodeProcess, str]) -> None:
    node, _ = guarded
    before = len(node.get("/api/rooms"))
    # A page's form or fetch can send text/plain without a preflight: never accepted.
    status, _, body = request(node, "POST", "/api/rooms", body=b'{"name": "csrf"}',
                              headers={"Content-Type": "text/plain"})
    assert status == 415 and json.loads(body)["reason"] == "not_json"
    status, _, _ = request(node, "POST", "/api/rooms", body=b'{"name": "csrf"}',
                           headers={"Content-Type": "text/plain",
                                    "Origin": f"http://{FOREIGN}"}, token=False)
    assert status == 403
    # Even with the token, a foreign page's request is refused.
    status, _, body = request(node, "POST", "/api/rooms", body=b'{"name": "csrf"}',
                              headers={**JSON, "Origin": f"http://{FOREIGN}"})
    assert status == 403 and json.loads(body)["reason"] == "foreign_origin"
    assert len(node.get("/api/rooms")) == before
    # The node's own page is its own origin.
    status, _, _ = request(node, "GET", "/api/status", headers={"Origin": node.url})
    assert status == 200


async def test_websockets_refuse_foreign_origins(guarded: tuple[NodeProcess, str]) -> None:
    node, _ = guarded
    ws_url = "ws" + node.url[len("http"):] + "/signal/ws"
    async with aiohttp.ClientSession() as http_session:
        with pytest.raises(aiohttp.WSServerHandshakeError) as err:
            async with http_session.ws_connect(ws_url, origin=f"http://{FOREIGN}"):
                pass
        assert err.value.status == 403
        for origin in (node.url, None):  # the node's own page, and a program
            async with http_session.ws_connect(ws_url, origin=origin) as ws:
                await ws.send_str("not json")
                assert (await ws.receive_json(timeout=10))["type"] == "error"
    assert refused(node, "foreign_origin") >= 1


def test_rotating_the_token_takes_effect_without_a_restart(
        guarded: tuple[NodeProcess, str]) -> None:
    node, _ = guarded
    old = node.admin_token
    done = subprocess.run([sys.executable, "-m", "meshnode", "admin", "rotate-token",
                           "--data-dir", str(node.data_dir)],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    new = node.admin_token
    assert new != old
    assert (node.data_dir / "admin.token").stat().st_mode & 0o077 == 0
    assert request(node, "GET", "/api/status", token=old)[0] == 403
    assert request(node, "GET", "/api/status", token=new)[0] == 200


# ---------------------------------------------------------------------- browsers


class Browser:
    """An aiortc peer that speaks the web client's protocol, as a page would: a person with
    their own key, who proves it, presents the invite and signs what the node drafts."""

    def __init__(self, person: Identity | None = None) -> None:
        self.person = person or Identity.generate()
        self.invite: str | None = None
        install_host_addresses(("127.0.0.1",))
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.received: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.channel = self.pc.createDataChannel("client")
        self.channel.on("message", lambda text: self.received.put_nowait(json.loads(text)))

    async def offer(self, node: NodeProcess, room: str, *, invite: str | None = None,
                    operator: bool = False) -> int:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        body: dict[str, Any] = {"room": room, "sdp": self.pc.localDescription.sdp}
        if invite is not None:
            body["invite"] = invite
        self.invite = invite
        status, _, answer = await asyncio.to_thread(
            request, node, "POST", "/api/browser/offer", body=json.dumps(body).encode(),
            headers=JSON, token=operator)
        if status == 200:
            await self.pc.setRemoteDescription(
                RTCSessionDescription(json.loads(answer)["sdp"], "answer"))
        return status

    async def next_of(self, kind: str) -> dict[str, Any]:
        while True:
            m = await asyncio.wait_for(self.received.get(), 20.0)
            if m["t"] == kind:
                return m

    async def create(self) -> dict[str, Any]:
        welcome = await self.next_of("welcome")
        room_id = bytes.fromhex(welcome["room"])
        proof = self.person.sign(identify_payload(
            room_id, public_key_from_peer_id(welcome["node"]),
            base64.b64decode(welcome["challenge"])))
        hello: dict[str, Any] = {"t": "identify", "peer": self.person.public_id,
                                 "sig": base64.b64encode(proof).decode()}
        if self.invite is not None:
            hello["invite"] = self.invite
        self.channel.send(json.dumps(hello))
        await self.next_of("identified")
        self.channel.send(json.dumps({"t": "create", "req": 1, "parent": "root",
                                      "components": {"name": {"value": "from a page"}}}))
        while True:
            m = await asyncio.wait_for(self.received.get(), 20.0)
            if m["t"] == "ack":
                return m
            if m["t"] == "sign":
                sig = self.person.sign(signing_payload(room_id, base64.b64decode(m["body"])))
                self.channel.send(json.dumps({"t": "signed", "sreq": m["sreq"],
                                              "sig": base64.b64encode(sig).decode()}))


async def test_browser_rights_come_from_the_room_not_the_address(
        guarded: tuple[NodeProcess, str]) -> None:
    node, room = guarded
    # From loopback, with no invite and no token: the invite-only room does not exist.
    stranger = Browser()
    try:
        assert await stranger.offer(node, room) == 404
    finally:
        await stranger.pc.close()
    viewer = node.post(f"/api/rooms/{room}/invites", {"role": "viewer"})["token"]
    editor = node.post(f"/api/rooms/{room}/invites", {"role": "editor"})["token"]
    operator = Identity.generate()
    for how, expect_ok in (({"invite": viewer}, False), ({"invite": editor}, True),
                           ({"operator": True}, False)):
        # The operator's page sees the room, but edits only as the person it is: its key
        # holds no role until the operator grants it one.
        page = Browser(operator if "operator" in how else None)
        try:
            assert await page.offer(node, room, **how) == 200  # type: ignore[arg-type]
            ack = await page.create()
            assert ack["ok"] is expect_ok, (how, ack)
        finally:
            await page.pc.close()
    node.post(f"/api/rooms/{room}/members", {"peer": operator.public_id, "role": "admin"})
    page = Browser(operator)
    try:
        assert await page.offer(node, room, operator=True) == 200
        assert (await page.create())["ok"] is True
    finally:
        await page.pc.close()
    assert refused(node, "room_read_no_credentials") >= 1


# ---------------------------------------------------------------------- item 1: room reads


def signed(identity: Identity, node: NodeProcess, path: str,
           now_s: float | None = None) -> dict[str, str]:
    return sign_request(identity, "GET", path, urlsplit(node.url).netloc, now_s)


async def test_an_invite_only_room_gives_a_stranger_nothing(
        guarded: tuple[NodeProcess, str]) -> None:
    node, room = guarded
    parts = ("genesis", "heads", "snapshot")
    unknown = request(node, "GET", f"/api/rooms/{'ab' * 32}/genesis", token=False)
    assert unknown[0] == 404 and unknown[2].decode() == NOT_HOSTED
    viewer = node.post(f"/api/rooms/{room}/invites", {"role": "viewer"})["token"]
    member = Identity.generate()
    # The Python client reads the genesis with its invite, then the rest as a member.
    async with connect(node.url, room, member, ice=ICE, invite=viewer) as client:
        assert client.role() == "viewer"

    for part in parts:
        path = f"/api/rooms/{room}/{part}"
        # A stranger, and a stranger who signs: the answer of a room that is not here.
        for headers in ({}, signed(Identity.generate(), node, path)):
            status, _, body = request(node, "GET", path, headers=headers, token=False)
            assert (status, body.decode()) == (404, NOT_HOSTED), (part, headers)
        # The operator.
        assert request(node, "GET", path)[0] == 200, part
        # A member, once per signature.
        headers = signed(member, node, path)
        assert request(node, "GET", path, headers=headers, token=False)[0] == 200, part
        assert request(node, "GET", path, headers=headers, token=False)[0] == 404  # replayed
    heads = json.loads(request(node, "GET", f"/api/rooms/{room}/heads")[2])
    assert heads["admit"] == "invite" and heads["vv"]

    path = f"/api/rooms/{room}/heads"
    stale = signed(member, node, path, now_s=time.time() - 600)
    assert request(node, "GET", path, headers=stale, token=False)[0] == 404
    elsewhere = sign_request(member, "GET", path, "other-node.example:8470")
    assert request(node, "GET", path, headers=elsewhere, token=False)[0] == 404
    garbled = {SIGNATURE_HEADER: "peer=12D3KooWnope, ts=1, sig=AAAA"}
    assert request(node, "GET", path, headers=garbled, token=False)[0] == 404

    # An invite opens the genesis (what redeeming it needs) and nothing else.
    with_invite = {"Meshnode-Invite": viewer}
    status, _, genesis = request(node, "GET", f"/api/rooms/{room}/genesis",
                                 headers=with_invite, token=False)
    assert status == 200 and genesis == request(node, "GET", f"/api/rooms/{room}/genesis")[2]
    for part in ("heads", "snapshot"):
        assert request(node, "GET", f"/api/rooms/{room}/{part}", headers=with_invite,
                       token=False)[0] == 404
    bad = {"Meshnode-Invite": viewer[:-4] + "1111"}
    assert request(node, "GET", f"/api/rooms/{room}/genesis", headers=bad, token=False)[0] \
        == 404

    for reason in ("room_read_no_credentials", "room_read_not_member", "signature_replayed",
                   "signature_stale", "signature_invalid", "room_read_invite_genesis_only",
                   "room_read_bad_invite"):
        assert refused(node, reason) >= 1, reason
    # Without the invite a client cannot even start.
    with pytest.raises(Exception, match="does not host room"):
        async with connect(node.url, room, Identity.generate(), ice=ICE, timeout_s=5):
            pass


def test_public_metrics_name_no_room(guarded: tuple[NodeProcess, str]) -> None:
    node, room = guarded
    public = node.metrics()
    assert public and not [k for k in public if "room=" in k]
    per_room = node.metrics("/api/metrics")
    assert any(f'room="{room[:16]}"' in k for k in per_room)


# ---------------------------------------------------------------------- item 6: HTTP limits


@pytest.fixture(scope="module")
def tight(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    """A node with small offer buckets and 2 s header and body timeouts."""
    node = NodeProcess(tmp_path_factory.mktemp("tight") / "t", config=TIGHT_CONFIG).start()
    try:
        yield node
    finally:
        node.kill()


async def test_offers_draw_from_one_bucket_per_address(tight: NodeProcess) -> None:
    room = tight.default_room
    assert room is not None
    offer = json.dumps({"sdp": "v=0 broken"}).encode()
    for _ in range(3):  # the burst: each costs a token even though the SDP is refused
        assert request(tight, "POST", "/signal/offer", body=offer, headers=JSON,
                       token=False)[0] == 400
    status, headers, body = request(tight, "POST", "/signal/offer", body=offer, headers=JSON,
                                    token=False)
    assert status == 429 and int(headers["Retry-After"]) >= 1
    assert json.loads(body)["reason"] == "rate_limited"
    # A new WebSocket per offer draws from the same bucket...
    ws_url = "ws" + tight.url[len("http"):] + "/signal/ws"
    async with aiohttp.ClientSession() as http_session, http_session.ws_connect(ws_url) as ws:
        await ws.send_str(json.dumps({"type": "offer", "sdp": "v=0 broken"}))
        reply = await ws.receive_json(timeout=10)
        assert reply["type"] == "error" and reply["retry_after"] > 0
    # ... and so does a browser's offer.
    status, _, _ = request(tight, "POST", "/api/browser/offer",
                           body=json.dumps({"room": room, "sdp": "v=0"}).encode(),
                           headers=JSON, token=False)
    assert status == 429
    assert refused(tight, "rate_limited") >= 3


def test_half_sent_headers_are_closed_and_real_requests_still_served(
        tight: NodeProcess) -> None:
    parts = urlsplit(tight.url)
    address = (parts.hostname, parts.port)
    slow = []
    try:
        for _ in range(200):
            s = socket.create_connection(address, timeout=10)
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
            slow.append(s)
        # A real request meanwhile.
        assert request(tight, "GET", "/healthz", token=False)[0] == 200
        # A body that never finishes is cut off too, with an answer.
        body_sock = socket.create_connection(address, timeout=30)
        body_sock.sendall(b"POST /api/rooms HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                          b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{")
        slow.append(body_sock)
        # Generous bound: the node's timeouts are 2 s; aiohttp's own default is 75 s.
        deadline = time.monotonic() + 40
        open_ones = list(slow)
        answered = b""
        while open_ones and time.monotonic() < deadline:
            for s in list(open_ones):
                s.settimeout(0.05)
                try:
                    data = s.recv(4096)
                except TimeoutError:
                    continue
                except OSError:
                    data = b""
                if s is body_sock:
                    answered += data
                if not data:
                    open_ones.remove(s)
        assert not open_ones, f"{len(open_ones)} of {len(slow)} slow connections still open"
        assert answered.startswith(b"HTTP/1.1 408")
        assert request(tight, "GET", "/healthz", token=False)[0] == 200
        assert refused(tight, "body_timeout") >= 1
    finally:
        for s in slow:
            s.close()
