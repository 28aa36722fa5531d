"""A real ``meshnode up`` process answers a few hundred offers from peers that connect (ICE,
DTLS, SCTP) and never send a hello; once they are gone, the node's memory and open files are
back near where they were: each abandoned link once left about 70 KB behind for good."""

import asyncio
import os
from pathlib import Path

import aiohttp
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from meshnode.transport.ice import install_host_addresses
from tests.integration.nodeproc import NodeProcess
from tests.integration.test_flood import SOURCES, metric
from tests.integration.test_line import until

WARM_UP = 160  # the allocator reaches its high-water mark
CHURN = 240
BATCH = 16
MAX_RESIDUAL_PER_LINK = 10_000  # bytes


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


async def silent_peer(url: str, source: str) -> RTCPeerConnection | None:
    """Offer from ``source``, connect, say nothing (no hello). None if refused."""
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.createDataChannel("sync")
    pc.createDataChannel("presence", ordered=False, maxRetransmits=0)
    await pc.setLocalDescription(await pc.createOffer())
    connector = aiohttp.TCPConnector(local_addr=(source, 0), force_close=True)
    async with aiohttp.ClientSession(connector=connector) as http, \
            http.post(url + "/signal/offer", json={"sdp": pc.localDescription.sdp}) as resp:
        body = await resp.json()
    if resp.status != 200:
        await pc.close()
        return None
    await pc.setRemoteDescription(RTCSessionDescription(body["sdp"], "answer"))
    return pc


async def churn(node: NodeProcess, count: int) -> int:
    """Open and abandon ``count`` links, ``BATCH`` at a time; returns how many were answered."""
    answered = 0
    for start in range(0, count, BATCH):
        peers = await asyncio.gather(*(silent_peer(node.url, SOURCES[(start + i) % len(SOURCES)])
                                       for i in range(BATCH)))
        await asyncio.sleep(0.5)  # connected, silent
        for pc in peers:
            if pc is not None:
                answered += 1
                await pc.close()
    return answered


async def settled(node: NodeProcess) -> tuple[int, int]:
    """The node's RSS and open files once no unfinished link is left and it has had time to
    collect (``meshnode.transport.reclaim`` runs within seconds)."""
    await until(lambda: metric(node, 'meshnode_pending_links{kind="peer"') == 0,
                "the abandoned links to close", 60)
    await asyncio.sleep(8)
    assert node.proc is not None
    return rss_bytes(node.proc.pid), open_fds(node.proc.pid)


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="reads /proc")
async def test_abandoned_links_give_their_memory_and_sockets_back(tmp_path: Path) -> None:
    install_host_addresses(("127.0.0.1",))
    node = NodeProcess(tmp_path / "n").start()
    try:
        assert await churn(node, WARM_UP) >= WARM_UP // 2
        rss, fds = await settled(node)
        answered = await churn(node, CHURN)
        assert answered >= CHURN // 2
        rss_after, fds_after = await settled(node)
        residual = (rss_after - rss) / answered
        assert residual < MAX_RESIDUAL_PER_LINK, \
            f"{residual:.0f} bytes per abandoned link stayed ({answered} links)"
        assert fds_after <= fds + 3
        assert metric(node, "meshnode_peers") == 0
    finally:
        node.kill()
