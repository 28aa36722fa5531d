"""A link counted once its hello passes (the federation policy asked again, a duplicate link
resolved, the services told), and everything that arrives on it afterwards: the inbox that
handles messages in arrival order in slices of the loop's time, room frames fanned out to
the services, and the link protocol (``Hello``, ``Signal``: relayed offers answered here,
``Ping``, ``Bundle``, ``Rooms``); garbage is counted and a peer that keeps sending it is
cut off. ``meshnode.runtime.links`` says why the inbox exists."""


import asyncio
import logging
import time

from meshnode.runtime.link_service import Established, LinkRefused, room_of_frame
from meshnode.runtime.link_table import LinkTable, _child
from meshnode.runtime.pending import EvictReason
from meshnode.signaling.relay import DEFAULT_TTL, Deliver, Forward
from meshnode.transport.link import PeerLink
from protocol.errors import DecodeError
from protocol.link import (
    FIRST_LINK_TYPE,
    Bundle,
    Hello,
    LinkMessage,
    Ping,
    Rooms,
    Signal,
    decode_link,
    peek_type,
)

log = logging.getLogger("meshnode.links")

SIGNALS_PER_S = 5.0
GARBAGE_LIMIT = 20
DUPLICATE_WINDOW_S = 10.0
INBOX_SLICE_S = 0.002  # handling received messages, per loop turn, before others get a turn
INBOX_MAX_BYTES = 4 * 1024 * 1024  # received, not handled yet: beyond it, handled at once
# (below the overlay's 8 MiB per neighbour per turn, which what one turn forwards must fit)


class LinkIntake(LinkTable):
    """How a ``LinkManager`` counts a link and handles what arrives on it."""

    async def _establish(self, link: PeerLink, *, offered_by_us: bool,
                         started: float, ticket: int | None = None) -> Established:
        """Wait for ``link``'s hello and count it. ``ticket``: its slot in the pool of
        unfinished links (a link we answered), freed here; such a link needs a free
        established slot now (a link we dialled reserved one when it started)."""
        hello = await link.established()
        peer = link.peer_id
        assert peer is not None
        refused = self.policy_refusal(
            peer, hello.kind, "hello of a link " + ("we offered" if offered_by_us else
                                                    "we answered"))
        if refused is not None:
            if ticket is not None:
                self._pending_done(ticket)
            await link.close(refused.value)
            raise LinkRefused(refused.value, peer)
        old = self.links.get(peer)
        if ticket is not None:
            self._pending_done(ticket)
            if old is None and self._count() >= self.max_links:
                self._evicted(EvictReason.ESTABLISHED_FULL)
                await link.close("too_many_links")
                raise LinkRefused("too_many_links", f"{self.max_links} links established")
        if old is not None:
            # Both dialled at once: keep the link the smaller PeerID offered, on both sides.
            # Otherwise the peer dialled again because, for it, the old link is gone (it
            # restarted; our side notices a dead link only when ICE consent fails, ~30 s
            # later): the new link replaces the old.
            new_offerer = self.me if offered_by_us else peer
            old_offerer = self.me if old.offered_by_us else peer
            simultaneous = (time.monotonic() - old.since < DUPLICATE_WINDOW_S and
                            abs(hello.time_ms - old.hello.time_ms) < DUPLICATE_WINDOW_S * 100)
            if (simultaneous and new_offerer != old_offerer
                    and new_offerer != min(self.me, peer)):
                await link.close("duplicate")
                raise LinkRefused("duplicate", peer)
            del self.links[peer]
            for service in self.services:
                service.link_down(old, "duplicate")
            await old.link.close("duplicate")
        est = Established(link, peer, hello, offered_by_us, set(hello.rooms),
                          signal_at=self.clock())
        link.on_message = lambda ch, data: self._receive(est, ch, data)
        link.on_close = lambda reason: self._on_close(est, reason)
        self.links[peer] = est
        if self._keepalive is None:
            self._keepalive = asyncio.create_task(self._keep_alive(), name="link-keepalive")
        self.metrics.connect_latency.observe(time.perf_counter() - started)
        log.info("link up with %s (%s, offered by %s)", peer, hello.kind,
                 "us" if offered_by_us else "them")
        for service in self.services:
            service.link_up(est)
        return est

    # ------------------------------------------------------------------ receiving

    def _receive(self, est: Established, channel: str, data: bytes) -> None:
        """A message arrived on ``est``: into the inbox, handled soon (module docstring)."""
        est.last_in = time.monotonic()
        self._inbox.append((est, channel, data))
        self._inbox_bytes += len(data)
        if self._inbox_bytes > INBOX_MAX_BYTES:
            self._handle_inbox(float("inf"))
        elif not self._inbox_scheduled:
            self._inbox_scheduled = True
            asyncio.get_running_loop().call_soon(self._inbox_turn)

    def _inbox_turn(self) -> None:
        self._inbox_scheduled = False
        self._handle_inbox(INBOX_SLICE_S)
        if self._inbox and not self._inbox_scheduled:
            self._inbox_scheduled = True
            asyncio.get_running_loop().call_soon(self._inbox_turn)

    def _handle_inbox(self, budget_s: float) -> None:
        """Handle waiting messages in arrival order for about ``budget_s`` (at least one)."""
        deadline = time.perf_counter() + budget_s
        inbox = self._inbox
        while inbox:
            est, channel, data = inbox.popleft()
            self._inbox_bytes -= len(data)
            if self.links.get(est.peer) is not est:
                continue  # the link closed (or was replaced) after this arrived
            try:
                self._on_message(est, channel, data)
            except Exception:
                # As the link itself does with an error in its handler: this link goes,
                # the others keep being served.
                log.exception("internal error handling a message from %s", est.peer)
                self.close(est.peer, "internal_error")
            if time.perf_counter() >= deadline:
                return

    def _on_message(self, est: Established, channel: str, data: bytes) -> None:
        # (``est.last_in`` was set on arrival, by ``_receive``.)
        _child(self._bytes_in, self.metrics.bytes_in, channel).inc(len(data))
        mtype = peek_type(data)
        if mtype is not None and mtype >= FIRST_LINK_TYPE:
            try:
                msg = decode_link(data)
            except DecodeError as err:
                self._garbage(est, err.reason)
                return
            if isinstance(msg, Bundle):
                for frame in msg.frames:
                    self._on_frame(est, channel, frame)
                return
            self._on_link_message(est, msg)
            return
        self._on_frame(est, channel, data)

    def _on_frame(self, est: Established, channel: str, data: bytes) -> None:
        room = room_of_frame(data)
        if room is None or room not in est.rooms:
            # Not a frame of a room this link carries: the overlay never sees it, so count it
            # here and cut a link that keeps sending such bytes.
            self._garbage(est, "garbage" if room is None else "unshared_room")
            return
        for service in self.services:
            service.frame(est, channel, data, room)

    def count_garbage(self, est: Established, reason: str) -> None:
        """Count a message the link should not have carried against its peer (``reason`` is
        a metric label); a peer that keeps sending them is cut off."""
        self._garbage(est, reason)

    def _garbage(self, est: Established, reason: str) -> None:
        self.metrics.rejections.labels(reason).inc()
        est.garbage += 1
        log.warning("bad message from %s: %s", est.peer, reason)
        if est.garbage >= GARBAGE_LIMIT:
            self.close(est.peer, "garbage")

    def _on_link_message(self, est: Established, msg: LinkMessage) -> None:
        if isinstance(msg, Hello):
            self._garbage(est, "second_hello")
            self.close(est.peer, "second_hello")
        elif isinstance(msg, Signal):
            now = self.clock()
            est.signal_tokens = min(10.0, est.signal_tokens + (now - est.signal_at) * SIGNALS_PER_S)
            est.signal_at = now
            if est.signal_tokens < 1.0:
                self.metrics.rejections.labels("signal_flood").inc()
                return
            est.signal_tokens -= 1.0
            for action in self.relay.handle(msg, est.peer, self.neighbours(), now):
                if isinstance(action, Forward):
                    self.send_link(action.peer, action.signal)
                elif isinstance(action, Deliver):
                    self._deliver(action)
        elif isinstance(msg, Ping):
            pass  # arriving was the point (last_in)
        elif isinstance(msg, Rooms):
            new = set(msg.rooms)
            for service in self.services:
                service.rooms_changed(est, new)
            est.rooms = new
        else:
            handler = self._by_type.get(type(msg))
            if handler is not None:
                handler.link_message(est, msg)

    def _deliver(self, d: Deliver) -> None:
        sig = d.signal
        if sig.kind == "offer":
            self._spawn(self._answer_relayed(sig), "answer-relayed")
            return
        pending = self._pending_relay.get(sig.nonce)
        if pending is None or pending[1] != sig.src or pending[2].done():
            return
        if sig.kind == "answer":
            pending[2].set_result(sig.sdp)
        else:
            pending[2].set_exception(LinkRefused("refused", sig.sdp))

    async def _answer_relayed(self, sig: Signal) -> None:
        refused = self.policy_refusal(sig.src, "node", "relayed offer, before answering")
        if refused is not None:
            reply = Signal(self.me, sig.src, DEFAULT_TTL, sig.nonce, "error",
                           f"{refused.value}: refused by the node's federation policy")
            for fwd in self.relay.originate(reply, self.neighbours()):
                self.send_link(fwd.peer, fwd.signal)
            return
        if sig.src in self.links or self._count() >= self.max_links:
            reply = Signal(self.me, sig.src, DEFAULT_TTL, sig.nonce, "error",
                           "already linked" if sig.src in self.links else "too many links")
            for fwd in self.relay.originate(reply, self.neighbours()):
                self.send_link(fwd.peer, fwd.signal)
            return
        try:
            ticket = self._admit_pending()
        except LinkRefused as err:
            reply = Signal(self.me, sig.src, DEFAULT_TTL, sig.nonce, "error", str(err))
            for fwd in self.relay.originate(reply, self.neighbours()):
                self.send_link(fwd.peer, fwd.signal)
            return
        link = self._new_link("node", sig.src)
        self._track_pending(ticket, link)
        started = time.perf_counter()
        try:
            answer = await link.accept_offer(sig.sdp)
            reply = Signal(self.me, sig.src, DEFAULT_TTL, sig.nonce, "answer", answer)
            for fwd in self.relay.originate(reply, self.neighbours()):
                self.send_link(fwd.peer, fwd.signal)
            await self._establish(link, offered_by_us=False, started=started, ticket=ticket)
        except Exception as err:
            await self._close_failed(link, err)
        finally:
            self._pending_done(ticket)

    async def _close_failed(self, link: PeerLink, err: Exception) -> None:
        """An incoming link (direct or relayed offer) that failed before it was established:
        logged, counted by reason (a hello timeout also as an eviction), closed."""
        reason = getattr(err, "reason", type(err).__name__)
        log.info("incoming link failed: %s", str(err) or reason)
        self.metrics.links_closed.labels(str(reason)).inc()
        if reason == EvictReason.HELLO_TIMEOUT.value:
            self._evicted(EvictReason.HELLO_TIMEOUT)
        await link.close(str(reason))
