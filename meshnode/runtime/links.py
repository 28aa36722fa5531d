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

``LinkManager`` is one chain of classes, a file each: ``LinkTable`` (``link_table``: the
links, their slots, the federation policy's verdicts, sending, keepalive, closing),
``LinkIntake`` (``link_intake``: a link counted once its hello passes, and everything that
arrives on it) and ``LinkManager`` (``links``: opening links); ``link_service`` holds what
services see (``LinkService``, ``Established``).
"""

import asyncio
import logging
import secrets
import time

import aiohttp

from meshnode.runtime.link_intake import DUPLICATE_WINDOW_S as DUPLICATE_WINDOW_S
from meshnode.runtime.link_intake import GARBAGE_LIMIT as GARBAGE_LIMIT
from meshnode.runtime.link_intake import INBOX_MAX_BYTES as INBOX_MAX_BYTES
from meshnode.runtime.link_intake import INBOX_SLICE_S as INBOX_SLICE_S
from meshnode.runtime.link_intake import SIGNALS_PER_S as SIGNALS_PER_S
from meshnode.runtime.link_intake import LinkIntake as LinkIntake
from meshnode.runtime.link_service import _MANAGER_TYPES as _MANAGER_TYPES
from meshnode.runtime.link_service import Established as Established
from meshnode.runtime.link_service import LinkRefused as LinkRefused
from meshnode.runtime.link_service import LinkService as LinkService
from meshnode.runtime.link_service import LocalHelloSource as LocalHelloSource
from meshnode.runtime.link_service import PolicyRefusal as PolicyRefusal
from meshnode.runtime.link_service import room_of_frame as room_of_frame
from meshnode.runtime.link_table import _STAGES as _STAGES
from meshnode.runtime.link_table import DEAD_AFTER_S as DEAD_AFTER_S
from meshnode.runtime.link_table import KEEPALIVE_S as KEEPALIVE_S
from meshnode.runtime.link_table import MAX_REFUSALS_SHOWN as MAX_REFUSALS_SHOWN
from meshnode.runtime.link_table import LinkTable as LinkTable
from meshnode.runtime.link_table import _child as _child
from meshnode.runtime.pending import EvictReason
from meshnode.signaling.relay import DEFAULT_TTL
from meshnode.transport.link import LinkSettings as LinkSettings
from meshnode.transport.link import LocalHello as LocalHello
from meshnode.transport.link import PeerLink
from protocol.link import Signal

log = logging.getLogger("meshnode.links")

MAX_OFFER_BYTES = 64 * 1024
SIGNALING_TIMEOUT_S = 15.0  # a dial's HTTP offer/answer exchange, in total
RELAYED_DIAL_TIMEOUT_S = 15.0  # a relayed dial waits this long for the answer, then the hello


class LinkManager(LinkIntake):
    """Opens, checks, tracks and closes the node's links (see the module docstring)."""

    # ------------------------------------------------------------------ opening links

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
            await self._close_failed(link, err)
        finally:
            self._pending_done(ticket)

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
