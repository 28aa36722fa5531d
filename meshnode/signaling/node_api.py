"""The node as its HTTP endpoint sees it: ``NodeApi`` (what the app may read and call; the
composition root builds it) and ``RoomAdmin`` (the room host's actions it offers). The app
never sees the ``Node`` itself.
"""

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from meshnode.config import NodeConfig
from meshnode.discovery import DiscoveryState, HostRecord
from meshnode.status import NodeView
from meshnode.store import StoreFailure
from meshnode.web.host_origins import HostOrigins
from meshnode.web.media import BrowserMediaHost
from meshnode.web.rooms import RoomAccess


class RoomAdmin(Protocol):
    """The room host's actions the HTTP endpoint offers (``meshnode.rooms.host.RoomHost``)."""

    async def create_room(self, name: str, *, default: bool = False,
                          admit: str | None = None, private: bool = False) -> bytes:
        """Found a room owned by this node (``private``: sealed); returns its ID."""
        ...

    async def join_room(self, token: str) -> bytes:
        """Host a room from an invite token (``DecodeError``/``ValueError`` if bad)."""
        ...

    def invite(self, room_id: bytes, role: str = "editor", ttl_s: float = 7 * 86_400,
               max_uses: int | None = None) -> str:
        """An invite token for a hosted room (``max_uses``: how many it may admit)."""
        ...

    async def set_role(self, room_id: bytes, peer: str, role: str) -> None:
        """Give a member a role (a lower one names its cut-off)."""
        ...

    async def remove_member(self, room_id: bytes, peer: str) -> None:
        """Remove a member (role none, with a cut-off)."""
        ...

    async def revoke_invite(self, room_id: bytes, invite_id: bytes) -> None:
        """Revoke an invite of the room by ID."""
        ...

    def room(self, hex_id: str) -> RoomAccess | None:
        """A hosted room as browsers see it, by hex ID."""
        ...

    def default_room_hex(self) -> str:
        """The default room's hex ID ("" if none)."""
        ...

    async def latest_snapshot(self, room_id: bytes) -> bytes | None:
        """The room's latest stored snapshot (None if none yet)."""
        ...

    async def join_snapshot(self, room_id: bytes) -> bytes | None:
        """The snapshot a joining client starts from, frontier near the heads (None if
        none yet; ``meshnode.rooms.head_snapshots``)."""
        ...


@dataclass(frozen=True, slots=True)
class NodeApi:
    """What the HTTP endpoint may use of its node; the composition root builds it.

    ``accept_offer(sdp)`` answers a WebRTC offer (``LinkManager.accept_offer``);
    ``healthy()`` says whether the node can take writes (its store is open);
    ``store_failure()`` why its commits fail now (None: they do not). ``config`` gives the
    listen address, ``public_url``, the data directory (the admin token), the HTTP limits and
    the browsers' settings. ``find_hosts(room_id, timeout)`` finds a room's hosts
    (``RoomDiscovery.find_hosts``, or only those known without the DHT when discovery is
    off); ``discovery()`` says whether discovery runs and why not. ``offer_refusal(peer)``:
    why an offer naming ``peer`` as its sender is refused before it is answered
    (``LinkManager.offer_refusal``; None: answer it).
    """

    view: NodeView
    host: RoomAdmin
    accept_offer: Callable[[str], Awaitable[str]]
    healthy: Callable[[], bool]
    store_failure: Callable[[], StoreFailure | None]
    config: NodeConfig
    find_hosts: Callable[[bytes, float], Awaitable[list[HostRecord]]] | None = None
    discovery: Callable[[], DiscoveryState] | None = None
    host_origins: HostOrigins | None = None
    """The web origins of our rooms' other hosts: their pages may offer cross-origin."""
    offer_refusal: Callable[[object], str | None] = lambda peer: None
    media: BrowserMediaHost | None = None
    """The media relay for the browsers' voice and video (None: pages are told media is
    off)."""
