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
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from meshnode.metrics import NodeMetrics
from meshnode.rooms.readers import BrowserAccess
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
    in ``metrics`` if given); the connections are closed when the app shuts down. ``media``
    relays the browsers' voice and video (None: none; see ``meshnode.web.media``): a page that
    reads the room may receive, one that edits it may publish too.
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

    async def post_offer(request: web.Request) -> web.Response:
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
    app.router.add_post("/api/browser/offer", post_offer)
    app.router.add_static("/static/", STATIC_DIR, follow_symlinks=False)
    app.on_shutdown.append(close_links)
