"""Hostile peers against a real node process: a wrong identity in the hello, malformed
frames, an oversized frame, a flood. Each gets its link closed (or its frames dropped), the
rejection shows in /metrics, and the node keeps serving an honest client throughout."""

import asyncio
import contextlib

import aiohttp

from meshnode.client import connect
from meshnode.crdt import ROOT
from meshnode.identity import Identity
from meshnode.transport.link import LinkSettings, LocalHello, PeerLink
from protocol.frames import Heads, encode_frame
from tests.integration.nodeproc import NodeProcess
from tests.integration.test_line import ICE, until


class Impostor:
    """Claims ``victim``'s public key but can only sign with its own key."""

    def __init__(self, victim: Identity, own: Identity) -> None:
        self.public_key = victim.public_key
        self.public_id = victim.public_id
        self._own = own

    def sign(self, data: bytes) -> bytes:
        return self._own.sign(data)


async def open_link(url: str, identity: object, room: bytes) -> PeerLink:
    link = PeerLink(identity, LinkSettings(ice=ICE),  # type: ignore[arg-type]
                    LocalHello("client", (room,)))
    offer = await link.create_offer()
    async with aiohttp.ClientSession() as http, \
            http.post(url + "/signal/offer", json={"sdp": offer}) as resp:
        answer = (await resp.json())["sdp"]
    await link.accept_answer(answer)
    return link


async def closed(link: PeerLink) -> None:
    await until(lambda: link.closed, "the node to close the link", timeout=30)


async def honest_edit(node: NodeProcess, room: str) -> None:
    async with connect(node.url, room, Identity.generate(), ice=ICE) as client:
        ent = client.create_entity(ROOT, {"name": {"value": "still serving"}})
        assert await client.flush() is not None
        assert str(ent) in client.state()


def rejected(node: NodeProcess, prefix: str) -> float:
    return sum(v for k, v in node.metrics().items() if k.startswith(prefix))


async def test_wrong_identity_in_hello_is_refused(node: NodeProcess) -> None:
    room = node.default_room
    assert room is not None
    impostor = Impostor(Identity.generate(), Identity.generate())
    link = await open_link(node.url, impostor, bytes.fromhex(room))
    # Our side may see the node's (valid) hello before the node checks ours and hangs up.
    with contextlib.suppress(Exception):
        await asyncio.wait_for(link.established(), 20)
    await closed(link)
    await until(lambda: rejected(node, 'meshnode_links_closed_total{reason="bad_signature"')
                >= 1, "the bad hello to be counted")
    await honest_edit(node, room)


async def test_malformed_frames_close_the_link(node: NodeProcess) -> None:
    room = node.default_room
    assert room is not None
    link = await open_link(node.url, Identity.generate(), bytes.fromhex(room))
    await asyncio.wait_for(link.established(), 20)
    for i in range(40):
        link.send("sync", b"\x93\x01\x02" + bytes([i]) * 10)  # not a frame at all
    await closed(link)
    assert rejected(node, "meshnode_rejections_total") >= 20
    await honest_edit(node, room)


async def test_malformed_room_frames_get_the_peer_cut_off(node: NodeProcess) -> None:
    room = node.default_room
    assert room is not None
    rid = bytes.fromhex(room)
    link = await open_link(node.url, Identity.generate(), rid)
    await asyncio.wait_for(link.established(), 20)
    # Right header and room, garbage body: the overlay decodes it, penalises the peer, and
    # asks for the link to be closed once the score falls below the threshold.
    bad = b"\x94\x01\x01\xc4\x20" + rid + b"\xc1"
    for _ in range(200):
        link.send("sync", bad)
    await closed(link)
    assert rejected(node, 'meshnode_rejections_total{reason="garbage"') >= 1
    await honest_edit(node, room)


async def test_oversized_frame_closes_the_link(node: NodeProcess) -> None:
    room = node.default_room
    assert room is not None
    link = await open_link(node.url, Identity.generate(), bytes.fromhex(room))
    await asyncio.wait_for(link.established(), 20)
    # An attacker ignores its own limits, and the limit the node advertised in its SDP.
    link._max_send = 10 * 1024 * 1024
    for ch in link._channels.values():
        ch.transport._remote_max_message_size = 0
    big = b"\x93\x01\x01" + b"\x00" * 300_000
    assert link.send("sync", big)
    await closed(link)
    await honest_edit(node, room)


async def test_flood_is_throttled_and_cut_off(node: NodeProcess) -> None:
    room = node.default_room
    assert room is not None
    rid = bytes.fromhex(room)
    link = await open_link(node.url, Identity.generate(), rid)
    await asyncio.wait_for(link.established(), 20)
    frame = encode_frame(Heads(rid, ()))
    for _ in range(30):
        for _ in range(500):
            if link.closed:
                break
            link.send("sync", frame)
        await asyncio.sleep(0.05)
    await closed(link)
    assert rejected(node, 'meshnode_rejections_total{reason="flood"') >= 1
    await honest_edit(node, room)
