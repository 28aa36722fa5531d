"""The node's HTTP endpoint (aiohttp): signaling, room data, the admin API, health, metrics.

Public (any peer may call):
    POST /signal/offer                 {"sdp": offer}  ->  {"sdp": answer, "peer": PeerID}
    GET  /signal/ws                    WebSocket: {"type": "offer", "sdp"} -> {"type": "answer",
                                       "sdp", "peer"} or {"type": "error", "error"}, repeatable
    GET  /api/rooms/{room}/genesis     the room's genesis change (bytes)
    GET  /api/rooms/{room}/heads       {"vv": {author hex: seq}, "changes": n, "admit": policy}
    GET  /api/rooms/{room}/snapshot    the latest signed snapshot (bytes; 404 if none yet)
    GET  /healthz                      {"ok": true, ...}
    GET  /metrics                      Prometheus text format
    GET  /, /static/*, /api/browser/*  the web client (meshnode.web)
Admin (only from loopback addresses; the CLI uses these):
    GET  /status                       the operator's status page (HTML, polls the two below)
    GET  /api/status, /api/peers, /api/rooms
    POST /api/rooms                    {"name": str, "admit": "open"|"invite"} -> room
    POST /api/rooms/join               {"token": invite} -> room
    POST /api/rooms/{room}/invites     {"role": str, "ttl_s": float} -> {"token": str}
"""

import contextlib
import ipaddress
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import web

from meshnode.overlay.scoring import TokenBucket
from meshnode.runtime.links import MAX_OFFER_BYTES, LinkRefused
from meshnode.status import node_status, peers_info, refresh_metrics, room_info
from protocol.errors import DecodeError

if TYPE_CHECKING:
    from meshnode.node import Node

log = logging.getLogger("meshnode.http")

WS_OFFERS_PER_S = 1.0
WS_OFFER_BURST = 5.0

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def _address_is_loopback(remote: str) -> bool:
    try:
        return ipaddress.ip_address(remote.split("%")[0]).is_loopback
    except ValueError:
        return False


def _is_loopback(request: web.Request) -> bool:
    # A reverse proxy on this machine makes every request look local: operators who put
    # one in front must not forward /api/ (docs/operators.md says how).
    return _address_is_loopback(request.remote or "")


def admin_only(handler: Handler) -> Handler:
    """Refuse the request unless it comes from this machine."""

    async def wrapped(request: web.Request) -> web.StreamResponse:
        if not _is_loopback(request):
            return _error(403, "the admin API answers only on loopback")
        return await handler(request)

    return wrapped


async def _json_body(request: web.Request, limit: int = 16 * 1024) -> dict[str, Any]:
    if request.content_length is not None and request.content_length > limit:
        raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=request.content_length)
    raw = await request.content.read(limit + 1)
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


def build_app(node: "Node") -> web.Application:
    """The aiohttp application of ``node``."""
    app = web.Application(client_max_size=MAX_OFFER_BYTES)

    def room_or_404(request: web.Request) -> Any:
        hosted = None
        with contextlib.suppress(ValueError):
            hosted = node.rooms.get(bytes.fromhex(request.match_info["room"]))
        if hosted is None:
            raise web.HTTPNotFound(text='{"error": "no such room on this node"}',
                                   content_type="application/json")
        return hosted

    async def answer_offer(sdp: object, remote: str | None) -> tuple[int, str]:
        """Answer an offer from either endpoint: ``(200, answer)`` or ``(status, error)``."""
        if not isinstance(sdp, str) or not sdp.startswith("v=0"):
            node.metrics.rejections.labels("bad_offer").inc()
            return 400, "expected an SDP offer (\"v=0...\")"
        assert node.links is not None
        try:
            return 200, await node.links.accept_offer(sdp)
        except LinkRefused as err:
            return 503, str(err)
        except Exception as err:  # aiortc raises assorted errors on a malformed SDP
            node.metrics.rejections.labels("bad_offer").inc()
            log.info("bad offer from %s: %s", remote, err)
            return 400, f"offer refused: {err}"

    async def offer(request: web.Request) -> web.Response:
        body = await _json_body(request, MAX_OFFER_BYTES)
        status, text = await answer_offer(body.get("sdp"), request.remote)
        if status != 200:
            return _error(status, text)
        return web.json_response({"sdp": text, "peer": node.peer_id})

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
            try:
                body = json.loads(msg.data)
            except ValueError:
                body = None
            if not isinstance(body, dict) or body.get("type") != "offer":
                node.metrics.rejections.labels("bad_offer").inc()
                await ws.send_json({"type": "error",
                                    "error": 'expected {"type": "offer", "sdp": "v=0..."}'})
                continue
            status, text = await answer_offer(body.get("sdp"), request.remote)
            if status != 200:
                await ws.send_json({"type": "error", "error": text})
                continue
            await ws.send_json({"type": "answer", "sdp": text, "peer": node.peer_id})
        return ws

    async def genesis(request: web.Request) -> web.Response:
        hosted = room_or_404(request)
        return web.Response(body=hosted.runtime.replica.genesis,
                            content_type="application/octet-stream")

    async def heads(request: web.Request) -> web.Response:
        hosted = room_or_404(request)
        replica = hosted.runtime.replica
        vv = {k.hex(): v for k, v in replica.version_vector().items()}
        return web.json_response({"vv": vv, "changes": replica.change_count(),
                                  "admit": hosted.settings.get("admit", "invite")})

    async def snapshot(request: web.Request) -> web.Response:
        hosted = room_or_404(request)
        assert node.store is not None
        snap = node.store.latest_snapshot(hosted.runtime.room_id)
        if snap is None:
            return _error(404, "no snapshot yet")
        return web.Response(body=snap[0], content_type="application/octet-stream")

    async def healthz(request: web.Request) -> web.Response:
        ok = node.store is not None
        return web.json_response(
            {"ok": ok, "peer_id": node.peer_id, "rooms": len(node.rooms),
             "links": len(node.links.links) if node.links is not None else 0},
            status=200 if ok else 503)

    async def metrics(request: web.Request) -> web.Response:
        refresh_metrics(node)
        return web.Response(body=node.metrics.render(),
                            content_type="text/plain", charset="utf-8")

    async def status(request: web.Request) -> web.Response:
        return web.json_response(node_status(node))

    async def status_page(request: web.Request) -> web.StreamResponse:
        from meshnode.web.routes import STATIC_DIR

        return web.FileResponse(STATIC_DIR / "status.html")

    async def peers(request: web.Request) -> web.Response:
        return web.json_response(peers_info(node))

    async def rooms(request: web.Request) -> web.Response:
        return web.json_response([room_info(node, rid) for rid in node.rooms])

    async def create_room(request: web.Request) -> web.Response:
        body = await _json_body(request)
        name = body.get("name", "room")
        admit = body.get("admit")
        if not isinstance(name, str) or not 0 < len(name) <= 200:
            return _error(400, "name must be a string of 1 to 200 characters")
        if admit not in (None, "open", "invite"):
            return _error(400, "admit must be open or invite")
        rid = node.create_room(name, admit=admit)
        return web.json_response(room_info(node, rid))

    async def join_room(request: web.Request) -> web.Response:
        body = await _json_body(request)
        token = body.get("token")
        if not isinstance(token, str):
            return _error(400, "expected {\"token\": \"mninv1...\"}")
        try:
            rid = node.join_room(token)
        except (DecodeError, ValueError) as err:
            return _error(400, str(err))
        return web.json_response(room_info(node, rid))

    async def invite(request: web.Request) -> web.Response:
        hosted = room_or_404(request)
        body = await _json_body(request)
        role = body.get("role", "editor")
        ttl = body.get("ttl_s", 7 * 86_400)
        if role not in ("viewer", "editor", "admin"):
            return _error(400, "role must be viewer, editor or admin")
        if not isinstance(ttl, int | float) or not 0 < ttl <= 365 * 86_400:
            return _error(400, "ttl_s must be a number of seconds up to a year")
        token = node.invite(hosted.runtime.room_id, role, float(ttl))
        return web.json_response({"token": token, "room": hosted.runtime.room_id.hex()})

    app.router.add_post("/signal/offer", offer)
    app.router.add_get("/signal/ws", offer_ws)
    app.router.add_get("/api/rooms/{room}/genesis", genesis)
    app.router.add_get("/api/rooms/{room}/heads", heads)
    app.router.add_get("/api/rooms/{room}/snapshot", snapshot)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/api/status", admin_only(status))
    app.router.add_get("/status", admin_only(status_page))
    app.router.add_get("/api/peers", admin_only(peers))
    app.router.add_get("/api/rooms", admin_only(rooms))
    app.router.add_post("/api/rooms", admin_only(create_room))
    app.router.add_post("/api/rooms/join", admin_only(join_room))
    app.router.add_post("/api/rooms/{room}/invites", admin_only(invite))
    _add_web_client(app, node)
    return app


def _add_web_client(app: web.Application, node: "Node") -> None:
    from meshnode.web.routes import add_web_routes

    def may_edit(room_hex: str, remote: str) -> bool:
        # A browser on this machine is the operator's; others may edit open rooms only.
        hosted = node.rooms.get(bytes.fromhex(room_hex))
        return hosted is not None and (hosted.settings.get("admit") == "open"
                                       or _address_is_loopback(remote))

    add_web_routes(app, rooms=node.room,
                   default_room=node.default_room_hex, ice=node.config.ice,
                   max_browsers=node.config.max_browsers, may_edit=may_edit,
                   max_pending_browsers=node.config.max_pending_browsers,
                   handshake_timeout_s=node.config.handshake_timeout_s, metrics=node.metrics)
