"""Giving back the memory of closed WebRTC connections.

aiortc's ``RTCPeerConnection``, its transports, data channels and their tasks refer to each
other in cycles, so a closed connection is never freed by reference counting: only CPython's
cyclic collector frees it. The node raises the collector's thresholds
(:func:`meshnode.tuning.tune_gc`) so that a replica's many long-lived objects are not rescanned
over and over; with those thresholds a full collection comes only after about 10^8
allocations, and a connection that lived a few seconds (long enough to reach the oldest
generation) stayed in memory in practice for good: about 70 KB per abandoned offer, DTLS
keys and certificate included, measured on a node flooded with offers that never completed.

A second leak, in aioice 0.13: closing a connection while ICE is completing (a pending link
evicted just then, for instance) lets aioice's ``connect()`` start the consent-freshness task
*after* ``close()`` looked for it; that task then loops every ~5 s for ever on the closed
connection, holding it. :func:`close_peer_connection` closes a connection and ends such a task.

So every closed connection (a ``PeerLink`` or a browser's) is closed with
:func:`close_peer_connection`, which calls :func:`reclaim_soon`; that runs one full collection
a little later: never sooner than ``SETTLE_S`` after the request
(aiortc's own tasks finish first) and never more often than once per ``INTERVAL_S``. The
memory of closed connections comes back within seconds, and a flood of closures costs at most
one collection per interval, whatever its rate. After the collection, on glibc, freed heap
pages go back to the operating system (``malloc_trim``): a connection's memory is mostly
small native allocations (OpenSSL, aioice) that glibc would otherwise keep, and an operator
reads the node's memory from its RSS.

Process-wide, like the collector itself; harmless in a process that never tuned the
collector (a collection finds less to do).
"""

import asyncio
import ctypes
import ctypes.util
import gc
import logging
import math
import time
from typing import Any

from aiortc import RTCPeerConnection

__all__ = ["INTERVAL_S", "SETTLE_S", "close_peer_connection", "collections_run", "reclaim_soon"]

logger = logging.getLogger(__name__)

CONNECT_END_S = 2.0
"""How long closing waits for aioice's ``connect()`` to notice the close."""

INTERVAL_S = 5.0
"""At most one collection per this many seconds."""

SETTLE_S = 1.0
"""A collection runs at least this long after the close that asked for it."""

_handle: asyncio.TimerHandle | None = None
_handle_loop: asyncio.AbstractEventLoop | None = None
_last_run = -math.inf
_runs = 0


def reclaim_soon() -> None:
    """Ask for a full collection soon (see the module docstring). Call it from the event
    loop, after a connection is closed."""
    global _handle, _handle_loop
    loop = asyncio.get_running_loop()
    if _handle is not None and _handle_loop is loop and not _handle.cancelled():
        return  # one is due already
    delay = max(SETTLE_S, _last_run + INTERVAL_S - time.monotonic())
    _handle_loop = loop
    _handle = loop.call_later(delay, _collect)


def collections_run() -> int:
    """How many collections :func:`reclaim_soon` has run in this process (for tests)."""
    return _runs


def _collect() -> None:
    global _handle, _handle_loop, _last_run, _runs
    _handle = _handle_loop = None
    _last_run = time.monotonic()
    _runs += 1
    gc.collect()
    if _malloc_trim is not None:
        _malloc_trim(0)


def _find_malloc_trim() -> Any:
    """glibc's ``malloc_trim``, or None where there is none (musl, macOS)."""
    name = ctypes.util.find_library("c")
    try:
        trim = getattr(ctypes.CDLL(name), "malloc_trim", None) if name else None
    except OSError:
        return None
    if trim is not None:
        trim.argtypes = [ctypes.c_size_t]
        trim.restype = ctypes.c_int
    return trim


_malloc_trim = _find_malloc_trim()


async def close_peer_connection(pc: RTCPeerConnection) -> None:
    """Close ``pc`` so that nothing of it stays behind (see the module docstring): no
    consent task on its closed ICE connection, and a collection soon after."""
    transports = _ice_transports(pc)
    try:
        await pc.close()
    finally:
        for transport in transports:
            await _end_orphaned_consent(transport)
        reclaim_soon()


def _ice_transports(pc: RTCPeerConnection) -> list[Any]:
    # Private aiortc/aioice state (pinned versions; tests/transport/test_link_churn.py is the
    # contract test): the ICE transports a closing connection leaves behind.
    found = getattr(pc, "_RTCPeerConnection__iceTransports", None)
    return list(found) if isinstance(found, set) else []


async def _end_orphaned_consent(transport: Any) -> None:
    connection = getattr(transport, "_connection", None)
    started: asyncio.Event | None = getattr(transport, "_RTCIceTransport__start", None)
    if connection is None or started is None:
        return  # connect() never ran: no consent task can appear
    if not started.is_set():
        try:
            await asyncio.wait_for(started.wait(), CONNECT_END_S)
        except TimeoutError:
            logger.debug("ICE connect() still running %.0f s after close", CONNECT_END_S)
    task = getattr(connection, "_query_consent_task", None)
    if isinstance(task, asyncio.Task) and not task.done():
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
