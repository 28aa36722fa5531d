"""The node's HTTP endpoint (aiohttp): signaling, room data, the admin API, health, metrics.

Every request passes the guard first (``meshnode.signaling.guard``): a ``Host`` that names
this node (else 421), per-address offer rates (429), header and body timeouts.

Public (any peer may call):
    POST /signal/offer                 {"sdp": offer, "peer": sender's PeerID (optional)}
                                       ->  {"sdp": answer, "peer": PeerID}; 403 if the
                                       federation policy denies the named sender
    GET  /signal/ws                    WebSocket (this node's pages or programs only: a foreign
                                       Origin gets 403): {"type": "offer", "sdp"} ->
                                       {"type": "answer", "sdp", "peer"} or {"type": "error",
                                       "error"}, repeatable
    GET  /healthz                      {"ok": true, ...}; 503 {"store": {"failing": reason}}
    GET  /metrics                      Prometheus text format, aggregates only (no room labels)
    GET  /, /static/*, /api/browser/*  the web client (meshnode.web)
Room data (``open`` rooms: anyone; other rooms: the admin token, a member's signed request
(``Meshnode-Signature``), or for the genesis an invite (``Meshnode-Invite``); anyone else gets
the 404 of an unknown room; see meshnode.rooms.readers):
    GET  /api/rooms/{room}/genesis     the room's genesis change (bytes)
    GET  /api/rooms/{room}/heads       {"vv": {author hex: seq}, "changes": n, "admit": policy,
                                        "frontier": {author hex: seqs below the frontier}}
    GET  /api/rooms/{room}/snapshot    the signed snapshot a client joins from (bytes; 404 if
                                       none yet); ?history=kept: the stored one, listing the
                                       retention window (what a joining node starts from)
    GET  /api/rooms/{room}/hosts       [{"peer_id", "urls", "addrs", "live"}]: the room's live
                                       hosts (meshnode.discovery); for a room this node does
                                       not host, the admin API only (it runs a DHT lookup)
    GET  /api/libp2p                   {"peer_id", "addrs"}: where this node's libp2p host
                                       listens (seeds a peer's DHT); 404 when discovery is off
Admin (loopback only, ``Authorization: Bearer <admin token>``, JSON bodies only, no foreign
Origin; the CLI uses these):
    GET  /status                       the operator's status page (HTML; loopback and Host
                                       checks only: the page asks for the token, the data
                                       routes below want it)
    GET  /api/status, /api/peers, /api/rooms
    GET  /api/metrics                  Prometheus text: the per-room series
    POST /api/rooms                    {"name": str, "admit": "open"|"invite"} -> room
    POST /api/rooms/join               {"token": invite} -> room
    POST /api/rooms/{room}/invites     {"role": str, "ttl_s": float, "max_uses": int|null}
                                       -> {"token": str, "id": invite ID hex, ...}
    POST /api/rooms/{room}/invites/{id}/revoke            -> {"room", "invite"}
    POST /api/rooms/{room}/members     {"peer": PeerID, "role": str} -> {"room", "peer", "role"}
    DELETE /api/rooms/{room}/members/{peer}               -> {"room", "peer", "role": "none"}

The app sees its node only through ``NodeApi`` (what it reads, the room host's actions, the
offer answerer), never the ``Node`` itself.

Here: the app (``build_app``: the guard, signaling, room data, health, metrics) and ``serve``;
``admin_routes`` adds the admin API, ``node_api`` holds ``NodeApi`` and ``RoomAdmin``, and
``json_io`` reads JSON bodies and writes JSON errors.
"""

import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
from aiohttp import web

from meshnode.overlay.scoring import TokenBucket
from meshnode.rooms.readers import BrowserAccess, RoomPart
from meshnode.runtime.links import MAX_OFFER_BYTES, LinkRefused
from meshnode.signaling.admin_routes import add_admin_routes as add_admin_routes
from meshnode.signaling.admin_token import ADMIN_TOKEN_FILE, AdminTokenFile
from meshnode.signaling.guard import GUARD, Guard, HostPolicy, Refusal
from meshnode.signaling.json_io import _error as _error
from meshnode.signaling.json_io import _json_body as _json_body
from meshnode.signaling.node_api import NodeApi as NodeApi
from meshnode.signaling.node_api import RoomAdmin as RoomAdmin
from meshnode.signaling.proxies import TrustedProxies
from meshnode.signaling.room_reads import browser_access_of, may_read
from meshnode.signaling.source_limits import SourceBuckets
from meshnode.status import refresh_metrics
from meshnode.web.host_origins import HostOrigins
from meshnode.web.routes import BROWSER_LINKS, add_web_routes

log = logging.getLogger("meshnode.http")

WS_OFFERS_PER_S = 1.0
HOSTS_TIMEOUT_S = 5.0  # default wait of GET /api/rooms/{room}/hosts for the DHT
WS_OFFER_BURST = 5.0

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@contextlib.asynccontextmanager
async def serve(app: web.Application, host: str, port: int) -> AsyncIterator[int]:
    """Serve ``app`` on ``host:port`` until the context exits; yields the port bound (with
    port 0, the free port the OS picked)."""
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port, reuse_address=True)
        await site.start()
        sockets = getattr(site._server, "sockets", None) or []
        yield sockets[0].getsockname()[1] if sockets else port
    finally:
        await runner.cleanup()



def build_app(node: NodeApi) -> web.Application:
    """The aiohttp application of a node."""
    view, host, metrics, cfg = node.view, node.host, node.view.metrics, node.config
    guard = Guard(policy=HostPolicy(cfg.listen_host, cfg.public_url),
                  token=AdminTokenFile(cfg.data_dir / ADMIN_TOKEN_FILE),
                  offers=SourceBuckets(cfg.offers_per_s, cfg.offer_burst),
                  count=lambda reason: metrics.http_refused.labels(reason).inc(),
                  body_timeout_s=cfg.body_timeout_s,
                  foreign_page_ok=node.host_origins.known if node.host_origins else None,
                  proxies=TrustedProxies(cfg.trusted_proxies))
    guard.token.ensure()
    # keepalive_timeout is armed when a connection opens, so it also bounds the wait for the
    # first request head (aiohttp >= 3.14): a half-sent header is closed after it.
    app = web.Application(client_max_size=MAX_OFFER_BYTES, middlewares=[guard.middleware],
                          handler_args={"keepalive_timeout": cfg.header_timeout_s})
    app[GUARD] = guard
    admin_only = guard.admin_only

    def room_or_404(request: web.Request, part: RoomPart | None = None) -> Any:
        hosted = None
        with contextlib.suppress(ValueError):
            hosted = view.rooms.get(bytes.fromhex(request.match_info["room"]))
        if hosted is not None and part is not None and not may_read(
                guard, request, hosted.runtime.replica,
                hosted.settings.get("admit", "invite"), part):
            hosted = None  # a refused read looks like an unknown room
        if hosted is None:
            raise web.HTTPNotFound(text='{"error": "no such room on this node"}',
                                   content_type="application/json")
        return hosted

    async def answer_offer(sdp: object, remote: str | None) -> tuple[int, str]:
        """Answer an offer from either endpoint: ``(200, answer)`` or ``(status, error)``."""
        if not isinstance(sdp, str) or not sdp.startswith("v=0"):
            metrics.rejections.labels("bad_offer").inc()
            return 400, "expected an SDP offer (\"v=0...\")"
        try:
            return 200, await node.accept_offer(sdp)
        except LinkRefused as err:
            return 503, str(err)
        except Exception as err:  # aiortc raises assorted errors on a malformed SDP
            metrics.rejections.labels("bad_offer").inc()
            log.info("bad offer from %s: %s", remote, err)
            return 400, f"offer refused: {err}"

    async def offer(request: web.Request) -> web.Response:
        body = await _json_body(request, MAX_OFFER_BYTES)
        refused = node.offer_refusal(body.get("peer"))
        if refused is not None:
            return _error(403, refused)
        status, text = await answer_offer(body.get("sdp"), request.remote)
        if status != 200:
            return _error(status, text)
        return web.json_response({"sdp": text, "peer": view.peer_id})

    async def offer_ws(request: web.Request) -> web.WebSocketResponse:
        # The same offer/answer as POST /signal/offer, over one WebSocket that may carry
        # several (a client that relinks, a tool that keeps a socket open).
        ws = web.WebSocketResponse(heartbeat=20.0, max_msg_size=MAX_OFFER_BYTES)
        await ws.prepare(request)
        bucket = TokenBucket(WS_OFFERS_PER_S, WS_OFFER_BURST, WS_OFFER_BURST, time.monotonic())
        async for msg in ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                await ws.close(code=1003, message=b"text JSON messages only")
                break
            if not bucket.take(1.0, time.monotonic()):
                await ws.send_json({"type": "error", "error": "too many offers; slow down"})
                continue
            # The address's bucket too: a new socket per offer must not get around it.
            wait = guard.offers.take(request.remote, time.monotonic())
            if wait > 0:
                guard.note(request, Refusal.RATE_LIMITED)
                await ws.send_json({"type": "error", "retry_after": round(wait, 1),
                                    "error": "too many offers from your address; retry in "
                                             f"{wait:.1f} s"})
                continue
            try:
                body = json.loads(msg.data)
            except ValueError:
                body = None
            if not isinstance(body, dict) or body.get("type") != "offer":
                metrics.rejections.labels("bad_offer").inc()
                await ws.send_json({"type": "error",
                                    "error": 'expected {"type": "offer", "sdp": "v=0..."}'})
                continue
            status, text = await answer_offer(body.get("sdp"), request.remote)
            if status != 200:
                await ws.send_json({"type": "error", "error": text})
                continue
            await ws.send_json({"type": "answer", "sdp": text, "peer": view.peer_id})
        return ws

    async def genesis(request: web.Request) -> web.Response:
        hosted = room_or_404(request, RoomPart.GENESIS)
        return web.Response(body=hosted.runtime.replica.genesis,
                            content_type="application/octet-stream")

    async def heads(request: web.Request) -> web.Response:
        hosted = room_or_404(request, RoomPart.HEADS)
        replica = hosted.runtime.replica
        vv = {k.hex(): v for k, v in replica.version_vector().items()}
        frontier = {k.hex(): v for k, v in replica.frontier_vv().items()}
        return web.json_response({"vv": vv, "changes": replica.change_count(),
                                  "admit": hosted.settings.get("admit", "invite"),
                                  "frontier": frontier})

    async def snapshot(request: web.Request) -> web.Response:
        hosted = room_or_404(request, RoomPart.SNAPSHOT)
        # A private room's snapshot holds its scene sealed (a reader node's) or not at all
        # (a blind host's): served as opaque bytes (docs/protocol.md, "Sealed snapshots").
        # A client gets the join snapshot (frontier near the heads); a node that joins asks
        # for the stored one (?history=kept), whose kept changes it must hold to serve peers.
        room_id = hosted.runtime.room_id
        if request.query.get("history") == "kept":
            snap = await host.latest_snapshot(room_id)
        else:
            snap = await host.join_snapshot(room_id)
        if snap is None:
            return _error(404, "no snapshot yet")
        return web.Response(body=snap, content_type="application/octet-stream")

    async def healthz(request: web.Request) -> web.Response:
        # A failing store means no edit can be acknowledged: unhealthy, with the reason (not
        # the error text: it names paths, and this endpoint is public; the log has it).
        failing = node.store_failure()
        ok = node.healthy() and failing is None
        body: dict[str, object] = {
            "ok": ok, "peer_id": view.peer_id, "rooms": len(view.rooms),
            "links": len(view.links)}
        if failing is not None:
            body["store"] = {"failing": str(failing.reason), "since": failing.since,
                             "attempts": failing.attempts}
        return web.json_response(body, status=200 if ok else 503)

    async def get_metrics(request: web.Request) -> web.Response:
        refresh_metrics(view, request.app.get(BROWSER_LINKS))
        return web.Response(body=metrics.render(),
                            content_type="text/plain", charset="utf-8")

    async def find_hosts(request: web.Request) -> web.Response:
        try:
            room_id = bytes.fromhex(request.match_info["room"])
            timeout = min(max(float(request.query.get("timeout", HOSTS_TIMEOUT_S)), 0.5), 30.0)
        except ValueError:
            return _error(400, "expected /api/rooms/<room ID: 64 hex digits>/hosts"
                               "[?timeout=seconds]")
        if len(room_id) != 32 or node.find_hosts is None:
            return _error(400 if len(room_id) != 32 else 404,
                          "a room ID is 64 hex digits" if len(room_id) != 32
                          else "this node cannot look up hosts")
        records = await node.find_hosts(room_id, timeout)
        return web.json_response([r.to_json() for r in records if r.live])

    admin_find_hosts = admin_only(find_hosts)

    async def room_hosts(request: web.Request) -> web.StreamResponse:
        # A hosted room answers like its other reads (open, a member's signature, the admin
        # token); any other room only on the admin API: a stranger must not learn which
        # rooms are hosted here, nor use this node to run DHT lookups for it.
        hosted = None
        with contextlib.suppress(ValueError):
            hosted = view.rooms.get(bytes.fromhex(request.match_info["room"]))
        if hosted is None or guard.is_operator(request):
            return await admin_find_hosts(request)
        room_or_404(request, RoomPart.HOSTS)
        return await find_hosts(request)

    async def libp2p_info(request: web.Request) -> web.Response:
        state = node.discovery() if node.discovery is not None else None
        if state is None or not state.on:
            return _error(404, "discovery is off on this node")
        return web.json_response({"peer_id": state.peer_id, "addrs": list(state.addrs)})

    app.router.add_post("/signal/offer", offer)
    app.router.add_get("/signal/ws", offer_ws)
    app.router.add_get("/api/rooms/{room}/genesis", genesis)
    app.router.add_get("/api/rooms/{room}/heads", heads)
    app.router.add_get("/api/rooms/{room}/snapshot", snapshot)
    app.router.add_get("/api/rooms/{room}/hosts", room_hosts)
    app.router.add_get("/api/libp2p", libp2p_info)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", get_metrics)
    add_admin_routes(app, node, guard, room_or_404)
    _add_web_client(app, node, guard)
    return app


def _add_web_client(app: web.Application, node: NodeApi, guard: Guard) -> None:
    def access(room_hex: str, request: web.Request, invite: object) -> BrowserAccess:
        # From the room's rules and what the page proves, never from its address.
        hosted = node.view.rooms.get(bytes.fromhex(room_hex))
        if hosted is None:
            return BrowserAccess.NONE
        return browser_access_of(guard, request, hosted.runtime.replica,
                                 hosted.settings.get("admit", "invite"),
                                 node.config.admit_role, invite)

    add_web_routes(app, rooms=node.host.room,
                   default_room=node.host.default_room_hex, ice=node.config.ice,
                   max_browsers=node.config.max_browsers, access=access,
                   max_pending_browsers=node.config.max_pending_browsers,
                   handshake_timeout_s=node.config.handshake_timeout_s,
                   metrics=node.view.metrics, cross_origin=_cross_origin(node.host_origins),
                   hosts=_host_urls(node), media=node.media)


def _host_urls(node: NodeApi) -> Callable[[str], Awaitable[list[str]]] | None:
    """The URLs of a room's live hosts but this node (a browser page's failover list)."""
    find = node.find_hosts
    if find is None:
        return None

    async def urls(room_hex: str) -> list[str]:
        records = await find(bytes.fromhex(room_hex), 2.0)
        return [u for r in records if r.live and r.peer_id != node.view.peer_id
                for u in r.urls][:32]

    return urls


def _cross_origin(origins: HostOrigins | None) -> Callable[[str, str | None], bool] | None:
    """Whether a foreign page may offer for a room (None: for any): the room's other hosts'
    pages only (``meshnode.web.host_origins``)."""
    if origins is None:
        return None

    def allowed(origin: str, room_hex: str | None) -> bool:
        if room_hex is None:
            return origins.known(origin)
        try:
            return origins.allows(origin, bytes.fromhex(room_hex))
        except ValueError:
            return False

    return allowed
