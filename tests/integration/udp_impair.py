"""A user-space UDP impairment relay for one media connection: what a weak downlink looks like
to the node's media relay, on loopback, with real aiortc on both ends.

The relay stands between a client's media ``RTCPeerConnection`` and the node's. It owns two
sockets: ``client_side`` (the client believes the node is there) and ``node_side`` (the node
believes the client is there). The test steers ICE through it by rewriting the host
candidates in the SDP the client receives and sends (:meth:`ImpairedPath.steer`): the node's
candidate becomes ``client_side``, the client's becomes ``node_side``. Every datagram then
crosses the relay, and ICE, DTLS and SRTP run end to end through it unchanged.

Only the downlink's media (RTP and RTCP from the node, RFC 7983 first byte 128..191) is
impaired: STUN and DTLS pass, so consent checks keep the connection up. ``impair(rate_kbps,
loss, queue_bytes)`` sets a bottleneck: a drop-tail queue of ``queue_bytes`` drained at
``rate_kbps``, after random ``loss``; ``impair()`` lifts it.
"""

import asyncio
import random
import re
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import cast

from meshnode.media.session import MediaSession
from protocol.media import MediaSignal

Addr = tuple[str, int]
_CANDIDATE = re.compile(r"^(a=candidate:\S+ \d+ udp \d+ )(\S+) (\d+)( typ )", re.I | re.M)


@dataclass(frozen=True)
class Impairment:
    """A bottleneck on the downlink (None rate: none)."""

    rate_kbps: float | None = None
    loss: float = 0.0
    queue_bytes: int = 10_000


class _Side(asyncio.DatagramProtocol):
    def __init__(self, on_datagram: Callable[[bytes, Addr], None]) -> None:
        self.on_datagram = on_datagram
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: Addr) -> None:
        self.on_datagram(data, addr)


class ImpairedPath:
    """The relay (see the module docstring). ``await start()``, ``steer(session)``, then
    ``impair(...)`` as the test goes; ``close()``."""

    def __init__(self, seed: int = 1) -> None:
        self._rng = random.Random(seed)
        self.impairment = Impairment()
        self.node_addr: Addr | None = None
        self.client_addr: Addr | None = None
        self._client_side = _Side(self._from_client)
        self._node_side = _Side(self._from_node)
        self._queue: deque[bytes] = deque()
        self._queued = 0
        self._wake = asyncio.Event()
        self._pump: asyncio.Task[None] | None = None
        self.counts = {"up": 0, "down": 0, "lost": 0, "queue_drops": 0}

    async def start(self) -> "ImpairedPath":
        loop = asyncio.get_running_loop()
        for side in (self._client_side, self._node_side):
            await loop.create_datagram_endpoint(lambda side=side: side,  # type: ignore[misc]
                                                local_addr=("127.0.0.1", 0))
        self._pump = loop.create_task(self._drain())
        return self

    def close(self) -> None:
        if self._pump is not None:
            self._pump.cancel()
        for side in (self._client_side, self._node_side):
            if side.transport is not None:
                side.transport.close()

    def _port(self, side: _Side) -> int:
        assert side.transport is not None
        port: int = side.transport.get_extra_info("sockname")[1]
        return port

    # ------------------------------------------------------------------ steering ICE

    def to_client(self, sdp: str) -> str:
        """The node's SDP as the client should see it: the node is at ``client_side``."""
        def sub(m: re.Match[str]) -> str:
            self.node_addr = (m.group(2), int(m.group(3)))
            return f"{m.group(1)}127.0.0.1 {self._port(self._client_side)}{m.group(4)}"
        return _CANDIDATE.sub(sub, sdp)

    def to_node(self, sdp: str) -> str:
        """The client's SDP as the node should see it: the client is at ``node_side``."""
        def sub(m: re.Match[str]) -> str:
            self.client_addr = (m.group(2), int(m.group(3)))
            return f"{m.group(1)}127.0.0.1 {self._port(self._node_side)}{m.group(4)}"
        return _CANDIDATE.sub(sub, sdp)

    def steer(self, session: MediaSession) -> None:
        """Rewrite the candidates of every ``MediaSignal`` the client's media ``session``
        receives and sends (install before its first one)."""
        handle = session.handle
        send = session._send

        def handle_rewritten(msg: MediaSignal) -> None:
            handle(replace(msg, sdp=self.to_client(msg.sdp)) if msg.sdp else msg)

        def send_rewritten(msg: MediaSignal) -> bool:
            return send(replace(msg, sdp=self.to_node(msg.sdp)) if msg.sdp else msg)

        session.handle = handle_rewritten  # type: ignore[method-assign]
        session._send = send_rewritten

    # ------------------------------------------------------------------ the datagrams

    def impair(self, rate_kbps: float | None = None, loss: float = 0.0,
               queue_bytes: int = 10_000) -> None:
        """Set (or, with no arguments, lift) the downlink's bottleneck."""
        self.impairment = Impairment(rate_kbps, loss, queue_bytes)
        self._wake.set()

    def _from_client(self, data: bytes, addr: Addr) -> None:
        self.client_addr = addr
        if self.node_addr is not None and self._node_side.transport is not None:
            self.counts["up"] += 1
            self._node_side.transport.sendto(data, self.node_addr)

    def _from_node(self, data: bytes, addr: Addr) -> None:
        imp = self.impairment
        media = bool(data) and 128 <= data[0] <= 191
        if not media or (imp.rate_kbps is None and not imp.loss):
            self._to_client(data)
            return
        if imp.loss and self._rng.random() < imp.loss:
            self.counts["lost"] += 1
            return
        if imp.rate_kbps is None:
            self._to_client(data)
            return
        if self._queued + len(data) > imp.queue_bytes:
            self.counts["queue_drops"] += 1
            return
        self._queue.append(data)
        self._queued += len(data)
        self._wake.set()

    def _to_client(self, data: bytes) -> None:
        if self.client_addr is not None and self._client_side.transport is not None:
            self.counts["down"] += 1
            self._client_side.transport.sendto(data, self.client_addr)

    async def _drain(self) -> None:
        """Send the queue at the bottleneck's rate (all at once when it is lifted)."""
        while True:
            if not self._queue:
                self._wake.clear()
                await self._wake.wait()
                continue
            data = self._queue.popleft()
            self._queued -= len(data)
            self._to_client(data)
            rate = self.impairment.rate_kbps
            if rate is not None:
                await asyncio.sleep(len(data) * 8 / (rate * 1000))

    def describe(self) -> str:
        """The counters, for failure messages."""
        return f"impaired path {self.impairment}: {self.counts}, {self._queued} bytes queued"
