"""WebRTC links to browsers: answer a browser's offer, run a ``BrowserSession`` on its
``client`` data channel, clean up when it goes.

Signaling is one HTTP round trip (``meshnode.web.routes``): the browser gathers all its ICE
candidates, POSTs its offer, and gets a complete answer back (aiortc gathers before
``setLocalDescription`` returns), so there is no trickle ICE.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections import Counter
from collections.abc import Callable
from typing import Any

from aiortc import RTCPeerConnection, RTCSessionDescription

from meshnode.transport.ice import IceSettings, strip_mdns_candidates
from meshnode.web.rooms import RoomAccess
from meshnode.web.session import BrowserSession, SessionLimits

__all__ = [
    "CLIENT_CHANNEL",
    "BrowserConnection",
    "BrowserLinks",
    "InvalidOffer",
    "TooManyBrowsers",
    "answer_browser_offer",
]

log = logging.getLogger(__name__)

CLIENT_CHANNEL = "client"
"""The label of the browser's data channel."""

OPEN_TIMEOUT_S = 30.0
"""How long a connection may take to open its ``client`` channel before it is dropped."""

CLOSE_GRACE_S = 5.0
"""How long closing waits for edits in flight before cancelling them."""

MAX_OFFER_CHARS = 64 * 1024

_session_numbers = itertools.count(1)


class InvalidOffer(ValueError):
    """The browser's offer is not an SDP offer this node can answer."""


class TooManyBrowsers(RuntimeError):
    """This node already serves as many browsers as it is configured to."""


class BrowserConnection:
    """One browser's ``RTCPeerConnection`` and, once its ``client`` channel is open, its
    ``BrowserSession``. Closes itself when the connection fails or the channel closes, or if
    the channel does not open within ``open_timeout_s``."""

    def __init__(
        self,
        pc: RTCPeerConnection,
        room: RoomAccess,
        *,
        session_name: str,
        on_closed: Callable[[], None] | None = None,
        limits: SessionLimits | None = None,
        open_timeout_s: float = OPEN_TIMEOUT_S,
    ) -> None:
        self.pc = pc
        self.room = room
        self.name = session_name
        self.session: BrowserSession | None = None
        self._limits = limits
        self._on_closed = on_closed
        self._channel: Any = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._close_task: asyncio.Task[None] | None = None
        loop = asyncio.get_running_loop()
        self._open_timer: asyncio.TimerHandle | None = loop.call_later(
            open_timeout_s, self._open_timed_out
        )
        pc.on("datachannel", self._on_datachannel)
        pc.on("connectionstatechange", self._on_connection_state)

    @property
    def closed(self) -> bool:
        return self._close_task is not None

    async def close(self) -> None:
        """Close the session and the peer connection. Idempotent; safe from any task."""
        if self._close_task is None:
            self._close_task = asyncio.get_running_loop().create_task(self._close())
        await asyncio.shield(self._close_task)

    def _close_soon(self) -> None:
        if self._close_task is None:
            self._close_task = asyncio.get_running_loop().create_task(self._close())

    async def _close(self) -> None:
        if self._open_timer is not None:
            self._open_timer.cancel()
            self._open_timer = None
        if self.session is not None:
            self.session.close()
        current = asyncio.current_task()
        tasks = [t for t in self._tasks if t is not current]
        if tasks:
            # Edits in flight are committed already; let them finish becoming durable (their
            # acks are dropped) rather than cancel the node's store write, within reason.
            _, late = await asyncio.wait(tasks, timeout=CLOSE_GRACE_S)
            for task in late:
                task.cancel()
            if late:
                await asyncio.gather(*late, return_exceptions=True)
        try:
            await self.pc.close()
        except Exception:
            log.debug("browser %s: closing the peer connection failed", self.name, exc_info=True)
        on_closed, self._on_closed = self._on_closed, None
        if on_closed is not None:
            try:
                on_closed()
            except Exception:
                log.exception("browser %s: on_closed callback failed", self.name)
        log.info("browser %s: closed", self.name)

    def _open_timed_out(self) -> None:
        self._open_timer = None
        if self.session is None:
            log.info("browser %s: no %r channel opened in time", self.name, CLIENT_CHANNEL)
            self._close_soon()

    def _on_connection_state(self) -> None:
        if self.pc.connectionState in ("failed", "closed"):
            self._close_soon()

    def _on_datachannel(self, channel: Any) -> None:
        if self.closed or channel.label != CLIENT_CHANNEL or self.session is not None:
            channel.close()
            return
        self._channel = channel

        def send(text: str) -> None:
            if channel.readyState == "open":
                channel.send(text)

        session = BrowserSession(self.room, send, session_name=self.name, limits=self._limits)
        self.session = session

        def on_message(message: str | bytes) -> None:
            if session.closed:
                return
            # One task per message, started in arrival order: edits reach the room in order,
            # and a slow (not yet durable) edit does not hold up the ones behind it.
            task = asyncio.get_running_loop().create_task(session.handle(message))
            self._tasks.add(task)
            task.add_done_callback(self._task_done)

        channel.on("message", on_message)
        channel.on("close", self._close_soon)

        def start() -> None:
            if self._open_timer is not None:
                self._open_timer.cancel()
                self._open_timer = None
            if not self.closed:
                session.start()
                log.info("browser %s: session started", self.name)

        if channel.readyState == "open":
            start()
        else:
            channel.on("open", start)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("browser %s: message handler failed", self.name,
                      exc_info=task.exception())


async def answer_browser_offer(
    offer_sdp: str,
    room: RoomAccess,
    ice: IceSettings,
    *,
    on_closed: Callable[[], None] | None = None,
    session_name: str | None = None,
    limits: SessionLimits | None = None,
    open_timeout_s: float = OPEN_TIMEOUT_S,
) -> tuple[str, BrowserConnection]:
    """Answer a browser's (complete, non-trickle) offer; return the answer SDP and the
    connection. The session starts when the browser's ``client`` channel opens.

    Raises ``InvalidOffer`` if the offer cannot be answered (the connection is then closed).
    ``on_closed`` is called once, when the connection is closed for whatever reason.
    """
    if not isinstance(offer_sdp, str) or len(offer_sdp) > MAX_OFFER_CHARS:
        raise InvalidOffer(f"an offer is an SDP string of at most {MAX_OFFER_CHARS} characters")
    if "m=application" not in offer_sdp:
        raise InvalidOffer("the offer has no data channel (m=application)")
    name = session_name or f"browser-{next(_session_numbers)}"
    pc = RTCPeerConnection(ice.rtc_configuration())
    conn = BrowserConnection(
        pc, room, session_name=name, on_closed=on_closed, limits=limits,
        open_timeout_s=open_timeout_s,
    )
    try:
        offer = RTCSessionDescription(sdp=strip_mdns_candidates(offer_sdp), type="offer")
        await pc.setRemoteDescription(offer)
        await pc.setLocalDescription(await pc.createAnswer())
        answer: str = pc.localDescription.sdp
    except asyncio.CancelledError:
        await conn.close()
        raise
    except Exception as err:
        await conn.close()
        log.info("browser %s: offer refused: %r", name, err)
        raise InvalidOffer(f"cannot answer this offer: {err or type(err).__name__}") from err
    return answer, conn


class BrowserLinks:
    """The browser connections of one node, at most ``max_connections`` at a time."""

    def __init__(
        self,
        ice: IceSettings,
        *,
        max_connections: int = 64,
        limits: SessionLimits | None = None,
    ) -> None:
        if max_connections < 0:
            raise ValueError("max_connections must be >= 0")
        self.ice = ice
        self.max_connections = max_connections
        self.limits = limits
        self._connections: set[BrowserConnection] = set()
        self._answering = 0
        self.total = 0
        """Connections answered since start."""
        self.refused_full = 0
        """Offers refused because the node was full."""
        self._finished: Counter[str] = Counter()

    def counters(self) -> Counter[str]:
        """The sessions' counters (``BrowserSession.counters``), summed over every browser
        connected since start: for metrics."""
        total = Counter(self._finished)
        for conn in self._connections:
            if conn.session is not None:
                total.update(conn.session.counters)
        return total

    @property
    def count(self) -> int:
        """Open browser connections (and offers being answered)."""
        return len(self._connections) + self._answering

    def connections(self) -> list[BrowserConnection]:
        return list(self._connections)

    async def answer(self, offer_sdp: str, room: RoomAccess) -> str:
        """Answer a browser's offer for ``room``; raises ``TooManyBrowsers`` or
        ``InvalidOffer``."""
        if self.count >= self.max_connections:
            self.refused_full += 1
            raise TooManyBrowsers(
                f"this node serves at most {self.max_connections} browsers; try again later"
            )
        self._answering += 1  # reserve the slot while answering
        conn: BrowserConnection | None = None
        try:
            holder: list[BrowserConnection] = []

            def closed() -> None:
                if holder:
                    self._connections.discard(holder[0])
                    if holder[0].session is not None:
                        self._finished.update(holder[0].session.counters)

            answer, conn = await answer_browser_offer(
                offer_sdp, room, self.ice, on_closed=closed, limits=self.limits
            )
            holder.append(conn)
            if not conn.closed:
                self._connections.add(conn)
        finally:
            self._answering -= 1
        self.total += 1
        return answer

    async def close(self) -> None:
        """Close every browser connection."""
        conns = list(self._connections)
        if conns:
            await asyncio.gather(*(c.close() for c in conns), return_exceptions=True)
        self._connections.clear()
