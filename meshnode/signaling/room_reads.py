"""The HTTP side of room reads: what a request to ``/api/rooms/{room}/genesis|heads|snapshot``
proves (admin token, a member's signature, an invite), judged by ``meshnode.rooms.readers``.

A refused read is answered exactly like a room this node does not host (404), so a stranger
cannot even learn which invite-only rooms exist here; the refusal is logged and counted
(``meshnode_http_refused_total{reason}``) like every other guard refusal.
"""

import time

from aiohttp import web

from meshnode.crdt import SceneReplica
from meshnode.rooms.invite import parse_invite
from meshnode.rooms.readers import (
    INVITE_HEADER,
    BrowserAccess,
    Credentials,
    ReadRefused,
    RoomPart,
    browser_access,
    invite_problem_for_reading,
    may_read_room,
)
from meshnode.signaling.guard import Guard
from meshnode.signaling.signed_request import SignatureRefused
from protocol.errors import DecodeError
from protocol.link import MAX_INVITE_BYTES

__all__ = ["INVITE_HEADER", "browser_access_of", "may_read"]



def may_read(guard: Guard, request: web.Request, replica: SceneReplica, admit: str,
             part: RoomPart) -> bool:
    """Whether ``request`` may read ``part`` of the room; a refusal is noted."""
    if admit == "open" or guard.is_operator(request):
        return True
    signer_role: str | None = None
    signed = guard.signer(request)
    if isinstance(signed, SignatureRefused):
        guard.note(request, signed)
    elif signed is not None:
        signer_role = replica.role_of(signed.public_key)
    invite_problem: str | None = None
    token = request.headers.get(INVITE_HEADER)
    if token is not None:
        invite_problem = _invite_problem(replica, token)[0]
    refused = may_read_room(admit, part, Credentials(signer_role=signer_role,
                                                     invite_problem=invite_problem))
    if refused is None:
        return True
    guard.note(request, refused, f"room {replica.room_id.hex()[:16]} is not open")
    return False


def _invite_problem(replica: SceneReplica, token: object) -> tuple[str, str | None]:
    """(problem, role): problem "" for a valid invite to this room."""
    if not isinstance(token, str) or len(token) > 2 * MAX_INVITE_BYTES:
        return "malformed", None
    try:
        invite = parse_invite(token)
    except DecodeError:
        return "malformed", None
    return invite_problem_for_reading(replica, invite, int(time.time() * 1000)), invite.role


def browser_access_of(guard: Guard, request: web.Request, replica: SceneReplica, admit: str,
                      admit_role: str, invite: object) -> BrowserAccess:
    """What a browser offering to join gets: the page proves the operator with the admin
    token (``Authorization: Bearer``) or brings an invite (``"invite"`` in the offer body);
    see ``meshnode.rooms.readers.browser_access``. A bad invite is noted and ignored."""
    invite_role: str | None = None
    if invite is not None:
        problem, role = _invite_problem(replica, invite)
        if problem:
            guard.note(request, ReadRefused.BAD_INVITE, problem)
        else:
            invite_role = role
    access = browser_access(admit, admit_role, operator=guard.is_operator(request),
                            invite_role=invite_role)
    if access is BrowserAccess.NONE:
        guard.note(request, ReadRefused.NO_CREDENTIALS,
                   f"browser for room {replica.room_id.hex()[:16]}")
    return access
