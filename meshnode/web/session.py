"""One browser's session with its node: the ``client`` data channel protocol (JSON).

The browser is a thin client: it does not run the scene CRDT. Its node keeps the room's
``SceneReplica``, pushes the validated state to the browser, and turns the browser's edit
requests into changes signed with the node's identity. An edit is acknowledged only after the
node says it is durable.

``BrowserSession`` is the node's side of one browser connection. It does no I/O of its own: it
is given a ``send(text)`` callable and fed each received text message through ``handle``; it
only uses the running event loop to schedule its (throttled) state pushes.

Protocol (data channel ``client``, ordered and reliable; one JSON object per message)
=================================================================================

Browser → node (``req`` is a number the browser picks, echoed in the answer; an integer in
``0 .. 2**53-1``):

- ``{"t":"create","req":n,"parent":"root"|id,"components":{comp:{field:value}}}``
- ``{"t":"set","req":n,"id":id,"component":c,"field":f,"value":v}``
- ``{"t":"move","req":n,"id":id,"parent":p}``
- ``{"t":"delete","req":n,"id":id}``
- ``{"t":"presence","fields":{...}}`` (no answer; latest wins)
- ``media_offer``, ``media_publish``, ``media_prefs``: voice and video, handled by the
  connection's ``BrowserMedia`` (``meshnode.web.media`` documents them and the node's
  ``media_*`` messages); without one they are refused (``media_refused``, ``media_off``).

Node → browser:

- ``{"t":"welcome","room":hex,"room_name":str,"me":PeerID,"session":str,"state":{...},
  "presence":{...}}``, once, first. ``me`` is the PeerID that signs this browser's edits.
- ``{"t":"state","state":{...}}``: the whole scene, replacing the browser's view.
- ``{"t":"delta","set":{id:entity},"del":[id,...]}``: entities added or changed (each given
  whole) and entities removed, relative to the last state the browser was sent.
- ``{"t":"presence","presence":{PeerID:{...}}}``: everyone's presence, replacing the last.
- ``{"t":"privacy","privacy":{...}}``: in the welcome as ``privacy`` and again whenever it
  changes: ``private``; for a private room ``node`` (the PeerID of the node that renders
  the room for this page: the page is its thin client), ``this_node`` (``reader``: the node
  holds the keys and reads the room; ``host``: a blind host, which cannot read it, so neither
  can this page), ``readable`` and ``keys`` (each reader's PeerID -> holds the keys),
  ``you`` (``reader``, ``not_a_reader`` or ``not_identified``) and, for a reader's page on a
  reading node, the sealed ``room_name``. A private room's content (state, presence, last
  writers, name) is sent only to a page whose person proved their key and is a reader now;
  every other page gets an empty scene (and loses it when its person stops being a reader).
- ``{"t":"sign","req":n,"sreq":m,"seq":s,"body":base64}``: the change drafted for edit ``n``
  (``meshnode.web.signing``); in a private room also ``"sealed":{"secret":base64,
  "epoch":base64}``: the epoch secret and the raw change that created the epoch, for the page
  to check the sealed ops before signing (docs/protocol.md, "Browser signing in private
  rooms").
- ``{"t":"presence_key","epoch":base64|null,"key":base64|null}``: a private room's current
  presence key, for a reader's page to seal its presence (``meshnode.overlay.sealed_presence``),
  again after each rotation; null when the person stops being a reader. A private room
  refuses a page's presence that is not sealed under a key the node holds
  (``presence_unsealed``).
- ``{"t":"ack","req":n,"ok":true}`` (``"id":entityId`` added for ``create``), sent only
  after the edit is durable, and after the state message that shows it (so the browser reads
  its own writes once the ack arrives).
- ``{"t":"ack","req":n,"ok":false,"error":str}``: the node refused a well-formed request
  (permission, unknown entity, invalid value, rate limit, ...). Nothing was changed.
- ``{"t":"error","req":n|null,"error":str}``: the message itself was malformed (bad JSON, not
  an object, unknown ``t``, a field missing or of the wrong type, over 64 KiB); ``req`` is
  echoed when it could be read.

A message carrying ``state`` (``welcome``, ``state``), ``set`` (``delta``) or ``presence`` may
be too large for one data channel message; it is then split by entry and every part but the
last carries ``"more":true``. Parts of a ``welcome`` or ``state`` continue as ``state``
messages (parts of a ``delta`` as ``delta``, of a ``presence`` as ``presence``); the browser
merges the parts and applies them when the last one arrives.

State is ``SceneReplica.state()``: ``{id: {"parent": id, "components": {comp: {field:
value}}}}`` with entity IDs as ``"<PeerID>/<counter>"`` (the root is ``"root"``). Values are
JSON: numbers, strings, booleans, null, lists and objects map directly (a float that happens
to be integral reaches Python as whatever ``json`` gives: ``1.0`` a float, ``1`` an int);
bytes, should a value or a presence field ever hold them, are sent as ``{"$bytes": base64}``.
NaN and infinities are refused.

Limits (``SessionLimits``): messages over 64 KiB are refused; state pushes caused by other
changes are coalesced to at most 20 a second; edits are rate-limited per session (token bucket,
50/s, burst 100) and so is presence (20/s; over the rate the latest fields wait for the next
token instead of being dropped).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import math
import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from meshnode.crdt import EntityId, PermissionDenied
from meshnode.crdt.authoring import DraftRefused, SealedDraft
from meshnode.crdt.roles import READER_ROLES, ROLE_NAMES
from meshnode.identity import public_key_from_peer_id, verify_signature
from meshnode.identity_export import did_key
from meshnode.overlay.scoring import TokenBucket
from meshnode.web.media import MEDIA_TYPES, BrowserMedia
from meshnode.web.messages import EDITS, BadMessage, dumps, peek_req, refuse_constant, want_req
from meshnode.web.people import identify_payload, presence_from_page
from meshnode.web.rooms import EditFn, RoomAccess
from meshnode.web.signing import SignAnswer, SignDesk, parse_sign_answer
from protocol.change import OP_CREATE, decode_change, signing_payload
from protocol.errors import DecodeError
from protocol.frames import Presence

__all__ = ["BrowserSession", "SessionLimits"]

READER_ROLE_NAMES = frozenset(ROLE_NAMES[r] for r in READER_ROLES)
"""Roles that hold a private room's keys (and may see it rendered by their node)."""

log = logging.getLogger(__name__)

T = TypeVar("T")

@dataclass(frozen=True, slots=True)
class SessionLimits:
    """What one browser session may do, and how the node paces what it sends."""

    max_message_bytes: int = 64 * 1024
    """Largest message accepted from the browser (UTF-8 bytes)."""
    max_send_bytes: int = 60_000
    """Messages larger than this are split by entry (see the module docstring)."""
    push_interval_s: float = 0.05
    """Least time between two state pushes caused by changes (20 per second)."""
    edit_rate: float = 50.0
    edit_burst: float = 100.0
    max_edits_in_flight: int = 256
    """Edits accepted but not yet durable; beyond this the node answers ``busy``."""
    presence_rate: float = 20.0
    presence_burst: float = 20.0
    max_presence_fields: int = 32
    max_presence_field_chars: int = 64
    sign_timeout_s: float = 20.0
    """How long the node waits for the page to sign one change."""
    sign_attempts: int = 4
    """Drafts of one edit (each after the page showed a later seq it signed) before
    ``seq_conflict``."""
    chain_wait_s: float = 5.0
    """How long the node waits for a person's own earlier change to arrive before drafting
    the next one (``seq_behind``)."""


class BrowserSession:
    """The node's side of one browser connection (see the module docstring for the protocol).

    ``counters`` counts what happened, by label: ``messages``, ``acks``, ``pushes``, and
    refusals (``bad_json``, ``bad_message``, ``unknown_type``, ``oversized``,
    ``edit_rate_limited``, ``edit_refused``, ``busy``, ``presence_coalesced``, ...).
    """

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

    def start(self) -> None:
        """Send the welcome (with the current state and presence) and follow the room.

        Call it from the event loop, once, when the data channel is open.
        """
        if self._started or self._closed:
            return
        self._started = True
        self._loop = asyncio.get_running_loop()
        privacy = self._privacy()
        readable = self._may_read(privacy)
        state = self._room.state() if readable else {}
        presence = self._room.presence() if readable else {}
        room_id = self._room.room_id
        head = {
            "t": "welcome",
            "room": room_id.hex(),
            "room_name": self._room.room_name if readable else "",
            "me": self._room.me,
            "node": self._room.me,
            "session": self.name,
            "challenge": base64.b64encode(self._challenge).decode("ascii"),
            "presence": presence,
            "privacy": privacy,
        }
        self._send_parts(head, {"t": "state"}, "state", state)
        self._sent_state = state
        self._push_authors()
        self._sent_presence = presence
        self._sent_privacy = privacy
        self._last_push = self._loop.time()
        self._unsubscribe = self._room.subscribe(self._on_room_change)

    def close(self) -> None:
        """Stop following the room; nothing more is sent. Idempotent."""
        if self._closed:
            return
        self._closed = True
        for handle in (self._push_handle, self._ack_handle, self._presence_handle):
            if handle is not None:
                handle.cancel()
        self._push_handle = self._ack_handle = self._presence_handle = None
        self._acks.clear()
        sent, self._acks_sent = self._acks_sent, None
        if sent is not None and not sent.done():
            sent.set_result(None)  # nothing more will be sent
        self._pending_presence = None
        self._desk.close()
        if self.media is not None:
            self.media.close()
        forget = getattr(self._room, "forget", None)
        if callable(forget):  # a room that shows each browser (SharedPresenceRoom)
            try:
                forget(self.name)
            except Exception:
                log.exception("session %s: leaving the room's presence failed", self.name)
        unsubscribe, self._unsubscribe = self._unsubscribe, None
        if unsubscribe is not None:
            try:
                unsubscribe()
            except Exception:
                log.exception("session %s: unsubscribing from the room failed", self.name)

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

    # ------------------------------------------------------------------ receiving

    async def handle(self, text: str | bytes) -> None:
        """Handle one message from the browser. Never raises on bad input: it answers with
        an ``error`` or a refusing ``ack``. An edit returns once it is durable and acked."""
        if self._closed or not self._started:
            return
        self.counters["messages"] += 1
        try:
            msg = self._parse(text)
            kind = msg["t"]
            if kind == "presence":
                self._handle_presence(msg)
                return
            if kind == "identify":
                await self._handle_identify(msg)
                return
            if kind in ("signed", "sign_refused"):
                self._handle_sign_answer(parse_sign_answer(msg))
                return
            if kind in MEDIA_TYPES:
                await self._handle_media(msg)
                return
            handler = EDITS.get(kind)
            if handler is None:
                raise BadMessage("unknown_type", f"unknown message type {kind!r}",
                                  peek_req(msg))
            req = want_req(msg)
            fn = handler(msg, req)
        except BadMessage as bad:
            self._error(bad.reason, bad.text, bad.req)
            return
        await self._run_person_edit(req, fn)

    async def _handle_media(self, msg: dict[str, Any]) -> None:
        if self._refuses_media(self._privacy()):
            self.counters["media_not_reader"] += 1
            self._send({"t": "media_refused", "req": peek_req(msg), "reason": "not_reader",
                        "error": "this room is private and your key holds none of its keys: "
                                 "its voice and video go to readers only"})
            return
        if self.media is None:
            self.counters["media_media_off"] += 1
            self._send({"t": "media_refused", "req": peek_req(msg), "reason": "media_off",
                        "error": "this connection carries no voice or video"})
            return
        await self.media.handle(msg)

    @staticmethod
    def _refuses_media(privacy: dict[str, Any]) -> bool:
        """A private room's media go to its readers only (media are encrypted hop by hop,
        so whoever relays them hears them): a page whose person proved a key that is not a
        reader's (a removed member, a host-role person) gets none. A page that has not
        identified yet came with the invite or operator rights that let it in."""
        return bool(privacy.get("private")) and privacy.get("you") == "not_a_reader"

    def send_message(self, msg: dict[str, Any]) -> None:
        """Send one JSON message to the browser (for ``BrowserMedia``)."""
        self._send(msg)

    def _parse(self, text: str | bytes) -> dict[str, Any]:
        if not isinstance(text, str):
            raise BadMessage("bad_message", "binary messages are not part of the protocol")
        limit = self.limits.max_message_bytes
        if len(text) > limit or (len(text) * 4 > limit and len(text.encode()) > limit):
            raise BadMessage("oversized", f"message over {limit} bytes")
        try:
            msg = json.loads(text, parse_constant=refuse_constant)
        except (ValueError, RecursionError) as err:
            raise BadMessage("bad_json", f"not valid JSON: {err}") from None
        if type(msg) is not dict:
            raise BadMessage("bad_message", "a message is a JSON object")
        if type(msg.get("t")) is not str:
            raise BadMessage("bad_message", 'a message needs a string "t"', peek_req(msg))
        return msg

    # ------------------------------------------------------------------ the person

    async def _handle_identify(self, msg: dict[str, Any]) -> None:
        """The page proves it holds its person's key (a signature of the welcome's challenge)
        and, with an invite, redeems it; the node admits the person and says their role."""
        peer, sig, invite = msg.get("peer"), msg.get("sig"), msg.get("invite")
        if type(peer) is not str or type(sig) is not str or len(sig) > 100:
            raise BadMessage("bad_message", 'identify needs a "peer" and a base64 "sig"')
        if invite is not None and (type(invite) is not str or len(invite) > 8192):
            raise BadMessage("bad_message", '"invite" must be an invite token')
        try:
            key = public_key_from_peer_id(peer)
            signature = base64.b64decode(sig, validate=True)
        except (ValueError, binascii.Error) as err:
            raise BadMessage("bad_message", f"identify: {err}") from None
        if self.person is not None and self.person != key:
            raise BadMessage("already_identified", "this session belongs to another person; "
                             "open a new connection to change identity")
        node_key = public_key_from_peer_id(self._room.me)
        payload = identify_payload(self._room.room_id, node_key, self._challenge)
        if not verify_signature(key, signature, payload):
            raise BadMessage("bad_identity_proof", "the signature does not prove this key: "
                             "sign the welcome's challenge with the person's key")
        self.person, self.person_id = key, peer
        self.counters["identified"] += 1
        problem = None
        try:
            problem = await self._room.admit_person(peer, invite)
        except Exception:
            log.exception("session %s: admitting %s failed", self.name, peer)
            problem = "admission_failed"
        if problem is not None:
            self.counters[f"admission_{problem}"] += 1
        self._send({"t": "identified", "peer": peer, "did": did_key(key),
                    "role": self._room.role_of(peer), "problem": problem})
        if self._sent_privacy.get("private"):
            # What this person may see changed (a reader now sees the scene): push it now.
            self._dirty = True
            self._flush()

    def _handle_sign_answer(self, answer: SignAnswer) -> None:
        if not self._desk.answer(answer):
            # Replayed, reordered or made up: it names no request the node has open.
            raise BadMessage("unknown_signing_request",
                             f"signing request {answer.sreq} is not open (answered already, "
                             "given up on, or never asked): nothing was applied")

    async def _run_person_edit(self, req: int, fn: EditFn) -> None:
        if self.person is None:
            self._refuse(req, "not_identified", "identify first: the page signs its edits "
                         "with its person's key")
            return
        if self._edits_in_flight >= self.limits.max_edits_in_flight:
            self._refuse(req, "busy", "busy: too many edits waiting to be durable")
            return
        if not self._edit_bucket.take(1.0, self._clock()):
            self._refuse(req, "edit_rate_limited",
                         f"rate limited: at most {self.limits.edit_rate:g} edits a second")
            return
        self._edits_in_flight += 1
        try:
            async with self._room.author_lock(self.person):
                ack = await self._author(req, self.person, fn)
        except Exception as err:
            log.exception("session %s: edit %d failed", self.name, req)
            self._refuse(req, "edit_failed", f"the node could not make this edit: {err}")
            return
        finally:
            self._edits_in_flight -= 1
        if ack is not None:
            await self._ack(ack)

    async def _author(self, req: int, person: bytes, fn: EditFn) -> dict[str, Any] | None:
        """Draft the edit as the person, have the page sign it, apply it. Returns the ack to
        send (None: a refusal was sent)."""
        rotated = False
        for _ in range(self.limits.sign_attempts):
            try:
                draft = self._room.draft(person, fn)
            except DraftRefused as err:
                if err.reason == "no_usable_epoch" and not rotated:
                    # A removal left the latest epoch stale: the node starts a new one, if
                    # it may (its own change), and drafts again under it.
                    rotated = True
                    rotate = getattr(self._room, "rotate_keys", None)
                    if callable(rotate) and await rotate():
                        continue
                self._refuse(req, "edit_refused", f"permission denied: {err}", err.reason)
                return None
            except PermissionDenied as err:
                self._refuse(req, "edit_refused", f"permission denied: {err}")
                return None
            except (ValueError, TypeError) as err:
                self._refuse(req, "edit_refused", str(err) or type(err).__name__)
                return None
            answer = await self._ask_signature(req, draft)
            if answer is None:
                return None
            if answer.signature is not None:
                return await self._apply_signed(req, person, draft, answer.signature)
            if answer.reason in ("seq_reused", "already_signed") and answer.changes:
                brought = await self._bring_signed(req, person, answer.changes)
                if brought is None:
                    return None
                if answer.reason == "already_signed" and answer.seq in brought:
                    # The page signed this very edit before (a failover redelivery).
                    return self._ack_of_change(req, person, brought[answer.seq])
                continue  # the person's chain is further along: draft again
            self._refuse(req, "sign_refused", f"the page refused to sign: {answer.reason}",
                         answer.reason)
            return None
        self._refuse(req, "seq_conflict", "the person's changes from another tab or node "
                     "kept overtaking this one: try again", "seq_conflict")
        return None

    async def _ask_signature(self, req: int, draft: SealedDraft) -> SignAnswer | None:
        try:
            sreq, fut = self._desk.open()
        except OverflowError as err:
            self._refuse(req, "busy", str(err))
            return None
        ask: dict[str, Any] = {"t": "sign", "req": req, "sreq": sreq, "seq": draft.seq,
                               "body": base64.b64encode(draft.body).decode("ascii")}
        if draft.epoch_secret is not None and draft.epoch_change is not None:
            # A private room: what the page needs to open the sealed ops and compare them
            # with its edit (docs/protocol.md, "Browser signing in private rooms"). Drafted
            # only for a person who is a reader and may edit (meshnode.crdt.authoring).
            ask["sealed"] = {"secret": base64.b64encode(draft.epoch_secret).decode("ascii"),
                             "epoch": base64.b64encode(draft.epoch_change).decode("ascii")}
            self.counters["epoch_keys_given"] += 1
        self._send(ask)
        try:
            return await asyncio.wait_for(asyncio.shield(fut), self.limits.sign_timeout_s)
        except (TimeoutError, asyncio.CancelledError):
            self._desk.forget(sreq)
            if self._closed:
                return None
            self._refuse(req, "sign_timeout", "the page did not sign in time")
            return None

    async def _apply_signed(self, req: int, person: bytes, draft: SealedDraft,
                            signature: bytes) -> dict[str, Any] | None:
        payload = signing_payload(self._room.room_id, draft.body)
        if not verify_signature(person, signature, payload):
            self._refuse(req, "bad_signature", "the signature is not the person's over the "
                         "change asked for: nothing was applied", "bad_signature")
            return None
        problem = await self._room.submit_signed(draft.body + signature)
        if problem is not None:
            self._refuse(req, "edit_refused", f"the room refused the change: {problem}",
                         problem)
            return None
        ack: dict[str, Any] = {"t": "ack", "req": req, "ok": True, "seq": draft.seq}
        if isinstance(draft.result, EntityId):
            ack["id"] = str(draft.result)
        return ack

    async def _bring_signed(self, req: int, person: bytes, changes: tuple[bytes, ...]
                            ) -> dict[int, bytes] | None:
        """The page shows changes it signed that this replica lacks: apply them and wait until
        the person's chain reaches them here. Returns them by seq (None: refused)."""
        by_seq: dict[int, bytes] = {}
        for data in changes:
            try:
                ch = decode_change(data)
            except DecodeError as err:
                self._refuse(req, "bad_signed_change", f"the page's signed change: {err}",
                             "bad_signed_change")
                return None
            if ch.author != person or not verify_signature(
                    person, ch.signature, signing_payload(self._room.room_id, ch.body)):
                self._refuse(req, "bad_signed_change", "the page's signed change is not the "
                             "person's", "bad_signed_change")
                return None
            by_seq[ch.seq] = data
        for seq in sorted(by_seq):
            problem = await self._room.submit_signed(by_seq[seq])
            if problem is not None:
                self._refuse(req, "edit_refused", f"the person's change {seq} was refused: "
                             f"{problem}", problem)
                return None
        top = max(by_seq)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.limits.chain_wait_s
        while self._room.author_seq(person) < top:
            if loop.time() > deadline or self._closed:
                self._refuse(req, "seq_behind", "this node does not hold the person's earlier "
                             "changes yet: try again in a moment", "seq_behind")
                return None
            await asyncio.sleep(0.05)
        return by_seq

    def _ack_of_change(self, req: int, person: bytes, data: bytes) -> dict[str, Any]:
        ch = decode_change(data)
        ack: dict[str, Any] = {"t": "ack", "req": req, "ok": True, "seq": ch.seq}
        creates = [op for op in ch.ops if op[0] == OP_CREATE]
        if creates:
            ack["id"] = str(EntityId(person, creates[0][1]))
        return ack

    # ------------------------------------------------------------------ presence

    def _handle_presence(self, msg: dict[str, Any]) -> None:
        """A presence update the page signed with its person's key."""
        if self.person is None:
            raise BadMessage("not_identified", "identify first: presence is signed by the "
                             "person's key")
        body, sig = msg.get("body"), msg.get("sig")
        if type(body) is not str or type(sig) is not str or len(body) > 16_384 \
                or len(sig) > 100:
            raise BadMessage("presence_unsigned", 'presence is {"body": base64 msgpack '
                             '[participant, seq, fields], "sig": base64 signature}')
        try:
            update = presence_from_page(self._room.room_id, base64.b64decode(body, validate=True),
                                        base64.b64decode(sig, validate=True))
        except (DecodeError, binascii.Error, ValueError) as err:
            raise BadMessage("bad_presence", f"presence: {err}") from None
        if update.participant != self.person:
            raise BadMessage("presence_not_yours", "a page publishes its own person's presence "
                             "only")
        lim = self.limits
        if len(update.fields) > lim.max_presence_fields or any(
                not key or len(key) > lim.max_presence_field_chars for key in update.fields):
            raise BadMessage("bad_message", f"at most {lim.max_presence_fields} presence fields "
                             f"named by 1..{lim.max_presence_field_chars} characters")
        if self._presence_bucket.take(1.0, self._clock()):
            self._pending_presence = None
            self._publish_presence(update)
            return
        # Over the rate: keep only the latest update and publish it when a token is due.
        self.counters["presence_coalesced"] += 1
        self._pending_presence = update
        self._schedule_presence()

    def _schedule_presence(self) -> None:
        if self._presence_handle is None and self._loop is not None:
            delay = max(self._presence_bucket.wait_time(self._clock()), 0.001)
            self._presence_handle = self._loop.call_later(delay, self._presence_due)

    def _presence_due(self) -> None:
        self._presence_handle = None
        update = self._pending_presence
        if update is None or self._closed:
            return
        if not self._presence_bucket.take(1.0, self._clock()):
            self._schedule_presence()
            return
        self._pending_presence = None
        self._publish_presence(update)

    def _publish_presence(self, update: Presence) -> None:
        try:
            problem = self._room.submit_presence(update)
        except Exception:
            log.exception("session %s: publishing presence failed", self.name)
            self._error("presence_failed", "the node could not publish this presence", None)
            return
        if problem is None:
            self.counters["presence"] += 1
        elif problem == "stale_or_rate_limited":
            self.counters["presence_dropped"] += 1
        else:
            self._error(f"presence_{problem}", f"presence refused: {problem}", None)

