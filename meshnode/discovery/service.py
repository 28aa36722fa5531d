"""``RoomDiscovery``: the node's discovery driver. It does the I/O the planner decides on.

- Announces: every hosted room with announce on (``settings["announce"]``, default on, and
  the federation policy's ``may_announce``) is provided under its rendezvous CID and its
  signed room card published, at start, then every ``announce_interval_s``; again soon when
  new DHT peers are learned.
- Seeds the DHT: every node we link to that has a URL (bootstrap nodes included, and the
  configured bootstrap URLs even before a link is up) is asked for its libp2p addresses
  (``GET /api/libp2p``); the answer must name the PeerID we expect, and the addresses are
  dialled and added to the routing table. The routing table is written to the store's
  address book (``dht_peers``) every minute and at close, and redialled at start.
- Finds hosts (``find_hosts``): the providers of the room's rendezvous, each checked before
  it is trusted (its card's URL answers ``/healthz`` with its PeerID, or a libp2p ping to
  it succeeds), merged with the hosts known without the DHT (this node, linked nodes).
- After a join (``joined``): dials the room's live hosts found, not only the inviter.
Bad input (forged cards, dead providers, garbage seeds) is ignored with a log line and
``meshnode_discovery_rejected_total{reason}``; failed peers are backed off.
"""

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import aiohttp
from prometheus_client import Counter, Gauge

from meshnode.discovery import DiscoveryState, HostRecord
from meshnode.discovery.answer_watch import DhtAnswerWatch
from meshnode.discovery.card import CardRejected, CardValidator, decode_card, make_card
from meshnode.discovery.keys import card_key, rendezvous, rendezvous_cid
from meshnode.discovery.known import known_hosts, merge_hosts
from meshnode.discovery.libp2p_host import Libp2pHost
from meshnode.discovery.planner import (
    AnnounceSchedule,
    Check,
    Dial,
    PeerBackoff,
    PlannerConfig,
    Rejection,
    Skip,
    pick_join_dials,
    triage,
)
from meshnode.identity import Identity, peer_id_from_public_key, public_key_from_peer_id
from meshnode.metrics import NodeMetrics
from meshnode.rooms.hosted import HostedRoom
from meshnode.rooms.invite import parse_invite
from meshnode.runtime.bootstrap import describe_error
from meshnode.runtime.links import Established, LinkManager, LinkService
from meshnode.runtime.tasks import TaskSet
from meshnode.store import ChangeStore, StoreError

log = logging.getLogger("meshnode.discovery")

__all__ = ["RoomDiscovery"]

SAVE_ROUTING_EVERY_S = 60.0
REDIAL_DHT_PEERS = 32
SEED_RETRY_S = 5.0
SEED_RETRY_MAX_S = 300.0
HTTP_TIMEOUT_S = 3.0
MAX_SEED_BYTES = 8 * 1024
_LOG_EVERY_S = 10.0
# Provider records dropped from the local store after a lookup (with those that failed the
# liveness check): they would hide the real hosts. Not a denied peer's: our policy is ours,
# and this store answers other nodes' lookups too.
_FORGET = frozenset({Rejection.BAD_PROVIDER, Rejection.NOT_IN_ROOM,
                     Rejection.TOO_MANY_PROVIDERS})


class DiscoveryMetrics:
    """Discovery's series on the node's public registry (aggregates only)."""

    def __init__(self, metrics: NodeMetrics) -> None:
        r = metrics.registry
        self.rejected = Counter("meshnode_discovery_rejected",
                                "Discovery input ignored (forged or expired cards, dead "
                                "providers, garbage seeds...), by reason", ["reason"],
                                registry=r)
        self.lookups = Counter("meshnode_discovery_lookups",
                               "Host lookups in the DHT, by result (found: at least one "
                               "live host besides this node)", ["result"], registry=r)
        self.announces = Counter("meshnode_discovery_announces",
                                 "Room announces (provide + card), by result", ["result"],
                                 registry=r)
        self.routing_peers = Gauge("meshnode_discovery_routing_peers",
                                   "Peers in the DHT routing table", registry=r)


class RoomDiscovery(LinkService):
    """Discovery on a running node (see the module docstring)."""

    def __init__(self, identity: Identity, host: Libp2pHost, validator: CardValidator, *,
                 rooms: Mapping[bytes, HostedRoom], links: LinkManager, store: ChangeStore,
                 url: Callable[[], str], metrics: NodeMetrics,
                 config: PlannerConfig | None = None, bootstrap: tuple[str, ...] = (),
                 may_link: Callable[[str], bool] = lambda peer: True,
                 may_announce: Callable[[bytes], bool] = lambda room: True,
                 on_crash: Callable[[str, BaseException], None] | None = None) -> None:
        self.identity = identity
        self.peer_id = identity.public_id
        self.host = host
        self.validator = validator
        self._rooms = rooms
        self._links = links
        self._store = store
        self._url = url
        self.metrics = DiscoveryMetrics(metrics)
        self.config = config = config or PlannerConfig()
        self._bootstrap = bootstrap
        self.may_link = may_link
        self.may_announce = may_announce
        self.schedule = AnnounceSchedule(config)
        self.backoff = PeerBackoff(config)
        self._tasks = TaskSet("discovery", on_crash)
        self._http: aiohttp.ClientSession | None = None
        self._seeded: set[str] = set()
        self._logged: dict[str, float] = {}
        self._wake = asyncio.Event()
        self._watch = DhtAnswerWatch(self.reject)
        links.register(self)

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Redial the stored DHT peers, seed from the bootstrap URLs, start announcing."""
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=HTTP_TIMEOUT_S))
        self._watch.install()
        try:
            stored = await asyncio.to_thread(self._store.known_dht_peers, REDIAL_DHT_PEERS)
        except StoreError as err:
            log.warning("could not read the DHT address book: %s", err)
            stored = []
        for peer, addrs, _seen in stored:
            if peer != self.peer_id and self.may_link(peer):
                self._tasks.spawn(self._quietly(self._connect(peer, addrs)),
                                  f"dht-redial {peer[:12]}")
        for url in self._bootstrap:
            self._tasks.spawn(self._seed_until_done(url), f"dht-seed {url}")
        self._tasks.spawn(self._announce_loop(), "dht-announce")
        self._tasks.spawn(self._save_loop(), "dht-save")

    async def aclose(self) -> None:
        """Stop announcing, save the routing table, close the libp2p host."""
        await self._tasks.aclose()
        self._watch.uninstall()
        await self._save_routing()
        await self.host.aclose()
        if self._http is not None:
            await self._http.close()
            self._http = None

    def state(self) -> DiscoveryState:
        """On, with our PeerID and libp2p addresses."""
        return DiscoveryState(True, peer_id=self.peer_id, addrs=self.addrs())

    def addrs(self) -> tuple[str, ...]:
        """Our libp2p addresses as peers should dial them: a wildcard listen address
        (0.0.0.0) is replaced by the host of our URL when it is an IP address."""
        host = self._url().split("//", 1)[-1].rsplit(":", 1)[0].strip("[]")
        out = []
        for addr in self.host.addrs():
            if "/ip4/0.0.0.0/" in addr or "/ip6/::/" in addr:
                if host.replace(".", "").isdigit():
                    out.append(addr.replace("/ip4/0.0.0.0/", f"/ip4/{host}/"))
                continue
            out.append(addr)
        return tuple(out)

    def reject(self, reason: str, detail: str) -> None:
        """Count ignored input; log it (one line per reason every 10 s at most)."""
        self.metrics.rejected.labels(reason).inc()
        now = time.monotonic()
        if now - self._logged.get(reason, -_LOG_EVERY_S) >= _LOG_EVERY_S:
            self._logged[reason] = now
            log.info("discovery ignored input: %s: %s", reason, detail)

    # ------------------------------------------------------------------ announcing

    def _announced_rooms(self) -> list[bytes]:
        return [rid for rid, hosted in self._rooms.items()
                if hosted.settings.get("announce", True) is not False and self.may_announce(rid)]

    async def _announce_loop(self) -> None:
        while True:
            now = time.monotonic()
            self.schedule.update(self._announced_rooms(), now)
            for room in self.schedule.due(now):
                self._tasks.spawn(self._announce(room), f"announce {room.hex()[:12]}")
            self.metrics.routing_peers.set(self.host.routing_table_size())
            timer = self.schedule.get_timer()
            wait = 1.0 if timer is None else min(max(timer - time.monotonic(), 0.05), 1.0)
            # Rooms come and go (create, join): look again every second at the latest.
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait)

    async def announce(self, room_id: bytes) -> bool:
        """Provide ``room_id``'s rendezvous and publish our card for it now; True if both
        reached the DHT."""
        rdv = rendezvous(room_id)
        card = make_card(rdv, self.identity.public_key, self.identity.sign, [self._url()],
                         self.addrs(), int(time.time() * 1000),
                         int(self.config.card_ttl_s * 1000))
        provided = await self.host.provide(rendezvous_cid(room_id))
        published = await self.host.put_value(card.key, card.encode())
        ok = provided and published
        self.metrics.announces.labels("ok" if ok else "failed").inc()
        return ok

    async def _announce(self, room_id: bytes) -> None:
        ok = await self.announce(room_id)
        self.schedule.done(room_id, ok, time.monotonic())
        if not ok:
            log.info("announcing room %s in the DHT failed (%d routing peers); retrying",
                     room_id.hex()[:16], self.host.routing_table_size())

    # ------------------------------------------------------------------ seeding

    def link_up(self, est: Established) -> None:
        """A node linked: learn its libp2p addresses from its URL (seeds our DHT)."""
        if (est.hello.kind == "node" and est.hello.url and est.peer not in self._seeded
                and self.may_link(est.peer)):
            self._tasks.spawn(self._quietly(self.seed(est.hello.url, est.peer)),
                              f"dht-seed {est.peer[:12]}")

    async def seed(self, url: str, expected: str | None = None) -> bool:
        """Ask the node at ``url`` for its libp2p addresses and add it to the DHT; True on
        success. ``expected``: the PeerID it must name (from its link's hello)."""
        info = await self._get_json(url.rstrip("/") + "/api/libp2p")
        if info is None:
            return False
        peer, addrs = info.get("peer_id"), info.get("addrs")
        if (not isinstance(peer, str) or not isinstance(addrs, list) or not addrs
                or len(addrs) > 16
                or not all(isinstance(a, str) and a.startswith("/") and len(a) <= 200
                           for a in addrs)):
            self.reject(Rejection.BAD_SEED, f"{url}/api/libp2p answered garbage")
            return False
        if (expected is not None and peer != expected) or peer == self.peer_id:
            self.reject(Rejection.BAD_SEED, f"{url} names {peer}, expected {expected}")
            return False
        try:
            public_key_from_peer_id(peer)
        except ValueError:
            self.reject(Rejection.BAD_SEED, f"{url} names a non-meshnode PeerID")
            return False
        if not self.may_link(peer):
            self.reject(Rejection.DENIED, f"{peer} (seed {url})")
            return False
        return await self._connect(peer, tuple(addrs))

    async def _connect(self, peer: str, addrs: tuple[str, ...]) -> bool:
        now = time.monotonic()
        if not self.backoff.may_try(peer, now):
            return False
        ok = await self.host.connect(peer, addrs, HTTP_TIMEOUT_S * 2)
        if not ok:
            self.backoff.failed(peer, now)
            self.reject(Rejection.BAD_DHT_PEER, f"{peer} at {', '.join(addrs[:2])}")
            return False
        self.backoff.succeeded(peer)
        new = peer not in self._seeded
        self._seeded.add(peer)
        if new:
            # Rooms announced while we knew no one reached nobody: announce again.
            self.schedule.soon(time.monotonic())
            self._wake.set()
            self._tasks.spawn(self._save_routing(), "dht-save")
        return True

    @staticmethod
    async def _quietly(work: Awaitable[bool]) -> None:
        await work  # the result was counted and logged already

    async def _seed_until_done(self, url: str) -> None:
        wait = SEED_RETRY_S
        while not await self.seed(url):
            await asyncio.sleep(wait)
            wait = min(wait * 2, SEED_RETRY_MAX_S)

    async def _get_json(self, url: str) -> dict[str, Any] | None:
        assert self._http is not None
        try:
            async with self._http.get(url) as resp:
                if resp.status != 200:
                    return None
                raw = await resp.content.read(MAX_SEED_BYTES + 1)
            if len(raw) > MAX_SEED_BYTES:
                self.reject(Rejection.BAD_SEED, f"{url} answered over {MAX_SEED_BYTES} bytes")
                return None
            body = json.loads(raw)
        except (aiohttp.ClientError, TimeoutError, ValueError, OSError):
            return None
        return body if isinstance(body, dict) else None

    async def _save_loop(self) -> None:
        while True:
            await asyncio.sleep(SAVE_ROUTING_EVERY_S)
            await self._save_routing()

    async def _save_routing(self) -> None:
        peers = self.host.routing_peers()
        if not peers or self._store.closed:
            return
        now = time.time()
        try:
            await asyncio.to_thread(self._store.remember_dht_peers,
                                    [(p, a, now) for p, a in peers])
        except StoreError as err:
            log.warning("could not save the DHT routing table: %s", err)

    # ------------------------------------------------------------------ finding

    def membership(self, room_id: bytes) -> tuple[bool, Callable[[str], bool]] | None:
        """What our replica of ``room_id`` says about who hosts it: ``(admitted, vouched)``,
        or None when we do not hold the room. ``admitted``: we hold a role in it, so our
        replica carries the room's grants, and ``vouched(peer)`` is "holds a role in the
        room". Before that (a joiner), ``vouched`` holds for the founder (by the genesis)
        and the inviter (by the invite we were given) only."""
        hosted = self._rooms.get(room_id)
        if hosted is None:
            return None
        replica = hosted.runtime.replica

        def member(peer: str) -> bool:
            try:
                return replica.role_of(peer) != "none"
            except ValueError:
                return False

        if member(self.peer_id):
            return True, member
        inviter = ""
        token = hosted.settings.get("invite")
        if isinstance(token, str):
            with contextlib.suppress(ValueError):  # DecodeError included
                inviter = peer_id_from_public_key(parse_invite(token).issuer)
        return False, lambda peer: peer == inviter or member(peer)

    async def find_hosts(self, room_id: bytes, timeout: float = 5.0) -> list[HostRecord]:
        """The room's hosts: this node and linked nodes that share the room, and the
        providers found in the DHT that passed a liveness check (``live``); dead ones are
        left out (and backed off). When we were admitted to the room, only hosts that hold a
        role in it by our replica are listed (a provider record is anyone's claim); denied
        operators never are. Returns within about ``timeout`` whatever the DHT does."""
        deadline = time.monotonic() + timeout
        membership = self.membership(room_id)
        member = membership[1] if membership is not None and membership[0] else None
        known = known_hosts(room_id, me=self.peer_id, my_url=self._url(),
                            hosted=room_id in self._rooms, links=self._links.links,
                            addrs=self.addrs())
        if member is not None:
            for rec in known:
                if rec.peer_id != self.peer_id and not member(rec.peer_id):
                    self.reject(Rejection.NOT_IN_ROOM, f"{rec.peer_id} (a link naming the "
                                                       f"room {room_id.hex()[:16]})")
            known = [r for r in known if r.peer_id == self.peer_id or member(r.peer_id)]
        cid = rendezvous_cid(room_id)
        providers = await self.host.find_providers(cid, self.config.max_providers * 2,
                                                   max(deadline - time.monotonic(), 0.1))
        now = time.monotonic()
        actions = triage(providers, me=self.peer_id, known_live=[h.peer_id for h in known],
                         backoff=self.backoff, may_link=self.may_link, now=now,
                         config=self.config, member=member)
        checks = []
        unwanted = []
        for action in actions:
            if isinstance(action, Skip):
                self.reject(action.reason, action.peer_id)
                if action.reason in _FORGET:
                    unwanted.append(action.peer_id)
            elif isinstance(action, Check):
                checks.append(action)
        rdv = rendezvous(room_id)
        budget = max(deadline - time.monotonic(), 1.0)
        tasks = [asyncio.ensure_future(self._check(rdv, c, budget)) for c in checks]
        found: list[HostRecord] = []
        if tasks:
            # The checks are bounded one by one; this bounds the lookup as a whole.
            done, pending = await asyncio.wait(tasks, timeout=budget + 0.5)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            found = [r for t in done if not t.cancelled() and t.exception() is None
                     and (r := t.result()) is not None]
        alive = {r.peer_id for r in found}
        unwanted += [c.peer_id for c in checks if c.peer_id not in alive]
        self.host.forget_providers(cid, unwanted)
        records = merge_hosts(known, found)
        live_others = [r for r in records if r.live and r.peer_id != self.peer_id]
        self.metrics.lookups.labels("found" if live_others else "empty").inc()
        return records

    async def _check(self, rdv: bytes, check: Check, budget: float) -> HostRecord | None:
        """A provider: its card (signature-checked), then is it alive? None if dead."""
        urls: tuple[str, ...] = ()
        addrs = check.addrs
        try:
            key = card_key(rdv, public_key_from_peer_id(check.peer_id))
        except ValueError:
            return None
        value = await self.host.get_value(key, budget / 2)
        if value is not None:
            try:
                card = self.validator.card(key, decode_card(value).encode())
            except CardRejected:
                card = None  # counted by the validator's on_reject
            if card is not None:
                urls, addrs = card.urls, tuple(dict.fromkeys(card.addrs + addrs))
        live = False
        for url in urls:
            health = await self._get_json(url.rstrip("/") + "/healthz")
            if health is not None and health.get("peer_id") == check.peer_id:
                live = True
                break
        if not live:
            live = await self.host.ping(check.peer_id, addrs, budget / 2)
        if not live:
            self.backoff.failed(check.peer_id, time.monotonic())
            self.reject(Rejection.DEAD_PROVIDER, check.peer_id)
            return None
        self.backoff.succeeded(check.peer_id)
        return HostRecord(check.peer_id, urls, addrs, True)

    # ------------------------------------------------------------------ joining

    def joined(self, room_id: bytes) -> None:
        """This node was given an invite to ``room_id``: link to the room's hosts found in
        the DHT (in the background), not only to the inviter."""
        self._tasks.spawn(self._dial_hosts(room_id), f"dht-join {room_id.hex()[:12]}")

    async def _dial_hosts(self, room_id: bytes) -> None:
        """Bounded join rounds (``planner.pick_join_dials``): the hosts our replica or our
        invite vouch for first; others only if those did not answer by a later round, and
        no longer once we are admitted; a host that fails is backed off."""
        cfg = self.config
        for round_no in range(cfg.join_rounds):
            if round_no:
                await asyncio.sleep(cfg.join_wait_s * 2 ** (round_no - 1))
            membership = self.membership(room_id)
            if membership is None:
                return  # the room was left meanwhile
            admitted, vouched = membership
            records = await self.find_hosts(room_id, 5.0)
            dials = pick_join_dials(records, me=self.peer_id, linked=self._links.links,
                                    may_link=self.may_link, backoff=self.backoff,
                                    now=time.monotonic(), config=cfg, round_no=round_no,
                                    admitted=admitted, vouched=vouched)
            if dials:
                log.info("room %s: dialling %d host(s) found in the DHT (%s)",
                         room_id.hex()[:16], len(dials),
                         ", ".join(d.peer_id if vouched(d.peer_id) else f"{d.peer_id} "
                                   "(unverified)" for d in dials))
                await asyncio.gather(*(self._dial(d) for d in dials))
            if admitted:
                return  # the grants decided whom to dial: done

    async def _dial(self, dial: Dial) -> None:
        """Link to a found host; the hello must come from the PeerID it claimed."""
        try:
            await self._links.dial_url(dial.url, expected_peer=dial.peer_id)
        except Exception as err:  # LinkRefused, LinkClosed, HelloRejected, ...
            if getattr(err, "reason", None) != "duplicate":  # it dialled us meanwhile
                self.backoff.failed(dial.peer_id, time.monotonic())
                log.info("could not link to %s at %s: %s", dial.peer_id, dial.url,
                         describe_error(err))
