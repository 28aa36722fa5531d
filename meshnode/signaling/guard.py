"""The guard in front of the node's HTTP endpoint: who may ask what, and how fast.

What it guarantees (each refusal is a JSON ``{"error", "reason"}`` that says what to do, one
log line — throttled per reason — and ``meshnode_http_refused_total{reason}``):

- **Host** (every request): the ``Host`` header must name this node — a loopback name
  (``localhost``, ``127.x``, ``[::1]``), the listen address (any IP literal when listening on
  every interface), or the host of ``public_url``. Anything else is a DNS-rebinding attempt or a
  misconfigured proxy: ``421 misdirected_host``. (An IP literal cannot be rebound: a page at
  ``http://<ip>:<port>`` is this node's own origin.)
- **Origin** (admin routes, WebSocket upgrades, browser offers): a browser's ``Origin`` must be
  this node's own (same host and port as ``Host``, or ``public_url``'s): ``403 foreign_origin``.
  Requests without ``Origin`` come from programs, not pages, and pass. One exception, for
  failover: a browser offer from the origin of a node that hosts the room with us passes
  (``foreign_page_ok``; the offer's route checks the room: ``meshnode.web.host_origins``).
- **Admin routes** (``admin_only``): loopback peers only (``403 not_loopback``), the admin token
  as ``Authorization: Bearer <token>`` (``401 admin_token_missing``, ``403 admin_token_wrong``),
  and bodies of ``Content-Type: application/json`` only (``415 not_json``), which a page can
  send cross-site only after a CORS preflight that this node never grants.
- **Behind a reverse proxy** (``[http] trusted_proxies``): a request from a trusted proxy
  counts as coming from the client its ``X-Forwarded-For`` names (``meshnode.signaling.proxies``)
  for every check below and for the handlers (``request.remote`` is replaced); from any other
  address the header is ignored. Admin routes and the status page refuse any request that
  carries ``X-Forwarded-For`` or ``Forwarded`` (``403 forwarded``): the operator's CLI never
  sends them, a proxy always does.
- **Offers** (``POST /signal/offer``, ``POST /api/browser/offer``, and every offer on
  ``/signal/ws``) draw from one token bucket per source address (``SourceBuckets``):
  ``429 rate_limited`` with ``Retry-After``.
- **Slow senders**: the request head must arrive within ``header_timeout_s`` of the connection
  (aiohttp's keep-alive timer, armed at connection start; the connection is then closed) and a
  body within ``body_timeout_s`` (``408 body_timeout``, connection closed).
"""

import asyncio
import hmac
import ipaddress
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from urllib.parse import urlsplit

from aiohttp import web

from meshnode.signaling.admin_token import AdminTokenFile
from meshnode.signaling.proxies import TrustedProxies
from meshnode.signaling.signed_request import (
    SIGNATURE_HEADER,
    RequestSignature,
    RequestVerifier,
    SignatureRefused,
)
from meshnode.signaling.source_limits import SourceBuckets

__all__ = ["GUARD", "Guard", "HostPolicy", "Refusal", "origin_allowed", "status_page_only"]

log = logging.getLogger("meshnode.http")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

OFFER_PATHS = frozenset({"/signal/offer", "/api/browser/offer"})
ORIGIN_CHECKED_POSTS = frozenset({"/api/browser/offer"})
_LOG_EVERY_S = 10.0


class Refusal(StrEnum):
    """Why the guard refused a request (stable: a metric label)."""

    MISDIRECTED_HOST = "misdirected_host"
    FOREIGN_ORIGIN = "foreign_origin"
    NOT_LOOPBACK = "not_loopback"
    TOKEN_MISSING = "admin_token_missing"
    TOKEN_WRONG = "admin_token_wrong"
    NOT_JSON = "not_json"
    RATE_LIMITED = "rate_limited"
    BODY_TIMEOUT = "body_timeout"
    FORWARDED = "forwarded"


def _split_host(host: str) -> tuple[str, int | None] | None:
    """``(hostname, port)`` of a ``Host`` header or an origin's netloc, or None if malformed."""
    try:
        parts = urlsplit("//" + host)
        name, port = parts.hostname, parts.port
    except ValueError:
        return None
    if not name or parts.username is not None or parts.path or parts.query:
        return None
    return name.rstrip("."), port


def _ip(name: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(name)
    except ValueError:
        return None


def is_loopback_address(remote: str | None) -> bool:
    """Whether a peer address (``request.remote``) is on this machine."""
    addr = _ip((remote or "").split("%")[0])
    if addr is None:
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped.is_loopback
    return addr.is_loopback


@dataclass(frozen=True, slots=True)
class HostPolicy:
    """Which ``Host`` headers name this node (a pure decision)."""

    listen_host: str
    public_url: str = ""

    def allows(self, host_header: str | None) -> bool:
        """Whether a request with this ``Host`` header is meant for this node."""
        if not host_header:
            return False
        split = _split_host(host_header)
        if split is None:
            return False
        name = split[0].lower()
        if name == "localhost":
            return True
        public = urlsplit(self.public_url).hostname if self.public_url else None
        if public is not None and name == public.lower().rstrip("."):
            return True
        addr = _ip(name)
        listen = self.listen_host.strip("[]").lower()
        if addr is None:
            return name == listen
        if addr.is_loopback or listen in ("", "0.0.0.0", "::"):
            return True
        listen_addr = _ip(listen)
        return listen_addr is not None and addr == listen_addr


def _default_port(scheme: str) -> int:
    return 443 if scheme in ("https", "wss") else 80


def origin_allowed(origin: str | None, host_header: str | None, public_url: str = "") -> bool:
    """Whether a browser's ``Origin`` is this node's own: the same host and port as the
    request's ``Host``, or ``public_url``'s origin. No ``Origin`` (a program) passes."""
    if origin is None:
        return True
    try:
        o = urlsplit(origin)
        o_host, o_port = o.hostname, o.port
    except ValueError:
        return False
    if o.scheme not in ("http", "https") or not o_host:
        return False  # "null" (sandboxed frames, file: pages) and anything odd
    o_key = (o_host.rstrip("."), o_port or _default_port(o.scheme))
    if public_url:
        p = urlsplit(public_url)
        if p.hostname and o.scheme == p.scheme and o_key == (
                p.hostname.rstrip("."), p.port or _default_port(p.scheme)):
            return True
    split = _split_host(host_header or "")
    if split is None:
        return False
    return o_key == (split[0].lower(), split[1] or _default_port(o.scheme))


def bearer_token(request: web.Request) -> str | None:
    """The ``Authorization: Bearer`` token of a request, if any."""
    auth = request.headers.get("Authorization", "")
    scheme, _, value = auth.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


class Guard:
    """The checks above, for one node's app (keep it at ``app[GUARD]``)."""

    def __init__(self, *, policy: HostPolicy, token: AdminTokenFile, offers: SourceBuckets,
                 count: Callable[[str], None], body_timeout_s: float = 10.0,
                 verifier: RequestVerifier | None = None,
                 foreign_page_ok: Callable[[str], bool] | None = None,
                 proxies: TrustedProxies | None = None) -> None:
        self.policy = policy
        self.proxies = proxies if proxies is not None else TrustedProxies()
        self.foreign_page_ok = foreign_page_ok
        self.token = token
        self.offers = offers
        self.body_timeout_s = body_timeout_s
        self.verifier = verifier if verifier is not None else RequestVerifier()
        self._count = count
        self._logged: dict[str, tuple[float, int]] = {}

    # ----------------------------------------------------------------- refusals

    def note(self, request: web.Request, reason: str, detail: str = "") -> None:
        """Count and log a refusal (at most one line per reason every 10 s, with how many
        were not logged, so a flood cannot fill the log)."""
        self._count(reason)
        now = time.monotonic()
        last, hidden = self._logged.get(reason, (-_LOG_EVERY_S, 0))
        if now - last < _LOG_EVERY_S:
            self._logged[reason] = (last, hidden + 1)
            return
        self._logged[reason] = (now, 0)
        more = f" (+{hidden} more since the last line)" if hidden else ""
        log.info("refused %s %s from %s: %s%s%s", request.method, request.path,
                 request.remote, reason, f": {detail}" if detail else "", more)

    def refuse(self, request: web.Request, status: int, reason: str, message: str,
               headers: dict[str, str] | None = None) -> web.Response:
        """Note a refusal and build its answer."""
        self.note(request, reason, message)
        resp = web.Response(text=json.dumps({"error": message, "reason": reason}),
                            status=status, content_type="application/json", headers=headers)
        return resp

    # ----------------------------------------------------------------- the middleware

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Host, Origin (WebSockets, browser offers), offer rate and body timeout checks."""
        forwarded_for = request.headers.get("X-Forwarded-For")
        if forwarded_for is not None:
            client = self.proxies.client(request.remote, forwarded_for)
            self.proxies.note(time.time(), request.remote, client,
                              request.headers.get("X-Forwarded-Proto"),
                              request.headers.get("Host"))
            if client is not None and client != request.remote:
                request = request.clone(remote=client)
        host = request.headers.get("Host")
        if not self.policy.allows(host):
            return self.refuse(
                request, 421, Refusal.MISDIRECTED_HOST,
                f"this node does not answer for host {host!r}: use its own address "
                "(a loopback name, its listen address, or the host of its public_url)")
        websocket = request.headers.get("Upgrade", "").lower() == "websocket"
        if (websocket or (request.method == "POST" and request.path in ORIGIN_CHECKED_POSTS)) \
                and not self.origin_ok(request) and not self._host_page(request, websocket):
            return self._foreign_origin(request)
        if request.method == "POST" and request.path in OFFER_PATHS:
            wait = self.offers.take(request.remote, time.monotonic())
            if wait > 0:
                return self.rate_limited(request, wait)
        if request.body_exists and request.can_read_body:
            try:
                async with asyncio.timeout(self.body_timeout_s):
                    await request.read()  # kept by aiohttp: the handler reads it again
            except TimeoutError:
                resp = self.refuse(request, 408, Refusal.BODY_TIMEOUT,
                                   f"the request body did not arrive within "
                                   f"{self.body_timeout_s:g} s")
                resp.force_close()
                return resp
        return await handler(request)

    def origin_ok(self, request: web.Request) -> bool:
        """Whether the request's ``Origin`` (if any) is this node's own."""
        return origin_allowed(request.headers.get("Origin"), request.headers.get("Host"),
                              self.policy.public_url)

    def _host_page(self, request: web.Request, websocket: bool) -> bool:
        """A browser offer from a page of one of our rooms' other hosts (failover)."""
        origin = request.headers.get("Origin")
        return (not websocket and self.foreign_page_ok is not None and origin is not None
                and self.foreign_page_ok(origin))

    def _foreign_origin(self, request: web.Request) -> web.Response:
        return self.refuse(request, 403, Refusal.FOREIGN_ORIGIN,
                           f"pages from {request.headers.get('Origin')!r} may not use this "
                           "endpoint: only this node's own pages may")

    def rate_limited(self, request: web.Request, wait: float) -> web.Response:
        """The 429 answer to an offer over its source's rate."""
        retry = max(1, round(wait + 0.499))
        return self.refuse(request, 429, Refusal.RATE_LIMITED,
                           f"too many offers from your address; retry in {retry} s",
                           headers={"Retry-After": str(retry)})

    # ----------------------------------------------------------------- admin

    def is_operator(self, request: web.Request) -> bool:
        """Whether the request carries the admin token (no refusal noted either way)."""
        presented = bearer_token(request)
        return presented is not None and self.token.matches(presented)

    def admin_only(self, handler: Handler) -> Handler:
        """Wrap an admin route: loopback, own Origin, the admin token, JSON bodies."""

        async def wrapped(request: web.Request) -> web.StreamResponse:
            # A reverse proxy on this machine makes every request look local: operators
            # who put one in front must not forward /api/ (docs/operators.md says how), and
            # what a proxy forwarded anyway is refused here.
            if _forwarded(request):
                return self.refuse_forwarded(request)
            if not is_loopback_address(request.remote):
                return self.refuse(request, 403, Refusal.NOT_LOOPBACK,
                                   "the admin API answers only on loopback")
            if not self.origin_ok(request):
                return self._foreign_origin(request)
            presented = bearer_token(request)
            expected = self.token.current()
            if presented is None:
                return self.refuse(
                    request, 401, Refusal.TOKEN_MISSING,
                    f"the admin API wants 'Authorization: Bearer <token>' with the token in "
                    f"{self.token.path} (the meshnode CLI sends it when given --data-dir)")
            if expected is None or not hmac.compare_digest(
                    presented.encode("utf-8", "replace"), expected.encode("ascii")):
                return self.refuse(request, 403, Refusal.TOKEN_WRONG,
                                   f"wrong admin token: use the one in {self.token.path}")
            if (request.method in ("POST", "PUT", "PATCH") or request.body_exists) \
                    and request.content_type != "application/json":
                return self.refuse(request, 415, Refusal.NOT_JSON,
                                   "send the body as Content-Type: application/json")
            return await handler(request)

        return wrapped

    def refuse_forwarded(self, request: web.Request) -> web.Response:
        """The 403 answer to an admin or status-page request a proxy forwarded."""
        return self.refuse(request, 403, Refusal.FORWARDED,
                           "the admin API and the status page do not answer requests "
                           "forwarded by a proxy: block /api/ and /status at the proxy and use "
                           "them on the node's machine")

    # ----------------------------------------------------------------- signed requests

    def signer(self, request: web.Request) -> RequestSignature | SignatureRefused | None:
        """The verified signer of a request (None: it is not signed)."""
        header = request.headers.get(SIGNATURE_HEADER)
        if header is None:
            return None
        return self.verifier.verify(header, request.method, request.path_qs,
                                    request.headers.get("Host", ""), time.time())


def _forwarded(request: web.Request) -> bool:
    """Whether a proxy forwarded the request (it names a client or a forwarding chain)."""
    return "X-Forwarded-For" in request.headers or "Forwarded" in request.headers


def status_page_only(guard: Guard, handler: Handler) -> Handler:
    """The status page's HTML: loopback only (the Host check ran already). It holds no data:
    its script asks the admin routes, with the token the operator gives the page."""

    async def wrapped(request: web.Request) -> web.StreamResponse:
        if _forwarded(request):
            return guard.refuse_forwarded(request)
        if not is_loopback_address(request.remote):
            return guard.refuse(request, 403, Refusal.NOT_LOOPBACK,
                                "the status page answers only on loopback")
        return await handler(request)

    return wrapped


GUARD = web.AppKey("meshnode_guard", Guard)
"""Where ``build_app`` keeps the app's ``Guard``."""
