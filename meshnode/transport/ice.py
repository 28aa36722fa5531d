"""ICE settings for aiortc: STUN/TURN servers, which host addresses to offer, SDP clean-up.

aiortc's defaults do not suit a mesh node: with no ``iceServers`` it asks a public STUN
server (slow, and impossible on a closed network), aioice never offers 127.0.0.1, and
browsers hide their addresses behind ``.local`` mDNS names that aioice cannot resolve (each
one costs about a second). This module is the one place that adjusts all three.
"""

import re
from collections.abc import Callable
from dataclasses import dataclass, field

import aioice.ice
from aiortc import RTCConfiguration, RTCIceServer
from aiortc.rtcconfiguration import RTCIceTransportPolicy


@dataclass(frozen=True, slots=True)
class IceServer:
    """One STUN or TURN server, as in the web platform's ``RTCIceServer``."""

    urls: tuple[str, ...]
    username: str | None = None
    credential: str | None = None


@dataclass(frozen=True, slots=True)
class IceSettings:
    """How links find a path.

    ``servers``: STUN/TURN servers (none: host candidates only, enough on a LAN or loopback).
    ``host_addresses``: the local addresses offered as host candidates; empty means every
    interface address, loopback included.
    ``relay_only``: gather and use only TURN relay candidates (the web platform's
    ``iceTransportPolicy: "relay"``): hides this machine's addresses from peers, and proves
    that a TURN server works.
    """

    servers: tuple[IceServer, ...] = ()
    host_addresses: tuple[str, ...] = field(default_factory=tuple)
    relay_only: bool = False

    def rtc_configuration(self) -> RTCConfiguration:
        """The ``RTCConfiguration`` to give every ``RTCPeerConnection`` (never the default,
        which would contact a public STUN server)."""
        return RTCConfiguration(
            iceServers=[
                RTCIceServer(urls=list(s.urls), username=s.username, credential=s.credential)
                for s in self.servers
            ],
            iceTransportPolicy=(RTCIceTransportPolicy.RELAY if self.relay_only
                                else RTCIceTransportPolicy.ALL),
        )


_original_get_host_addresses: Callable[[bool, bool], list[str]] = aioice.ice.get_host_addresses
_host_addresses: tuple[str, ...] = ()


def _host_addresses_for_aioice(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    if _host_addresses:
        return [a for a in _host_addresses if (":" in a and use_ipv6) or
                (":" not in a and use_ipv4)]
    found = _original_get_host_addresses(use_ipv4, use_ipv6)
    # aioice leaves loopback out; a node and a browser on one machine need it.
    if use_ipv4 and "127.0.0.1" not in found:
        found.append("127.0.0.1")
    return found


def install_host_addresses(addresses: tuple[str, ...]) -> None:
    """Make aioice offer exactly ``addresses`` (empty: every interface plus 127.0.0.1).

    aioice has no per-connection setting for this, so it is process-wide: a process runs
    one node (or one client), whose configuration decides it.
    """
    global _host_addresses
    _host_addresses = tuple(addresses)
    aioice.ice.get_host_addresses = _host_addresses_for_aioice


_MDNS_CANDIDATE = re.compile(r"^a=candidate:\S+ \d+ \S+ \d+ \S+\.local \d+ .*$")


def strip_mdns_candidates(sdp: str) -> str:
    """Remove ``a=candidate`` lines whose address is a ``.local`` mDNS name.

    The browser still reaches us: our host candidates are in the answer, and its checks
    arrive from its real address (a peer-reflexive candidate).
    """
    lines = sdp.splitlines()
    kept = [ln for ln in lines if not _MDNS_CANDIDATE.match(ln)]
    return "\r\n".join(kept) + "\r\n"


_FINGERPRINT = re.compile(r"^a=fingerprint:(\S+) ([0-9A-Fa-f:]+)\s*$", re.MULTILINE)


def sdp_fingerprints(sdp: str) -> list[str]:
    """The DTLS certificate fingerprints an SDP declares, as ``"sha-256 AB:CD:…"``
    (algorithm lower-case, hex upper-case, sorted), for the signed hello."""
    return sorted(f"{alg.lower()} {value.upper()}" for alg, value in _FINGERPRINT.findall(sdp))
