"""What a browser's media starts from: the rights its room access gives (``MediaRights``),
the caps on it (``MediaLimits``), the node's relay as browsers see it (``BrowserMediaHost``,
``RelayHost``) and the two together for a connection (``MediaSetup``).

Part of a browser's media on the node (``meshnode.web.media`` documents the protocol).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from meshnode.media.endpoint import RelayPort


@dataclass(frozen=True, slots=True)
class MediaRights:
    """What this browser may do with media in its room, from its room access."""

    receive: bool
    publish: bool
    role: str
    """The role its access stands for (``viewer`` or ``editor``): what the relay checks."""


@dataclass(frozen=True, slots=True)
class MediaLimits:
    """Caps on one browser's media (the relay has caps of its own)."""

    max_publications: int = 2
    """Send m-lines (one microphone and one camera)."""
    max_receive_audio: int = 8
    max_receive_video: int = 8
    message_rate: float = 10.0
    """Media messages a second (offers, publish, prefs), with ``message_burst`` saved up."""
    message_burst: float = 20.0


class BrowserMediaHost(Protocol):
    """The node's media relay, as its browsers need it (the node implements it)."""

    def relay_for(self, room_id: bytes) -> RelayPort | None:
        """The relay for ``room_id``, or None if the node relays no media there."""
        ...


class RelayHost:
    """The node's ``BrowserMediaHost``: its ``MediaRelay`` (a ``RelayPort``) for every room it
    hosts while media is on (``enabled()``; ``hosts(room_id)``)."""

    def __init__(self, relay: RelayPort, *, enabled: Callable[[], bool],
                 hosts: Callable[[bytes], bool]) -> None:
        self.relay = relay
        self._enabled = enabled
        self._hosts = hosts

    def relay_for(self, room_id: bytes) -> RelayPort | None:
        """The relay, if media is on and the room hosted here."""
        return self.relay if self._enabled() and self._hosts(room_id) else None


@dataclass(frozen=True, slots=True)
class MediaSetup:
    """What a browser connection needs to start its media: the node's host and the rights
    the page's room access gives."""

    host: BrowserMediaHost | None
    rights: MediaRights
    limits: MediaLimits = field(default_factory=MediaLimits)
