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
"""

import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp
from aiohttp import web

from meshnode.config import NodeConfig
from meshnode.crdt import PermissionDenied
from meshnode.discovery import DiscoveryState, HostRecord
from meshnode.overlay.scoring import TokenBucket
from meshnode.rooms.invite import parse_invite
from meshnode.rooms.readers import BrowserAccess, RoomPart
from meshnode.runtime.links import MAX_OFFER_BYTES, LinkRefused
from meshnode.signaling.admin_token import ADMIN_TOKEN_FILE, AdminTokenFile
from meshnode.signaling.guard import GUARD, Guard, HostPolicy, Refusal, status_page_only
from meshnode.signaling.proxies import TrustedProxies
from meshnode.signaling.room_reads import browser_access_of, may_read
from meshnode.signaling.source_limits import SourceBuckets
from meshnode.status import NodeView, node_status, peers_info, refresh_metrics, room_info
from meshnode.store import StoreFailure
from meshnode.web.host_origins import HostOrigins
from meshnode.web.media import BrowserMediaHost
from meshnode.web.rooms import RoomAccess
from meshnode.web.routes import BROWSER_LINKS, STATIC_DIR, add_web_routes
from protocol.errors import DecodeError

log = logging.getLogger("meshnode.http")

WS_OFFERS_PER_S = 1.0
HOSTS_TIMEOUT_S = 5.0  # default wait of GET /api/rooms/{room}/hosts for the DHT
WS_OFFER_BURST = 5.0

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class RoomAdmin(Protocol):
    """The room host's actions the HTTP endpoint offers (``meshnode.rooms.host.RoomHost``)."""

    async def create_room(self, name: str, *, default: bool = False,
                          admit: str | None = None, private: bool = False) -> bytes:
        """Found a room owned by this node (``private``: sealed); returns its ID."""
        ...

    async def join_room(self, token: str) -> bytes:
        """Host a room from an invite token (``DecodeError``/``ValueError`` if bad)."""
        ...

    def invite(self, room_id: bytes, role: str = "editor", ttl_s: float = 7 * 86_400,
               max_uses: int | None = None) -> str:
        """An invite token for a hosted room (``max_uses``: how many it may admit)."""
        ...

    async def set_role(self, room_id: bytes, peer: str, role: str) -> None:
        """Give a member a role (a lower one names its cut-off)."""
        ...

    async def remove_member(self, room_id: bytes, peer: str) -> None:
        """Remove a member (role none, with a cut-off)."""
        ...

    async def revoke_invite(self, room_id: bytes, invite_id: bytes) -> None:
        """Revoke an invite of the room by ID."""
        ...

    def room(self, hex_id: str) -> RoomAccess | None:
        """A hosted room as browsers see it, by hex ID."""
        ...

    def default_room_hex(self) -> str:
        """The default room's hex ID ("" if none)."""
        ...

    async def latest_snapshot(self, room_id: bytes) -> bytes | None:
        """The room's latest stored snapshot (None if none yet)."""
        ...

    async def join_snapshot(self, room_id: bytes) -> bytes | None:
        """The snapshot a joining client starts from, frontier near the heads (None if
        none yet; ``meshnode.rooms.head_snapshots``)."""
        ...


@dataclass(frozen=True, slots=True)
class NodeApi:
    """What the HTTP endpoint may use of its node; the composition root builds it.

    ``accept_offer(sdp)`` answers a WebRTC offer (``LinkManager.accept_offer``);
    ``healthy()`` says whether the node can take writes (its store is open);
    ``store_failure()`` why its commits fail now (None: they do not). ``config`` gives the
    listen address, ``public_url``, the data directory (the admin token), the HTTP limits and
    the browsers' settings. ``find_hosts(room_id, timeout)`` finds a room's hosts
    (``RoomDiscovery.find_hosts``, or only those known without the DHT when discovery is
    off); ``discovery()`` says whether discovery runs and why not. ``offer_refusal(peer)``:
    why an offer naming ``peer`` as its sender is refused before it is answered
    (``LinkManager.offer_refusal``; None: answer it).
    """

    view: NodeView
    host: RoomAdmin
    accept_offer: Callable[[str], Awaitable[str]]
    healthy: Callable[[], bool]
    store_failure: Callable[[], StoreFailure | None]
    config: NodeConfig
    find_hosts: Callable[[bytes, float], Awaitable[list[HostRecord]]] | None = None
    discovery: Callable[[], DiscoveryState] | None = None
    host_origins: HostOrigins | None = None
    """The web origins of our rooms' other hosts: their pages may offer cross-origin."""
    offer_refusal: Callable[[object], str | None] = lambda peer: None
    media: BrowserMediaHost | None = None
    """The media relay for the browsers' voice and video (None: pages are told media is
    off)."""


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


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


async def _json_body(request: web.Request, limit: int = 16 * 1024) -> dict[str, Any]:
    if request.content_length is not None and request.content_length > limit:
        raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=request.content_length)
    raw = await request.read()  # the guard has read it already, within the body timeout
    if len(raw) > limit:
        raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=len(raw))
    try:
        body = json.loads(raw or b"{}")
    except ValueError:
        raise web.HTTPBadRequest(text='{"error": "body is not JSON"}',
                                 content_type="application/json") from None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(text='{"error": "body must be a JSON object"}',
                                 content_type="application/json")
    return body


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

    async def admin_metrics(request: web.Request) -> web.Response:
        refresh_metrics(view, request.app.get(BROWSER_LINKS))
        return web.Response(body=metrics.render_admin(),
                            content_type="text/plain", charset="utf-8")

    async def status(request: web.Request) -> web.Response:
        body = node_status(view)
        body["proxy"] = guard.proxies.to_json()  # for `meshnode doctor`
        if node.discovery is not None:
            body["discovery"] = node.discovery().to_json()
        return web.json_response(body)

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

    async def status_page(request: web.Request) -> web.StreamResponse:
        return web.FileResponse(STATIC_DIR / "status.html")

    async def peers(request: web.Request) -> web.Response:
        return web.json_response(peers_info(view))

    async def rooms(request: web.Request) -> web.Response:
        return web.json_response([room_info(view, rid) for rid in view.rooms])

    async def create_room(request: web.Request) -> web.Response:
        body = await _json_body(request)
        name = body.get("name", "room")
        admit = body.get("admit")
        # As `meshnode room create`: private unless asked not to be or open (an open room
        # admits anyone, so it is never private); a private room is invite-only.
        private = body.get("private", admit != "open")
        if not isinstance(name, str) or not 0 < len(name) <= 200:
            return _error(400, "name must be a string of 1 to 200 characters")
        if admit not in (None, "open", "invite"):
            return _error(400, "admit must be open or invite")
        if type(private) is not bool:
            return _error(400, "private must be true or false")
        if private and admit is None:
            admit = "invite"
        try:
            rid = await host.create_room(name, admit=admit, private=private)
        except ValueError as err:  # a private room that would be open
            return _error(400, str(err))
        return web.json_response(room_info(view, rid))

    async def join_room(request: web.Request) -> web.Response:
        body = await _json_body(request)
        token = body.get("token")
        if not isinstance(token, str):
            return _error(400, "expected {\"token\": \"mninv1...\"}")
        try:
            rid = await host.join_room(token)
        except (DecodeError, ValueError) as err:
            return _error(400, str(err))
        return web.json_response(room_info(view, rid))

    async def invite(request: web.Request) -> web.Response:
        hosted = room_or_404(request)
        body = await _json_body(request)
        role = body.get("role", "editor")
        ttl = body.get("ttl_s", 7 * 86_400)
        if role not in ("viewer", "editor", "admin", "host"):
            return _error(400, "role must be viewer, editor, admin or host (a node that "
                               "stores and relays a private room without reading it)")
        if not isinstance(ttl, int | float) or not 0 < ttl <= 365 * 86_400:
            return _error(400, "ttl_s must be a number of seconds up to a year")
        max_uses = body.get("max_uses")
        if max_uses is not None and (type(max_uses) is not int or not 0 < max_uses < 2**32):
            return _error(400, "max_uses must be a whole number from 1 (or null: no limit)")
        try:
            token = host.invite(hosted.runtime.room_id, role, float(ttl), max_uses)
        except PermissionDenied as err:  # an invite that could never admit anyone
            return _error(403, str(err))
        return web.json_response({"token": token, "room": hosted.runtime.room_id.hex(),
                                  "id": parse_invite(token).id.hex(), "role": role,
                                  "max_uses": max_uses})

    async def room_edit(hosted: Any, edit: Awaitable[None],
                        answer: dict[str, Any]) -> web.Response:
        """Run a membership edit; its refusals become errors that say what to do."""
        node_role = hosted.runtime.replica.role_of(view.peer_id)
        try:
            await edit
        except PermissionDenied as err:
            return _error(403, f"{err} (this node is {node_role} in the room; only the owner "
                               "and admins change members and invites)")
        except ValueError as err:
            return _error(400, str(err))
        return web.json_response(answer)

    async def set_member(request: web.Request) -> web.Response:
        hosted = room_or_404(request)
        body = await _json_body(request)
        peer, role = body.get("peer"), body.get("role")
        if not isinstance(peer, str) or role not in ("admin", "editor", "viewer", "host",
                                                     "none"):
            return _error(400, 'expected {"peer": PeerID, "role": "admin" | "editor" | '
                               '"viewer" | "host" | "none"}')
        rid = hosted.runtime.room_id
        return await room_edit(hosted, host.set_role(rid, peer, role),
                               {"room": rid.hex(), "peer": peer, "role": role})

    async def remove_member(request: web.Request) -> web.Response:
        hosted = room_or_404(request)
        peer = request.match_info["peer"]
        rid = hosted.runtime.room_id
        return await room_edit(hosted, host.remove_member(rid, peer),
                               {"room": rid.hex(), "peer": peer, "role": "none"})

    async def revoke_invite(request: web.Request) -> web.Response:
        hosted = room_or_404(request)
        try:
            invite_id = bytes.fromhex(request.match_info["invite"])
        except ValueError:
            invite_id = b""
        if len(invite_id) != 32:
            return _error(400, "an invite ID is 64 hex digits (the \"id\" that "
                               "`meshnode room invite --json` prints)")
        rid = hosted.runtime.room_id
        return await room_edit(hosted, host.revoke_invite(rid, invite_id),
                               {"room": rid.hex(), "invite": invite_id.hex()})

    app.router.add_post("/signal/offer", offer)
    app.router.add_get("/signal/ws", offer_ws)
    app.router.add_get("/api/rooms/{room}/genesis", genesis)
    app.router.add_get("/api/rooms/{room}/heads", heads)
    app.router.add_get("/api/rooms/{room}/snapshot", snapshot)
    app.router.add_get("/api/rooms/{room}/hosts", room_hosts)
    app.router.add_get("/api/libp2p", libp2p_info)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", get_metrics)
    app.router.add_get("/api/status", admin_only(status))
    app.router.add_get("/api/metrics", admin_only(admin_metrics))
    app.router.add_get("/status", status_page_only(guard, status_page))
    app.router.add_get("/api/peers", admin_only(peers))
    app.router.add_get("/api/rooms", admin_only(rooms))
    app.router.add_post("/api/rooms", admin_only(create_room))
    app.router.add_post("/api/rooms/join", admin_only(join_room))
    app.router.add_post("/api/rooms/{room}/invites", admin_only(invite))
    app.router.add_post("/api/rooms/{room}/invites/{invite}/revoke", admin_only(revoke_invite))
    app.router.add_post("/api/rooms/{room}/members", admin_only(set_member))
    app.router.add_delete("/api/rooms/{room}/members/{peer}", admin_only(remove_member))
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
