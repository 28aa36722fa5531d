"""``Libp2pHost``: the one object that owns py-libp2p in the node (its host, its Kademlia DHT).

Everything libp2p runs in the trio guest run of a ``TrioBridge`` on the node's loop; this
class's public methods are asyncio coroutines that hop into trio and back, each bounded by a
timeout, and turn every libp2p failure into a plain result (False, None, []) plus a debug
log line: libp2p is pre-1.0 and raises assorted errors, none of which may reach the node.

- Identity: the node's Ed25519 seed, so the libp2p PeerID *is* the meshnode PeerID (a peer
  met over libp2p is the node met over aiortc; the noise handshake proves it).
- ``ConnectionConfig(max_connections_per_peer=1)``: one connection per peer (with the default
  of 3 the swarm waits ~250 ms after every successful dial for more).
- The DHT runs in server mode (answers queries; in client mode it only asks) with the
  ``meshroom`` validator (``card.CardValidator``) registered, so this node never stores or
  returns a forged, unsigned, oversized or expired room card.
- TCP only, on the configured listen multiaddrs (port 0: the OS picks one).
- One dial tries at most ``MAX_ADDRS`` addresses ``DIAL_ATTEMPTS`` times each: the planner
  retries with its own backoff, and each attempt at an unproven address is a packet to
  whoever the address names.
- libp2p's auto-connector is off: it would dial every address any DHT peer put in our
  peerstore (a flood of provider records, a reflector). Only the planner's choices are dialled.
"""

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Literal, TypeVar

from meshnode.discovery.bridge import TrioBridge
from meshnode.discovery.card import CardValidator
from meshnode.identity import Identity

log = logging.getLogger("meshnode.discovery")

__all__ = ["Libp2pHost", "Libp2pMissing", "import_libp2p"]

T = TypeVar("T")
DIAL_ATTEMPTS = 2
"""TCP attempts per address of one dial (libp2p's default 4: the planner backs off itself)."""
MAX_ADDRS = 4
"""Addresses of one peer tried per dial (libp2p's default is more)."""
DhtMode = Literal["server", "client"]


class Libp2pMissing(RuntimeError):
    """py-libp2p (or trio) is not installed or does not import; the message says how to fix
    it. The node runs on without discovery."""


def import_libp2p() -> Any:
    """Import py-libp2p and return its module, or raise ``Libp2pMissing`` saying why."""
    try:
        import libp2p
        import trio  # noqa: F401 (libp2p needs it; said here so the message names it)
        from libp2p.kad_dht.kad_dht import KadDHT  # noqa: F401
    except ImportError as err:
        raise Libp2pMissing(
            f"py-libp2p is not installed ({err}); install it with `pip install "
            "libp2p==0.8.1` (it compiles fastecdsa: apt-get install gcc libgmp-dev first)"
        ) from None
    except Exception as err:  # a broken install raises whatever its import does
        raise Libp2pMissing(f"py-libp2p does not import: {err!r}") from None
    return libp2p


class Libp2pHost:
    """The libp2p host and DHT (see the module docstring). ``await start()``, then use;
    ``await aclose()`` at the end (the bridge's ``aclose`` also ends it)."""

    def __init__(self, identity: Identity, bridge: TrioBridge, validator: CardValidator, *,
                 listen: tuple[str, ...] = ("/ip4/127.0.0.1/tcp/0",),
                 dht_mode: DhtMode = "server") -> None:
        import_libp2p()
        self.identity = identity
        self.peer_id = identity.public_id
        self._bridge = bridge
        self._validator = validator
        self._listen = listen
        self._mode = dht_mode
        self._host: Any = None
        self._dht: Any = None
        self._ping: Any = None
        self._stop: Any = None

    # ------------------------------------------------------------------ lifecycle

    async def start(self, timeout: float = 15.0) -> None:
        """Create the host, listen, start the DHT. Raises ``OSError`` (cannot listen),
        ``TimeoutError`` or the error libp2p raised."""
        # libp2p logs every peer's bad stream as a warning; our own lines say what matters.
        logging.getLogger("libp2p").setLevel(logging.ERROR)
        nursery = self._bridge_nursery()
        await asyncio.wait_for(self._bridge.call(nursery.start, self._run), timeout)
        if not self.addrs():
            # py-libp2p logs a listen failure (the port in use) and runs on, deaf: a host
            # nobody can reach would announce rooms at no address.
            await self.aclose()
            raise OSError(f"the libp2p host could not listen on {' '.join(self._listen)} "
                          "(the port is in use, or the address is not this machine's); "
                          "free it or set [discovery] port = 0")

    def _bridge_nursery(self) -> Any:
        nursery = getattr(self._bridge, "_nursery", None)
        if nursery is None:
            raise RuntimeError("start the TrioBridge first")
        return nursery

    async def _run(self, task_status: Any) -> None:
        """The trio task holding the host open until ``aclose``."""
        import multiaddr
        import trio
        from libp2p import new_host
        from libp2p.crypto.ed25519 import create_new_key_pair
        from libp2p.host.ping import PingService
        from libp2p.kad_dht.kad_dht import DHTMode, KadDHT
        from libp2p.network.config import ConnectionConfig, RetryConfig
        from libp2p.records.validator import Validator
        from libp2p.tools.anyio_service import background_trio_service

        checker = self._validator

        class MeshroomValidator(Validator):  # type: ignore[misc]
            def validate(self, key: str, value: bytes) -> None:
                checker.validate(key, value)

            def select(self, key: str, values: list[bytes]) -> int:
                return checker.select(key, values)

        key_pair = create_new_key_pair(self.identity.private_bytes())
        addrs = [multiaddr.Multiaddr(a) for a in self._listen]
        host = new_host(key_pair=key_pair, listen_addrs=addrs,
                        connection_config=ConnectionConfig(max_connections_per_peer=1,
                                                           max_peer_addrs_to_dial=MAX_ADDRS))
        host.get_network().retry_config = RetryConfig(max_retries=DIAL_ATTEMPTS - 1)
        if str(host.get_id()) != self.peer_id:  # the evaluation says it never is; be sure
            raise RuntimeError(f"libp2p derived PeerID {host.get_id()} from our key, not "
                               f"{self.peer_id}")
        connector = getattr(host.get_network(), "auto_connector", None)
        if connector is not None:
            # libp2p's auto-connector dials, up to 32 at a time every 10 s, every address
            # that reached our peerstore, including those any DHT peer named in an answer:
            # a flood of provider records would make us dial strangers in a loop (or hammer
            # a victim's address). We dial only peers our planner chose.
            async def no_auto_dials() -> None:
                return None

            connector.maybe_connect = no_auto_dials
        mode = DHTMode.SERVER if self._mode == "server" else DHTMode.CLIENT
        dht = KadDHT(host, mode, enable_random_walk=False)
        dht.register_validator(checker.namespace, MeshroomValidator())
        self._stop = trio.Event()
        async with host.run(listen_addrs=addrs), background_trio_service(dht):
            self._host, self._dht, self._ping = host, dht, PingService(host)
            task_status.started()
            try:
                await self._stop.wait()
            finally:
                self._host = self._dht = self._ping = None

    async def aclose(self) -> None:
        """Stop the DHT and close the host (its task ends)."""
        stop = self._stop
        if stop is not None and self._bridge.running:
            self._stop = None
            await self._call(self._set_event, 5.0, stop, default=None)

    @staticmethod
    async def _set_event(event: Any) -> None:
        event.set()

    @property
    def running(self) -> bool:
        """Whether the host is up."""
        return self._host is not None

    def addrs(self) -> tuple[str, ...]:
        """The multiaddrs this host listens on (``/ip4/.../tcp/PORT``, no ``/p2p`` part)."""
        if self._host is None:
            return ()
        return tuple(str(a) for a in self._host.get_transport_addrs())

    # ------------------------------------------------------------------ calls into trio

    async def _call(self, fn: Callable[..., Awaitable[T]], timeout: float, *args: Any,
                    default: T) -> T:
        """``fn(*args)`` in trio, bounded by ``timeout``; ``default`` on any failure."""
        if self._host is None:
            return default
        try:
            return await asyncio.wait_for(self._bridge.call(fn, *args), timeout)
        except TimeoutError:
            log.debug("libp2p %s timed out after %.1f s", fn.__name__, timeout)
        except Exception as err:  # libp2p raises many kinds; none may reach the node
            log.debug("libp2p %s failed: %r", fn.__name__, err)
        return default

    async def provide(self, cid: str, timeout: float = 30.0) -> bool:
        """Announce this node as a provider of ``cid``."""
        return await self._call(self._provide, timeout, cid, default=False)

    async def _provide(self, cid: str) -> bool:
        return bool(await self._dht.provide(cid))

    async def find_providers(self, cid: str, count: int,
                             timeout: float) -> list[tuple[str, tuple[str, ...]]]:
        """Providers of ``cid``: ``(peer_id, addrs)`` each (unchecked claims)."""
        return await self._call(self._find_providers, timeout, cid, count, default=[])

    async def _find_providers(self, cid: str, count: int) -> list[tuple[str, tuple[str, ...]]]:
        from libp2p.kad_dht.kad_dht import _encode_key

        # py-libp2p answers from the local provider store alone once it holds any record of
        # the key (records are kept 48 h): a node that looked a room up once, or hosts it,
        # would never hear of a host that came later. So the local records step aside for
        # the network lookup, then join its result (the ones it did not return, last).
        store = self._dht.provider_store
        key = _encode_key(cid)
        held = store.providers.pop(key, None) or {}
        try:
            infos = list(await store.find_providers(key, count))
        finally:
            if held:
                merged = store.providers.setdefault(key, {})
                for peer, record in held.items():
                    merged.setdefault(peer, record)
        out = [(str(i.peer_id), tuple(str(a) for a in i.addrs)) for i in infos]
        seen = {peer for peer, _ in out}
        for peer, record in held.items():
            if peer not in seen and not record.is_expired():
                out.append((peer, tuple(str(a) for a in record.addresses)))
        return out[:count]

    async def put_value(self, key: str, value: bytes, timeout: float = 30.0) -> bool:
        """Publish ``value`` under ``key`` (validated here first, then on every node)."""
        return await self._call(self._put_value, timeout, key, value, default=False)

    async def _put_value(self, key: str, value: bytes) -> bool:
        await self._dht.put_value(key, value)
        return True

    async def get_value(self, key: str, timeout: float) -> bytes | None:
        """The best valid value under ``key`` (None: none found)."""
        return await self._call(self._get_value, timeout, key, default=None)

    async def _get_value(self, key: str) -> bytes | None:
        value = await self._dht.get_value(key)
        return bytes(value) if value is not None else None

    async def connect(self, peer_id: str, addrs: tuple[str, ...], timeout: float) -> bool:
        """Dial ``peer_id`` at ``addrs`` and add it to the DHT's routing table; True if the
        peer answered as that PeerID (noise proves it) and speaks the DHT."""
        return await self._call(self._connect, timeout, peer_id, addrs, default=False)

    async def _connect(self, peer_id: str, addrs: tuple[str, ...]) -> bool:
        import multiaddr
        from libp2p.peer.id import ID
        from libp2p.peer.peerinfo import PeerInfo

        pid = ID.from_base58(peer_id)
        info = PeerInfo(pid, [multiaddr.Multiaddr(a) for a in addrs])
        await self._host.connect(info)
        added = await self._dht.add_peer(pid)
        return bool(added) or pid in self._dht.routing_table.get_peer_ids()

    async def ping(self, peer_id: str, addrs: tuple[str, ...], timeout: float) -> bool:
        """Liveness: connect to ``peer_id`` (at ``addrs`` if not connected) and ping it."""
        return await self._call(self._ping_peer, timeout, peer_id, addrs, default=False)

    async def _ping_peer(self, peer_id: str, addrs: tuple[str, ...]) -> bool:
        import multiaddr
        from libp2p.peer.id import ID
        from libp2p.peer.peerinfo import PeerInfo

        pid = ID.from_base58(peer_id)
        await self._host.connect(PeerInfo(pid, [multiaddr.Multiaddr(a) for a in addrs]))
        return bool(await self._ping.ping(pid))

    def forget_providers(self, cid: str, peers: Iterable[str]) -> int:
        """Drop ``peers``' provider records of ``cid`` from this node's local provider store;
        returns how many went. A lookup answers from the local store alone once it holds any
        record of the key (at most 20 per key, kept 48 h), so records of dead, foreign or
        garbage providers must not stay there: they would hide the real hosts."""
        if self._dht is None:
            return 0
        from libp2p.kad_dht.kad_dht import _encode_key

        records = self._dht.provider_store.providers.get(_encode_key(cid))
        if not records:
            return 0
        gone = 0
        for peer in peers:
            if peer != self.peer_id and records.pop(peer, None) is not None:
                gone += 1
        return gone

    def routing_peers(self) -> list[tuple[str, tuple[str, ...]]]:
        """The DHT routing table: ``(peer_id, addrs)`` per peer (for the address book)."""
        if self._dht is None:
            return []
        out = []
        for info in self._dht.routing_table.get_peer_infos():
            addrs = tuple(str(a) for a in info.addrs)
            if addrs:
                out.append((str(info.peer_id), addrs))
        return out

    def routing_table_size(self) -> int:
        """Peers in the DHT's routing table."""
        return 0 if self._dht is None else int(self._dht.get_routing_table_size())
