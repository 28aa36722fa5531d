"""Who may read a room from outside its links: pure decisions for the HTTP room endpoints and
for browsers.

An ``open`` room is readable by anyone who may join it. Anything else gives a stranger nothing:
its genesis (the room's name), heads (the members' keys) and snapshot (the whole scene, members
and roles) answer only to

- the operator (the admin token),
- a peer that holds a role in the room (viewer or above), proven by a signed request,
- for the genesis only, someone holding a valid invite for the room (the genesis is what a
  client needs to redeem it; the invite carries the genesis already, so this gives nothing new);
  the same for the room's hosts (whoever holds the room ID can find them in the DHT anyway,
  and the invitee needs them to join).

A browser's rights come from the room's rules and what the page proves, never from its address:
see ``browser_access``.
"""

from dataclasses import dataclass
from enum import StrEnum

from meshnode.crdt import SceneReplica
from meshnode.crdt.roles import ROLE_BY_NAME, ROLE_NONE, may_set_role
from meshnode.rooms.invite import Invite

__all__ = [
    "INVITE_HEADER",
    "BrowserAccess",
    "ReadRefused",
    "RoomPart",
    "browser_access",
    "invite_problem_for_reading",
    "may_read_room",
]

READER_ROLES = ("viewer", "editor", "admin", "owner")

INVITE_HEADER = "Meshnode-Invite"
"""The HTTP request header holding an invite token (``mninv1...``): lets its holder read the
room's genesis."""


class RoomPart(StrEnum):
    """What is asked for."""

    GENESIS = "genesis"
    HEADS = "heads"
    SNAPSHOT = "snapshot"
    HOSTS = "hosts"


class ReadRefused(StrEnum):
    """Why a room read was refused (stable: a metric label)."""

    NO_CREDENTIALS = "room_read_no_credentials"
    NOT_MEMBER = "room_read_not_member"
    BAD_INVITE = "room_read_bad_invite"
    INVITE_NOT_FOR_THIS = "room_read_invite_genesis_only"


@dataclass(frozen=True, slots=True)
class Credentials:
    """What a request proved, as the driver checked it.

    ``signer_role``: the room role of the peer that signed the request (None: no valid
    signature). ``invite_problem``: None when no invite was sent, "" when a valid one was,
    else why it is not valid.
    """

    operator: bool = False
    signer_role: str | None = None
    invite_problem: str | None = None


def may_read_room(admit: str, part: RoomPart, creds: Credentials) -> ReadRefused | None:
    """None if the read is allowed, else why not."""
    if admit == "open" or creds.operator:
        return None
    if creds.signer_role in READER_ROLES:
        return None
    if creds.invite_problem == "":
        return (None if part in (RoomPart.GENESIS, RoomPart.HOSTS)
                else ReadRefused.INVITE_NOT_FOR_THIS)
    if creds.invite_problem is not None:
        return ReadRefused.BAD_INVITE
    if creds.signer_role is not None:
        return ReadRefused.NOT_MEMBER
    return ReadRefused.NO_CREDENTIALS


def invite_problem_for_reading(replica: SceneReplica, invite: Invite, now_ms: int) -> str:
    """"" if ``invite`` is a valid invite to ``replica``'s room now (signed, unexpired, for
    this room, from someone who may let newcomers in at all), else why not.

    Whether its issuer may grant the role it names is judged at admission, which refuses it
    with its own reason; the genesis it lets one read is inside the invite already."""
    problem = invite.verify(now_ms)
    if problem is not None:
        return problem
    if invite.room_id != replica.room_id:
        return "wrong_room"
    issuer_role = ROLE_BY_NAME[replica.role_of(invite.issuer)]
    if not may_set_role(issuer_role, ROLE_NONE, ROLE_BY_NAME["viewer"]):
        return "issuer_may_not_grant"
    return ""


class BrowserAccess(StrEnum):
    """What a browser gets in a room."""

    NONE = "none"  # answered like an unknown room
    READ = "read"
    EDIT = "edit"


def browser_access(admit: str, admit_role: str, *, operator: bool,
                   invite_role: str | None) -> BrowserAccess:
    """A browser's rights in a room (its edits are signed by the node).

    - The operator (the page holds the admin token) edits any room.
    - A valid invite gives its role: ``viewer`` reads, ``editor``/``admin`` edit.
    - An ``open`` room gives what it gives any newcomer (``admit_role``: editor edits, viewer
      reads); any other room gives nothing without an invite.
    - The better of the two applies.
    """
    if operator:
        return BrowserAccess.EDIT
    by_invite = BrowserAccess.NONE
    if invite_role is not None:
        by_invite = BrowserAccess.READ if invite_role == "viewer" else BrowserAccess.EDIT
    by_policy = BrowserAccess.NONE
    if admit == "open":
        by_policy = (BrowserAccess.EDIT if admit_role in ("editor", "admin")
                     else BrowserAccess.READ)
    return max(by_invite, by_policy, key=_ACCESS_ORDER.index)


_ACCESS_ORDER = (BrowserAccess.NONE, BrowserAccess.READ, BrowserAccess.EDIT)
