"""What the ``LinkManager``'s services see (``meshnode.runtime.links``): the hooks a
``LinkService`` overrides, the ``Established`` link each hook is given, how a frame's room is
read without decoding it, and why a link was refused (``LinkRefused``, ``PolicyRefusal``)."""


import time
from collections.abc import Callable
from dataclasses import dataclass, field

from meshnode.runtime.outbox import Outbox
from meshnode.transport.link import LocalHello, PeerLink
from protocol.link import (
    FIRST_LINK_TYPE,
    Bundle,
    Hello,
    LinkMessage,
    Ping,
    Rooms,
    Signal,
    peek_type,
)


class LinkRefused(Exception):
    """A link could not be opened; ``reason`` is a metric label (``denied`` and
    ``not_allowed``: the federation policy refused the peer)."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


@dataclass(slots=True)
class PolicyRefusal:
    """The federation policy refused links with ``peer``: ``count`` times, the last at
    ``at`` (wall clock), ``how`` the last way the link was being made."""

    peer: str
    reason: str
    how: str
    at: float
    count: int = 1


@dataclass(slots=True)
class Established:
    """An established link and what we know about its peer."""

    link: PeerLink
    peer: str
    hello: Hello
    offered_by_us: bool
    rooms: set[bytes]
    garbage: int = 0
    signal_tokens: float = 10.0
    signal_at: float = 0.0
    since: float = field(default_factory=time.monotonic)
    last_in: float = field(default_factory=time.monotonic)
    last_out: float = field(default_factory=time.monotonic)
    outbox: Outbox = field(default_factory=Outbox)


LocalHelloSource = Callable[[str], LocalHello]
"""Our hello for a new link, given a hint of the peer's kind (``"node"`` or ``"any"``)."""

# The link protocol itself: handled here, never given to a service.
_MANAGER_TYPES: frozenset[type[LinkMessage]] = frozenset({Hello, Signal, Ping, Bundle, Rooms})


class LinkService:
    """A service that plugs into the ``LinkManager`` (see ``LinkManager.register``).

    Override the hooks you need; the defaults do nothing. ``link_messages`` lists the link
    message types this service handles (``Ack`` for the client's room; media and discovery
    add their own): each type belongs to one service, which gets them in ``link_message``.
    """

    link_messages: tuple[type[LinkMessage], ...] = ()

    def link_up(self, est: Established) -> None:
        """A link passed its hello and is now counted."""

    def link_down(self, est: Established, reason: str) -> None:
        """An established link closed."""

    def frame(self, est: Established, channel: str, data: bytes, room_id: bytes) -> None:
        """A room frame of a room the link carries arrived."""

    def link_message(self, est: Established, msg: LinkMessage) -> None:
        """A link message of one of the types in ``link_messages`` arrived."""

    def rooms_changed(self, est: Established, rooms: set[bytes]) -> None:
        """The peer now shares ``rooms`` over the link (``est.rooms`` is still the old set)."""

    def dial_failed(self, peer: str) -> None:
        """A link to ``peer`` asked for with ``dial_peer`` could not be opened."""


def room_of_frame(data: bytes) -> bytes | None:
    """The room ID of a room frame, read without decoding it (None if it does not start like
    one: ``[version, type, bin8(32) room_id, ...]``)."""
    mtype = peek_type(data)
    if (mtype is not None and mtype < FIRST_LINK_TYPE and len(data) >= 37 and data[3] == 0xC4
            and data[4] == 32):
        return data[5:37]
    return None
