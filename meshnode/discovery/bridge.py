"""``TrioBridge``: trio running *inside* the node's asyncio (uvloop) loop, in guest mode.

py-libp2p is trio-native; the node is asyncio. Guest mode (``trio.lowlevel.start_guest_run``)
runs trio's scheduler on the asyncio thread, driven by the host loop's callbacks, so there is
no second thread, no GIL contention and no trio-asyncio loop replacement (which cannot run on
uvloop). Measured: 0.14 ms per asyncio -> trio -> asyncio hop, loop lag under 3 ms during DHT
work (docs/architecture.md, "Discovery").

Guarantees:
- ``call(fn, *args)`` runs the trio coroutine function ``fn`` as a task in the bridge's
  nursery and returns its result (or raises its exception) to the awaiting asyncio task.
- Cancelling the asyncio caller (``asyncio.wait_for``, a TaskGroup) cancels the trio task:
  nothing runs on in trio for a caller that has gone.
- ``aclose()`` cancels every trio task and waits until the trio run has ended; calls made
  after it raise ``BridgeClosed``.
- ``host_uses_signal_set_wakeup_fd=True``: uvloop owns the signal wakeup fd; trio must not
  take it (else SIGINT/SIGTERM handling of the node breaks).
"""

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import outcome
import trio

log = logging.getLogger("meshnode.discovery")

__all__ = ["BridgeClosed", "TrioBridge"]

T = TypeVar("T")


class BridgeClosed(RuntimeError):
    """The trio side is not running (never started, closed, or it crashed)."""


class TrioBridge:
    """One trio guest run on the running asyncio loop (see the module docstring)."""

    def __init__(self) -> None:
        self._nursery: trio.Nursery | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._done: asyncio.Future[outcome.Outcome[None]] | None = None
        self._stop: trio.Event | None = None
        self._closed = False

    @property
    def running(self) -> bool:
        """Whether calls are accepted."""
        return self._nursery is not None and not self._closed

    async def start(self) -> None:
        """Start the trio run on the current loop; returns once its nursery is open."""
        if self._done is not None:
            raise RuntimeError("a TrioBridge starts once")
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[None] = loop.create_future()
        self._done = loop.create_future()
        done = self._done

        def finished(result: outcome.Outcome[None]) -> None:
            if not done.done():
                done.set_result(result)
            if not ready.done():
                ready.set_exception(BridgeClosed(f"trio ended before it started: {result!r}"))

        async def main() -> None:
            self._stop = trio.Event()
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                self._token = trio.lowlevel.current_trio_token()
                if not ready.done():
                    ready.set_result(None)
                await self._stop.wait()
                nursery.cancel_scope.cancel()
            self._nursery = None

        def soon_threadsafe(fn: Callable[[], object]) -> None:
            loop.call_soon_threadsafe(fn)

        def soon(fn: Callable[[], object]) -> None:
            loop.call_soon(fn)

        trio.lowlevel.start_guest_run(
            main,
            run_sync_soon_threadsafe=soon_threadsafe,
            run_sync_soon_not_threadsafe=soon,
            done_callback=finished,
            host_uses_signal_set_wakeup_fd=True,
        )
        await ready

    async def call(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Run trio coroutine function ``fn(*args)`` in the bridge; see the module docstring."""
        nursery, token = self._nursery, self._token
        if nursery is None or token is None or self._closed:
            raise BridgeClosed("discovery's trio side is not running")
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[T] = loop.create_future()
        scope = trio.CancelScope()

        async def task() -> None:
            with scope:
                try:
                    value = await fn(*args)
                except BaseException as err:  # handed to the caller, whatever it is
                    if not fut.done():
                        if isinstance(err, trio.Cancelled):
                            fut.cancel()
                        else:
                            fut.set_exception(err)
                    if isinstance(err, trio.Cancelled | KeyboardInterrupt | SystemExit):
                        raise
                    return
                if not fut.done():
                    fut.set_result(value)
            if not fut.done():  # cancelled by the caller or by aclose
                fut.cancel()

        token.run_sync_soon(nursery.start_soon, task)
        try:
            return await fut
        except asyncio.CancelledError:
            # The caller went away: stop the trio task too (it may be mid-dial).
            if not scope.cancel_called:
                token.run_sync_soon(scope.cancel)
            raise

    async def aclose(self) -> None:
        """Cancel every trio task and wait for the trio run to end. Safe to call twice."""
        if self._closed or self._done is None:
            self._closed = True
            return
        self._closed = True
        stop, token = self._stop, self._token
        if stop is not None and token is not None and not self._done.done():
            token.run_sync_soon(stop.set)
        result = await self._done
        if isinstance(result, outcome.Error):
            log.warning("discovery's trio run ended with an error: %r", result.error)
