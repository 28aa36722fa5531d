"""HTTP routes of the browser client: the page, its static files, and WebRTC signaling.

- ``GET /``: the page (``static/index.html``). It joins ``?room=<hex>`` or, without one,
  the room ``GET /api/default-room`` names.
- ``GET /static/...``: the page's scripts, styles and vendored three.js.
- ``GET /api/default-room`` → ``{"room": hex}`` (404 if the node hosts no room).
- ``GET /api/ice`` → ``{"iceServers": [{"urls": [...], "username"?, "credential"?}]}``: the
  STUN/TURN servers the browser should use (the node's own ``IceSettings.servers``).
- ``POST /api/browser/offer`` with ``{"room": hex, "sdp": offer, "invite"?: token}``
  (``Content-Type: application/json``; ``Authorization: Bearer <admin token>`` if the page
  holds it) → ``{"sdp": answer}``. Errors are ``{"error": str}`` with status 400 (bad input
  or an offer that cannot be answered), 404 (unknown room, or a room this browser may not
  see), 415 (not JSON) or 503 (the node serves ``max_browsers`` browsers already, or newer
  offers took this one's place among the connections still opening: see
  ``meshnode.web.browser_link``).
- ``GET /api/browser/hosts?room=<hex>`` (``Meshnode-Invite`` header or the admin token, as
  for an offer) → ``{"hosts": [url, ...]}``: where the room's other hosts serve, the page's
  failover candidates (404 as for an offer if the browser may not see the room). A page that
  failed over here asks cross-origin, under the offer's rule below.
- ``OPTIONS /api/browser/offer`` and ``/api/browser/hosts``: the CORS preflight. A page of
  another host of one of our rooms (``cross_origin``; ``meshnode.web.host_origins``) may offer
  (and ask for the hosts) cross-origin, with ``Content-Type`` and ``Meshnode-Invite`` only
  (never ``Authorization``): its page fails over to this node when its own dies. The offer
  is then judged for its room (403 ``foreign_origin`` if that origin's node does not host it);
  the answers carry ``Access-Control-Allow-Origin``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from meshnode.metrics import NodeMetrics
from meshnode.rooms.readers import INVITE_HEADER, BrowserAccess
from meshnode.signaling.guard import GUARD, Refusal
from meshnode.transport.ice import IceSettings
from meshnode.web.browser_link import OPEN_TIMEOUT_S, BrowserLinks, InvalidOffer, TooManyBrowsers
from meshnode.web.media import BrowserMediaHost, MediaRights, MediaSetup
from meshnode.web.rooms import ReadOnlyRoom, RoomAccess

__all__ = ["BROWSER_LINKS", "STATIC_DIR", "add_web_routes"]

STATIC_DIR = Path(__file__).parent / "static"

BROWSER_LINKS = web.AppKey("meshnode_browser_links", BrowserLinks)
"""Where ``add_web_routes`` keeps the app's ``BrowserLinks`` (count, close)."""

MAX_OFFER_BODY = 128 * 1024
_ROOM_HEX = re.compile(r"^[0-9a-f]{2,128}$")
_NO_CACHE = {"Cache-Control": "no-cache"}


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def add_web_routes(
    app: web.Application,
    *,
    rooms: Callable[[str], RoomAccess | None],
    default_room: Callable[[], str],
    ice: IceSettings,
    max_browsers: int = 64,
    access: Callable[[str, web.Request, object], BrowserAccess] | None = None,
    max_pending_browsers: int = 16,
    handshake_timeout_s: float = OPEN_TIMEOUT_S,
    metrics: NodeMetrics | None = None,
    cross_origin: Callable[[str, str | None], bool] | None = None,
    hosts: Callable[[str], Awaitable[list[str]]] | None = None,
    media: BrowserMediaHost | None = None,
) -> None:
    """Serve the browser client on ``app``.

    ``rooms(hex)`` returns the room with that ID (lower-case hex) or None; ``default_room()``
    the hex ID of the room a page without ``?room=`` joins ("" if none). ``access(hex,
    request, invite)`` says what a browser gets in that room (default: edit), from what the
    request proves and the offer's ``"invite"`` (None if absent): ``EDIT``, ``READ`` (the room
    read-only) or ``NONE`` (404, as for a room this node does not host). At most
    ``max_browsers`` browsers are connected at once, and apart from them at most
    ``max_pending_browsers`` are connecting, each for at most ``handshake_timeout_s`` (counted
    in ``metrics`` if given); the connections are closed when the app shuts down.
    ``cross_origin(origin, room_hex)`` says whether a page from a foreign ``origin`` may offer
    for that room (``room_hex`` None: for any room, the preflight's question); without it no
    foreign page may. ``hosts(hex)`` lists the URLs of the room's other hosts (none without
    it). ``media`` relays the browsers' voice and video (None: none; see
    ``meshnode.web.media``): a page that reads the room may receive, one that edits it may
    publish too.
    """
    links = BrowserLinks(ice, max_connections=max_browsers, max_pending=max_pending_browsers,
                         open_timeout_s=handshake_timeout_s, metrics=metrics)
    app[BROWSER_LINKS] = links

    async def index(request: web.Request) -> web.StreamResponse:
        return web.FileResponse(STATIC_DIR / "index.html", headers=_NO_CACHE)

    async def get_default_room(request: web.Request) -> web.Response:
        room = default_room()
        if not room:
            return _error(404, "this node hosts no room yet")
        return web.json_response({"room": room}, headers=_NO_CACHE)

    async def get_ice(request: web.Request) -> web.Response:
        servers: list[dict[str, Any]] = []
        for s in ice.servers:
            entry: dict[str, Any] = {"urls": list(s.urls)}
            if s.username is not None:
                entry["username"] = s.username
            if s.credential is not None:
                entry["credential"] = s.credential
            servers.append(entry)
        return web.json_response({"iceServers": servers}, headers=_NO_CACHE)

    async def get_hosts(request: web.Request) -> web.Response:
        room_hex = request.query.get("room", "").lower()
        if not _ROOM_HEX.match(room_hex):
            return _error(400, "expected ?room=<room ID in hex>")
        # A page that failed over here asks for the hosts too (cross-origin): the same rule
        # as for its offer (a page of the room's other hosts, no admin token).
        origin = foreign_origin(request)
        if origin is not None and (cross_origin is None or "Authorization" in request.headers
                                   or not cross_origin(origin, room_hex)):
            return _error(403, f"pages from {origin} may not ask for room {room_hex}'s hosts")
        answer = await hosts_answer(request, room_hex)
        if origin is not None:
            answer.headers["Access-Control-Allow-Origin"] = origin
            answer.headers["Vary"] = "Origin"
        return answer

    async def hosts_answer(request: web.Request, room_hex: str) -> web.Response:
        room = rooms(room_hex)
        if room is None or (access is not None and access(
                room_hex, request, request.headers.get(INVITE_HEADER)) is BrowserAccess.NONE):
            return _error(404, f"this node does not host room {room_hex}")
        urls = await hosts(room_hex) if hosts is not None else []
        return web.json_response({"hosts": urls}, headers=_NO_CACHE)

    def foreign_origin(request: web.Request) -> str | None:
        """The request's ``Origin`` if it is not this node's own (None: own, or a program)."""
        guard = request.app.get(GUARD)
        origin = request.headers.get("Origin")
        if origin is None or guard is None or guard.origin_ok(request):
            return None
        return origin

    async def preflight(request: web.Request) -> web.Response:
        origin = foreign_origin(request)
        if origin is None or cross_origin is None or not cross_origin(origin, None):
            return _error(403, "pages from other sites may not offer to this node")
        return web.Response(status=204, headers={
            "Access-Control-Allow-Origin": origin, "Access-Control-Allow-Methods": "GET, POST",
            "Access-Control-Allow-Headers": f"Content-Type, {INVITE_HEADER}",
            "Access-Control-Max-Age": "600",
            "Vary": "Origin"})

    async def post_offer(request: web.Request) -> web.Response:
        origin = foreign_origin(request)
        answer = await offer_answer(request, origin)
        if origin is not None and answer.status != 403:
            answer.headers["Access-Control-Allow-Origin"] = origin
            answer.headers["Vary"] = "Origin"
        return answer

    async def offer_answer(request: web.Request, origin: str | None) -> web.Response:
        if request.content_type != "application/json":
            return _error(415, "send the offer as application/json")
        if request.content_length is not None and request.content_length > MAX_OFFER_BODY:
            return _error(400, f"the request body is over {MAX_OFFER_BODY} bytes")
        try:
            body = await request.read()  # bounded by the app's client_max_size as well
        except web.HTTPRequestEntityTooLarge:
            return _error(400, f"the request body is over {MAX_OFFER_BODY} bytes")
        if len(body) > MAX_OFFER_BODY:
            return _error(400, f"the request body is over {MAX_OFFER_BODY} bytes")
        try:
            data = json.loads(body)
        except (ValueError, RecursionError):
            return _error(400, "the request body is not valid JSON")
        if type(data) is not dict:
            return _error(400, 'send {"room": hex, "sdp": offer}')
        room_hex, sdp = data.get("room"), data.get("sdp")
        if type(room_hex) is not str or not _ROOM_HEX.match(room_hex.lower()):
            return _error(400, '"room" must be a room ID in hex')
        if type(sdp) is not str or not sdp:
            return _error(400, '"sdp" must be the offer SDP (a string)')
        if origin is not None and (cross_origin is None or "Authorization" in request.headers
                                   or not cross_origin(origin, room_hex.lower())):
            guard = request.app.get(GUARD)
            if guard is not None:
                guard.note(request, Refusal.FOREIGN_ORIGIN,
                           f"{origin} for room {room_hex[:16]}")
            return _error(403, f"pages from {origin} may not join room {room_hex} here: only "
                               "this node's own pages and those of the room's other hosts may")
        room = rooms(room_hex.lower())
        rights = BrowserAccess.EDIT
        if room is not None and access is not None:
            rights = access(room_hex.lower(), request, data.get("invite"))
        if room is None or rights is BrowserAccess.NONE:
            # A room this browser may not see looks like one this node does not host.
            return _error(404, f"this node does not host room {room_hex}")
        editor = rights is BrowserAccess.EDIT
        if not editor:
            room = ReadOnlyRoom(room)
        media_setup = MediaSetup(media, MediaRights(receive=True, publish=editor,
                                                    role="editor" if editor else "viewer"))
        try:
            answer = await links.answer(sdp, room, media_setup)
        except TooManyBrowsers as err:
            return _error(503, str(err))
        except InvalidOffer as err:
            return _error(400, str(err))
        return web.json_response({"sdp": answer}, headers=_NO_CACHE)

    async def close_links(app: web.Application) -> None:
        await links.close()

    app.router.add_get("/", index)
    app.router.add_get("/api/default-room", get_default_room)
    app.router.add_get("/api/ice", get_ice)
    app.router.add_get("/api/browser/hosts", get_hosts)
    app.router.add_route("OPTIONS", "/api/browser/hosts", preflight)
    app.router.add_post("/api/browser/offer", post_offer)
    app.router.add_route("OPTIONS", "/api/browser/offer", preflight)
    app.router.add_static("/static/", STATIC_DIR, follow_symlinks=False)
    app.on_shutdown.append(close_links)
