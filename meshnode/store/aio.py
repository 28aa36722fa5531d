"""``AsyncChangeStore``: the store's runtime calls as coroutines, run off the event loop.

Every :class:`~meshnode.store.sqlite.ChangeStore` method may wait on the disk (an fsync, or the
store's lock while a group commit fsyncs), so the event loop must never call one directly once
the node is serving. These wrappers run each call in the
:class:`~meshnode.store.durable.DurableLog`'s one worker thread (``DurableLog.aio``), which also
keeps all SQLite work of the node in one thread. Start-up code that runs before the node serves
may still call the store directly.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from meshnode.store.sqlite import ChangeStore, RoomRecord

__all__ = ["AsyncChangeStore"]

Runner = Callable[..., Awaitable[Any]]


class AsyncChangeStore:
    """Coroutine versions of the store's methods (same arguments, results and errors)."""

    def __init__(self, store: ChangeStore, run: Runner) -> None:
        """``run(fn, *args)`` runs ``fn(*args)`` in the store's worker thread."""
        self._store = store
        self._run = run

    async def rooms(self) -> list[RoomRecord]:
        """:meth:`ChangeStore.rooms`."""
        result: list[RoomRecord] = await self._run(self._store.rooms)
        return result

    async def add_room(
        self, room_id: bytes, genesis: bytes, name: str, settings: dict[str, object]
    ) -> None:
        """:meth:`ChangeStore.add_room`."""
        await self._run(self._store.add_room, room_id, genesis, name, settings)

    async def update_room_settings(self, room_id: bytes, settings: dict[str, object]) -> None:
        """:meth:`ChangeStore.update_room_settings`."""
        await self._run(self._store.update_room_settings, room_id, settings)

    async def remove_room(self, room_id: bytes) -> None:
        """:meth:`ChangeStore.remove_room`."""
        await self._run(self._store.remove_room, room_id)

    async def changes(self, room_id: bytes) -> list[bytes]:
        """:meth:`ChangeStore.changes`, read whole (for a bounded room; stream large ones
        from the thread instead)."""
        result: list[bytes] = await self._run(lambda: list(self._store.changes(room_id)))
        return result

    async def change_count(self, room_id: bytes) -> int:
        """:meth:`ChangeStore.change_count`."""
        result: int = await self._run(self._store.change_count, room_id)
        return result

    async def has_change(self, room_id: bytes, change_id: bytes) -> bool:
        """:meth:`ChangeStore.has_change`."""
        result: bool = await self._run(self._store.has_change, room_id, change_id)
        return result

    async def save_snapshot(self, room_id: bytes, data: bytes, change_count: int) -> None:
        """:meth:`ChangeStore.save_snapshot`."""
        await self._run(self._store.save_snapshot, room_id, data, change_count)

    async def latest_snapshot(self, room_id: bytes) -> tuple[bytes, int] | None:
        """:meth:`ChangeStore.latest_snapshot`."""
        result: tuple[bytes, int] | None = await self._run(self._store.latest_snapshot, room_id)
        return result

    async def remember_peer(self, peer_id: str, url: str, seen_at: float) -> None:
        """:meth:`ChangeStore.remember_peer`."""
        await self._run(self._store.remember_peer, peer_id, url, seen_at)

    async def known_peers(self, limit: int = 100) -> list[tuple[str, str, float]]:
        """:meth:`ChangeStore.known_peers`."""
        result: list[tuple[str, str, float]] = await self._run(self._store.known_peers, limit)
        return result

    async def forget_peer(self, peer_id: str) -> None:
        """:meth:`ChangeStore.forget_peer`."""
        await self._run(self._store.forget_peer, peer_id)

    async def get_value(self, key: str) -> str | None:
        """:meth:`ChangeStore.get_value`."""
        result: str | None = await self._run(self._store.get_value, key)
        return result

    async def set_value(self, key: str, value: str) -> None:
        """:meth:`ChangeStore.set_value`."""
        await self._run(self._store.set_value, key, value)
