"""One presence for all the browsers of a node, without losing any of them.

A browser is a thin client: it has no identity of its own, so its presence goes out under its
node's PeerID, and the room keeps one presence per participant (latest wins). If each browser
published on its own, two people on one node would overwrite each other. So the node
publishes, as its own presence, the fields of every browser session it serves:

    {"browsers": {session name: that browser's fields, ...}}

and pages show each entry as a person. Updates are coalesced (at most ``max_rate`` a second,
which keeps the node under the room's presence rate limit however many browsers it has), and a
session that stops refreshing (the page sends every few seconds) is dropped after ``ttl_s``.
"""

import asyncio
import time
from collections.abc import Callable
from typing import Any

from meshnode.web.rooms import DelegatingRoom, RoomAccess


class SharedPresenceRoom(DelegatingRoom):
    """A room as the node's browsers see it: everything passes through, except that
    ``set_presence`` merges each session's fields into the node's one presence."""

    def __init__(self, room: RoomAccess, *, max_rate: float = 10.0, ttl_s: float = 12.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(room)
        self._min_gap = 1.0 / max_rate
        self._ttl = ttl_s
        self._clock = clock
        self._sessions: dict[str, tuple[float, dict[str, Any]]] = {}
        self._last_publish = float("-inf")
        self._scheduled: asyncio.TimerHandle | None = None
        self._refreshing = False

    def set_presence(self, fields: dict[str, Any]) -> None:
        """One browser's presence: ``fields["session"]`` names it."""
        session = str(fields.get("session") or "browser")
        self._sessions[session] = (self._clock(), dict(fields))
        self._schedule()

    def forget(self, session: str) -> None:
        """A browser left: drop its entry now."""
        if self._sessions.pop(session, None) is not None:
            self._schedule()

    def sessions(self) -> list[str]:
        """The sessions currently shown."""
        return sorted(self._sessions)

    def _schedule(self) -> None:
        now = self._clock()
        at = max(now, self._last_publish + self._min_gap)
        if self._scheduled is not None:
            if not self._refreshing:
                return  # a publish is already coming
            self._scheduled.cancel()  # only the slow refresh: publish sooner
        self._refreshing = False
        self._scheduled = asyncio.get_running_loop().call_later(at - now, self._publish)

    def _publish(self) -> None:
        self._scheduled = None
        now = self._clock()
        self._last_publish = now
        for name, (at, _) in list(self._sessions.items()):
            if now - at > self._ttl:
                del self._sessions[name]
        browsers = {name: fields for name, (_, fields) in sorted(self._sessions.items())}
        self._room.set_presence({"browsers": browsers})
        if self._sessions:
            # Re-publish before the room's presence expires elsewhere, and to drop entries
            # whose browsers went quiet.
            self._refreshing = True
            self._scheduled = asyncio.get_running_loop().call_later(
                min(self._ttl / 3, 4.0), self._publish)
