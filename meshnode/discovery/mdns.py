"""LAN discovery with mDNS (python-zeroconf): nodes on one LAN find each other with no
configuration, and link as if each had the other as a bootstrap node.

What goes on the wire (multicast UDP to 224.0.0.251 / ff02::fb, port 5353, on the allowed
interfaces only): one ``_meshnode._tcp.local.`` service named after this node's PeerID, whose
SRV record gives the node's HTTP port, its A/AAAA records the interface addresses, and its
TXT record ``v=1``, ``peer=<PeerID>`` and ``url=<this node's URL>``. Never a room ID, a room
name or anything about rooms: a LAN neighbour learns that a meshnode node is here and where,
nothing else.

Which interfaces (``[discovery] mdns_interfaces``): by default, the addresses in private
ranges: IPv4 RFC 1918 (10/8, 172.16/12, 192.168/16) and link-local 169.254/16 (a LAN with no
DHCP server), IPv6 unique local fc00::/7 (RFC 4193). Never loopback, never a public address,
never IPv6 link-local fe80::/10 (every interface has one, the one facing the internet
included). Listing interface names or addresses replaces the default (then any non-loopback
address of a listed interface counts, public ones too: the operator chose it).

When it runs: ``[discovery] mdns = true`` (the default) and the node is reachable from the
LAN: it has a ``public_url``, or it listens on a wildcard or a LAN address. A node that
listens on loopback only (the default ``127.0.0.1``) keeps mDNS off and says why: LAN peers
could not reach it, and announcing it would only make them dial in vain.

Zeroconf runs in its own thread; its callbacks hop to the node's event loop
(``call_soon_threadsafe``, through a bounded queue), resolutions run in worker threads (a
few at once), and every announcement goes through ``meshnode.discovery.lan`` (checked fields,
a bounded table, the federation policy, backoff) before anything is dialled. A dial is bound
to the announced PeerID (``LinkManager.dial_url(expected_peer=...)``).
"""

import asyncio
import contextlib
import ipaddress
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from meshnode.discovery.lan import (
    LanAnnouncement,
    LanDial,
    LanPeers,
    LanRejected,
    parse_announcement,
)
from meshnode.metrics import NodeMetrics
from meshnode.runtime.bootstrap import describe_error
from meshnode.runtime.links import LinkManager
from meshnode.runtime.tasks import TaskSet

log = logging.getLogger("meshnode.mdns")

__all__ = ["SERVICE_TYPE", "MdnsDiscovery", "announced_url", "lan_addresses", "start_mdns"]

SERVICE_TYPE = "_meshnode._tcp.local."
TICK_S = 1.0
RESOLVE_TIMEOUT_MS = 3_000
MAX_RESOLVING = 4  # resolutions at once (each holds a worker thread up to the timeout)
MAX_HOPS = 256  # browser events queued for the loop; beyond, dropped (and counted)
MAX_NAME_CHARS = 255

_PRIVATE = tuple(ipaddress.ip_network(n) for n in (
    "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16", "fc00::/7"))


def is_private(addr: str) -> bool:
    """Whether ``addr`` is in the ranges mDNS uses by default (see the module docstring)."""
    try:
        ip = ipaddress.ip_address(addr.split("%")[0])
    except ValueError:
        return False
    return any(ip in net for net in _PRIVATE if net.version == ip.version)


def lan_addresses(adapters: Iterable[tuple[str, Sequence[str]]],
                  choice: Sequence[str] = ()) -> list[str]:
    """The addresses mDNS may use, from ``(interface name, [addresses])`` pairs: with no
    ``choice``, the private ones; else those of the interfaces named (or the addresses
    listed) in ``choice``. Loopback and IPv6 link-local addresses never count. Pure."""
    out: list[str] = []
    for name, addrs in adapters:
        for addr in addrs:
            try:
                ip = ipaddress.ip_address(addr.split("%")[0])
            except ValueError:
                continue
            if ip.is_loopback or ip.is_unspecified or ip.is_multicast or (
                    ip.version == 6 and ip.is_link_local):
                continue
            chosen = (name in choice or str(ip) in choice) if choice else is_private(str(ip))
            if chosen and str(ip) not in out:
                out.append(str(ip))
    return out


def announced_url(public_url: str, listen_host: str, port: int,
                  addresses: Sequence[str]) -> tuple[str | None, str]:
    """The URL to announce on the LAN, or None and why the node is not reachable there."""
    if public_url:
        return public_url.rstrip("/"), ""
    host = listen_host.strip("[]")
    if host in ("", "0.0.0.0", "::"):
        v4 = [a for a in addresses if ":" not in a]
        pick = (v4 or list(addresses))[0]
        return _url(pick, port), ""
    if host in addresses:
        return _url(host, port), ""
    return None, (f"the node listens on {host} only, which is not a LAN address mDNS may use "
                  "(set [node] listen = \"0.0.0.0:PORT\" or a LAN address, or public_url)")


def _url(addr: str, port: int) -> str:
    return f"http://[{addr}]:{port}" if ":" in addr else f"http://{addr}:{port}"


def _system_adapters() -> list[tuple[str, list[str]]]:
    import ifaddr

    out = []
    for adapter in ifaddr.get_adapters():
        addrs = [ip.ip if isinstance(ip.ip, str) else ip.ip[0] for ip in adapter.ips]
        out.append((adapter.nice_name, addrs))
    return out


class MdnsDiscovery:
    """Announces this node on the LAN and dials the nodes found (see the module
    docstring). ``await start()``, then ``await aclose()``."""

    def __init__(self, peer_id: str, url: str, port: int, addresses: Sequence[str],
                 links: LinkManager, metrics: NodeMetrics, *,
                 on_crash: Callable[[str, BaseException], None] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.peer_id = peer_id
        self.url = url
        self.port = port
        self.addresses = list(addresses)
        self.links = links
        self.metrics = metrics
        self.clock = clock
        self.table = LanPeers(peer_id, self._refusal)
        self._tasks = TaskSet("mdns", on_crash)
        self._dialing: set[str] = set()
        self._resolving: set[str] = set()
        self._hops: list[tuple[str, bool]] = []
        self._hop_lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._zc: Any = None
        self._browser: Any = None
        self._ticker: asyncio.Task[None] | None = None

    def _refusal(self, peer: str) -> str | None:
        refused = self.links.policy_refusal(peer, "node", "found on the LAN by mDNS")
        return None if refused is None else refused.value

    async def start(self) -> None:
        """Start zeroconf (its own thread) on the allowed addresses, announce, browse."""
        from zeroconf import ServiceBrowser, ServiceInfo, Zeroconf

        self._loop = asyncio.get_running_loop()
        self._zc = await asyncio.to_thread(Zeroconf, interfaces=self.addresses,
                                           use_asyncio=False)
        info = ServiceInfo(
            SERVICE_TYPE, f"{self.peer_id}.{SERVICE_TYPE}", port=self.port,
            properties={b"v": b"1", b"peer": self.peer_id.encode(), b"url": self.url.encode()},
            server=f"meshnode-{self.peer_id[-12:].lower()}.local.",
            parsed_addresses=self.addresses)
        try:
            await asyncio.to_thread(self._zc.register_service, info)
        except Exception as err:  # NonUniqueNameException, OSError: browse anyway
            log.warning("mDNS: could not announce this node: %s", describe_error(err))
        self._browser = ServiceBrowser(self._zc, SERVICE_TYPE,
                                       handlers=[self._on_service_state_change])
        self._ticker = asyncio.create_task(self._tick(), name="mdns-tick")
        log.info("mDNS on: announcing %s on %s (UDP 5353, multicast)", self.url,
                 ", ".join(self.addresses))

    async def aclose(self) -> None:
        """Withdraw the announcement (a goodbye packet), stop browsing and dialling."""
        if self._ticker is not None:
            self._ticker.cancel()
            await asyncio.gather(self._ticker, return_exceptions=True)
        await self._tasks.aclose()
        if self._browser is not None:
            await asyncio.to_thread(self._browser.cancel)
        if self._zc is not None:
            zc, self._zc = self._zc, None
            with contextlib.suppress(Exception):
                await asyncio.to_thread(zc.unregister_all_services)
            await asyncio.to_thread(zc.close)

    # ------------------------------------------------------------------ zeroconf's thread

    def _on_service_state_change(self, zeroconf: Any, service_type: str, name: str,
                                 state_change: Any) -> None:
        """Called on zeroconf's thread: queue the event for the loop (bounded)."""
        removed = getattr(state_change, "name", "") == "Removed"
        with self._hop_lock:
            if len(self._hops) >= MAX_HOPS:
                dropped = True
            else:
                dropped = False
                first = not self._hops
                self._hops.append((name, removed))
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        if dropped:
            loop.call_soon_threadsafe(self._reject, name, LanRejected("flood"))
        elif first:
            loop.call_soon_threadsafe(self._drain_hops)

    # ------------------------------------------------------------------ the node's loop

    def _drain_hops(self) -> None:
        with self._hop_lock:
            hops, self._hops = self._hops, []
        for name, removed in hops:
            if len(name) > MAX_NAME_CHARS or not name.endswith("." + SERVICE_TYPE):
                self._reject(name[:80], LanRejected("bad_name"))
            elif removed:
                self.table.gone(name)
            elif name not in self._resolving and len(self._resolving) < MAX_RESOLVING:
                self._resolving.add(name)
                self._tasks.spawn(self._resolve(name), "mdns-resolve")
            # else: being resolved, or too many at once: its next announcement comes back
        self.metrics.mdns_peers.set(len(self.table))

    async def _resolve(self, name: str) -> None:
        try:
            zc = self._zc
            if zc is None:
                return
            info = await asyncio.to_thread(zc.get_service_info, SERVICE_TYPE, name,
                                           RESOLVE_TIMEOUT_MS)
            if info is None:
                self._reject(name, LanRejected("unresolved"))
                return
            ann: LanAnnouncement = parse_announcement(dict(info.properties))
            self.table.seen(name, ann, self.clock())
            log.info("mDNS: found node %s at %s", ann.peer_id, ann.url)
        except LanRejected as err:
            self._reject(name, err)
        finally:
            self._resolving.discard(name)
            self.metrics.mdns_peers.set(len(self.table))

    def _reject(self, name: str, err: LanRejected) -> None:
        if err.reason == "self":
            return  # our own announcement, heard back
        self.metrics.mdns_rejected.labels(err.reason).inc()
        log.info("mDNS: ignored %r: %s", name[:80], err)

    async def _tick(self) -> None:
        while True:
            self.tick()
            await asyncio.sleep(TICK_S)

    def tick(self) -> int:
        """Start the dials the table says are due (at most ``dials_per_tick``); how many."""
        busy = set(self.links.links) | self._dialing
        dials = self.table.due(self.clock(), busy)
        for dial in dials:
            self._dialing.add(dial.peer_id)
            self._tasks.spawn(self._dial(dial), f"mdns-dial {dial.peer_id[:12]}")
        return len(dials)

    async def _dial(self, dial: LanDial) -> None:
        try:
            await self.links.dial_url(dial.url, expected_peer=dial.peer_id)
            ok = True
        except Exception as err:  # LinkRefused, LinkClosed, HelloRejected, ...
            ok = getattr(err, "reason", None) == "duplicate"  # it dialled us meanwhile
            if not ok:
                log.info("mDNS: could not link to %s at %s: %s", dial.peer_id, dial.url,
                         describe_error(err))
        finally:
            self._dialing.discard(dial.peer_id)
        self.metrics.mdns_dials.labels("ok" if ok else "failed").inc()
        self.table.dialled(dial.peer_id, ok, self.clock())


async def start_mdns(*, enabled: bool, interfaces: Sequence[str], public_url: str,
                     listen_host: str, port: int, peer_id: str, links: LinkManager,
                     metrics: NodeMetrics, stack: contextlib.AsyncExitStack,
                     on_crash: Callable[[str, BaseException], None] | None = None
                     ) -> MdnsDiscovery | None:
    """Start LAN discovery if the configuration and the node's reachability allow it (see
    the module docstring); else log why not and return None. Closed with ``stack``."""
    if not enabled:
        log.info("mDNS off: turned off in the configuration ([discovery] mdns = false)")
        return None
    try:
        import zeroconf  # noqa: F401
    except ImportError:
        log.warning("mDNS off: python-zeroconf is not installed (pip install zeroconf)")
        return None
    addresses = lan_addresses(await asyncio.to_thread(_system_adapters), interfaces)
    if not addresses:
        which = (f"none of mdns_interfaces {list(interfaces)}" if interfaces
                 else "no interface with a private (RFC 1918, 169.254/16, fc00::/7) address")
        log.warning("mDNS off: %s is up", which)
        return None
    url, why = announced_url(public_url, listen_host, port, addresses)
    if url is None:
        log.info("mDNS off: %s", why)
        return None
    mdns = MdnsDiscovery(peer_id, url, port, addresses, links, metrics, on_crash=on_crash)
    stack.push_async_callback(mdns.aclose)
    try:
        await mdns.start()
    except OSError as err:
        log.warning("mDNS off: zeroconf could not start: %s", err)
        return None
    return mdns
