"""A UDP impairment relay: the user-space stand-in for ``tc netem`` (this kernel has none).

It sits between two WebRTC peers on loopback: one peer is told (by rewriting the SDP) that the
other lives at the relay's port; the relay forwards every datagram to the real address and
the answers back, dropping and delaying them on the way, seeded so a run can be repeated.
"""

import asyncio
import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Impairment:
    """Loss probability and one-way delay (uniform in ``delay_s`` ± ``jitter_s``)."""

    loss: float = 0.0
    delay_s: float = 0.0
    jitter_s: float = 0.0
    seed: int = 1
    rng: random.Random = field(init=False)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)


class _Side(asyncio.DatagramProtocol):
    def __init__(self, on_datagram: Callable[[bytes, tuple[str, int]], None]) -> None:
        self.on_datagram = on_datagram
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.on_datagram(data, addr)


class UdpImpairmentRelay:
    """Two sockets: the *front* one, which the offerer is told is the answerer, forwards to
    ``target`` (the answerer's real address); the *back* one, which the answerer is told is
    the offerer, forwards to wherever the offerer last sent from."""

    def __init__(self, impairment: Impairment) -> None:
        self.target: tuple[str, int] | None = None
        self.imp = impairment
        self.front: _Side | None = None
        self.back: _Side | None = None
        self.client: tuple[str, int] | None = None
        self.forwarded = 0
        self.dropped = 0

    async def start(self) -> tuple[int, int]:
        """Open both sockets; returns (front port, back port)."""
        loop = asyncio.get_running_loop()
        _, self.front = await loop.create_datagram_endpoint(
            lambda: _Side(self._from_client), local_addr=("127.0.0.1", 0))
        _, self.back = await loop.create_datagram_endpoint(
            lambda: _Side(self._from_target), local_addr=("127.0.0.1", 0))
        assert self.front.transport is not None and self.back.transport is not None
        front: int = self.front.transport.get_extra_info("sockname")[1]
        back: int = self.back.transport.get_extra_info("sockname")[1]
        return front, back

    def _from_client(self, data: bytes, addr: tuple[str, int]) -> None:
        self.client = addr
        if self.target is not None and self.back is not None and self.back.transport:
            self._forward(self.back.transport, data, self.target)

    def _from_target(self, data: bytes, addr: tuple[str, int]) -> None:
        if self.client is not None and self.front is not None and self.front.transport:
            self._forward(self.front.transport, data, self.client)

    def _forward(self, transport: asyncio.DatagramTransport, data: bytes,
                 to: tuple[str, int]) -> None:
        imp = self.imp
        if imp.rng.random() < imp.loss:
            self.dropped += 1
            return
        self.forwarded += 1
        delay = max(0.0, imp.delay_s + imp.rng.uniform(-imp.jitter_s, imp.jitter_s))
        if delay == 0:
            transport.sendto(data, to)
        else:
            asyncio.get_running_loop().call_later(delay, transport.sendto, data, to)

    def close(self) -> None:
        """Close both sockets."""
        for side in (self.front, self.back):
            if side is not None and side.transport is not None:
                side.transport.close()


_CANDIDATE = re.compile(r"^a=candidate:(\S+) (\d+) udp (\d+) (\S+) (\d+) typ host(.*)$",
                        re.MULTILINE)


def host_candidate(sdp: str) -> tuple[str, int]:
    """The first UDP host candidate's address in an SDP."""
    m = _CANDIDATE.search(sdp)
    assert m is not None, "no UDP host candidate in the SDP"
    return m.group(4), int(m.group(5))


def point_candidates_at(sdp: str, port: int) -> str:
    """The SDP with its host candidates replaced by one at 127.0.0.1:``port``."""
    lines = [ln for ln in sdp.splitlines() if not ln.startswith("a=candidate:")]
    out: list[str] = []
    for ln in lines:
        out.append(ln)
        if ln.startswith("m=application"):
            out.append(f"a=candidate:relay0 1 udp 2130706431 127.0.0.1 {port} typ host")
    return "\r\n".join(out) + "\r\n"
