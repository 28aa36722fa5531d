"""Hostile DHT peers against real ``meshnode up`` processes (issue 11, "Bad input").

- A *stranger* (an in-process libp2p host) who knows a room's ID announces itself as the
  room's host: a provider record, a validly signed card of its own, and an HTTP endpoint that
  answers ``/healthz`` with its PeerID, so it passes every liveness check. It holds no role
  in the room. The founder's node never lists it; a joiner never dials it (it would see the
  joiner's invite in the hello) and, once admitted, never lists it either.
- A *hostile DHT peer* answers every query with garbage (undecodable messages, undecodable
  and wrongly signed records) and floods provider lookups with hundreds of records of peers
  that do not exist. The node lists nothing, counts each kind in
  ``meshnode_discovery_rejected_total{reason}``, and the connection attempts to the flooded
  addresses stay bounded by ``max_checks`` per lookup.
"""

import asyncio
import json
import os
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from meshnode.discovery.bridge import TrioBridge
from meshnode.discovery.card import CardValidator, make_card
from meshnode.discovery.keys import rendezvous, rendezvous_cid
from meshnode.discovery.planner import PlannerConfig
from meshnode.identity import Identity
from tests.integration.nodeproc import NodeProcess

pytest.importorskip("libp2p", reason="discovery needs py-libp2p (pip install libp2p==0.8.1)")

FLOOD = 300
MAX_CHECKS = PlannerConfig().max_checks


def _hosts(node: NodeProcess, room: str) -> list[str]:
    out = subprocess.run([sys.executable, "-m", "meshnode", "room", "hosts", room,
                          "--node", node.url, "--data-dir", str(node.data_dir),
                          "--timeout", "3"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return [h["peer_id"] for h in json.loads(out.stdout)]


def _rejected(node: NodeProcess) -> Counter[str]:
    out: Counter[str] = Counter()
    for key, value in node.metrics().items():
        if key.startswith("meshnode_discovery_rejected_total{"):
            out[key.split('reason="', 1)[1].split('"', 1)[0]] = int(value)
    return out


class FakeNode:
    """The stranger's HTTP side: ``/healthz`` names its PeerID; every other request (a link
    offer) is counted."""

    def __init__(self, peer_id: str) -> None:
        self.peer_id = peer_id
        self.healthz = 0
        self.offers: list[str] = []
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        async def healthz(request: web.Request) -> web.Response:
            self.healthz += 1
            return web.json_response({"ok": True, "peer_id": self.peer_id})

        async def other(request: web.Request) -> web.Response:
            self.offers.append(f"{request.method} {request.path}")
            return web.json_response({"error": "no"}, status=503)

        app = web.Application()
        app.router.add_get("/healthz", healthz)
        app.router.add_route("*", "/{tail:.*}", other)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"

    async def aclose(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


class Doorbell:
    """A TCP port that counts connections and hangs up: where the flood's peers 'live'."""

    def __init__(self) -> None:
        self.rings = 0
        self.port = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        async def ring(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.rings += 1
            writer.close()

        self._server = await asyncio.start_server(ring, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def aclose(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


def hostile_handler(doorbell_port: int) -> Any:
    """A Kademlia stream handler that answers garbage, and floods provider lookups."""
    import multiaddr
    import varint
    from libp2p.kad_dht.common import MAX_DHT_MESSAGE_SIZE
    from libp2p.kad_dht.pb.kademlia_pb2 import Message
    from libp2p.utils.varint import read_varint_prefixed_bytes_limited

    flood_ids = [Identity.generate().public_key for _ in range(FLOOD)]
    addr = multiaddr.Multiaddr(f"/ip4/127.0.0.1/tcp/{doorbell_port}").to_bytes()

    def flood(key: bytes) -> bytes:
        from libp2p.peer.id import ID

        msg = Message(type=Message.MessageType.GET_PROVIDERS, key=key)
        for junk in (b"\x00\x04junk", os.urandom(34)):  # not a meshnode (Ed25519) PeerID
            p = msg.providerPeers.add()
            p.id, p.addrs[:] = junk, [addr]
        bad = msg.providerPeers.add()  # a "signed" peer record that is garbage
        bad.id = ID.from_base58(Identity.generate().public_id).to_bytes()
        bad.signedRecord = os.urandom(64)
        for pk in flood_ids:
            p = msg.providerPeers.add()
            p.id = ID.from_base58(_pid(pk)).to_bytes()
            p.addrs[:] = [addr]
        return msg.SerializeToString()

    async def handle(stream: Any) -> None:
        try:
            while True:
                raw = await read_varint_prefixed_bytes_limited(stream, MAX_DHT_MESSAGE_SIZE)
                req = Message()
                req.ParseFromString(raw)
                if req.type == Message.MessageType.GET_PROVIDERS:
                    out = flood(req.key)
                elif req.type == Message.MessageType.GET_VALUE:
                    resp = Message(type=Message.MessageType.GET_VALUE, key=req.key)
                    resp.record.key, resp.record.value = req.key, b"\x98not a card"
                    out = resp.SerializeToString()
                else:  # FIND_NODE and the rest: bytes that are no message at all
                    out = b"\xff\xff\x07garbage" + os.urandom(40)
                await stream.write(varint.encode(len(out)) + out)
        except Exception:
            await stream.reset()

    return handle


def _pid(public_key: bytes) -> str:
    from meshnode.identity import peer_id_from_public_key

    return peer_id_from_public_key(public_key)


async def _libp2p_info(node: NodeProcess) -> tuple[str, tuple[str, ...]]:
    def get() -> Any:
        with urllib.request.urlopen(node.url + "/api/libp2p", timeout=10) as resp:
            return json.loads(resp.read())

    info = await asyncio.to_thread(get)
    return info["peer_id"], tuple(info["addrs"])


async def test_a_stranger_announcing_a_room_and_a_flooding_dht_peer_are_ignored(
        tmp_path: Path) -> None:
    from libp2p.kad_dht.common import PROTOCOL_ID

    from meshnode.discovery.libp2p_host import DIAL_ATTEMPTS, Libp2pHost

    v = await asyncio.to_thread(NodeProcess(tmp_path / "v").start)
    j: NodeProcess | None = None
    bridge = TrioBridge()
    await bridge.start()
    sid, hid = Identity.generate(), Identity.generate()
    validator = CardValidator(lambda: int(time.time() * 1000))
    stranger = Libp2pHost(sid, bridge, validator)
    hostile = Libp2pHost(hid, bridge, validator)
    fake, doorbell = FakeNode(sid.public_id), Doorbell()
    try:
        room = v.default_room
        assert room is not None
        await fake.start()
        await doorbell.start()
        for h in (stranger, hostile):
            await h.start()
        vpeer, vaddrs = await _libp2p_info(v)
        assert await stranger.connect(vpeer, vaddrs, 10)
        assert await hostile.connect(vpeer, vaddrs, 10)

        async def install() -> None:
            hostile._host.set_stream_handler(PROTOCOL_ID, hostile_handler(doorbell.port))

        await bridge.call(install)
        # The hostile peer asks V something, so V puts it in its routing table.
        await hostile.find_providers(rendezvous_cid(os.urandom(32)), 1, 5)
        # The stranger announces V's room, with a valid card of its own pointing at `fake`.
        rid = bytes.fromhex(room)
        assert await stranger.provide(rendezvous_cid(rid))
        card = make_card(rendezvous(rid), sid.public_key, sid.sign, [fake.url],
                         stranger.addrs(), int(time.time() * 1000), 600_000)
        assert await stranger.put_value(card.key, card.encode())

        # A joiner, bootstrapped to V with V's invite: admitted through V, never dials the
        # stranger (it finds it in the DHT: the record is in V's store).
        token = await asyncio.to_thread(v.post, f"/api/rooms/{room}/invites", {"role": "admin"})
        j = NodeProcess(tmp_path / "j", args=["--no-default-room", "--bootstrap", v.url,
                                              "--join", token["token"]])
        await asyncio.to_thread(j.start)
        joiner = j
        await asyncio.to_thread(joiner.wait_for, lambda: any(
            r["id"] == room and r["role"] == "admin" for r in joiner.get("/api/rooms")),
            "J admitted")

        def j_filters_the_stranger() -> bool:
            found = _hosts(joiner, room)
            assert sid.public_id not in found
            return _rejected(joiner)["not_in_room"] >= 1

        await asyncio.to_thread(joiner.wait_for, j_filters_the_stranger,
                                "J's lookup to find and skip the stranger", 60)
        assert set(await asyncio.to_thread(_hosts, v, room)) == {v.peer_id, joiner.peer_id}
        assert _rejected(v)["not_in_room"] >= 1
        assert fake.offers == [], "a stranger announcing the room was dialled"

        # The flood: three lookups of a room nobody hosts, each answered with garbage and
        # with hundreds of provider records of peers that do not exist.
        other = os.urandom(32).hex()
        # The hostile peer answers every lookup (J's and V's above too, as many as their
        # polling took): only the rings of these three lookups are theirs to bound.
        rings_before = doorbell.rings
        for _ in range(3):
            assert await asyncio.to_thread(_hosts, v, other) == []
        rejected = await asyncio.to_thread(_rejected, v)
        for reason in ("too_many_providers", "bad_provider", "dead_provider",
                       "bad_dht_answer"):
            assert rejected[reason] >= 1, (reason, rejected)
        # Each lookup checks at most MAX_CHECKS of them (a libp2p ping each, which tries the
        # one address DIAL_ATTEMPTS times); libp2p's auto-connector dials none of them.
        assert doorbell.rings >= 1, "the hostile peer's provider records were never checked"
        flood_rings = doorbell.rings - rings_before
        assert flood_rings <= 3 * MAX_CHECKS * DIAL_ATTEMPTS, flood_rings
        assert "discovery ignored input: bad_dht_answer" in v.log()
        assert "discovery ignored input: too_many_providers" in v.log()
        health = await asyncio.to_thread(v.get, "/healthz")
        assert health["peer_id"] == v.peer_id  # still serving
        assert fake.offers == []
    finally:
        for n in (j, v):
            if n is not None:
                n.kill()
        for h in (stranger, hostile):
            await h.aclose()
        await bridge.aclose()
        await fake.aclose()
        await doorbell.aclose()
