"""The room as the browser client's code sees it (``RoomAccess``), and wrappers that change
part of it: ``DelegatingRoom`` passes everything on, ``ReadOnlyRoom`` refuses edits."""

from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from meshnode.crdt import PermissionDenied, SceneReplica

__all__ = ["DelegatingRoom", "ReadOnlyRoom", "RoomAccess"]

T = TypeVar("T")


class RoomAccess(Protocol):
    """What a browser session needs from its node's room (the node implements it).

    ``room_id``, ``room_name`` and ``me`` may be plain attributes or properties.
    """

    @property
    def room_id(self) -> bytes:
        """The room's ID (the hash of its genesis change)."""
        ...

    @property
    def room_name(self) -> str:
        """The room's name, from its genesis change."""
        ...

    @property
    def me(self) -> str:
        """The PeerID that signs this room's edits on this node."""
        ...

    def state(self) -> dict[str, dict[str, Any]]:
        """The scene, exactly as ``SceneReplica.state()``: a fresh copy the session may keep
        (it diffs the next state against it)."""
        ...

    def presence(self) -> dict[str, dict[str, Any]]:
        """Each present participant's PeerID mapped to their presence fields (a fresh copy
        the session may keep)."""
        ...

    async def edit(self, fn: Callable[[SceneReplica], T]) -> T:
        """Run ``fn`` on the replica's local batch, commit it, wait until it is durable and
        return what ``fn`` returned. If ``fn`` raises (``PermissionDenied``, ``ValueError``,
        ``TypeError``, ...) the batch is discarded and the error propagates."""
        ...

    def set_presence(self, fields: dict[str, Any]) -> object:
        """Publish this node's presence fields in the room (latest wins; any result is
        ignored)."""
        ...

    def subscribe(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback()`` after any applied change or presence change; returns a
        function that unsubscribes."""
        ...


class DelegatingRoom:
    """A room that passes everything on to another; subclasses change what they need."""

    def __init__(self, room: RoomAccess) -> None:
        self._room = room

    @property
    def room_id(self) -> bytes:
        """The room's ID."""
        return self._room.room_id

    @property
    def room_name(self) -> str:
        """The room's name."""
        return self._room.room_name

    @property
    def me(self) -> str:
        """The PeerID that signs this room's edits on this node."""
        return self._room.me

    def state(self) -> dict[str, dict[str, Any]]:
        """The scene, as the room gives it."""
        return self._room.state()

    def presence(self) -> dict[str, dict[str, Any]]:
        """Presence, as the room gives it."""
        return self._room.presence()

    async def edit(self, fn: Callable[[SceneReplica], T]) -> T:
        """An edit, as the room makes it."""
        return await self._room.edit(fn)

    def set_presence(self, fields: dict[str, Any]) -> object:
        """Presence, as the room publishes it."""
        return self._room.set_presence(fields)

    def subscribe(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Follow the room's changes."""
        return self._room.subscribe(callback)

    def privacy(self) -> dict[str, Any]:
        """The room's privacy, if the room tells it (``RoomRuntime.privacy``)."""
        privacy = getattr(self._room, "privacy", None)
        return privacy() if callable(privacy) else {"private": False}

    def forget(self, session: str) -> None:
        """Pass a leaving browser on to the room, if it keeps one entry per browser."""
        forget = getattr(self._room, "forget", None)
        if callable(forget):
            forget(session)


class ReadOnlyRoom(DelegatingRoom):
    """A room as a browser that may not edit it sees it: every edit is refused (presence
    still flows: it says who is watching)."""

    async def edit(self, fn: Callable[[SceneReplica], T]) -> T:
        """Always refused."""
        raise PermissionDenied("this page may view the room but not edit it: open it with "
                               "an editor's invite (#invite=...) to edit")
