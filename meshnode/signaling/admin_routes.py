"""The admin API of the node's HTTP endpoint (``meshnode.signaling.http`` lists its routes):
the operator's status page and data, and the room host's actions (rooms created and joined,
invites made and revoked, members' roles set), each behind the guard's admin check (loopback,
the admin token, JSON bodies only). A refused edit is an error that says what to do.
"""

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from meshnode.crdt import PermissionDenied
from meshnode.rooms.invite import parse_invite
from meshnode.signaling.guard import Guard, status_page_only
from meshnode.signaling.json_io import _error, _json_body
from meshnode.signaling.node_api import NodeApi
from meshnode.status import node_status, peers_info, refresh_metrics, room_info
from meshnode.web.routes import BROWSER_LINKS, STATIC_DIR
from protocol.errors import DecodeError


def add_admin_routes(app: web.Application, node: NodeApi, guard: Guard,
                     room_or_404: Callable[[web.Request], Any]) -> None:
    """Add the admin API's routes to ``app`` (``room_or_404``: the hosted room a request
    names, or a 404)."""
    view, host, metrics = node.view, node.host, node.view.metrics
    admin_only = guard.admin_only

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
