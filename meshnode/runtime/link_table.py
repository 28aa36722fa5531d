"""The node's links as a table: the services registered, who is linked, the slots (the
established links and the pool of unfinished ones), the federation policy's verdicts (logged,
counted, remembered for the status page), sending (frames packed per loop turn, link messages
at once), keepalive, and closing.

``LinkManager`` is one chain of classes, a file each: ``LinkTable`` (``link_table``: the
links, their slots, the federation policy's verdicts, sending, keepalive, closing),
``LinkIntake`` (``link_intake``: a link counted once its hello passes, and everything that
arrives on it) and ``LinkManager`` (``links``: opening links); ``link_service`` holds what
services see (``LinkService``, ``Established``).
"""


import asyncio
import itertools
import logging
import random
import time
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any

import aiohttp

from meshnode.federation.policy import FederationPolicy, FederationRefusal
from meshnode.identity import Identity
from meshnode.metrics import NodeMetrics
from meshnode.runtime.link_service import (
    _MANAGER_TYPES,
    Established,
    LinkRefused,
    LinkService,
    LocalHelloSource,
    PolicyRefusal,
)
from meshnode.runtime.pending import Evict, EvictReason, PendingPolicy, PendingPool, Refuse, Stage
from meshnode.runtime.tasks import TaskSet
from meshnode.signaling.relay import SignalRelay
from meshnode.transport.link import LinkSettings, PeerLink
from protocol.link import LinkMessage, Ping, encode_link

log = logging.getLogger("meshnode.links")

KEEPALIVE_S = 2.0  # an idle link gets a Ping this often
DEAD_AFTER_S = 8.0  # a link silent this long is closed (the peer vanished)
MAX_REFUSALS_SHOWN = 64  # federation refusals remembered for the status page, newest kept
_STAGES = {"ice_connected": Stage.ICE_CONNECTED, "secured": Stage.SECURED}


def _child(cache: dict[str, Any], family: Any, channel: str) -> Any:
    """``family.labels(channel)``, looked up once per channel (``labels()`` per frame was a
    tenth of a busy node)."""
    child = cache.get(channel)
    if child is None:
        child = cache[channel] = family.labels(channel)
    return child


class LinkTable:
    """The state of a ``LinkManager`` and its table of links (see the module docstring)."""

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

    def _new_link(self, kind_hint: str, expected: str | None) -> PeerLink:
        return PeerLink(self.identity, self.settings, self.local_hello(kind_hint),
                        expected_peer=expected)

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
