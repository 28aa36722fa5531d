"""Reverse proxies in front of the node: whose ``X-Forwarded-For`` to believe (pure).

Behind a reverse proxy every request reaches the node from the proxy's address, so per-source
limits (``SourceBuckets``) would throttle everyone as one client, and a proxy on the node's
machine would make every browser look local. ``[http] trusted_proxies`` names the proxies; a
request *from* one of them is treated as coming from the address its ``X-Forwarded-For``
names: the right-most entry that is not itself a trusted proxy (entries further left were
written by the client and prove nothing). A request from any other address keeps its own
address, whatever headers it carries: an ``X-Forwarded-For`` is believed only from a proxy
the operator named.

The guard also remembers the last forwarded request it saw (``ForwardedSeen``), so that
``meshnode doctor`` can tell whether the proxy passes the headers the node needs.
"""

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["ForwardedSeen", "TrustedProxies"]

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
MAX_FORWARDED_ENTRIES = 32  # a longer chain is someone's garbage: only this many are read


def _address(text: str | None) -> IPAddress | None:
    text = (text or "").strip().split("%")[0]
    if text.startswith("[") and "]" in text:  # "[2001:db8::1]:443"
        text = text[1:text.index("]")]
    elif text.count(":") == 1:  # "192.0.2.1:443"
        text = text.partition(":")[0]
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


@dataclass(frozen=True, slots=True)
class ForwardedSeen:
    """The last request that came with ``X-Forwarded-For``: from which address (``proxy``),
    whether that address is a trusted proxy, which client it named, and the
    ``X-Forwarded-Proto`` and ``Host`` it carried."""

    at: float
    proxy: str
    trusted: bool
    client: str
    proto: str | None
    host: str | None

    def to_json(self) -> dict[str, object]:
        """The JSON form (``/api/status``'s ``proxy.last_forwarded``)."""
        return {"at": self.at, "proxy": self.proxy, "trusted": self.trusted,
                "client": self.client, "proto": self.proto, "host": self.host}


class TrustedProxies:
    """The proxies of ``[http] trusted_proxies`` and what was last forwarded through one."""

    def __init__(self, networks: Iterable[str] = ()) -> None:
        self.networks: tuple[IPNetwork, ...] = tuple(
            ipaddress.ip_network(n, strict=False) for n in networks)
        self.last: ForwardedSeen | None = None

    def trusts(self, remote: str | None) -> bool:
        """Whether ``remote`` (``request.remote``) is one of the trusted proxies."""
        addr = _address(remote)
        return addr is not None and any(addr in net for net in self.networks)

    def client(self, remote: str | None, forwarded_for: str | None) -> str | None:
        """The address a request counts as coming from (see the module docstring)."""
        if forwarded_for is None or not self.trusts(remote):
            return remote
        entries = [e.strip() for e in forwarded_for.split(",")][-MAX_FORWARDED_ENTRIES:]
        for entry in reversed(entries):
            addr = _address(entry)
            if addr is None:
                return remote  # a chain we cannot read: the proxy is all we know
            if not self.trusts(str(addr)):
                return str(addr)
        return remote

    def note(self, now: float, remote: str | None, client: str | None, proto: str | None,
             host: str | None) -> None:
        """Remember a request that carried ``X-Forwarded-For``."""
        self.last = ForwardedSeen(now, remote or "", self.trusts(remote), client or "",
                                  proto, host)

    def to_json(self) -> dict[str, object]:
        """``/api/status``'s ``proxy`` object."""
        return {"trusted_proxies": [str(n) for n in self.networks],
                "last_forwarded": self.last.to_json() if self.last is not None else None}
