"""Abandoned links give everything back: a real ``LinkManager`` answers offers over real aiortc
(loopback) from peers that finish ICE and DTLS but never send a hello; after the hello timeout
every link, connection, socket and task is gone, without the test collecting garbage itself.

The node runs with the collector thresholds of ``meshnode.tuning`` (as ``meshnode up`` does),
under which aiortc's reference cycles were, before ``meshnode.transport.reclaim``, never
collected in practice: about 70 KB per abandoned offer stayed in memory.
"""

import asyncio
import gc
import os
import time
import weakref
from collections.abc import Callable, Iterator

import aioice.ice
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

import meshnode.transport.ice as ice_module
from meshnode.identity import Identity
from meshnode.metrics import NodeMetrics
from meshnode.runtime.links import LinkManager
from meshnode.transport import reclaim
from meshnode.transport.ice import IceSettings, install_host_addresses
from meshnode.transport.link import LinkSettings, LocalHello, PeerLink
from meshnode.tuning import GC_THRESHOLDS

ICE = IceSettings(host_addresses=("127.0.0.1",))
LINKS = 60
POOL = 8


@pytest.fixture(autouse=True)
def _node_like_process() -> Iterator[None]:
    """aioice offers only 127.0.0.1 and the collector is tuned as in a node; both undone."""
    saved = aioice.ice.get_host_addresses, ice_module._host_addresses
    thresholds = gc.get_threshold()
    install_host_addresses(("127.0.0.1",))
    gc.collect()
    gc.set_threshold(*GC_THRESHOLDS)
    yield
    gc.set_threshold(*thresholds)
    aioice.ice.get_host_addresses, ice_module._host_addresses = saved


def no_rooms(kind_hint: str) -> LocalHello:
    return LocalHello("node", ())


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def until(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def silent_offer(manager: LinkManager) -> RTCPeerConnection:
    """A peer that connects (ICE, DTLS, SCTP, both channels) and then says nothing."""
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.createDataChannel("sync")
    pc.createDataChannel("presence", ordered=False, maxRetransmits=0)
    await pc.setLocalDescription(await pc.createOffer())
    answer = await manager.accept_offer(pc.localDescription.sdp)
    await pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
    return pc


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts fds in /proc")
async def test_abandoned_links_are_freed_with_their_sockets_and_tasks() -> None:
    tasks, fds = len(asyncio.all_tasks()), open_fds()
    metrics = NodeMetrics()
    manager = LinkManager(Identity.generate(), LinkSettings(ice=ICE, hello_timeout_s=1.5),
                          no_rooms, metrics, max_pending=POOL)
    made: list[weakref.ref[PeerLink]] = []
    new_link = manager._new_link

    def tracked(kind_hint: str, expected: str | None) -> PeerLink:
        link = new_link(kind_hint, expected)
        made.append(weakref.ref(link))
        return link

    manager._new_link = tracked  # type: ignore[method-assign]
    runs = reclaim.collections_run()
    peers: list[RTCPeerConnection] = []
    for _ in range(LINKS):
        peers.append(await silent_offer(manager))
        assert manager.pending <= POOL and not manager.links  # never counted, never over
    await until(lambda: manager.pending == 0, "the hello timeouts")
    for pc in peers:
        await pc.close()
    del peers, pc
    await until(lambda: all(ref() is None for ref in made),
                "the abandoned links to be freed", timeout=30)
    assert reclaim.collections_run() > runs
    evictions = metrics.pending_evictions.labels("peer", "pool_full")._value.get()
    timeouts = metrics.pending_evictions.labels("peer", "hello_timeout")._value.get()
    assert evictions >= 1 and evictions + timeouts == LINKS
    await until(lambda: open_fds() <= fds, "the sockets to close")
    await manager.aclose()
    await until(lambda: len(asyncio.all_tasks()) <= tasks, "the tasks to end")
