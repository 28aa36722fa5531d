"""``LinkManager``: the node's links to other peers, how they are opened, and what arrives on them.

A link is one aiortc ``PeerLink`` (see ``meshnode.transport.link``), opened in one of three
ways: by dialling a node's HTTP signaling URL (bootstrap), by answering an offer that came
over HTTP (another node or a Python client dialling us), or through the mesh with relayed
``Signal`` messages (a peer the overlay named). Whatever the way, the link counts only once
its signed hello has been checked. Until then a link we answered (an offer over HTTP or
relayed) lives in a small pool of its own (``meshnode.runtime.pending``): it never takes one of
the ``max_links`` established slots, and when the pool is full the unfinished link that got
least far (the oldest of those) is evicted, so offers that never complete cost the node at
most ``max_pending`` connections and never keep an honest peer out. Links we dial ourselves
reserve an established slot while they open. Two links to one peer (both dialled at once) are
resolved by keeping the one offered by the smaller PeerID, on both sides; a peer that dials
again later (it restarted) replaces its old link.

The operator's ``[federation]`` policy (``meshnode.federation``) is enforced here, on every
way a link gets made: a denied or not-allowed node is never dialled when its PeerID is known
beforehand (``dial_peer``, ``dial_url(expected_peer=...)``), a relayed offer from it is
refused before it is answered, an HTTP offer that names a denied PeerID is refused before it
is answered, and whatever got through (a bootstrap URL, an invite's URL, an offer that did not
say who sent it) is closed as soon as the peer's hello names it, before any service hears of
the link. Each refusal is logged and counted (``meshnode_federation_refused_total{reason}``).

Messages after the hello are split here and fanned out to the registered services
(``LinkService``: the node's room host and address book, media, discovery; the client's room):
every service hears links come up and go down and every room frame (routed by room ID, read
without decoding); a link message goes to the one service that registered its type. The
manager itself handles the link protocol (``Hello``, ``Signal``, ``Ping``, ``Bundle``,
``Rooms``).

What arrives is handled in arrival order, in slices of the event loop's time: aiortc's
receive task runs through every datagram already queued without yielding, so handling each
message inline (verifying and applying a change, queueing it for the disk) kept the node's
other tasks (the disk's group commit, acknowledgements, the outbox) waiting for the whole
burst, and a stream of changes went through the node in waves. Messages wait in one inbox
(FIFO over all links) and are handled for at most ``INBOX_SLICE_S`` per loop turn; past
``INBOX_MAX_BYTES`` waiting they are handled at once, as before (no message is ever dropped
here, and what the inbox holds stays bounded).
"""

import asyncio
import itertools
import logging
import random
import secrets
import time
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from meshnode.federation.policy import FederationPolicy, FederationRefusal
from meshnode.identity import Identity
from meshnode.metrics import NodeMetrics
from meshnode.runtime.outbox import Outbox
from meshnode.runtime.pending import (
    Evict,
    EvictReason,
    PendingPolicy,
    PendingPool,
    Refuse,
    Stage,
)
from meshnode.runtime.tasks import TaskSet
from meshnode.signaling.relay import DEFAULT_TTL, Deliver, Forward, SignalRelay
from meshnode.transport.link import LinkSettings, LocalHello, PeerLink
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
    encode_link,
    peek_type,
)

log = logging.getLogger("meshnode.links")

MAX_OFFER_BYTES = 64 * 1024
SIGNALS_PER_S = 5.0
GARBAGE_LIMIT = 20
KEEPALIVE_S = 2.0  # an idle link gets a Ping this often
DEAD_AFTER_S = 8.0  # a link silent this long is closed (the peer vanished)
DUPLICATE_WINDOW_S = 10.0
MAX_REFUSALS_SHOWN = 64  # federation refusals remembered for the status page, newest kept
SIGNALING_TIMEOUT_S = 15.0  # a dial's HTTP offer/answer exchange, in total
RELAYED_DIAL_TIMEOUT_S = 15.0  # a relayed dial waits this long for the answer, then the hello
_STAGES = {"ice_connected": Stage.ICE_CONNECTED, "secured": Stage.SECURED}
INBOX_SLICE_S = 0.002  # handling received messages, per loop turn, before others get a turn
INBOX_MAX_BYTES = 4 * 1024 * 1024  # received, not handled yet: beyond it, handled at once
# (below the overlay's 8 MiB per neighbour per turn, which what one turn forwards must fit)


def _child(cache: dict[str, Any], family: Any, channel: str) -> Any:
    """``family.labels(channel)``, looked up once per channel (``labels()`` per frame was a
    tenth of a busy node)."""
    child = cache.get(channel)
    if child is None:
        child = cache[channel] = family.labels(channel)
    return child


class LinkRefused(Exception):
    """A link could not be opened; ``reason`` is a metric label (``denied`` and
    ``not_allowed``: the federation policy refused the peer)."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


@dataclass(slots=True)
class PolicyRefusal:
    """The federation policy refused links with ``peer``: ``count`` times, the last at
    ``at`` (wall clock), ``how`` the last way the link was being made."""

    peer: str
    reason: str
    how: str
    at: float
    count: int = 1


@dataclass(slots=True)
class Established:
    """An established link and what we know about its peer."""

    link: PeerLink
    peer: str
    hello: Hello
    offered_by_us: bool
    rooms: set[bytes]
    garbage: int = 0
    signal_tokens: float = 10.0
    signal_at: float = 0.0
    since: float = field(default_factory=time.monotonic)
    last_in: float = field(default_factory=time.monotonic)
    last_out: float = field(default_factory=time.monotonic)
    outbox: Outbox = field(default_factory=Outbox)


LocalHelloSource = Callable[[str], LocalHello]
"""Our hello for a new link, given a hint of the peer's kind (``"node"`` or ``"any"``)."""

# The link protocol itself: handled here, never given to a service.
_MANAGER_TYPES: frozenset[type[LinkMessage]] = frozenset({Hello, Signal, Ping, Bundle, Rooms})


class LinkService:
    """A service that plugs into the ``LinkManager`` (see ``LinkManager.register``).

    Override the hooks you need; the defaults do nothing. ``link_messages`` lists the link
    message types this service handles (``Ack`` for the client's room; media and discovery
    add their own): each type belongs to one service, which gets them in ``link_message``.
    """

    link_messages: tuple[type[LinkMessage], ...] = ()

    def link_up(self, est: Established) -> None:
        """A link passed its hello and is now counted."""

    def link_down(self, est: Established, reason: str) -> None:
        """An established link closed."""

    def frame(self, est: Established, channel: str, data: bytes, room_id: bytes) -> None:
        """A room frame of a room the link carries arrived."""

    def link_message(self, est: Established, msg: LinkMessage) -> None:
        """A link message of one of the types in ``link_messages`` arrived."""

    def rooms_changed(self, est: Established, rooms: set[bytes]) -> None:
        """The peer now shares ``rooms`` over the link (``est.rooms`` is still the old set)."""

    def dial_failed(self, peer: str) -> None:
        """A link to ``peer`` asked for with ``dial_peer`` could not be opened."""


def room_of_frame(data: bytes) -> bytes | None:
    """The room ID of a room frame, read without decoding it (None if it does not start like
    one: ``[version, type, bin8(32) room_id, ...]``)."""
    mtype = peek_type(data)
    if (mtype is not None and mtype < FIRST_LINK_TYPE and len(data) >= 37 and data[3] == 0xC4
            and data[4] == 32):
        return data[5:37]
    return None


class LinkManager:
    """Opens, checks, tracks and closes the node's links (see the module docstring)."""

    def __init__(self, identity: Identity, settings: LinkSettings, local_hello: LocalHelloSource,
                 metrics: NodeMetrics, *, max_links: int = 64, max_pending: int = 16,
                 pending_policy: PendingPolicy = PendingPolicy.EVICT_LEAST_ADVANCED,
                 clock: Callable[[], float] = time.time,
                 on_crash: Callable[[str, BaseException], None] | None = None,
                 federation: FederationPolicy | None = None) -> None:
        self.identity = identity
        self.me = identity.public_id
        self.federation = (federation or FederationPolicy()).for_node(self.me)
        self.refusals: dict[str, PolicyRefusal] = {}
        self.settings = settings
        self.local_hello = local_hello
        self.services: list[LinkService] = []
        self._by_type: dict[type[LinkMessage], LinkService] = {}
        self.metrics = metrics
        self.max_links = max_links
        self.clock = clock
        self.links: dict[str, Established] = {}
        self.relay = SignalRelay(self.me, random.Random())
        self._pending_relay: dict[bytes, tuple[PeerLink, str, asyncio.Future[str]]] = {}
        self._dialing: set[str] = set()
        self._opening = 0  # our own dials under way: each reserves an established slot
        self._tasks = TaskSet("links", on_crash)
        # Links we answered whose hello is not done, by ticket (see the module docstring).
        self._pending = PendingPool[int](max_pending, pending_policy)
        self._pending_links: dict[int, PeerLink] = {}
        self._tickets = itertools.count()
        self._http: aiohttp.ClientSession | None = None
        self._closed = False
        self.keepalive_s = KEEPALIVE_S
        self.dead_after_s = DEAD_AFTER_S
        self._keepalive: asyncio.Task[None] | None = None
        self._flush_scheduled = False
        self._inbox: deque[tuple[Established, str, bytes]] = deque()
        self._inbox_bytes = 0
        self._inbox_scheduled = False
        # Metric children by channel (``_child``).
        self._frames_out: dict[str, Any] = {}
        self._bytes_out: dict[str, Any] = {}
        self._bytes_in: dict[str, Any] = {}

    # ------------------------------------------------------------------ helpers

    def register(self, service: LinkService) -> None:
        """Fan link events out to ``service`` too (after those registered before it), and
        give it the link messages of the types it lists in ``link_messages``."""
        for mtype in service.link_messages:
            if mtype in _MANAGER_TYPES:
                raise ValueError(f"{mtype.__name__} is the link protocol's own message; "
                                 "the LinkManager handles it")
            owner = self._by_type.get(mtype)
            if owner is not None:
                raise ValueError(f"{mtype.__name__} is already handled by "
                                 f"{type(owner).__name__}; each link message type has one "
                                 "service")
        for mtype in service.link_messages:
            self._by_type[mtype] = service
        self.services.append(service)

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        self._tasks.spawn(coro, name)

    def _count(self) -> int:
        return len(self.links) + self._opening

    @property
    def pending(self) -> int:
        """Links we answered that have not finished their hello."""
        return len(self._pending_links)

    def _admit_pending(self) -> int:
        """Take a slot in the pool of unfinished links for a link about to be answered (the
        oldest unfinished one may be evicted for it); returns its ticket. Raises LinkRefused
        if the pool refuses (policy ``REFUSE_NEW``)."""
        ticket = next(self._tickets)
        decision = self._pending.admit(ticket)
        if isinstance(decision, Refuse):
            self.metrics.rejections.labels(decision.reason).inc()
            raise LinkRefused(decision.reason, "too many links opening; try again soon")
        if isinstance(decision, Evict):
            victim = self._pending_links.pop(decision.victim, None)
            if victim is not None:
                self._evicted(EvictReason.POOL_FULL)
                log.info("unfinished link evicted: %d links were opening", self._pending.capacity)
                self._spawn(victim.close(EvictReason.POOL_FULL.value), "evict-link")
        self.metrics.pending_links.labels("peer").set(len(self._pending))
        return ticket

    def _track_pending(self, ticket: int, link: PeerLink) -> None:
        self._pending_links[ticket] = link
        link.on_progress = lambda step: self._pending.advance(ticket, _STAGES[step])

    def _pending_done(self, ticket: int) -> None:
        self._pending.finish(ticket)
        self._pending_links.pop(ticket, None)
        self.metrics.pending_links.labels("peer").set(len(self._pending))

    def _evicted(self, reason: EvictReason) -> None:
        self.metrics.pending_evictions.labels("peer", reason.value).inc()

    def policy_refusal(self, peer: str, kind: str, how: str) -> FederationRefusal | None:
        """Whether the federation policy refuses a link with ``peer`` (whose hello says, or
        would say, ``kind``); a refusal is logged, counted and remembered for the status
        page. ``how``: the way the link was being made, for the log."""
        reason = self.federation.refusal(peer, kind)
        if reason is None:
            return None
        self.metrics.federation_refused.labels(reason.value).inc()
        log.warning("federation: refused a link with %s (%s; %s)", peer, reason.value, how)
        seen = self.refusals.pop(peer, None)
        count = 1 if seen is None else seen.count + 1
        self.refusals[peer] = PolicyRefusal(peer, reason.value, how, self.clock(), count)
        while len(self.refusals) > MAX_REFUSALS_SHOWN:
            del self.refusals[next(iter(self.refusals))]
        return reason

    def offer_refusal(self, claimed_peer: object) -> str | None:
        """An HTTP offer names its sender (``"peer"``, unproven until the hello): if the
        policy denies that PeerID, why the offer is refused before it is answered (None:
        answer it; the hello is checked anyway). Only ``deny`` applies here: a client names
        itself too, and ``allow`` binds nodes only."""
        if not isinstance(claimed_peer, str):
            return None
        reason = self.policy_refusal(claimed_peer, "client", "HTTP offer, before answering")
        if reason is None:
            return None
        return f"{reason.value}: this node's federation policy refuses {claimed_peer}"

    def neighbours(self) -> set[str]:
        """PeerIDs with an established link."""
        return set(self.links)

    def send(self, peer: str, channel: str, data: bytes) -> bool:
        """Queue room frame ``data`` for ``peer``; False if there is no link or its queue is
        full. Everything queued for a peer in one turn of the event loop leaves together,
        as one message (a ``Bundle`` when there are several frames)."""
        est = self.links.get(peer)
        if est is None:
            return False
        if not est.outbox.add(channel, data):
            self.metrics.frames_dropped.labels(channel).inc()
            return False
        _child(self._frames_out, self.metrics.frames_out, channel).inc()
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush_all)
        return True

    def _flush_all(self) -> None:
        self._flush_scheduled = False
        for est in list(self.links.values()):
            if est.outbox:
                self._flush(est)

    def _flush(self, est: Established) -> None:
        est.last_out = time.monotonic()
        for channel, data, frames in est.outbox.drain():
            if est.link.send(channel, data):
                _child(self._bytes_out, self.metrics.bytes_out, channel).inc(len(data))
            else:
                self.metrics.frames_dropped.labels(channel).inc(frames)

    def send_link(self, peer: str, msg: LinkMessage) -> bool:
        """Send a link message to ``peer`` now (after the frames queued for it, on
        ``sync``)."""
        est = self.links.get(peer)
        if est is None:
            return False
        if est.outbox:
            self._flush(est)
        est.last_out = time.monotonic()
        data = encode_link(msg)
        ok = est.link.send("sync", data)
        if ok:
            _child(self._bytes_out, self.metrics.bytes_out, "sync").inc(len(data))
        return ok

    # ------------------------------------------------------------------ opening links

    def _new_link(self, kind_hint: str, expected: str | None) -> PeerLink:
        return PeerLink(self.identity, self.settings, self.local_hello(kind_hint),
                        expected_peer=expected)

    async def _exchange(self, url: str, offer: str, signaling: str) -> object:
        """Send ``offer`` to the node at ``url`` and return its JSON answer."""
        assert self._http is not None
        base = url.rstrip("/")
        if signaling == "websocket":
            ws_url = "ws" + base[len("http"):] + "/signal/ws"
            async with self._http.ws_connect(ws_url, heartbeat=20.0) as ws:
                await ws.send_json({"type": "offer", "sdp": offer})
                body = await ws.receive_json(timeout=15)
            if not isinstance(body, dict) or body.get("type") != "answer":
                error = body.get("error") if isinstance(body, dict) else body
                raise LinkRefused("refused", str(error))
            return body
        async with self._http.post(base + "/signal/offer",
                                   json={"sdp": offer, "peer": self.me}) as resp:
            body = await resp.json(content_type=None)
            if resp.status != 200:
                raise LinkRefused("refused", str(body.get("error", resp.status)))
            return body

    async def dial_url(self, url: str, *, signaling: str = "http",
                       expected_peer: str | None = None) -> Established:
        """Open a link to the node serving ``url`` (an ``http(s)://`` URL), exchanging SDP by
        ``signaling``: ``"http"`` (POST /signal/offer) or ``"websocket"`` (/signal/ws).
        ``expected_peer``: the PeerID that must answer (discovery knows it: the federation
        policy is asked before dialling, and a hello from anyone else fails ``wrong_peer``).
        Raises LinkRefused."""
        if signaling not in ("http", "websocket"):
            raise ValueError("signaling must be 'http' or 'websocket'")
        if expected_peer is not None:
            refused = self.policy_refusal(expected_peer, "node", f"dial to {url}")
            if refused is not None:
                raise LinkRefused(refused.value, f"{expected_peer} at {url}")
        if self._count() >= self.max_links:
            raise LinkRefused("too_many_links")
        if self._http is None:
            self._http = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=SIGNALING_TIMEOUT_S))
        link = self._new_link("node", expected_peer)
        self._opening += 1
        started = time.perf_counter()
        try:
            offer = await link.create_offer()
            try:
                body = await self._exchange(url, offer, signaling)
            except (TimeoutError, aiohttp.ClientError, ValueError, TypeError) as err:
                raise LinkRefused("unreachable", f"{url}: {err}") from None
            if not isinstance(body, dict) or not isinstance(body.get("sdp"), str):
                raise LinkRefused("bad_answer", url)
            await link.accept_answer(body["sdp"])
            return await self._establish(link, offered_by_us=True, started=started)
        except BaseException:
            await link.close("dial_failed")
            raise
        finally:
            self._opening -= 1

    async def accept_offer(self, sdp: str) -> str:
        """Answer an offer that came over HTTP; the link completes in the background, in the
        pool of unfinished links (see the module docstring). Raises LinkRefused
        (``too_many_links`` when every established slot is taken)."""
        if self._count() >= self.max_links:
            raise LinkRefused("too_many_links")
        ticket = self._admit_pending()
        link = self._new_link("any", None)
        self._track_pending(ticket, link)
        started = time.perf_counter()
        try:
            answer = await link.accept_offer(sdp)
        except BaseException as err:
            self._pending_done(ticket)
            evicted = link.close_reason == EvictReason.POOL_FULL.value
            await link.close("bad_offer")
            if evicted and isinstance(err, Exception):
                raise LinkRefused(EvictReason.POOL_FULL.value,
                                  "newer offers took its place while it was answered") from None
            raise
        self._spawn(self._finish_accept(link, started, ticket), "accept-link")
        return answer

    async def _finish_accept(self, link: PeerLink, started: float, ticket: int) -> None:
        try:
            await self._establish(link, offered_by_us=False, started=started, ticket=ticket)
        except Exception as err:
            reason = getattr(err, "reason", type(err).__name__)
            log.info("incoming link failed: %s", str(err) or reason)
            self.metrics.links_closed.labels(str(reason)).inc()
            if reason == EvictReason.HELLO_TIMEOUT.value:
                self._evicted(EvictReason.HELLO_TIMEOUT)
            await link.close(str(reason))
        finally:
            self._pending_done(ticket)

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

    def dial_peer(self, peer: str, timeout_s: float = RELAYED_DIAL_TIMEOUT_S) -> None:
        """Open a link to ``peer`` through the mesh (relayed offer); in the background. The
        services hear ``link_up`` or, on failure, ``dial_failed``."""
        if peer in self.links or peer in self._dialing or peer == self.me:
            return
        if self.policy_refusal(peer, "node", "relayed dial asked by a room") is not None:
            # Said at once (not from inside the caller's event handling): the room forgets
            # the peer rather than asking again until its own timeout.
            loop = asyncio.get_running_loop()
            for service in self.services:
                loop.call_soon(service.dial_failed, peer)
            return
        self._dialing.add(peer)
        self._spawn(self._dial_relayed(peer, timeout_s), f"dial-{peer[:12]}")

    async def _dial_relayed(self, peer: str, timeout_s: float) -> None:
        link: PeerLink | None = None
        nonce = secrets.token_bytes(16)
        self._opening += 1
        started = time.perf_counter()
        try:
            if self._count() > self.max_links:
                raise LinkRefused("too_many_links")
            link = self._new_link("node", peer)
            offer = await link.create_offer()
            fut: asyncio.Future[str] = asyncio.get_running_loop().create_future()
            self._pending_relay[nonce] = (link, peer, fut)
            sig = Signal(self.me, peer, DEFAULT_TTL, nonce, "offer", offer)
            routes = self.relay.originate(sig, self.neighbours())
            if not routes:
                raise LinkRefused("no_route", peer)
            for fwd in routes:
                self.send_link(fwd.peer, fwd.signal)
            answer = await asyncio.wait_for(fut, timeout_s)
            await link.accept_answer(answer)
            await asyncio.wait_for(
                self._establish(link, offered_by_us=True, started=started), timeout_s)
        except Exception as err:
            reason = getattr(err, "reason", type(err).__name__)
            log.info("relayed dial to %s failed: %s", peer, str(err) or reason)
            self.metrics.links_closed.labels(str(reason)).inc()
            if link is not None:
                await link.close(str(reason))
            for service in self.services:
                service.dial_failed(peer)
        finally:
            self._opening -= 1
            self._pending_relay.pop(nonce, None)
            self._dialing.discard(peer)

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
            reason = getattr(err, "reason", type(err).__name__)
            self.metrics.links_closed.labels(str(reason)).inc()
            if reason == EvictReason.HELLO_TIMEOUT.value:
                self._evicted(EvictReason.HELLO_TIMEOUT)
            await link.close(str(reason))
        finally:
            self._pending_done(ticket)

    async def _keep_alive(self) -> None:
        """Ping idle links; close links that have been silent too long. ICE consent would
        notice a vanished peer only after ~30 s, and meanwhile gossip to it is lost."""
        while not self._closed:
            await asyncio.sleep(self.keepalive_s / 2)
            now = time.monotonic()
            for est in list(self.links.values()):
                if now - est.last_in > self.dead_after_s:
                    log.info("link to %s silent for %.0f s: closing", est.peer,
                             now - est.last_in)
                    self.close(est.peer, "keepalive_timeout")
                elif now - est.last_out >= self.keepalive_s:
                    self.send_link(est.peer, Ping())

    # ------------------------------------------------------------------ closing

    def _on_close(self, est: Established, reason: str) -> None:
        if self.links.get(est.peer) is est:
            del self.links[est.peer]
            self.metrics.links_closed.labels(reason).inc()
            log.info("link to %s closed: %s", est.peer, reason)
            for service in self.services:
                service.link_down(est, reason)

    def close(self, peer: str, reason: str) -> None:
        """Close the link to ``peer`` (in the background)."""
        est = self.links.get(peer)
        if est is not None:
            self._spawn(est.link.close(reason), "close-link")

    async def aclose(self) -> None:
        """Close every link and stop every task this manager started."""
        self._closed = True
        if self._keepalive is not None:
            self._keepalive.cancel()
            await asyncio.gather(self._keepalive, return_exceptions=True)
        for est in list(self.links.values()):
            await est.link.close("shutdown")
        for link in list(self._pending_links.values()):
            await link.close("shutdown")
        await self._tasks.aclose()
        if self._http is not None:
            await self._http.close()
            self._http = None
