"""``Node``: the running meshnode process, composed from its services.

    identity, store (SQLite) + DurableLog
        LinkManager (aiortc links)  --link events-->  RoomHost (rooms, admission, durability)
                                    --link events-->  MediaRelay (voice and video, meshnode.media)
                                    --link events-->  Bootstrap (bootstrap links, address book)
        HTTP (signaling, room data, admin API, web client, /metrics) on a NodeApi

This module only builds and wires them; what each does is in its own module. ``start``
enters every service in one ``AsyncExitStack``, in dependency order: a service that fails to
start closes the ones before it and the error propagates; ``stop`` closes them in reverse
order (dialling stops, HTTP and browsers close, links close, rooms save their snapshots,
queued changes are committed, the store closes). A background task that crashes (a bug)
stops the node and ``run_until_signalled`` raises ``NodeCrashed``.
"""

import asyncio
import contextlib
import functools
import ipaddress
import logging
import signal
import socket
import time
from collections.abc import Sequence
from typing import Any

from meshnode.config import NodeConfig
from meshnode.discovery import DiscoveryState, HostRecord
from meshnode.discovery.known import known_hosts
from meshnode.discovery.mdns import MdnsDiscovery, start_mdns
from meshnode.identity import Identity
from meshnode.media.relay import MediaRelay
from meshnode.media.relay_driver import AiortcMediaDriver
from meshnode.media.room_access import media_access, participant_positions
from meshnode.metrics import NodeMetrics
from meshnode.rooms.host import RoomHost
from meshnode.runtime.bootstrap import Bootstrap
from meshnode.runtime.links import LinkManager
from meshnode.signaling.http import NodeApi, build_app, serve
from meshnode.status import NodeView
from meshnode.store import (
    ChangeStore,
    CommitFailed,
    CommitRetried,
    DataDirLock,
    DurableLog,
    DurableLogEvent,
    StoreRecovered,
)
from meshnode.transport.ice import install_host_addresses
from meshnode.transport.link import LinkSettings
from meshnode.web.host_origins import HostOrigins
from meshnode.web.media import RelayHost

log = logging.getLogger("meshnode.node")


class NodeCrashed(RuntimeError):
    """A background task of the node failed with an unexpected error (a bug; the log has
    its traceback), so the node stopped."""


class Node:
    """One meshnode (see the module docstring). ``await node.start()``, then
    ``await node.stop()``; ``node.url`` is where it serves, ``node.rooms`` its rooms."""

    def __init__(self, config: NodeConfig, identity: Identity | None = None) -> None:
        self.config = config
        self.url = config.url
        self.metrics = NodeMetrics()
        self.started_at = time.time()
        self._identity = identity
        self._stack = contextlib.AsyncExitStack()
        self._stopping = asyncio.Event()
        self._crash: tuple[str, BaseException] | None = None
        self._rooms: RoomHost | None = None
        self._links: LinkManager | None = None
        self.discovery: Any = None  # RoomDiscovery when the libp2p host runs (see discovery)
        self.mdns: MdnsDiscovery | None = None  # LAN discovery, when it runs
        self.discovery_state = DiscoveryState(False, "the node has not started")
        self.media: MediaRelay | None = None

    @property
    def identity(self) -> Identity:
        """This node's identity (loaded or generated on start)."""
        assert self._identity is not None, "start() the node first"
        return self._identity

    @property
    def peer_id(self) -> str:
        """This node's PeerID."""
        return self.identity.public_id

    @property
    def rooms(self) -> RoomHost:
        """The hosted rooms (create, join, invite)."""
        assert self._rooms is not None, "start() the node first"
        return self._rooms

    async def start(self, join: Sequence[str] = ()) -> list[str]:
        """Start every service (see the module docstring); on failure, close those started.
        ``join``: invite tokens of rooms to host, joined before bootstrap links are dialled
        (so the hellos carry the invites); returns why each refused token was refused."""
        try:
            refused = await self._start(self._stack, join)
        except BaseException:
            await self._stack.aclose()
            raise
        log.info("node %s serving %s with %d room(s)", self.peer_id, self.url,
                 len(self.rooms.rooms))
        return refused

    async def _start(self, stack: contextlib.AsyncExitStack, join: Sequence[str]) -> list[str]:
        cfg, crashed = self.config, self._crashed
        # Nothing on disk (identity, database, room) before we know the port is ours.
        await asyncio.to_thread(check_port_free, cfg.listen_host, cfg.listen_port)
        if not cfg.data_dir.exists():
            # The identity key and the rooms live here: nobody else needs to list it.
            cfg.data_dir.mkdir(parents=True, mode=0o700)
        # Before the identity: two processes on one data dir would sign as one (equivocate).
        stack.enter_context(DataDirLock(cfg.data_dir).acquire())
        if self._identity is None:
            self._identity = Identity.load_or_generate(cfg.data_dir / "identity.key")
        store = stack.enter_context(await asyncio.to_thread(
            ChangeStore.open, cfg.data_dir / "meshnode.db", synchronous=cfg.store_synchronous))
        durable = DurableLog(store, on_event=functools.partial(_count_store_event, self.metrics))
        await durable.start()
        stack.push_async_callback(durable.close)
        # Process-wide, and needed before any link: browser links do not go through PeerLink.
        install_host_addresses(cfg.ice.host_addresses)
        links = LinkManager(self.identity,
                            LinkSettings(ice=cfg.ice, hello_timeout_s=cfg.handshake_timeout_s),
                            lambda kind: self.rooms.local_hello(kind), self.metrics,
                            max_links=cfg.max_links, max_pending=cfg.max_pending_links,
                            on_crash=crashed, federation=cfg.federation)
        self._links = links
        self._rooms = rooms = RoomHost(self.identity, cfg, store, durable, links, self.metrics,
                                       url=lambda: self.url, on_crash=crashed)
        stack.push_async_callback(rooms.aclose)
        stack.push_async_callback(links.aclose)  # before the rooms close: no frame after
        media_cfg = cfg.media
        self.media = media = MediaRelay(
            links, media_cfg, self.metrics,
            AiortcMediaDriver(cfg.ice.rtc_configuration,
                              max_ingest_kbps=2 * media_cfg.max_peer_kbps),
            access=functools.partial(media_access, rooms.rooms),
            positions=functools.partial(participant_positions, rooms.rooms),
            hosted=lambda: set(rooms.rooms), on_crash=crashed)
        stack.push_async_callback(media.aclose)  # media connections close before the links
        media.start()
        bootstrap = Bootstrap(links, store, cfg.bootstrap, lambda: self.url, clock=time.time,
                              on_crash=crashed)
        await rooms.load()
        # Pages of our rooms' other hosts may fail over to us (meshnode.web.host_origins).
        origins = HostOrigins(lambda rid: rooms.rooms[rid].runtime.replica
                              if rid in rooms.rooms else None)
        for peer, url, _seen in reversed(await asyncio.to_thread(store.known_peers, 256)):
            origins.remember(peer, url)
        links.register(origins)
        view = NodeView(self.peer_id, lambda: self.url, self.started_at, self.metrics,
                        rooms.rooms, links.links, links.federation, links.refusals,
                        media.status)
        app = build_app(NodeApi(view, rooms, links.accept_offer, lambda: not store.closed,
                                lambda: durable.failing, cfg, find_hosts=self.find_hosts,
                                host_origins=origins,
                                discovery=lambda: self.discovery_state,
                                offer_refusal=links.offer_refusal,
                                media=RelayHost(media, enabled=lambda: media_cfg.enabled,
                                                hosts=lambda rid: rid in rooms.rooms)))
        port = await stack.enter_async_context(serve(app, cfg.listen_host, cfg.listen_port))
        if cfg.listen_port == 0 and not cfg.public_url:
            # Port 0 asks the OS for a free port (tests): report the real one.
            self.url = f"{cfg.url.rsplit(':', 1)[0]}:{port}"
        self.discovery_state, self.discovery = await self._start_discovery(stack, links, store)
        if self.discovery is not None:
            rooms.on_join = self.discovery.joined
        refused = []
        for token in join:
            try:
                await rooms.join_room(token)
            except ValueError as err:  # DecodeError included
                refused.append(str(err))
        stack.push_async_callback(bootstrap.aclose)
        await bootstrap.start()
        # LAN peers found by mDNS are dialled like bootstrap nodes (closed before them).
        self.mdns = await start_mdns(
            enabled=cfg.mdns, interfaces=cfg.mdns_interfaces, public_url=cfg.public_url,
            listen_host=cfg.listen_host, port=port, peer_id=self.peer_id, links=links,
            metrics=self.metrics, stack=stack, on_crash=crashed)
        return refused

    async def _start_discovery(self, stack: contextlib.AsyncExitStack, links: LinkManager,
                               store: ChangeStore) -> tuple[DiscoveryState, Any]:
        """Start the libp2p host and the DHT on this loop; when that is impossible (turned
        off, libp2p missing, the port taken), the node runs on and says why."""
        cfg = self.config
        if not cfg.discovery_enabled:
            return DiscoveryState(False, "turned off in the configuration ([discovery] "
                                         "enabled = false)"), None
        try:
            from meshnode.discovery.bridge import TrioBridge
            from meshnode.discovery.card import CardValidator
            from meshnode.discovery.libp2p_host import Libp2pHost, Libp2pMissing, import_libp2p
            from meshnode.discovery.planner import PlannerConfig
            from meshnode.discovery.service import RoomDiscovery
            import_libp2p()
        except (ImportError, Libp2pMissing) as err:
            why = str(err) if isinstance(err, Libp2pMissing) else (
                f"trio is not installed ({err}); pip install libp2p==0.8.1")
            log.warning("discovery off: %s", why)
            return DiscoveryState(False, why), None
        bridge = TrioBridge()
        await bridge.start()
        stack.push_async_callback(bridge.aclose)
        rejected: list[RoomDiscovery] = []  # the validator reports to it once it exists

        def on_reject(reason: str, detail: str) -> None:
            for discovery in rejected:
                discovery.reject(reason, detail)

        validator = CardValidator(lambda: int(time.time() * 1000), on_reject)
        host = Libp2pHost(self.identity, bridge, validator,
                          listen=(_listen_multiaddr(cfg.listen_host, cfg.discovery_port),),
                          dht_mode="client" if cfg.discovery_dht_mode == "client" else "server")
        try:
            await host.start()
        except Exception as err:  # OSError (port taken) or whatever libp2p raised
            why = (str(err) if isinstance(err, OSError) and str(err)
                   else f"the libp2p host did not start: {err!r}")
            log.warning("discovery off: %s", why)
            return DiscoveryState(False, why), None
        stack.push_async_callback(host.aclose)
        interval = cfg.discovery_announce_interval_s
        discovery = RoomDiscovery(
            self.identity, host, validator, rooms=self.rooms.rooms, links=links, store=store,
            url=lambda: self.url, metrics=self.metrics, bootstrap=cfg.bootstrap,
            may_link=links.federation.may_link, may_announce=cfg.federation.may_announce,
            config=PlannerConfig(announce_interval_s=interval,
                                 card_ttl_s=max(3 * interval, 3600.0)),
            on_crash=self._crashed)
        rejected.append(discovery)
        stack.push_async_callback(discovery.aclose)
        await discovery.start()
        log.info("discovery on: libp2p %s, DHT %s mode", " ".join(discovery.addrs()),
                 cfg.discovery_dht_mode)
        return discovery.state(), discovery

    async def find_hosts(self, room_id: bytes, timeout: float = 5.0) -> list[HostRecord]:
        """The room's hosts: through the DHT when discovery runs, else those this node knows
        (itself and its linked nodes that share the room)."""
        if self.discovery is not None:
            found: list[HostRecord] = await self.discovery.find_hosts(room_id, timeout)
            return found
        assert self._links is not None, "start() the node first"
        return known_hosts(room_id, me=self.peer_id, my_url=self.url,
                           hosted=room_id in self.rooms.rooms, links=self._links.links)

    def _crashed(self, task: str, error: BaseException) -> None:
        if self._crash is None:
            log.critical("stopping: task %r crashed: %r", task, error)
            self._crash = (task, error)
        self._stopping.set()

    def handle_signals(self) -> None:
        """Make SIGTERM and SIGINT stop the node gracefully (call before ``start``, so a
        signal that comes early still gets a clean stop)."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, self._stopping.set)

    async def run_until_signalled(self) -> None:
        """Run until SIGTERM or SIGINT (see ``handle_signals``), then stop gracefully.
        Raises ``NodeCrashed`` if a task crashed instead."""
        self.handle_signals()
        await self._stopping.wait()
        log.info("stopping")
        await self.stop()
        if self._crash is not None:
            task, error = self._crash
            raise NodeCrashed(f"task {task!r} crashed: {error!r}") from error

    async def stop(self) -> None:
        """Close every service, last started first. Safe to call twice."""
        self._stopping.set()
        await self._stack.aclose()


def check_port_free(host: str, port: int) -> None:
    """Raise ``OSError`` (as the HTTP server's bind would: "address already in use") if
    ``host:port`` cannot be bound now. Checked before the node writes anything, so that a
    node that cannot serve leaves its data directory as it was. (The server binds again a
    moment later; losing that race only means the later bind reports the same error.)"""
    if port == 0:
        return  # any free port: the server's bind cannot fail for want of one
    for family, kind, proto, _name, addr in socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE):
        with socket.socket(family, kind, proto) as probe:
            # As aiohttp's TCPSite(reuse_address=True): TIME_WAIT leftovers do not count.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(addr)
            except OSError as err:
                why = (err.strerror or str(err)).lower()
                raise OSError(err.errno, f"error while attempting to bind on address "
                                         f"{addr[:2]!r}: {why}") from None


def _listen_multiaddr(host: str, port: int) -> str:
    """The libp2p TCP listen address on the node's HTTP listen host (a name that is not an
    IP address: every interface, or loopback for ``localhost``)."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        ip = ipaddress.ip_address("127.0.0.1" if host == "localhost" else "0.0.0.0")
    return f"/ip{ip.version}/{ip}/tcp/{port}"


def _count_store_event(metrics: NodeMetrics, event: DurableLogEvent) -> None:
    """The durable log's health, on /metrics (it logs the failures itself)."""
    if isinstance(event, CommitFailed):
        metrics.store_failed_commits.labels(event.failure.reason).inc()
        metrics.store_failing.set(1)
    elif isinstance(event, CommitRetried):
        metrics.store_retries.inc()
    elif isinstance(event, StoreRecovered):
        metrics.store_failing.set(0)
