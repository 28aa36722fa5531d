"""WebRTC links to browsers: answer a browser's offer, run a ``BrowserSession`` on its
``client`` data channel, clean up when it goes.

Signaling is one HTTP round trip (``meshnode.web.routes``): the browser gathers all its ICE
candidates, POSTs its offer, and gets a complete answer back (aiortc gathers before
``setLocalDescription`` returns), so there is no trickle ICE.

A browser connection is *pending* from its offer until its ``client`` channel opens, then
*established*. The two are counted apart (``BrowserLinks``): at most ``max_connections``
established sessions, and at most ``max_pending`` pending connections in a pool of their own
(``meshnode.runtime.pending``) that each get ``open_timeout_s`` to open their channel. When
that pool is full a new offer evicts the pending connection that got least far through its
handshake (the oldest of those), so offers that never complete can neither take a session's
slot nor keep real browsers out.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections import Counter
from collections.abc import Callable
from typing import Any

from aiortc import RTCBundlePolicy, RTCPeerConnection, RTCSessionDescription

from meshnode.metrics import NodeMetrics
from meshnode.runtime.pending import (
    Evict,
    EvictReason,
    PendingPolicy,
    PendingPool,
    Refuse,
    Stage,
)
from meshnode.transport.ice import IceSettings, strip_mdns_candidates
from meshnode.transport.reclaim import close_peer_connection
from meshnode.web.media import BrowserMedia, MediaSetup
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

OPEN_TIMEOUT_S = 5.0
"""How long a connection may take to open its ``client`` channel before it is dropped."""

CLOSE_GRACE_S = 5.0
"""How long closing waits for edits in flight before cancelling them."""

MAX_OFFER_CHARS = 64 * 1024

_session_numbers = itertools.count(1)


class InvalidOffer(ValueError):
    """The browser's offer is not an SDP offer this node can answer."""


class TooManyBrowsers(RuntimeError):
    """This node already serves as many browsers as it is configured to (or, with the
    ``REFUSE_NEW`` pending policy, has as many connecting); ``reason`` is a metric label."""

    def __init__(self, message: str, reason: str = "too_many_browsers") -> None:
        super().__init__(message)
        self.reason = reason


class BrowserConnection:
    """One browser's ``RTCPeerConnection`` and, once its ``client`` channel is open, its
    ``BrowserSession``. Closes itself when the connection fails or the channel closes, or if
    the channel does not open within ``open_timeout_s``.

    ``on_open()`` is asked when the channel opens, before the session starts: False closes the
    connection (reason ``established_full``). ``close_reason`` says why it closed, when it
    was the node's decision (``open_timeout``, ``pool_full``, ``established_full``).
    """

    def __init__(
        self,
        pc: RTCPeerConnection,
        room: RoomAccess,
        *,
        session_name: str,
        on_closed: Callable[[], None] | None = None,
        limits: SessionLimits | None = None,
        open_timeout_s: float = OPEN_TIMEOUT_S,
        on_open: Callable[[], bool] | None = None,
        media: MediaSetup | None = None,
    ) -> None:
        self.pc = pc
        self._media_setup = media
        self.room = room
        self.name = session_name
        self.session: BrowserSession | None = None
        self._limits = limits
        self._on_closed = on_closed
        self._on_open = on_open
        self.close_reason: str | None = None
        self._channel: Any = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._close_task: asyncio.Task[None] | None = None
        loop = asyncio.get_running_loop()
        self._open_timer: asyncio.TimerHandle | None = loop.call_later(
            open_timeout_s, self._open_timed_out
        )
        self.stage = Stage.ANSWERED
        """How far the handshake got (the pending pool evicts the least advanced first)."""
        self.on_progress: Callable[[Stage], None] | None = None
        pc.on("datachannel", self._on_datachannel)
        pc.on("connectionstatechange", self._on_connection_state)
        pc.on("iceconnectionstatechange", self._on_ice_state)

    @property
    def closed(self) -> bool:
        return self._close_task is not None

    async def close(self, reason: str | None = None) -> None:
        """Close the session and the peer connection. Idempotent; safe from any task.
        ``reason``: why the node closes it (kept in ``close_reason`` if it is the first)."""
        if self.close_reason is None:
            self.close_reason = reason
        if self._close_task is None:
            self._close_task = asyncio.get_running_loop().create_task(self._close())
        await asyncio.shield(self._close_task)

    def _close_soon(self, reason: str | None = None) -> None:
        if self.close_reason is None:
            self.close_reason = reason
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
            await close_peer_connection(self.pc)
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
            self._close_soon(EvictReason.HELLO_TIMEOUT.value)

    def _on_connection_state(self) -> None:
        if self.pc.connectionState in ("failed", "closed"):
            self._close_soon()
        elif self.pc.connectionState == "connected":
            self._progress(Stage.SECURED)

    def _on_ice_state(self) -> None:
        if self.pc.iceConnectionState == "completed":
            self._progress(Stage.ICE_CONNECTED)

    def _progress(self, stage: Stage) -> None:
        if stage <= self.stage or self.closed:
            return
        self.stage = stage
        if self.on_progress is not None:
            self.on_progress(stage)

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
        media: BrowserMedia | None = None
        if self._media_setup is not None:
            media = self._start_media(session, self._media_setup)

        def on_message(message: str | bytes) -> None:
            if session.closed:
                return
            # One task per message, started in arrival order: edits reach the room in order,
            # and a slow (not yet durable) edit does not hold up the ones behind it.
            task = asyncio.get_running_loop().create_task(session.handle(message))
            self._tasks.add(task)
            task.add_done_callback(self._task_done)

        channel.on("message", on_message)
        channel.on("close", lambda: self._close_soon())

        def start() -> None:
            if self._open_timer is not None:
                self._open_timer.cancel()
                self._open_timer = None
            if self.closed:
                return
            if self._on_open is not None and not self._on_open():
                log.info("browser %s: every session slot is taken; closing", self.name)
                self._close_soon(EvictReason.ESTABLISHED_FULL.value)
                return
            session.start()
            if media is not None:
                media.start()
            log.info("browser %s: session started", self.name)

        if channel.readyState == "open":
            start()
        else:
            channel.on("open", start)

    def _start_media(self, session: BrowserSession, setup: MediaSetup) -> BrowserMedia:
        """The browser's voice and video on this connection (``meshnode.web.media``)."""
        port = None
        if setup.host is not None:
            try:
                port = setup.host.relay_for(self.room.room_id)
            except Exception:
                log.exception("browser %s: no media relay for its room", self.name)
        media = BrowserMedia(
            self.pc, session.send_message, name=self.name, node_peer=self.room.me,
            room_id=self.room.room_id, rights=setup.rights, port=port,
            limits=setup.limits, counters=session.counters,
        )
        session.media = media
        return media

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
    on_open: Callable[[], bool] | None = None,
    media: MediaSetup | None = None,
) -> tuple[str, BrowserConnection]:
    """Answer a browser's (complete, non-trickle) offer; return the answer SDP and the
    connection. The session starts when the browser's ``client`` channel opens.

    Raises ``InvalidOffer`` if the offer cannot be answered (the connection is then closed).
    ``on_closed`` is called once, when the connection is closed for whatever reason;
    ``on_open`` as in ``BrowserConnection``; ``media``: the browser's voice and video
    (``meshnode.web.media``; None: the connection carries none).
    """
    if not isinstance(offer_sdp, str) or len(offer_sdp) > MAX_OFFER_CHARS:
        raise InvalidOffer(f"an offer is an SDP string of at most {MAX_OFFER_CHARS} characters")
    if "m=application" not in offer_sdp:
        raise InvalidOffer("the offer has no data channel (m=application)")
    name = session_name or f"browser-{next(_session_numbers)}"
    config = ice.rtc_configuration()
    # Media m-lines come later, by renegotiation, all on the data channel's transport:
    # aiortc's default (BALANCED) leaves a 2nd m-line of one kind on a transport that never
    # connects (shared/design/media-relay.md, section 4).
    config.bundlePolicy = RTCBundlePolicy.MAX_BUNDLE
    pc = RTCPeerConnection(config)
    conn = BrowserConnection(
        pc, room, session_name=name, on_closed=on_closed, limits=limits,
        open_timeout_s=open_timeout_s, on_open=on_open, media=media,
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
    """The browser connections of one node: at most ``max_connections`` established sessions
    and, apart from them, at most ``max_pending`` connections whose ``client`` channel is not
    open yet, each for at most ``open_timeout_s`` (see the module docstring)."""

    def __init__(
        self,
        ice: IceSettings,
        *,
        max_connections: int = 64,
        max_pending: int = 16,
        open_timeout_s: float = OPEN_TIMEOUT_S,
        limits: SessionLimits | None = None,
        metrics: NodeMetrics | None = None,
        pending_policy: PendingPolicy = PendingPolicy.EVICT_LEAST_ADVANCED,
    ) -> None:
        if max_connections < 0:
            raise ValueError("max_connections must be >= 0")
        self.ice = ice
        self.max_connections = max_connections
        self.open_timeout_s = open_timeout_s
        self.limits = limits
        self.metrics = metrics
        self._connections: set[BrowserConnection] = set()
        """Established: their session started."""
        self._pending = PendingPool[int](max_pending, pending_policy)
        self._pending_conns: dict[int, BrowserConnection] = {}
        self._tickets = itertools.count()
        self.total = 0
        """Connections answered since start."""
        self.refused_full = 0
        """Offers refused because the node was full."""
        self.evictions: Counter[str] = Counter()
        """Pending connections closed by the pool's rules, by reason."""
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
        """Open browser connections: established, pending, and offers being answered."""
        return len(self._connections) + len(self._pending)

    @property
    def sessions(self) -> int:
        """Established browser sessions (their ``client`` channel opened)."""
        return len(self._connections)

    @property
    def pending(self) -> int:
        """Connections answered (or being answered) whose ``client`` channel is not open."""
        return len(self._pending)

    def connections(self) -> list[BrowserConnection]:
        return list(self._connections)

    def _evicted(self, reason: str) -> None:
        self.evictions[reason] += 1
        if self.metrics is not None:
            self.metrics.pending_evictions.labels("browser", reason).inc()

    def _pending_changed(self) -> None:
        if self.metrics is not None:
            self.metrics.pending_links.labels("browser").set(len(self._pending))

    def _admit(self) -> int:
        ticket = next(self._tickets)
        decision = self._pending.admit(ticket)
        if isinstance(decision, Refuse):
            self.refused_full += 1
            raise TooManyBrowsers("too many browsers are connecting; try again in a few seconds",
                                  decision.reason)
        if isinstance(decision, Evict):
            self._evicted(EvictReason.POOL_FULL.value)
            victim = self._pending_conns.pop(decision.victim, None)
            if victim is not None:  # (None: still being answered; answer() sees it)
                log.info("browser %s: evicted, %d browsers were connecting", victim.name,
                         self._pending.capacity)
                victim._close_soon(EvictReason.POOL_FULL.value)
        self._pending_changed()
        return ticket

    def _done(self, ticket: int) -> None:
        self._pending.finish(ticket)
        self._pending_conns.pop(ticket, None)
        self._pending_changed()

    async def answer(self, offer_sdp: str, room: RoomAccess,
                     media: MediaSetup | None = None) -> str:
        """Answer a browser's offer for ``room`` (with its voice and video set up by ``media``
        if given); raises ``TooManyBrowsers`` or ``InvalidOffer``."""
        if len(self._connections) >= self.max_connections:
            self.refused_full += 1
            raise TooManyBrowsers(
                f"this node serves at most {self.max_connections} browsers; try again later"
            )
        ticket = self._admit()
        holder: list[BrowserConnection] = []

        def opened() -> bool:
            # The handshake is done: move from the pending pool to the sessions, if one is free.
            self._done(ticket)
            if len(self._connections) >= self.max_connections:
                self._evicted(EvictReason.ESTABLISHED_FULL.value)
                return False
            if holder:
                self._connections.add(holder[0])
            return True

        def closed() -> None:
            if not holder:
                return
            conn = holder[0]
            if ticket in self._pending and conn.close_reason == EvictReason.HELLO_TIMEOUT.value:
                self._evicted(EvictReason.HELLO_TIMEOUT.value)
            self._done(ticket)
            self._connections.discard(conn)
            if conn.session is not None:
                self._finished.update(conn.session.counters)

        try:
            answer, conn = await answer_browser_offer(
                offer_sdp, room, self.ice, on_closed=closed, limits=self.limits,
                open_timeout_s=self.open_timeout_s, on_open=opened, media=media,
            )
        except BaseException:
            self._done(ticket)
            raise
        holder.append(conn)
        if ticket not in self._pending and conn.session is None:
            # Evicted by newer offers while it was being answered.
            await conn.close(EvictReason.POOL_FULL.value)
            raise TooManyBrowsers("too many browsers are connecting; try again in a few seconds",
                                  EvictReason.POOL_FULL.value)
        if conn.closed:
            self._done(ticket)
        elif ticket in self._pending:
            self._pending_conns[ticket] = conn
            self._pending.advance(ticket, conn.stage)
            conn.on_progress = lambda stage: self._pending.advance(ticket, stage)
        self.total += 1
        return answer

    async def close(self) -> None:
        """Close every browser connection."""
        conns = list(self._connections) + list(self._pending_conns.values())
        if conns:
            await asyncio.gather(*(c.close() for c in conns), return_exceptions=True)
        self._connections.clear()
        self._pending_conns.clear()
