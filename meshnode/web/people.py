"""People in browsers: each person's key authors their own changes and presence.

A page holds its person's Ed25519 key (``static/identity.js``); the node keeps the replica.
``PeopleRoom`` is the room as the node's browser sessions see it: it composes a change for a
person (``meshnode.crdt.authoring``), takes the change back once the page has checked and
signed it, and applies and spreads it like any peer's (every replica judges it by the
person's role); it publishes the presence the page signed; and it admits people: an ``open``
room grants a newcomer's key the room's ``admit_role``, an invite is redeemed by the key that
presents it (``meshnode.rooms.admission``). Nothing a page does is signed with the node's key,
except the grant that admits a person (the node is an admin of its rooms; the grant names the
person's key and, for an invite, the invite, so every replica counts its uses).

One person's changes are composed one at a time on a node (``author_lock``): the next seq is
taken from the replica only after the previous change was applied. Across nodes and tabs the
page itself refuses to sign a seq at or below one it signed before (docs/protocol.md,
"Browser signing").
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from typing import Any, TypeVar

from meshnode.crdt import APPLIED, BUFFERED, DUPLICATE, PermissionDenied, SceneReplica
from meshnode.crdt.authoring import PersonDraft, SealedDraft
from meshnode.overlay.sealed_presence import open_presence
from meshnode.rooms.admission import invite_problem, may_auto_admit, may_grant
from meshnode.rooms.invite import parse_invite
from meshnode.runtime.room import RoomRuntime
from meshnode.web.rooms import EditFn
from protocol.errors import DecodeError
from protocol.frames import PROTOCOL_VERSION, Presence, decode_frame
from protocol.msgpack_io import pack

__all__ = ["IDENTIFY_DOMAIN", "PeopleRoom", "identify_payload", "presence_from_page"]

log = logging.getLogger(__name__)

T = TypeVar("T")

IDENTIFY_DOMAIN = b"meshnode/browser-identify/v1\x00"
"""Domain tag of the signature a page makes to prove it holds its person's key: never the
prefix of a change (``meshnode/change/v1``) or presence (``meshnode/presence/v1``) payload."""


def identify_payload(room_id: bytes, node_key: bytes, challenge: bytes) -> bytes:
    """What a page signs to identify itself to ``node_key`` for ``room_id``."""
    return IDENTIFY_DOMAIN + room_id + node_key + challenge


def presence_from_page(room_id: bytes, body: bytes, signature: bytes) -> Presence:
    """A page's signed presence (``body`` = msgpack ``[participant, seq, fields]``), decoded
    with the same checks as one from a link; raises ``DecodeError``. The signature is
    checked where it is published."""
    msg = decode_frame(pack([PROTOCOL_VERSION, Presence.TYPE, room_id, body, signature]))
    if not isinstance(msg, Presence):  # pragma: no cover - the type is fixed above
        raise DecodeError("not a presence")
    return msg


class PeopleRoom:
    """A hosted room as the node's browsers see it (see the module docstring).

    ``admit_policy()`` is the room's ``admit`` setting (``open`` or ``invite``);
    ``admit_role`` what an open room gives newcomers."""

    def __init__(self, runtime: RoomRuntime, *, admit_policy: Callable[[], object],
                 admit_role: str, clock: Callable[[], float] = time.time) -> None:
        self.runtime = runtime
        self._admit_policy = admit_policy
        self._admit_role = admit_role
        self._clock = clock
        self._locks: dict[bytes, asyncio.Lock] = {}

    # ------------------------------------------------------------------ the room

    @property
    def room_id(self) -> bytes:
        """The room's ID."""
        return self.runtime.room_id

    @property
    def room_name(self) -> str:
        """The room's name."""
        return self.runtime.room_name

    @property
    def me(self) -> str:
        """The node's PeerID (it signs nothing for the people it serves but their grants)."""
        return self.runtime.me

    def state(self) -> dict[str, dict[str, Any]]:
        """The scene."""
        return self.runtime.state()

    def privacy(self) -> dict[str, Any]:
        """The room's privacy, as the page shows it (``RoomRuntime.privacy``)."""
        return self.runtime.privacy()

    def last_writers(self) -> dict[str, str]:
        """Each entity's last writer's PeerID (``SceneReplica.last_writers``)."""
        return self.runtime.replica.last_writers()

    async def edit(self, fn: Callable[[SceneReplica], T]) -> T:
        """An edit by the node itself (admission grants)."""
        return await self.runtime.edit(fn)

    def set_presence(self, fields: dict[str, Any]) -> object:
        """The node's own presence."""
        return self.runtime.set_presence(fields)

    def subscribe(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Follow the room's changes and presence."""
        return self.runtime.subscribe(callback)

    # ------------------------------------------------------------------ changes

    def author_lock(self, author: bytes) -> asyncio.Lock:
        """The lock that keeps one person's changes on this node composed one at a time."""
        lock = self._locks.get(author)
        if lock is None:
            if len(self._locks) > 1024:  # forget idle ones
                for key in [k for k, v in self._locks.items() if not v.locked()]:
                    del self._locks[key]
            lock = self._locks[author] = asyncio.Lock()
        return lock

    def draft(self, author: bytes, fn: EditFn) -> SealedDraft:
        """Compose the change ``fn`` makes, as ``author``, judged as every replica would
        judge it signed; raises ``DraftRefused`` (its ``reason``), ``ValueError`` or
        ``TypeError``."""
        replica = self.runtime.replica
        draft = PersonDraft(replica, author)
        result = fn(draft)
        nonce = os.urandom(12) if replica.is_private else None
        return draft.seal(self._clock(), time.monotonic(), result, nonce=nonce)

    async def rotate_keys(self) -> bool:
        """Start a new epoch as the node (a private room whose latest epoch went stale with a
        removal: ``no_usable_epoch``). True if the node rotated, False if it may not (it is
        not an editor who reads the room)."""
        try:
            await self.runtime.edit(lambda r: r.rotate())
        except (PermissionDenied, ValueError) as err:
            log.info("could not rotate the keys of room %s: %s",
                     self.runtime.room_id.hex()[:16], err)
            return False
        return True

    def author_seq(self, author: bytes) -> int:
        """The highest seq of ``author``'s chain this replica holds."""
        return self.runtime.replica.version_vector().get(author, 0)

    async def submit_signed(self, data: bytes) -> str | None:
        """Apply and spread a change a person signed; None once it is applied and durable
        (or buffered, waiting for its deps), else the replica's reason for refusing it."""
        res = await self.runtime.submit_signed(data)
        if res.status in (APPLIED, DUPLICATE, BUFFERED):
            return None
        return res.reason or "rejected"

    # ------------------------------------------------------------------ presence

    def submit_presence(self, msg: Presence) -> str | None:
        """Publish a person's signed presence; None if taken, else why not. In a private
        room the page must have sealed it under a presence key this node holds
        (``unsealed`` otherwise): presence in clear would reach blind hosts."""
        replica = self.runtime.replica
        if replica.is_private and open_presence(replica, msg.participant, msg.seq,
                                                msg.fields, replica.limits) is None:
            return "unsealed"
        return self.runtime.submit_signed_presence(msg)

    def presence_key(self) -> tuple[bytes, bytes] | None:
        """A private room's current epoch and its presence key, for a reader's page to seal
        its presence with (``meshnode.overlay.sealed_presence``); None if the room is not
        private or this node holds no usable key."""
        replica = self.runtime.replica
        if not replica.is_private:
            return None
        epoch = replica.current_epoch()
        key = None if epoch is None else replica.epoch_key(epoch, "presence")
        return None if epoch is None or key is None else (epoch, key)

    def presence(self) -> dict[str, dict[str, Any]]:
        """Each present person's (and node's) presence, by PeerID."""
        return self.runtime.presence()

    # ------------------------------------------------------------------ admission

    def role_of(self, peer: str) -> str:
        """The person's current role in the room."""
        return self.runtime.replica.role_of(peer)

    async def admit_person(self, peer: str, invite: str | None) -> str | None:
        """Admit the person ``peer`` (whose key the page proved): with ``invite`` if given
        (a token ``mninv1...``), else as an ``open`` room admits newcomers. None if they are
        a member now (or were already), else why not: an invite problem
        (``invite_expired``, ``invite_revoked``, ...), ``removed`` (an open room does not
        take back someone removed), ``invite_only`` or ``node_may_not_grant``."""
        replica = self.runtime.replica
        if replica.role_of(peer) != "none":
            return None
        me = self.runtime.me
        role = self._admit_role
        token = None
        if invite is not None:
            try:
                token = parse_invite(invite)
            except DecodeError:
                return "invite_malformed"
            problem = invite_problem(replica, token, peer, int(self._clock() * 1000))
            if problem is not None:
                return f"invite_{problem}"
            role = token.role
        elif self._admit_policy() != "open":
            return "invite_only"
        elif not may_auto_admit(replica, peer):
            return "removed"
        if not may_grant(replica, me, peer, role):
            return "node_may_not_grant"

        def grant(r: Any) -> None:
            if r.role_of(peer) != "none":
                return
            if token is None:
                r.grant(peer, role)
            else:
                r.grant(peer, role, invite=token.id, max_uses=token.max_uses)

        try:
            await self.runtime.edit(grant)
        except (PermissionDenied, ValueError) as err:
            log.warning("could not admit %s: %s", peer, err)
            return "node_may_not_grant"
        log.info("admitted person %s as %s in room %s", peer, role,
                 self.runtime.room_id.hex()[:16])
        return None

