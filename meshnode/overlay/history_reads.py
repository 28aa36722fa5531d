"""Replies that wait for old history to be read from the store. Sans-I/O.

A node keeps only its recent change bytes in memory (``SceneReplica.use_history``); older
ones live in its store. Reading them where the overlay answers a peer (``Heads``, ``Want``,
``Graft``) would be a synchronous SQLite read on the driver's event loop: a peer far behind
would stall every other room and link for as long as it takes. With
``RoomOverlay.defer_history_reads`` the overlay instead keeps such a reply here, asks its
driver for the missing bytes one chunk at a time (a ``HistoryWanted`` event), and goes on
when the driver hands them back (``RoomOverlay.history_loaded``). The reply goes out in its
causal order, paid from the peer's reply budget as it goes, so a reply the budget stops is
never read further.

At most one such reply per peer is under way (a request needing the store meanwhile is
refused as ``history_busy``: anti-entropy asks again), and each read is at most
``READ_CHUNK`` changes: what the loop does per chunk is bounded, whatever the history.
"""

from __future__ import annotations

import itertools
from collections import deque
from dataclasses import dataclass, field

__all__ = ["READ_CHUNK", "HistoryReads", "PendingReply"]

READ_CHUNK = 256
"""Changes read from the store per ``HistoryWanted`` (about 16 frames' worth)."""

READ_TIMEOUT_S = 30.0
"""A read not answered after this long (its event dropped from a full event queue, a driver
that failed) no longer holds the peer's slot: its next request starts a new reply."""


@dataclass(slots=True)
class PendingReply:
    """One peer's reply in progress: ``ids`` still to send, in order; ``have`` their bytes
    known so far (from memory when the reply began, or read); ``asked`` the IDs already read
    (one the store did not have is skipped, as ``changes_since`` skips bytes it lacks)."""

    peer: str
    ids: deque[bytes]
    have: dict[bytes, bytes]
    graft: bool
    """A ``Graft``'s reply: the tree takes each author's link back to eager as it is sent."""
    asked: set[bytes] = field(default_factory=set)
    reading: int | None = None
    asked_at: float = 0.0


class HistoryReads:
    """The replies waiting for store reads, by peer (see the module docstring)."""

    __slots__ = ("_next", "_reads", "_replies")

    def __init__(self) -> None:
        self._replies: dict[str, PendingReply] = {}
        self._reads: dict[int, str] = {}  # read under way -> whose reply it is for
        self._next = 0

    def __len__(self) -> int:
        return len(self._replies)

    def busy(self, peer: str, now: float) -> bool:
        """Whether a reply to ``peer`` is under way (one whose read is older than
        ``READ_TIMEOUT_S`` is dropped instead)."""
        reply = self._replies.get(peer)
        if reply is not None and reply.reading is not None \
                and now - reply.asked_at > READ_TIMEOUT_S:
            self.finish(peer)
            return False
        return reply is not None

    def start(self, peer: str, ids: list[bytes], have: dict[bytes, bytes],
              graft: bool) -> PendingReply:
        """Begin a reply to ``peer`` (which must not be ``busy``)."""
        reply = PendingReply(peer, deque(ids), have, graft)
        self._replies[peer] = reply
        return reply

    def next_read(self, reply: PendingReply, now: float) -> tuple[int, list[bytes]]:
        """A new read for the reply: the next IDs it lacks bytes for (at most
        ``READ_CHUNK``, from its first unsent one on). Returns the read's number and IDs."""
        chunk = [c for c in itertools.islice(reply.ids, READ_CHUNK)
                 if c not in reply.have and c not in reply.asked]
        self._next += 1
        reply.reading = self._next
        reply.asked_at = now
        reply.asked.update(chunk)
        self._reads[self._next] = reply.peer
        return self._next, chunk

    def loaded(self, read: int, data: dict[bytes, bytes]) -> PendingReply | None:
        """A read came back: its reply with the bytes added, or None if the reply is gone
        (the peer left, or stopped being served) or the read is not one under way."""
        peer = self._reads.pop(read, None)
        reply = self._replies.get(peer) if peer is not None else None
        if reply is None or reply.reading != read:
            return None
        reply.reading = None
        asked = reply.asked
        for cid, got in data.items():  # only what it asked for (the store is ours; bound it)
            if cid in asked:
                reply.have[cid] = got
        return reply

    def finish(self, peer: str, reply: PendingReply | None = None) -> None:
        """The reply to ``peer`` (if given: only if it is ``reply``) is done, dropped or no
        longer wanted."""
        current = self._replies.get(peer)
        if current is None or (reply is not None and current is not reply):
            return
        del self._replies[peer]
        if current.reading is not None:
            self._reads.pop(current.reading, None)
