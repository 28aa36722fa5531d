"""How the media relay reads the node's rooms: who may take part in a room's media, and
where its participants are. Same rule as the room's data (``meshnode.rooms.access``): a peer
needs a role in the room; a removed member is refused ``removed``.

Private rooms add one rule: media are encrypted hop by hop (DTLS-SRTP to each node), not end
to end, so a node that relays them can hear and see them. Only readers (the members who hold
the room's keys) take part: a blind host relays none of the room's media (``blind_host``), and
a peer that is not a reader, a host-role node among them, gets none and may send none
(``not_reader``). Media then travel only between reader nodes and readers' clients."""

from collections.abc import Mapping

from meshnode.crdt.roles import READER_ROLES, ROLE_NAMES
from meshnode.media.participants import presence_participants
from meshnode.overlay.presence import _position
from meshnode.rooms.hosted import HostedRoom

__all__ = ["media_access", "participant_positions"]

_READER_NAMES = frozenset(ROLE_NAMES[r] for r in READER_ROLES)
"""The role names of a private room's readers (viewer, editor, admin, owner; not host)."""


def media_access(rooms: Mapping[bytes, HostedRoom], peer: str, kind: str,
                 room_id: bytes, publish: bool = False) -> str | None:
    """None if ``peer`` (a ``client``, ``node`` or ``browser`` endpoint) may receive the media
    of ``room_id`` (``publish``: may publish into it), else the refusal's reason label.

    Any role lets a peer receive; publishing takes an editor's role or better (``read_only``
    otherwise), as for browsers (``meshnode.web.media``): an open room that admits viewers
    does not let every passer-by talk into it."""
    hosted = rooms.get(room_id)
    if hosted is None:
        return "unknown_room"
    replica = hosted.runtime.replica
    private = replica.is_private
    if private and not replica.is_reader():
        return "blind_host"
    if kind == "browser":
        return None  # a browser session is let into the room by the web client's own rules
    role = replica.role_of(peer)
    if role == "none":
        return "removed" if replica.was_removed(peer) else "not_member"
    if private and role not in _READER_NAMES:
        return "not_reader"
    if publish and role == "viewer":
        return "read_only"
    return None


def participant_positions(rooms: Mapping[bytes, HostedRoom],
                          room_id: bytes) -> dict[str, tuple[float, float, float]]:
    """Each present participant's ``position`` (presence field ``[x, y, z]``); a node's
    browsers each as ``PeerID#session`` (``meshnode.media.participants``)."""
    hosted = rooms.get(room_id)
    if hosted is None:
        return {}
    out: dict[str, tuple[float, float, float]] = {}
    for peer, fields in presence_participants(hosted.runtime.presence()):
        pos = _position(fields)
        if pos is not None:
            out[peer] = pos
    return out
