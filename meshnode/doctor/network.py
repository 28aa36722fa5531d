"""UDP: can the node use its configured addresses, do the STUN and TURN servers answer, and
does the TURN server accept the configured credentials?

WebRTC links run over UDP between ICE candidates: the node's host addresses
(``[network] host_addresses``, or every interface), what a STUN server sees of them (the
server-reflexive address: the NAT's public side), and relays allocated on TURN servers. A
wrong TURN password shows on the node only as links that never come up (``hello_timeout``),
so the doctor makes a real allocation with the configured credentials. With an allocation in
hand it also sends a datagram from the relay to each configured host address: when it
arrives, UDP from the outside (the TURN server's side) reaches that address.
"""

import asyncio
import contextlib
import ipaddress
import secrets
import socket
import ssl
from collections.abc import Coroutine
from typing import Any
from urllib.parse import urlsplit

import aioice.ice
import aioice.stun
import aioice.turn
from aiortc.rtcicetransport import parse_stun_turn_uri

from meshnode.doctor.findings import DoctorContext, Finding, Status
from meshnode.transport.ice import IceServer

__all__ = ["check_network"]

RELAY_WAIT_S = 2.0


def _host_addresses(ctx: DoctorContext) -> list[str]:
    """The addresses the node offers as host candidates (see ``install_host_addresses``)."""
    configured = ctx.config.ice.host_addresses
    if configured:
        return list(configured)
    found = aioice.ice.get_host_addresses(use_ipv4=True, use_ipv6=False)
    return found if "127.0.0.1" in found else [*found, "127.0.0.1"]


def _bind_finding(addresses: list[str]) -> Finding:
    refused: dict[str, str] = {}
    for addr in addresses:
        family = socket.AF_INET6 if ":" in addr else socket.AF_INET
        try:
            with socket.socket(family, socket.SOCK_DGRAM) as sock:
                sock.bind((addr, 0))
        except OSError as err:
            refused[addr] = err.strerror or str(err)
    data = {"addresses": addresses, "refused": refused}
    if refused:
        return Finding("udp.bind", Status.FAIL,
                       "cannot open UDP sockets on " + ", ".join(
                           f"{a} ({why})" for a, why in refused.items()),
                       "[network] host_addresses must list addresses of this machine "
                       "(`ip -brief address`)", data)
    return Finding("udp.bind", Status.OK,
                   f"UDP sockets open on every host address ({', '.join(addresses)})", data=data)


class _Inbox(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.datagrams: asyncio.Queue[tuple[bytes, Any]] = asyncio.Queue()
        self.errors: list[Exception] = []

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.datagrams.put_nowait((data, addr))

    def error_received(self, exc: Exception) -> None:
        self.errors.append(exc)


async def _stun_binding(host: str, port: int, timeout_s: float) -> tuple[str, int]:
    """Our address as a STUN server sees it (a binding request, retransmitted)."""
    loop = asyncio.get_running_loop()
    transport, inbox = await loop.create_datagram_endpoint(_Inbox, remote_addr=(host, port))
    try:
        request = aioice.stun.Message(message_method=aioice.stun.Method.BINDING,
                                      message_class=aioice.stun.Class.REQUEST)
        deadline = loop.time() + timeout_s
        while loop.time() < deadline:
            transport.sendto(bytes(request))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(0.5, max(deadline - loop.time(), 0.01))):
                    while True:
                        data, _addr = await inbox.datagrams.get()
                        with contextlib.suppress(ValueError):
                            reply = aioice.stun.parse_message(data)
                            if reply.transaction_id == request.transaction_id:
                                mapped: tuple[str, int] = reply.attributes["XOR-MAPPED-ADDRESS"]
                                return mapped
        raise TimeoutError(f"no STUN answer within {timeout_s:g} s")
    finally:
        transport.close()


async def _stun_finding(url: str, timeout_s: float) -> Finding:
    try:
        parsed = parse_stun_turn_uri(url)
        mapped = await _stun_binding(parsed["host"], parsed["port"], timeout_s)
    except (ValueError, OSError, TimeoutError) as err:
        return Finding("ice.stun", Status.FAIL, f"{url}: {err}",
                       "check the server's address and that UDP to it is allowed out",
                       {"url": url})
    return Finding("ice.stun", Status.OK,
                   f"{url} answers: it sees this machine as {mapped[0]}:{mapped[1]}",
                   data={"url": url, "mapped_address": list(mapped)})


async def _relay_reaches(turn: Any, addresses: list[str]) -> dict[str, bool]:
    """Send a datagram from the TURN relay to a fresh socket on each host address."""
    loop = asyncio.get_running_loop()
    reached: dict[str, bool] = {}
    for addr in addresses:
        if ":" in addr:
            continue  # the allocation is IPv4
        try:
            transport, inbox = await loop.create_datagram_endpoint(_Inbox,
                                                                   local_addr=(addr, 0))
        except OSError:
            reached[addr] = False
            continue
        try:
            nonce = secrets.token_bytes(16)
            turn.sendto(nonce, transport.get_extra_info("sockname")[:2])
            reached[addr] = False
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(RELAY_WAIT_S):
                    while not reached[addr]:
                        data, _ = await inbox.datagrams.get()
                        reached[addr] = data == nonce
        finally:
            transport.close()
    return reached


async def _turn_findings(server: IceServer, url: str, addresses: list[str],
                         timeout_s: float) -> list[Finding]:
    data: dict[str, Any] = {"url": url, "username": server.username}
    try:
        parsed = parse_stun_turn_uri(url)
    except ValueError as err:
        return [Finding("ice.turn", Status.FAIL, f"{url}: {err}", "fix the URL", data)]
    secure = parsed["scheme"] == "turns"
    try:
        async with asyncio.timeout(timeout_s):
            turn, _protocol = await aioice.turn.create_turn_endpoint(
                _Inbox, (parsed["host"], parsed["port"]), server.username, server.credential,
                transport=parsed["transport"],
                ssl=ssl.create_default_context() if secure else None)
    except aioice.stun.TransactionFailed as err:
        code = err.response.attributes.get("ERROR-CODE", (0, ""))
        data["error_code"] = code[0]
        if code[0] == 401:
            return [Finding("ice.turn", Status.FAIL,
                            f"{url} refuses the credentials of user {server.username!r} "
                            "(401 Unauthorized): no link can be relayed through it",
                            "set the username and credential the TURN server has (coturn: "
                            "its user= line, or the static-auth-secret's time-limited pair) "
                            "in [[network.ice_servers]]", data)]
        return [Finding("ice.turn", Status.FAIL,
                        f"{url} refused the allocation ({code[0]} {code[1]})",
                        "see the TURN server's log (quota, allowed peers, realm)", data)]
    except (TimeoutError, aioice.stun.TransactionTimeout):
        return [Finding("ice.turn", Status.FAIL, f"{url} does not answer within {timeout_s:g} s",
                        "check the server's address and port, and that it can be reached "
                        f"({parsed['transport'].upper()} out from here)", data)]
    except (OSError, ConnectionError, ssl.SSLError, ValueError) as err:
        return [Finding("ice.turn", Status.FAIL, f"{url}: {err}",
                        "check the server's address, port and TLS certificate", data)]
    try:
        relayed = turn.get_extra_info("sockname")
        data["relayed_address"] = list(relayed)
        found = [Finding("ice.turn", Status.OK,
                         f"{url} accepts user {server.username!r}: relay allocated at "
                         f"{relayed[0]}:{relayed[1]}", data=data)]
        reached = await _relay_reaches(turn, addresses)
        if reached:
            missed = [a for a, ok in reached.items() if not ok]
            where = {"url": url, "reached": reached}
            if missed:
                found.append(Finding(
                    "udp.reachable", Status.WARN,
                    f"UDP sent from the relay of {url} did not arrive at {', '.join(missed)}",
                    "open inbound UDP to this machine, or rely on the relay; the TURN server "
                    "may also refuse to relay to these addresses (coturn denied-peer-ip)",
                    where))
            else:
                found.append(Finding("udp.reachable", Status.OK,
                                     f"UDP from the relay of {url} reaches "
                                     f"{', '.join(reached)}", data=where))
        return found
    finally:
        turn.close()
        await asyncio.sleep(0)  # let the allocation's deletion start


async def _one(finding: Coroutine[Any, Any, Finding]) -> list[Finding]:
    return [await finding]


def _public_host_finding(ctx: DoctorContext, mapped: list[str]) -> Finding | None:
    host = urlsplit(ctx.config.public_url).hostname if ctx.config.public_url else None
    try:
        public = ipaddress.ip_address(host) if host else None
    except ValueError:
        return None  # a name: whatever it resolves to, the proxy may be elsewhere
    if public is None or public.is_private or public.is_loopback or not mapped:
        return None
    if str(public) in mapped:
        return None
    return Finding("udp.public_address", Status.WARN,
                   f"public_url names {public}, but STUN sees this machine as "
                   f"{', '.join(mapped)}: it is behind a NAT",
                   "peers outside need a TURN server: add one to [network] ice_servers")


async def check_network(ctx: DoctorContext) -> list[Finding]:
    """``udp.bind``, ``ice.stun``, ``ice.turn``, ``udp.reachable``."""
    addresses = _host_addresses(ctx)
    found = [await asyncio.to_thread(_bind_finding, addresses)]
    servers = ctx.config.ice.servers
    if not servers:
        found.append(Finding("ice.servers", Status.SKIP,
                             "no STUN or TURN server configured: links work where host "
                             "addresses reach each other (a LAN, loopback)",
                             "behind a NAT add a STUN and a TURN server (docs/operators.md, "
                             "Running behind NAT)"))
        return found
    jobs: list[Coroutine[Any, Any, list[Finding]]] = []
    for server in servers:
        for url in server.urls:
            if url.startswith("stun"):
                jobs.append(_one(_stun_finding(url, ctx.timeout_s)))
            else:
                jobs.append(_turn_findings(server, url, addresses, ctx.timeout_s))
    flat = [finding for found in await asyncio.gather(*jobs) for finding in found]
    mapped = [f"{f.data['mapped_address'][0]}" for f in flat
              if f.check == "ice.stun" and f.status is Status.OK]
    public = _public_host_finding(ctx, mapped)
    return found + flat + ([public] if public is not None else [])
