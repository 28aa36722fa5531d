"""``Node``: the running meshnode process, composing the core with its drivers.

    store (SQLite)  <-  RoomRuntime per room (RoomOverlay + SceneReplica)  <->  LinkManager
                                        ^                                       (aiortc links)
                           HTTP: signaling, web client, API, /metrics

Start-up: open the store, rebuild every room's replica from its change log, create the
default room on a first run, serve HTTP, dial the bootstrap nodes. Every applied change is
written to the store; an edit made here (a browser's) is acknowledged once it is durable,
and so is a client's change (an ``Ack`` on its link). Admission: a client that links with
no role is granted ``admit_role`` in rooms whose policy is ``open``, if this node may grant
it; an invite token in a hello is redeemed the same way in any room.
"""

import asyncio
import contextlib
import functools
import logging
import signal
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from meshnode.config import NodeConfig
from meshnode.crdt import PermissionDenied, SceneReplica
from meshnode.identity import Identity
from meshnode.metrics import NodeMetrics
from meshnode.overlay import RoomOverlay
from meshnode.overlay.events import (
    ChangeApplied,
    ConnectRequest,
    DisconnectRequest,
    Event,
    PeerMisbehaved,
    PresenceUpdated,
)
from meshnode.rooms.admission import invite_problem, may_grant
from meshnode.rooms.invite import Invite, decode_invite_bytes, make_invite, parse_invite
from meshnode.runtime.links import Established, LinkManager, LinkOwner
from meshnode.runtime.room import LIVE_OVERLAY, RoomRuntime
from meshnode.store import ChangeStore, DurableLog, RoomRecord
from meshnode.transport.ice import install_host_addresses
from meshnode.transport.link import LinkSettings, LocalHello
from meshnode.web.shared_presence import SharedPresenceRoom
from protocol.errors import DecodeError
from protocol.link import MAX_ROOMS_PER_LINK, Ack, Rooms

log = logging.getLogger("meshnode.node")

BOOTSTRAP_RETRY_S = 5.0
JOIN_GRACE_S = 10.0


@dataclass(slots=True)
class HostedRoom:
    """A room on this node: its runtime and the operator's settings for it."""

    runtime: RoomRuntime
    settings: dict[str, Any]
    stored_since_snapshot: int = 0
    clients: set[str] = field(default_factory=set)
    browser_view: SharedPresenceRoom | None = None


class Node(LinkOwner):
    """One meshnode (see the module docstring). ``await node.start()``, then
    ``await node.stop()``; ``node.url`` is where it serves."""

    def __init__(self, config: NodeConfig, identity: Identity | None = None) -> None:
        self.config = config
        self.data_dir = config.data_dir
        self._identity = identity
        self.metrics = NodeMetrics()
        self.rooms: dict[bytes, HostedRoom] = {}
        self.started_at = time.time()
        self._runner: web.AppRunner | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = asyncio.Event()
        self.store: ChangeStore | None = None
        self.durable: DurableLog | None = None
        self.links: LinkManager | None = None
        self.url = config.url
        self.app: web.Application | None = None

    # ------------------------------------------------------------------ lifecycle

    @property
    def identity(self) -> Identity:
        """This node's identity (loaded or generated on start)."""
        assert self._identity is not None, "start() the node first"
        return self._identity

    @property
    def peer_id(self) -> str:
        """This node's PeerID."""
        return self.identity.public_id

    async def start(self) -> None:
        """Open the store, load rooms, serve HTTP and dial the bootstrap nodes."""
        if not self.data_dir.exists():
            # The identity key and the rooms live here: nobody else needs to list it.
            self.data_dir.mkdir(parents=True, mode=0o700)
        if self._identity is None:
            self._identity = Identity.load_or_generate(self.data_dir / "identity.key")
        self.store = ChangeStore.open(self.data_dir / "meshnode.db",
                                      synchronous=self.config.store_synchronous)
        self.durable = DurableLog(self.store)
        await self.durable.start()
        # Process-wide, and needed before any link: browser links do not go through PeerLink.
        install_host_addresses(self.config.ice.host_addresses)
        self.links = LinkManager(self.identity,
                                 LinkSettings(ice=self.config.ice,
                                              hello_timeout_s=self.config.handshake_timeout_s),
                                 self, self.metrics, max_links=self.config.max_links,
                                 max_pending=self.config.max_pending_links)
        for record in self.store.rooms():
            self._host(record)
        if not self.rooms and self.config.default_room:
            self.create_room(self.config.default_room_name, default=True)
        await self._serve()
        for url in self.config.bootstrap:
            self._spawn(self._keep_bootstrapped(url), f"bootstrap {url}")
        for peer, url, _seen in self.store.known_peers(limit=8):
            if url and url not in self.config.bootstrap and url != self.url:
                self._spawn(self._dial_once(url), f"redial {peer[:12]}")
        log.info("node %s serving %s with %d room(s)", self.peer_id, self.url, len(self.rooms))

    async def _serve(self) -> None:
        from meshnode.signaling.http import build_app

        self.app = build_app(self)
        self._runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.config.listen_host, self.config.listen_port,
                           reuse_address=True)
        await site.start()
        if self.config.listen_port == 0 and not self.config.public_url:
            # Port 0 asks the OS for a free port (tests): report the real one.
            sockets = getattr(site._server, "sockets", None) or []
            port = sockets[0].getsockname()[1] if sockets else 0
            host = self.config.url.rsplit(":", 1)[0]
            self.url = f"{host}:{port}"

    def handle_signals(self) -> None:
        """Make SIGTERM and SIGINT stop the node gracefully (call before ``start``, so a
        signal that comes early still gets a clean stop)."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, self._stopping.set)

    async def run_until_signalled(self) -> None:
        """Run until SIGTERM or SIGINT (see ``handle_signals``), then stop gracefully."""
        self.handle_signals()
        await self._stopping.wait()
        log.info("stopping")
        await self.stop()

    async def stop(self) -> None:
        """Close links and browsers, flush the store, stop serving. Safe to call twice."""
        self._stopping.set()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.links is not None:
            await self.links.aclose()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        for hosted in self.rooms.values():
            self._snapshot(hosted)
        if self.durable is not None:
            await self.durable.close()
        for hosted in self.rooms.values():
            hosted.runtime.close()
        if self.store is not None:
            self.store.close()
            self.store = None

    def _spawn(self, coro: Any, name: str) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ------------------------------------------------------------------ rooms

    def _host(self, record: RoomRecord) -> HostedRoom:
        assert self.store is not None and self.durable is not None
        replica = SceneReplica.from_genesis(record.genesis, self.identity)
        batch: list[bytes] = []
        for data in self.store.changes(record.room_id):
            batch.append(data)
            if len(batch) >= 1_000:
                replica.apply_many(batch, time.time())
                batch = []
        if batch:
            replica.apply_many(batch, time.time())
        overlay = RoomOverlay(replica, self.identity, LIVE_OVERLAY)
        room_id = record.room_id
        durable = self.durable
        runtime = RoomRuntime(
            overlay,
            send=self._send_frame,
            persist=lambda rid, cid, data: durable.append(rid, cid, data),
            on_event=lambda ev: self._on_room_event(room_id, ev),
        )
        hosted = HostedRoom(runtime, dict(record.settings))
        self.rooms[room_id] = hosted
        self.metrics.rooms.set(len(self.rooms))
        self.metrics.room_changes.labels(room_id.hex()[:16]).set(replica.change_count())
        log.info("room %s (%s): %d changes loaded", room_id.hex()[:16], record.name,
                 replica.change_count())
        return hosted

    def create_room(self, name: str, *, default: bool = False,
                    admit: str | None = None) -> bytes:
        """Found a room owned by this node; returns its ID."""
        assert self.store is not None
        replica = SceneReplica.create(self.identity, time.time(), name=name)
        settings = {"admit": admit or self.config.admit, "default": default}
        self.store.add_room(replica.room_id, replica.genesis, name, settings)
        record = next(r for r in self.store.rooms() if r.room_id == replica.room_id)
        self._host(record)
        self._rooms_changed()
        return replica.room_id

    def join_room(self, token: str) -> bytes:
        """Host a room from an invite token, and dial the nodes it names. Raises
        ``DecodeError`` or ``ValueError`` for a bad or expired token."""
        assert self.store is not None
        invite = parse_invite(token)
        problem = invite.verify(int(time.time() * 1000))
        if problem is not None:
            raise ValueError(f"invite is not valid: {problem}")
        if invite.room_id not in self.rooms:
            replica = SceneReplica.from_genesis(invite.genesis, self.identity)
            name = replica.room_name
            self.store.add_room(invite.room_id, invite.genesis, name,
                                {"admit": "invite", "invite": token})
            record = next(r for r in self.store.rooms() if r.room_id == invite.room_id)
            self._host(record)
            self._rooms_changed()
        self._spawn(self._reach_inviter(invite), f"join {invite.room_id.hex()[:12]}")
        return invite.room_id

    async def _reach_inviter(self, invite: Invite) -> None:
        """Link to the inviter's node unless the room finds peers another way first (through
        bootstrap nodes that host it, the overlay then reaches the inviter by relayed
        signaling, which also works behind NATs)."""
        if self.config.bootstrap:
            await asyncio.sleep(JOIN_GRACE_S)
        hosted = self.rooms.get(invite.room_id)
        if hosted is None or hosted.runtime.peers():
            return
        for url in invite.urls:
            if url != self.url:
                await self._dial_once(url)

    def invite(self, room_id: bytes, role: str = "editor", ttl_s: float = 7 * 86_400) -> str:
        """An invite token for ``room_id`` signed by this node."""
        hosted = self.rooms[room_id]
        replica = hosted.runtime.replica
        inv = make_invite(room_id, replica.genesis, role, self.identity.public_key,
                          self.identity.sign, int((time.time() + ttl_s) * 1000), [self.url])
        return inv.token()

    def default_room_id(self) -> bytes | None:
        """The default room (or the first room; None if the node hosts none)."""
        for rid, hosted in self.rooms.items():
            if hosted.settings.get("default"):
                return rid
        return next(iter(self.rooms), None)

    def default_room_hex(self) -> str:
        """The default room's ID in hex ("" if none), for the web client."""
        rid = self.default_room_id()
        return rid.hex() if rid is not None else ""

    def room(self, hex_id: str) -> SharedPresenceRoom | None:
        """A room as this node's browsers see it, by hex ID (one presence entry per
        browser inside the node's own presence)."""
        try:
            hosted = self.rooms.get(bytes.fromhex(hex_id))
        except ValueError:
            return None
        if hosted is None:
            return None
        if hosted.browser_view is None:
            hosted.browser_view = SharedPresenceRoom(hosted.runtime)
        return hosted.browser_view

    def _rooms_changed(self) -> None:
        self.metrics.rooms.set(len(self.rooms))
        if self.links is None:
            return
        rooms = tuple(list(self.rooms)[:MAX_ROOMS_PER_LINK])
        for est in list(self.links.links.values()):
            self.links.send_link(est.peer, Rooms(rooms))
            self._attach_shared(est)

    def _snapshot(self, hosted: HostedRoom) -> None:
        if self.store is None or hosted.stored_since_snapshot == 0:
            return
        replica = hosted.runtime.replica
        try:
            self.store.save_snapshot(replica.room_id, replica.snapshot(), replica.change_count())
            hosted.stored_since_snapshot = 0
        except Exception:
            log.exception("snapshot of room %s failed", replica.room_id.hex()[:16])

    # ------------------------------------------------------------------ room events

    def _send_frame(self, peer: str, channel: str, frame: bytes) -> bool:
        return self.links.send(peer, channel, frame) if self.links is not None else False

    def _on_room_event(self, room_id: bytes, event: Event) -> None:
        hosted = self.rooms.get(room_id)
        if hosted is None or self.links is None:
            return
        runtime = hosted.runtime
        if isinstance(event, ChangeApplied):
            label = room_id.hex()[:16]
            self.metrics.room_changes.labels(label).set(runtime.replica.change_count())
            if event.peer is None:
                self.metrics.changes_local.inc()
            else:
                self.metrics.changes_in.inc()
                made = runtime.replica.change_time(event.change_id)
                if made is not None:
                    # Author's clock to ours: includes any clock skew between the two.
                    self.metrics.change_latency.observe(max(0.0, time.time() - made))
            hosted.stored_since_snapshot += 1
            started = time.perf_counter()
            waiter = runtime.durable(event.change_id)
            waiter.add_done_callback(functools.partial(
                self._stored, hosted, room_id, event.change_id, event.peer, started))
        elif isinstance(event, ConnectRequest):
            est = self.links.links.get(event.peer)
            if est is not None:
                if room_id in est.rooms:
                    runtime.attach(event.peer)
                else:
                    runtime.connect_failed(event.peer)
            else:
                self.links.dial_peer(event.peer)
        elif isinstance(event, DisconnectRequest):
            runtime.overlay.disconnect(event.peer, time.time())
            if event.reason == "misbehaving" or event.reason == "banned":
                self.links.close(event.peer, event.reason)
            else:
                self._close_if_unused(event.peer)
        elif isinstance(event, PeerMisbehaved):
            self.metrics.rejections.labels(event.reason).inc()
        elif isinstance(event, PresenceUpdated):
            self.metrics.presence_updates.inc()
            self.metrics.participants.labels(room_id.hex()[:16]).set(len(runtime.presence()))

    def _stored(self, hosted: HostedRoom, room_id: bytes, cid: bytes, peer: str | None,
                started: float, fut: "asyncio.Future[None]") -> None:
        if fut.cancelled() or fut.exception() is not None:
            return
        self.metrics.changes_stored.inc()
        self.metrics.store_latency.observe(time.perf_counter() - started)
        if peer is not None and peer in hosted.clients and self.links is not None:
            self.links.send_link(peer, Ack(room_id, (cid,)))
        if hosted.stored_since_snapshot >= self.config.snapshot_every:
            self._snapshot(hosted)

    def _close_if_unused(self, peer: str) -> None:
        if self.links is None:
            return
        est = self.links.links.get(peer)
        if est is None or est.hello.kind == "client":
            return
        if not any(peer in h.runtime.peers() for h in self.rooms.values()):
            self.links.close(peer, "unused")

    def dial_failed(self, peer: str) -> None:
        """The overlay's rooms learn that ``peer`` could not be reached."""
        for hosted in self.rooms.values():
            hosted.runtime.connect_failed(peer)

    # ------------------------------------------------------------------ links (LinkOwner)

    def local_hello(self, kind_hint: str) -> LocalHello:
        """Our hello: all our rooms, our URL, and the invites of rooms we were invited to."""
        invites: list[bytes] = []
        for hosted in self.rooms.values():
            token = hosted.settings.get("invite")
            if isinstance(token, str) and hosted.runtime.replica.role_of(self.peer_id) == "none":
                with contextlib.suppress(DecodeError):
                    invites.append(parse_invite(token).raw())
        return LocalHello("node", tuple(list(self.rooms)[:MAX_ROOMS_PER_LINK]), self.url,
                          tuple(invites[:4]))

    def link_up(self, est: Established) -> None:
        """Record the peer, redeem its invites, admit it, attach the rooms we share."""
        assert self.links is not None and self.store is not None
        if est.hello.url and est.hello.kind == "node":
            self.store.remember_peer(est.peer, est.hello.url, time.time())
        for raw in est.hello.invites:
            self._redeem(est.peer, raw)
        if est.hello.kind == "client":
            for rid in est.rooms & set(self.rooms):
                hosted = self.rooms[rid]
                hosted.clients.add(est.peer)
                if hosted.settings.get("admit") == "open":
                    self._admit(hosted, est.peer, self.config.admit_role)
        self._attach_shared(est)

    def _attach_shared(self, est: Established) -> None:
        for rid in est.rooms & set(self.rooms):
            runtime = self.rooms[rid].runtime
            if est.peer not in runtime.peers():
                # Our clients are served whatever the size of the room's partial view.
                runtime.attach(est.peer, leaf=est.hello.kind == "client")

    def _redeem(self, peer: str, raw: bytes) -> None:
        try:
            invite: Invite = decode_invite_bytes(raw)
        except DecodeError as err:
            self.metrics.rejections.labels("bad_invite").inc()
            log.warning("bad invite from %s: %s", peer, err)
            return
        hosted = self.rooms.get(invite.room_id)
        problem = "unknown_room" if hosted is None else invite_problem(
            hosted.runtime.replica, invite, peer, int(time.time() * 1000))
        if problem is not None or hosted is None:
            self.metrics.rejections.labels(f"invite_{problem}").inc()
            log.warning("invite from %s refused: %s", peer, problem)
            return
        self._admit(hosted, peer, invite.role)

    def _admit(self, hosted: HostedRoom, peer: str, role: str) -> None:
        replica = hosted.runtime.replica
        if replica.role_of(peer) != "none" or peer == self.peer_id:
            return
        if not may_grant(replica, self.peer_id, peer, role):
            log.info("cannot admit %s as %s: this node is %s", peer, role,
                     replica.role_of(self.peer_id))
            return

        async def grant() -> None:
            try:
                await hosted.runtime.edit(lambda r: r.grant(peer, role))
                log.info("admitted %s as %s in room %s", peer, role,
                         replica.room_id.hex()[:16])
            except (PermissionDenied, ValueError) as err:
                log.warning("could not admit %s: %s", peer, err)

        self._spawn(grant(), f"admit {peer[:12]}")

    def link_down(self, est: Established, reason: str) -> None:
        """Detach the peer from every room."""
        for hosted in self.rooms.values():
            hosted.clients.discard(est.peer)
            if est.peer in hosted.runtime.peers():
                hosted.runtime.detach(est.peer)

    def frame(self, est: Established, channel: str, data: bytes, room_id: bytes) -> None:
        """Give a room frame to its room."""
        hosted = self.rooms.get(room_id)
        if hosted is not None:
            hosted.runtime.receive(est.peer, channel, data)

    def rooms_changed(self, est: Established, rooms: set[bytes]) -> None:
        """The peer's room list changed: attach and detach rooms to match."""
        for rid in est.rooms - rooms:
            hosted = self.rooms.get(rid)
            if hosted is not None and est.peer in hosted.runtime.peers():
                hosted.runtime.detach(est.peer)
        est.rooms = set(rooms)
        self._attach_shared(est)

    # ------------------------------------------------------------------ bootstrap

    async def _dial_once(self, url: str) -> None:
        assert self.links is not None
        try:
            await self.links.dial_url(url)
        except Exception as err:  # LinkRefused, LinkClosed, HelloRejected, ...
            log.info("could not link to %s: %s", url, _describe(err))

    async def _keep_bootstrapped(self, url: str) -> None:
        """Stay linked to a bootstrap node: redial while we have no link to it."""
        assert self.links is not None
        peer: str | None = None
        while not self._stopping.is_set():
            if peer is None or peer not in self.links.links:
                try:
                    est = await self.links.dial_url(url)
                    peer = est.peer
                except Exception as err:  # whatever went wrong, keep trying
                    if getattr(err, "reason", None) != "duplicate":
                        log.info("bootstrap %s: %s (retrying)", url, _describe(err))
            await asyncio.sleep(BOOTSTRAP_RETRY_S)

    # ------------------------------------------------------------------ status


def _describe(err: BaseException) -> str:
    """An error for a log line: its reason label and message, or at least its type."""
    text = str(err) or type(err).__name__
    reason = getattr(err, "reason", None)
    return text if reason is None or text.startswith(str(reason)) else f"{reason}: {text}"
