"""Giving back the memory of closed WebRTC connections.

aiortc's ``RTCPeerConnection``, its transports, data channels and their tasks refer to each
other in cycles, so a closed connection is never freed by reference counting: only CPython's
cyclic collector frees it. The node raises the collector's thresholds
(:func:`meshnode.tuning.tune_gc`) so that a replica's many long-lived objects are not rescanned
over and over; with those thresholds a full collection comes only after about 10^8
allocations, and a connection that lived a few seconds (long enough to reach the oldest
generation) stayed in memory in practice for good: about 70 KB per abandoned offer, DTLS
keys and certificate included, measured on a node flooded with offers that never completed.

So every closed connection (a ``PeerLink`` or a browser's) calls :func:`reclaim_soon`, which
runs one full collection a little later: never sooner than ``SETTLE_S`` after the request
(aiortc's own tasks finish first) and never more often than once per ``INTERVAL_S``. The
memory of closed connections comes back within seconds, and a flood of closures costs at most
one collection per interval, whatever its rate.

Process-wide, like the collector itself; harmless in a process that never tuned the
collector (a collection finds less to do).
"""

import asyncio
import gc
import math
import time

__all__ = ["INTERVAL_S", "SETTLE_S", "collections_run", "reclaim_soon"]

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
