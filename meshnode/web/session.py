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

The session is one chain of classes, a file each: ``session_view`` (its state and all it
sends), ``person_edits`` (the person's identity and signed edits) and this module (its
lifecycle, what it receives, and the page's presence); ``session_limits`` holds
``SessionLimits``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
from typing import Any, TypeVar

from meshnode.web.media import MEDIA_TYPES
from meshnode.web.messages import EDITS, BadMessage, peek_req, refuse_constant, want_req
from meshnode.web.people import presence_from_page
from meshnode.web.person_edits import PersonEdits
from meshnode.web.session_limits import SessionLimits
from meshnode.web.session_view import READER_ROLE_NAMES as READER_ROLE_NAMES
from meshnode.web.session_view import SessionView as SessionView
from meshnode.web.signing import parse_sign_answer
from protocol.errors import DecodeError
from protocol.frames import Presence

__all__ = ["BrowserSession", "SessionLimits"]

log = logging.getLogger(__name__)

T = TypeVar("T")


class BrowserSession(PersonEdits):
    """The node's side of one browser connection (see the module docstring for the protocol).

    ``counters`` counts what happened, by label: ``messages``, ``acks``, ``pushes``, and
    refusals (``bad_json``, ``bad_message``, ``unknown_type``, ``oversized``,
    ``edit_rate_limited``, ``edit_refused``, ``busy``, ``presence_coalesced``, ...).
    """

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
