"""What a browser session sends its page: the scene, presence, last writers, privacy and
presence key the page may see, pushed as deltas at a bounded rate (split when too large),
and each edit's ack after the push that shows the edit.

``BrowserSession`` is one chain of classes, a file each: ``SessionView`` (this: the
session's state and everything it sends), ``PersonEdits`` (``person_edits``: the person's
identity and the edits their page signs) and ``BrowserSession`` (``session``: its lifecycle,
what it receives, presence).
"""

from __future__ import annotations

import asyncio
import base64
import logging
import math
import os
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from meshnode.crdt.roles import READER_ROLES, ROLE_NAMES
from meshnode.overlay.scoring import TokenBucket
from meshnode.web.media import BrowserMedia
from meshnode.web.messages import dumps
from meshnode.web.rooms import RoomAccess
from meshnode.web.session_limits import SessionLimits
from meshnode.web.signing import SignDesk
from protocol.frames import Presence

log = logging.getLogger("meshnode.web.session")  # one logger for the whole session

READER_ROLE_NAMES = frozenset(ROLE_NAMES[r] for r in READER_ROLES)
"""Roles that hold a private room's keys (and may see it rendered by their node)."""


class SessionView:
    """The state of a ``BrowserSession`` and what it sends (see the module docstring)."""

    def __init__(
        self,
        room: RoomAccess,
        send: Callable[[str], None],
        *,
        session_name: str,
        limits: SessionLimits | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._room = room
        self._send_raw = send
        self.name = session_name
        self.limits = limits = limits if limits is not None else SessionLimits()
        self._clock = clock
        now = clock()
        self._edit_bucket = TokenBucket(limits.edit_rate, limits.edit_burst, limits.edit_burst,
                                        now)
        self._presence_bucket = TokenBucket(limits.presence_rate, limits.presence_burst,
                                            limits.presence_burst, now)
        self.counters: Counter[str] = Counter()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._unsubscribe: Callable[[], None] | None = None
        self._started = False
        self._closed = False
        self._dirty = False
        self._push_handle: asyncio.TimerHandle | None = None
        self._last_push = -math.inf
        self._sent_state: dict[str, dict[str, Any]] = {}
        self._sent_presence: dict[str, dict[str, Any]] = {}
        self._sent_authors: dict[str, str] = {}
        self._sent_privacy: dict[str, Any] = {}
        self._sent_presence_epoch: bytes | None = None
        self._acks: list[dict[str, Any]] = []
        self._ack_handle: asyncio.Handle | None = None
        self._acks_sent: asyncio.Future[None] | None = None
        self._edits_in_flight = 0
        self._pending_presence: Presence | None = None
        self._presence_handle: asyncio.TimerHandle | None = None
        self._challenge = os.urandom(32)
        self._desk = SignDesk()
        self.person: bytes | None = None
        """The key of the person whose page this is, once it proved holding it."""
        self.person_id: str | None = None
        self.media: BrowserMedia | None = None
        """The browser's voice and video (``meshnode.web.media``), if its link carries any."""

    # ------------------------------------------------------------------ lifecycle

    @property
    def closed(self) -> bool:
        return self._closed

    # ------------------------------------------------------------------ sending

    def _send(self, msg: dict[str, Any]) -> None:
        self._send_text(dumps(msg))

    def _send_text(self, text: str) -> None:
        if self._closed:
            return
        try:
            self._send_raw(text)
        except Exception:
            # The channel is closing; the connection's owner will close the session.
            self.counters["send_failed"] += 1
            log.debug("session %s: send failed", self.name, exc_info=True)
        else:
            self.counters["sent"] += 1

    def _send_parts(
        self,
        head: dict[str, Any],
        next_head: dict[str, Any],
        key: str,
        entries: dict[str, Any],
    ) -> None:
        """Send ``head | {key: entries}``, split by entry if it is too large: every part but
        the last carries ``"more": true``; parts after the first use ``next_head``."""
        limit = self.limits.max_send_bytes
        text = dumps({**head, key: entries})
        if len(text) <= limit // 4 or len(text.encode()) <= limit:
            self._send_text(text)
            return
        items = [dumps(k) + ":" + dumps(v) for k, v in entries.items()]
        current = head
        prefix = dumps(current)[:-1] + "," + dumps(key) + ":{"
        chunk: list[str] = []
        size = len(prefix.encode()) + 16
        for item in items:
            n = len(item.encode()) + 1
            if chunk and size + n > limit:
                self._send_text(prefix + ",".join(chunk) + '},"more":true}')
                current = next_head
                prefix = dumps(current)[:-1] + "," + dumps(key) + ":{"
                chunk = []
                size = len(prefix.encode()) + 16
            chunk.append(item)
            size += n
        self._send_text(prefix + ",".join(chunk) + "}}")

    def _on_room_change(self) -> None:
        """The room's subscriber callback: mark the view dirty, schedule one push."""
        if self._closed or not self._started:
            return
        self._dirty = True
        try:
            self._schedule_push()
        except Exception:  # never let an error reach the node's notifier
            log.exception("session %s: scheduling a push failed", self.name)

    def _schedule_push(self) -> None:
        if self._push_handle is not None or self._loop is None:
            return
        delay = max(0.0, self._last_push + self.limits.push_interval_s - self._loop.time())
        self._push_handle = self._loop.call_later(delay, self._push_now)

    def _push_now(self) -> None:
        self._push_handle = None
        self._flush()

    def _flush(self) -> None:
        """Send what changed since the last push (state delta and/or presence)."""
        if not self._dirty or self._closed or self._loop is None:
            return
        self._dirty = False
        self._last_push = self._loop.time()
        try:
            privacy = self._privacy()
            readable = self._may_read(privacy)
            self._push_state(readable)
            self._push_authors(readable)
            self._push_presence(readable)
            self._push_privacy(privacy)
            self._push_presence_key(privacy)
        except Exception:
            self.counters["push_failed"] += 1
            log.exception("session %s: pushing state failed", self.name)

    def _push_state(self, readable: bool) -> None:
        new = self._room.state() if readable else {}
        old = self._sent_state
        changed = {k: v for k, v in new.items() if old.get(k) != v}
        removed = [k for k in old if k not in new]
        if not changed and not removed:
            return
        self._sent_state = new
        self.counters["pushes"] += 1
        if len(changed) + len(removed) > max(16, len(new) // 2):
            self._send_parts({"t": "state"}, {"t": "state"}, "state", new)
        else:
            self._send_parts({"t": "delta", "del": removed}, {"t": "delta", "del": []},
                             "set", changed)

    def _push_authors(self, readable: bool = True) -> None:
        """Who wrote each entity last (accountability in the page), when the room knows."""
        writers = getattr(self._room, "last_writers", None)
        if not callable(writers):
            return
        authors = writers() if readable else {}
        if authors != self._sent_authors:
            self._sent_authors = authors
            self._send_parts({"t": "authors"}, {"t": "authors"}, "authors", authors)

    def _privacy(self) -> dict[str, Any]:
        """The room's privacy, and for a private room what this page may see: ``you``
        (``reader``, ``not_a_reader`` or ``not_identified``) and, for a reader's page on a
        node that reads the room, the sealed ``room_name``."""
        privacy = getattr(self._room, "privacy", None)
        value = privacy() if callable(privacy) else {"private": False}
        if not isinstance(value, dict):
            return {"private": False}
        if value.get("private"):
            value = dict(value)
            if self.person_id is None:
                value["you"] = "not_identified"
            else:
                reader = self._room.role_of(self.person_id) in READER_ROLE_NAMES
                value["you"] = "reader" if reader else "not_a_reader"
            if value["you"] == "reader" and value.get("this_node") == "reader":
                value["room_name"] = self._room.room_name
        return value

    @staticmethod
    def _may_read(privacy: dict[str, Any]) -> bool:
        """May this page see the room's content (scene, presence, authors, name)? In a
        private room only a page whose person proved their key and is a reader now: the node
        renders what it decrypts for the people who hold the keys, never for a page that
        merely reaches it (a stranger, a removed member, a host-role person)."""
        return not privacy.get("private") or privacy.get("you") == "reader"

    def _push_privacy(self, privacy: dict[str, Any] | None = None) -> None:
        if privacy is None:
            privacy = self._privacy()
        if privacy != self._sent_privacy:
            self._sent_privacy = privacy
            self._send({"t": "privacy", "privacy": privacy})
            if self.media is not None and self._refuses_media(privacy):
                self.media.close()  # its person stopped being a reader: no more voice or video

    def _push_presence_key(self, privacy: dict[str, Any]) -> None:
        """A reader's page seals its own presence in a private room: give it the current
        epoch's presence key (only that key, only to a page whose person is a reader now),
        again after each rotation; a page whose person stops being a reader is told to stop
        (``epoch`` null) and gets no newer key."""
        if not privacy.get("private"):
            return
        source = getattr(self._room, "presence_key", None)
        pair = source() if callable(source) and self._may_read(privacy) else None
        epoch = None if pair is None else pair[0]
        if epoch == self._sent_presence_epoch:
            return
        self._sent_presence_epoch = epoch
        if pair is None:
            self._send({"t": "presence_key", "epoch": None, "key": None})
            return
        self.counters["presence_keys_given"] += 1
        self._send({"t": "presence_key", "epoch": base64.b64encode(pair[0]).decode("ascii"),
                    "key": base64.b64encode(pair[1]).decode("ascii")})

    def _push_presence(self, readable: bool = True) -> None:
        presence = self._room.presence() if readable else {}
        if presence == self._sent_presence:
            return
        self._sent_presence = presence
        self._send_parts({"t": "presence"}, {"t": "presence"}, "presence", presence)

    async def _ack(self, ack: dict[str, Any]) -> None:
        """Send the ack of a successful edit, after a push that shows the edit; acks that
        complete in the same loop iteration share that push. Returns once it is sent."""
        if self._closed or self._loop is None:
            return
        self._acks.append(ack)
        sent = self._acks_sent
        if self._ack_handle is None or sent is None:
            sent = self._acks_sent = self._loop.create_future()
            self._ack_handle = self._loop.call_soon(self._send_acks)
        await asyncio.shield(sent)

    def _send_acks(self) -> None:
        self._ack_handle = None
        acks, self._acks = self._acks, []
        self._dirty = True  # our own edits changed the state, whether or not we were told yet
        self._flush()
        for ack in acks:
            self.counters["acks"] += 1
            self._send(ack)
        sent, self._acks_sent = self._acks_sent, None
        if sent is not None and not sent.done():
            sent.set_result(None)

    def _refuse(self, req: int, reason: str, error: str, why: str | None = None) -> None:
        """A refused edit: ``reason`` is the session's counter, ``why`` the stable reason the
        page shows (the replicas' label, e.g. ``not_entity_owner``)."""
        self.counters[reason] += 1
        self._send({"t": "ack", "req": req, "ok": False, "error": error,
                    "reason": why or reason})

    def _error(self, reason: str, error: str, req: int | None) -> None:
        self.counters[reason] += 1
        self._send({"t": "error", "req": req, "error": error, "reason": reason})

    @staticmethod
    def _refuses_media(privacy: dict[str, Any]) -> bool:
        """A private room's media go to its readers only (media are encrypted hop by hop,
        so whoever relays them hears them): a page whose person proved a key that is not a
        reader's (a removed member, a host-role person) gets none. A page that has not
        identified yet came with the invite or operator rights that let it in."""
        return bool(privacy.get("private")) and privacy.get("you") == "not_a_reader"
