"""SharedPresenceRoom: every browser of a node inside the node's one presence."""

import asyncio
from collections.abc import Callable
from typing import Any

from meshnode.crdt import SceneReplica
from meshnode.web.shared_presence import SharedPresenceRoom


class Room:
    room_id = b"\x01" * 32
    room_name = "r"
    me = "node"

    def __init__(self) -> None:
        self.published: list[dict[str, Any]] = []

    def state(self) -> dict[str, dict[str, Any]]:
        return {}

    def presence(self) -> dict[str, dict[str, Any]]:
        return {self.me: self.published[-1]} if self.published else {}

    async def edit(self, fn: Callable[[SceneReplica], Any]) -> Any:
        raise NotImplementedError

    def set_presence(self, fields: dict[str, Any]) -> bool:
        self.published.append(fields)
        return True

    def subscribe(self, callback: Callable[[], None]) -> Callable[[], None]:
        return lambda: None


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


async def settle() -> None:
    await asyncio.sleep(0.05)


async def test_two_browsers_are_two_entries_in_one_presence() -> None:
    room = Room()
    shared = SharedPresenceRoom(room, max_rate=1000.0)
    shared.set_presence({"session": "b1", "name": "ann"})
    shared.set_presence({"session": "b2", "name": "bob"})
    await settle()
    assert room.published[-1] == {"browsers": {"b1": {"session": "b1", "name": "ann"},
                                               "b2": {"session": "b2", "name": "bob"}}}
    assert len(room.published) == 1  # coalesced into one update
    shared.forget("b1")
    await settle()
    assert room.published[-1] == {"browsers": {"b2": {"session": "b2", "name": "bob"}}}
    assert shared.sessions() == ["b2"]


async def test_updates_are_rate_limited_and_the_latest_wins() -> None:
    room = Room()
    shared = SharedPresenceRoom(room, max_rate=20.0)
    for i in range(50):
        shared.set_presence({"session": "b1", "n": i})
        await asyncio.sleep(0.001)
    await asyncio.sleep(0.15)
    assert 1 <= len(room.published) <= 6
    assert room.published[-1] == {"browsers": {"b1": {"session": "b1", "n": 49}}}


async def test_a_silent_browser_is_dropped_after_the_ttl() -> None:
    room = Room()
    clock = Clock()
    shared = SharedPresenceRoom(room, max_rate=1000.0, ttl_s=12.0, clock=clock)
    shared.set_presence({"session": "b1"})
    await settle()
    clock.t += 5
    shared.set_presence({"session": "b2"})
    await settle()
    assert set(room.published[-1]["browsers"]) == {"b1", "b2"}
    clock.t += 8  # b1 silent for 13 s, b2 for 8 s
    shared.set_presence({"session": "b2"})
    await settle()
    assert set(room.published[-1]["browsers"]) == {"b2"}
    assert shared.state() == {} and shared.me == "node" and shared.room_id == Room.room_id
