"""Who may see a room over a link: pure decisions, from the replica and the room's policy.

A room's content (its changes, heads, presence) and even its *existence* are shown to a linked
peer only if the peer may read the room:

=====================================  ==========================  ======================
the peer                               in an ``open`` room          in an invite-only room
=====================================  ==========================  ======================
holds a role (viewer or above)         shared                      shared
presents a valid invite for the room   shared                      shared
was removed (and has no valid invite)  refused: ``removed``        refused: ``removed``
none of these                          shared (it may join)        refused: ``not_member``
presents an invite that is refused     refused: ``invite_<why>``   refused: ``invite_<why>``
=====================================  ==========================  ======================

A hosting node is a member with a role, so node-to-node links share a room exactly when both
ends are members. A peer that lost its role (removed) is refused from then on. Admission
(writing the grant) is decided elsewhere (``meshnode.rooms.admission``); this module only
says what a link may carry, and it is what the hello, the ``Rooms`` link message and the room
attachment all ask.
"""

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass


class Refusal(enum.StrEnum):
    """Why a room is not shared with a peer; the value is the ``Refused`` reason label."""

    NOT_MEMBER = "not_member"
    REMOVED = "removed"
    UNKNOWN_ROOM = "unknown_room"


@dataclass(frozen=True, slots=True)
class RoomFacts:
    """What the decision needs to know about one hosted room and one peer."""

    open: bool
    peer_role: str
    invite_problem: str | None = None
    """None: the peer presented no invite for this room; "" : a valid one; else why not."""
    removed: bool = False
    """The peer was a member and was removed (an ``open`` room does not take it back)."""


@dataclass(frozen=True, slots=True)
class Share:
    """The room may be shared with the peer."""


@dataclass(frozen=True, slots=True)
class Refuse:
    """The room may not be shared; ``reason`` is a stable label, ``detail`` teaches."""

    reason: str
    detail: str


Decision = Share | Refuse


def decide(facts: RoomFacts) -> Decision:
    """The table in the module docstring, as a function."""
    if facts.invite_problem:
        return Refuse(f"invite_{facts.invite_problem}",
                      f"the invite was refused ({facts.invite_problem}): ask for a new one")
    if facts.peer_role != "none":
        return Share()
    if facts.removed and facts.invite_problem != "":
        return Refuse(Refusal.REMOVED.value,
                      "you were removed from this room: ask one of its admins for a new invite")
    if facts.open or facts.invite_problem == "":
        return Share()
    return Refuse(Refusal.NOT_MEMBER.value,
                  "this room admits members only: join it with an invite from a member")


def may_announce(facts: RoomFacts) -> bool:
    """Whether the room may be named to the peer (in a hello or a ``Rooms`` message)."""
    return isinstance(decide(facts), Share)


def announced_in_hello(rooms: Mapping[bytes, bool], joining: Iterable[bytes]) -> list[bytes]:
    """The rooms a node names in its hello, sent before it knows who the peer is: the
    ``open`` ones (``rooms`` maps room ID to "is open") and those it is joining with an
    invite it carries (``joining``: the inviter knows them already). Everything else is
    announced after the hello, per peer, with a ``Rooms`` message."""
    joining = set(joining)
    return [rid for rid, is_open in rooms.items() if is_open or rid in joining]
