"""Offers that never complete, as fast as an attacker can send them from many source
addresses, against a real ``meshnode up`` process: honest peers and browsers still get in.

The attacker is cheap on purpose: one offer SDP, made once, whose only ICE candidate is a UDP
socket that never answers, POSTed again and again from ten loopback addresses (127.0.0.x),
each as fast as a per-source-address limit would allow (``RATE_PER_SOURCE``, more than the
node's HTTP limits grant; a 429 makes it wait): 40 offers a second in all, the rate at which
an honest client used to get in once or twice in ten. Each offer makes the node build an
``RTCPeerConnection`` that can never finish its handshake. Before the pending pools, every
such offer held one of the node's 64 link slots (or 32 browser slots) for the whole hello
timeout, and an honest client got in only now and then; now unfinished connections live in
a small pool of their own where the oldest is evicted, and an honest connection, which
finishes in a fraction of a second, is never the oldest for long.
"""

import asyncio
import contextlib
import json
import socket
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from meshnode.client import connect
from meshnode.identity import Identity
from meshnode.transport.ice import install_host_addresses
from tests.integration.nodeproc import NodeProcess
from tests.integration.test_line import ICE, until

SOURCES = tuple(f"127.0.0.{i}" for i in range(2, 12))  # the attacker's addresses
RATE_PER_SOURCE = 4.0  # offers per second from each address
HONEST_TRIES = 5


@contextlib.contextmanager
def black_hole() -> Iterator[tuple[str, int]]:
    """A UDP socket that takes every ICE check and never answers."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    try:
        yield sock.getsockname()
    finally:
        sock.close()


async def dead_end_offer(channel: str, hole: tuple[str, int]) -> str:
    """An offer SDP (with a data channel labelled ``channel``) whose only candidate is
    ``hole``: whoever answers it can never connect."""
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.createDataChannel(channel)
    await pc.setLocalDescription(await pc.createOffer())
    sdp: str = pc.localDescription.sdp
    await pc.close()
    lines = [line for line in sdp.split("\r\n") if not line.startswith("a=candidate:")]
    at = next(i for i, line in enumerate(lines) if line.startswith("a=ice-ufrag:"))
    lines.insert(at, f"a=candidate:1 1 udp 2130706431 {hole[0]} {hole[1]} typ host")
    return "\r\n".join(lines)


class Flood:
    """POSTs ``body`` to ``url`` from each of the ``SOURCES`` addresses, at most
    ``RATE_PER_SOURCE`` times a second each, until stopped; counts the answers by status."""

    def __init__(self, url: str, body: dict[str, Any]) -> None:
        self.url = url
        self.body = json.dumps(body)
        self.statuses: Counter[int] = Counter()
        self._tasks: list[asyncio.Task[None]] = []

    async def _worker(self, source: str) -> None:
        loop = asyncio.get_running_loop()
        async with aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(local_addr=(source, 0), force_close=True),
                timeout=aiohttp.ClientTimeout(total=20)) as http:
            while True:
                due = loop.time() + 1 / RATE_PER_SOURCE
                try:
                    async with http.post(self.url, data=self.body,
                                         headers={"Content-Type": "application/json"}) as r:
                        await r.read()
                        self.statuses[r.status] += 1
                except (aiohttp.ClientError, TimeoutError):
                    self.statuses[0] += 1
                await asyncio.sleep(max(0.0, due - loop.time()))

    async def __aenter__(self) -> "Flood":
        self._tasks = [asyncio.create_task(self._worker(src)) for src in SOURCES]
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    @property
    def answered(self) -> int:
        return self.statuses[200]

    @property
    def sent(self) -> int:
        return sum(self.statuses.values())


def metric(node: NodeProcess, prefix: str) -> float:
    return sum(v for k, v in node.metrics().items() if k.startswith(prefix))


@pytest.fixture
def flooded_node(tmp_path: Path) -> Iterator[NodeProcess]:
    node = NodeProcess(tmp_path / "n").start()
    try:
        yield node
    finally:
        node.kill()


@pytest.fixture
async def hole() -> AsyncIterator[tuple[str, int]]:
    with black_hole() as addr:
        yield addr


async def test_unfinished_offers_never_keep_an_honest_client_out(
        flooded_node: NodeProcess, hole: tuple[str, int]) -> None:
    node = flooded_node
    room = node.default_room
    assert room is not None
    offer = await dead_end_offer("sync", hole)
    async with Flood(node.url + "/signal/offer", {"sdp": offer}) as flood:
        await until(lambda: flood.sent >= 80, "the flood to fill the pending pool", 60)
        got_in = 0
        for _ in range(HONEST_TRIES):  # (the pool overflows all along: see the evictions)
            async with connect(node.url, room, Identity.generate(), ice=ICE,
                               timeout_s=20) as client:
                assert client.role() == "editor"
                got_in += 1
    assert got_in == HONEST_TRIES
    # The flood was answered (and held at most the pool's 16 connections).
    assert metric(node, 'meshnode_pending_evictions_total{kind="peer",reason="pool_full"') >= 1
    await until(lambda: metric(node, 'meshnode_pending_links{kind="peer"') == 0,
                "the unfinished links to time out", 30)
    assert metric(node, "meshnode_peers") == 0  # no flood link was ever counted


async def test_unfinished_browser_offers_never_keep_a_browser_out(
        flooded_node: NodeProcess, hole: tuple[str, int]) -> None:
    node = flooded_node
    room = node.default_room
    assert room is not None
    install_host_addresses(("127.0.0.1",))
    offer = await dead_end_offer("client", hole)
    async with Flood(node.url + "/api/browser/offer", {"room": room, "sdp": offer}) as flood:
        await until(lambda: flood.sent >= 80, "the flood to fill the pending pool", 60)
        for attempt in range(HONEST_TRIES):
            welcome = await browser_session(node.url, room)
            assert welcome["t"] == "welcome" and welcome["room"] == room, attempt
    assert metric(node, 'meshnode_pending_evictions_total{kind="browser",reason="pool_full"') >= 1


async def browser_session(url: str, room: str) -> dict[str, Any]:
    """What a browser does (an aiortc peer in its place): offer a ``client`` channel, open
    it, and return the node's first message (the welcome)."""
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    channel = pc.createDataChannel("client")
    first: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()

    def on_message(text: str) -> None:
        if not first.done():
            first.set_result(json.loads(text))

    channel.on("message", on_message)
    try:
        await pc.setLocalDescription(await pc.createOffer())
        async with aiohttp.ClientSession() as http, http.post(
                url + "/api/browser/offer",
                json={"room": room, "sdp": pc.localDescription.sdp}) as resp:
            body = await resp.json()
            assert resp.status == 200, body
        await pc.setRemoteDescription(RTCSessionDescription(body["sdp"], "answer"))
        return await asyncio.wait_for(first, 20)
    finally:
        await pc.close()
