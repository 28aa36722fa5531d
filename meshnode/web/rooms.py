"""The room as the browser client's code sees it (``RoomAccess``), and wrappers that change
part of it: ``DelegatingRoom`` passes everything on, ``ReadOnlyRoom`` refuses the node's own
edits (a person's edits are judged by their role: ``meshnode.web.people``)."""

import asyncio
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from meshnode.crdt import PermissionDenied, SceneReplica
from meshnode.crdt.authoring import SealedDraft
from protocol.frames import Presence

__all__ = ["DelegatingRoom", "EditFn", "ReadOnlyRoom", "RoomAccess"]

T = TypeVar("T")

EditFn = Callable[[Any], Any]
"""An edit: called with something that has the replica's editing methods (``create_entity``,
``set_field``, ``move``, ``delete``): a ``PersonDraft`` for a person's edit."""


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

    # A person's side (``meshnode.web.people`` documents them).

    def author_lock(self, author: bytes) -> asyncio.Lock:
        """Held while one change of ``author`` is composed, signed and applied."""
        ...

    def draft(self, author: bytes, fn: EditFn) -> SealedDraft:
        """The change ``fn`` makes, composed for ``author`` and judged (unsigned)."""
        ...

    def author_seq(self, author: bytes) -> int:
        """The highest seq of ``author``'s chain the replica holds."""
        ...

    async def submit_signed(self, data: bytes) -> str | None:
        """Apply a change its author signed; None once durable, else the reason."""
        ...

    def submit_presence(self, msg: Presence) -> str | None:
        """Publish a presence its participant signed; None if taken, else the reason."""
        ...

    def role_of(self, peer: str) -> str:
        """A person's role in the room."""
        ...

    async def admit_person(self, peer: str, invite: str | None) -> str | None:
        """Admit a person (open room, or their invite); None if a member, else why not."""
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

    def author_lock(self, author: bytes) -> asyncio.Lock:
        """As the room does it."""
        return self._room.author_lock(author)

    def draft(self, author: bytes, fn: EditFn) -> SealedDraft:
        """As the room does it."""
        return self._room.draft(author, fn)

    def author_seq(self, author: bytes) -> int:
        """As the room does it."""
        return self._room.author_seq(author)

    async def submit_signed(self, data: bytes) -> str | None:
        """As the room does it."""
        return await self._room.submit_signed(data)

    def submit_presence(self, msg: Presence) -> str | None:
        """As the room does it."""
        return self._room.submit_presence(msg)

    def role_of(self, peer: str) -> str:
        """As the room does it."""
        return self._room.role_of(peer)

    async def admit_person(self, peer: str, invite: str | None) -> str | None:
        """As the room does it."""
        return await self._room.admit_person(peer, invite)

    async def rotate_keys(self) -> bool:
        """A private room's new epoch, if the room can start one (``PeopleRoom``)."""
        rotate = getattr(self._room, "rotate_keys", None)
        return bool(await rotate()) if callable(rotate) else False


class ReadOnlyRoom(DelegatingRoom):
    """A room as a browser that may not edit it sees it: every edit is refused (presence
    still flows: it says who is watching)."""

    async def edit(self, fn: Callable[[SceneReplica], T]) -> T:
        """Always refused."""
        raise PermissionDenied("this page may view the room but not edit it: open it with "
                               "an editor's invite (#invite=...) to edit")
