"""A link's life once negotiated: its two data channels (checked as they arrive), the signed
hello exchange on ``sync``, what it receives (held in an inbox until the owner takes it), what
it sends (queued behind SCTP's buffer, with backpressure) and how it closes and releases its
connection. ``PeerLink`` (``meshnode.transport.link``) adds the offer/answer negotiation;
the module docstring there gives the states and the rules.
"""

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable

from aiortc import RTCDataChannel, RTCPeerConnection
from aiortc.exceptions import InvalidStateError

from meshnode.identity import Identity
from meshnode.transport.capture import record
from meshnode.transport.hello import HelloRejected, check_hello
from meshnode.transport.ice import install_host_addresses
from meshnode.transport.link_types import (
    CHANNELS,
    PRESENCE,
    SYNC,
    ChannelStats,
    LinkClosed,
    LinkSettings,
    LinkStats,
    LocalHello,
)
from meshnode.transport.reclaim import close_peer_connection
from protocol.errors import DecodeError
from protocol.link import Hello, decode_link, encode_link, make_hello, peek_type

logger = logging.getLogger("meshnode.transport.link")  # one logger for the whole link

# Teardowns still running; kept so that a link dropped by its owner finishes closing.
_teardowns: set[asyncio.Task[None]] = set()


class LinkChannels:
    """The state of a ``PeerLink`` and everything but its negotiation (see the module
    docstring)."""

    def __init__(
        self, identity: Identity, settings: LinkSettings, local: LocalHello, *,
        expected_peer: str | None = None,
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._identity = identity
        self._settings = settings
        self._local = local
        self._expected_peer = expected_peer
        if settings.ice.host_addresses:
            install_host_addresses(settings.ice.host_addresses)
        self._pc: RTCPeerConnection | None = RTCPeerConnection(
            configuration=settings.ice.rtc_configuration()
        )
        self._pc.on("connectionstatechange", self._on_connection_state_change)
        self._pc.on("iceconnectionstatechange", self._on_ice_state_change)
        self._pc.on("datachannel", self._on_datachannel)
        self._state = "new"
        self._offerer = False
        self._channels: dict[str, RTCDataChannel] = {}
        self._local_fingerprint = ""
        self._remote_fingerprints: list[str] = []
        self._remote_fingerprint = ""
        self._max_send = settings.max_message_bytes
        self._hello_sent = False
        self._result: asyncio.Future[Hello] = self._loop.create_future()
        # Nobody may be waiting in established(): never log "exception was never retrieved".
        self._result.add_done_callback(lambda f: f.cancelled() or f.exception())
        self._deadline: asyncio.TimerHandle | None = None
        self._queue: deque[bytes] = deque()
        self._queued_bytes = 0
        self._inbox: deque[tuple[str, bytes]] = deque()
        self._inbox_bytes = 0
        self._inbox_flush: asyncio.Handle | None = None
        self._on_message: Callable[[str, bytes], None] | None = None
        self._teardown: asyncio.Task[None] | None = None
        self._describing: asyncio.Task[None] | None = None
        self._on_close: Callable[[str], None] | None = None
        self._close_told = False
        self.on_progress: Callable[[str], None] | None = None
        """Called with ``ice_connected`` then ``secured`` as the handshake passes them."""
        self.peer_id: str | None = None
        self.remote_hello: Hello | None = None
        self.closed = False
        self.close_reason: str | None = None
        self.stats = LinkStats()

    def __repr__(self) -> str:
        return f"<PeerLink {self._state} peer={self.peer_id or self._expected_peer}>"

    # ------------------------------------------------------------------ public API

    @property
    def state(self) -> str:
        """``new``, ``offering``, ``connecting``, ``established`` or ``closed``."""
        return self._state

    @property
    def on_message(self) -> Callable[[str, bytes], None] | None:
        """Called as ``on_message(channel, data)`` for every message after the hello.

        Messages that arrive while it is None wait in an inbox (up to ``max_queue_bytes``)
        and are delivered, in order, soon after it is set."""
        return self._on_message

    @on_message.setter
    def on_message(self, handler: Callable[[str, bytes], None] | None) -> None:
        self._on_message = handler
        if handler is not None and self._inbox and self._inbox_flush is None:
            self._inbox_flush = self._loop.call_soon(self._flush_inbox)

    @property
    def on_close(self) -> Callable[[str], None] | None:
        """Called once as ``on_close(reason)`` when the link closes, whoever closed it.

        Set after the link closed (it may close between ``established()`` returning and
        its caller going on), it is called soon with the reason."""
        return self._on_close

    @on_close.setter
    def on_close(self, handler: Callable[[str], None] | None) -> None:
        self._on_close = handler
        if handler is not None and self.closed and not self._close_told:
            self._loop.call_soon(self._tell_closed)

    async def established(self) -> Hello:
        """Wait for the hello exchange and return the peer's verified hello.

        Our hello is sent as soon as both channels are open, whether or not anyone waits
        here. Raises :class:`HelloRejected` if the peer's hello was refused and
        :class:`LinkClosed` if the link closed first for any other reason (including
        ``hello_timeout``: ``hello_timeout_s`` after the remote description was set)."""
        if self.closed and self._result.done() and self._result.exception() is None:
            raise LinkClosed(self.close_reason or "closed")  # established, then closed
        return await asyncio.shield(self._result)

    def send(self, channel: str, data: bytes) -> bool:
        """Send one message; True if it was handed to the channel or queued behind it.

        Never blocks and never raises for network reasons: False means dropped (link not
        established or closed, message over the size limit, ``sync`` queue full,
        ``presence`` above high water), counted in ``stats``. Raises ``ValueError`` for a
        channel name that does not exist."""
        stats = self.stats.channel(channel)
        if self._state != "established":
            return self._drop(stats, "closed" if self.closed else "not_established")
        size = len(data)
        if size > self._max_send:
            return self._drop(stats, "too_large")
        ch = self._channels[channel]
        if channel == PRESENCE:
            if ch.bufferedAmount >= self._settings.high_water_bytes:
                return self._drop(stats, "high_water")
            return self._transmit(ch, stats, bytes(data))
        if self._queue or ch.bufferedAmount >= self._settings.high_water_bytes:
            if self._queued_bytes + size > self._settings.max_queue_bytes:
                return self._drop(stats, "queue_full")
            self._queue.append(bytes(data))
            self._queued_bytes += size
            self.stats.queue_peak_bytes = max(self.stats.queue_peak_bytes, self._queued_bytes)
            self._drain()
            return True
        return self._transmit(ch, stats, bytes(data))

    def buffered_bytes(self) -> int:
        """Bytes accepted by :meth:`send` and not yet handed to SCTP (the link's queue plus
        both channels' ``bufferedAmount``)."""
        return self._queued_bytes + sum(ch.bufferedAmount for ch in self._channels.values())

    async def close(self, reason: str) -> None:
        """Close the link (idempotent) and wait until its connection is released.

        ``on_close`` is called once, with the first reason given or found."""
        self._close_now(reason, None)
        if self._teardown is not None:
            await asyncio.shield(self._teardown)

    # ------------------------------------------------------------------ channels

    def _on_datachannel(self, channel: RTCDataChannel) -> None:
        if self._offerer:
            self._close_now("unexpected_channel", None)
            return
        self._adopt(channel)

    def _adopt(self, ch: RTCDataChannel) -> None:
        label = ch.label
        if label not in CHANNELS or label in self._channels:
            self._close_now("unexpected_channel", None)
            return
        reliable = ch.maxRetransmits is None and ch.maxPacketLifeTime is None
        if (label == SYNC and not (ch.ordered and reliable)) or (
            label == PRESENCE and (ch.ordered or ch.maxRetransmits != 0)
        ):
            self._close_now("bad_channel", None)
            return
        self._channels[label] = ch
        if label == SYNC:
            ch.bufferedAmountLowThreshold = self._settings.high_water_bytes // 2
            ch.on("bufferedamountlow", self._guarded(self._drain))
        ch.on("open", self._guarded(self._maybe_send_hello))
        ch.on("close", self._guarded(lambda: self._close_now("channel_closed", None)))
        ch.on("message", self._guarded(lambda data: self._receive(label, data)))
        self._maybe_send_hello()

    def _guarded(self, handler: Callable[..., None]) -> Callable[..., None]:
        """Run an aiortc event handler so that no exception reaches aiortc (pyee would
        re-raise it inside the SCTP receive path)."""

        def run(*args: object) -> None:
            try:
                handler(*args)
            except Exception:
                logger.exception("link %r: internal error", self)
                self._close_now("internal_error", None)

        return run

    def _maybe_send_hello(self) -> None:
        if (
            self._hello_sent or self.closed or not self._local_fingerprint
            or not self._remote_fingerprint or len(self._channels) < len(CHANNELS)
        ):
            return
        if any(ch.readyState != "open" for ch in self._channels.values()):
            return
        hello = make_hello(
            self._identity.public_key, self._local.kind, self._local_fingerprint,
            self._remote_fingerprint, list(self._local.rooms), self._local.url,
            int(time.time() * 1000), self._identity.sign, list(self._local.invites),
            self._local.versions,
        )
        self._hello_sent = True
        if self._transmit(self._channels[SYNC], self.stats.sync, encode_link(hello)):
            self._maybe_established()
        else:
            self._close_now("channel_closed", None)

    def _maybe_established(self) -> None:
        if self._hello_sent and self.remote_hello is not None and not self._result.done():
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None
            self._state = "established"
            self._result.set_result(self.remote_hello)

    # ------------------------------------------------------------------ receiving

    def _receive(self, channel: str, data: bytes | str) -> None:
        if self.closed:
            return
        if not isinstance(data, bytes):
            self._close_now("text_message", None)
            return
        stats = self.stats.channel(channel)
        stats.messages_in += 1
        stats.bytes_in += len(data)
        record(False, data)
        if len(data) > self._settings.max_message_bytes:
            self._close_now("too_large", None)
            return
        if peek_type(data) == Hello.TYPE and self.remote_hello is not None:
            self._close_now("unexpected_hello", None)
            return
        if self.remote_hello is None:
            if channel == PRESENCE:  # may overtake the hello on its own stream
                self._drop(stats, "before_hello")
            else:
                self._receive_hello(data)
            return
        if self._on_message is None or self._inbox:
            if self._inbox_bytes + len(data) > self._settings.max_queue_bytes:
                self._drop(stats, "no_receiver")
                return
            self._inbox.append((channel, data))
            self._inbox_bytes += len(data)
            return
        self._deliver(self._on_message, channel, data)

    def _receive_hello(self, data: bytes) -> None:
        mtype = peek_type(data)
        if mtype is not None and mtype != Hello.TYPE:
            self._close_now("hello_expected", None)
            return
        try:
            hello = decode_link(data)
        except DecodeError as exc:
            self._close_now(exc.reason, LinkClosed(exc.reason, f"bad hello: {exc}"))
            return
        if not isinstance(hello, Hello):  # pragma: no cover - peek_type said it is one
            self._close_now("hello_expected", None)
            return
        try:
            peer_id = check_hello(
                hello, local_fingerprint=self._local_fingerprint,
                remote_fingerprints=self._remote_fingerprints,
                expected_peer=self._expected_peer, now_ms=int(time.time() * 1000),
            )
        except HelloRejected as exc:
            self._close_now(exc.reason, exc)
            return
        self.peer_id = peer_id
        self.remote_hello = hello
        self._maybe_established()

    def _flush_inbox(self) -> None:
        self._inbox_flush = None
        while self._inbox and not self.closed:
            handler = self._on_message
            if handler is None:
                return
            channel, data = self._inbox.popleft()
            self._inbox_bytes -= len(data)
            self._deliver(handler, channel, data)

    def _deliver(self, handler: Callable[[str, bytes], None], channel: str, data: bytes) -> None:
        try:
            handler(channel, data)
        except Exception:
            logger.exception("link %r: on_message handler failed", self)

    # ------------------------------------------------------------------ sending

    def _transmit(self, ch: RTCDataChannel, stats: ChannelStats, data: bytes) -> bool:
        try:
            ch.send(data)
        except (InvalidStateError, ValueError):
            return self._drop(stats, "closed")
        stats.messages_out += 1
        stats.bytes_out += len(data)
        record(True, data)
        return True

    def _drain(self) -> None:
        ch = self._channels.get(SYNC)
        if ch is None:
            return
        high_water = self._settings.high_water_bytes
        while self._queue and ch.bufferedAmount < high_water and not self.closed:
            data = self._queue.popleft()
            self._queued_bytes -= len(data)
            self._transmit(ch, self.stats.sync, data)

    @staticmethod
    def _drop(stats: ChannelStats, reason: str) -> bool:
        stats.dropped[reason] = stats.dropped.get(reason, 0) + 1
        return False

    # ------------------------------------------------------------------ closing

    def _on_connection_state_change(self) -> None:
        state = self._pc.connectionState if self._pc is not None else "closed"
        if state in ("failed", "closed"):
            self._close_now(f"connection_{state}", None)
        elif state == "connected":
            self._progress("secured")

    def _on_ice_state_change(self) -> None:
        if self._pc is not None and self._pc.iceConnectionState == "completed":
            self._progress("ice_connected")

    def _progress(self, step: str) -> None:
        handler = self.on_progress
        if handler is None or self.closed or self._state == "established":
            return
        try:
            handler(step)
        except Exception:
            logger.exception("link %r: on_progress handler failed", self)

    def _close_now(self, reason: str, error: Exception | None) -> None:
        """Mark the link closed, tell the owner, and start releasing the connection."""
        if self.closed:
            return
        self.closed = True
        self._state = "closed"
        self.close_reason = reason
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        if self._inbox_flush is not None:
            self._inbox_flush.cancel()
            self._inbox_flush = None
        if self._queue:
            dropped = self.stats.sync.dropped
            dropped["closed"] = dropped.get("closed", 0) + len(self._queue)
            self._queue.clear()
            self._queued_bytes = 0
        self._inbox.clear()
        self._inbox_bytes = 0
        if not self._result.done():
            self._result.set_exception(error if error is not None else LinkClosed(reason))
        self._on_message = None
        self.on_progress = None
        self._teardown = self._loop.create_task(self._release(), name=f"close {self!r}")
        _teardowns.add(self._teardown)
        self._teardown.add_done_callback(_teardowns.discard)
        self._tell_closed()

    def _tell_closed(self) -> None:
        on_close, self._on_close = self._on_close, None
        if on_close is None or self._close_told:
            return
        self._close_told = True
        try:
            on_close(self.close_reason or "closed")
        except Exception:
            logger.exception("link %r: on_close handler failed", self)

    async def _release(self) -> None:
        pc, self._pc = self._pc, None
        if self._describing is not None:
            await asyncio.wait([self._describing])  # see _describe_local
            self._describing = None
        try:
            if pc is not None:
                await close_peer_connection(pc)
        except Exception:
            logger.exception("link %r: closing the peer connection failed", self)
        finally:
            self._channels.clear()
