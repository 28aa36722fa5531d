"""``RoomHost``: the rooms a node hosts, and everything that happens to them.

It owns one ``RoomRuntime`` per hosted room: rebuilt from the store at start
(``meshnode.rooms.loading``: latest snapshot, then the changes after it), created here
(``create_room``) or from an invite (``join_room``). As a ``LinkService`` it attaches rooms
to the links that share them, routes room frames, redeems the invites peers present in their
hellos and admits clients of ``open`` rooms (as ``admit_role``, if this node may grant it).
Every applied change is written through the ``DurableLog``; a client's change is
acknowledged (``Ack`` on its link) once durable. Every ``snapshot_every`` stored changes,
and at shutdown, the room's snapshot is saved. Store calls run in a worker thread, never on
the event loop.

``RoomHost`` is one chain of classes, a file each: ``RoomUpkeep`` (``upkeep``: the hosted
rooms' state, snapshots and keys), ``RoomEvents`` (``room_events``: what each room's runtime
reports, stores and acknowledges), ``RoomLinks`` (``room_links``: the rooms on the links,
invites and admission) and ``RoomHost`` (``host``: hosting, creating and joining rooms, and
their members).
"""

import asyncio
import dataclasses
import functools
import logging
import os
import random
import time
from typing import Any

from meshnode.crdt import PermissionDenied, SceneReplica
from meshnode.crdt.redemption import invite_keypair
from meshnode.identity import peer_id_from_public_key, public_key_from_peer_id
from meshnode.overlay import RoomOverlay
from meshnode.rooms.admission import mint_problem
from meshnode.rooms.hosted import HostedRoom
from meshnode.rooms.invite import Invite, make_invite, parse_invite
from meshnode.rooms.join_snapshot import pruned_room_replica
from meshnode.rooms.loading import load_replica
from meshnode.rooms.room_events import NACK_AFTER_S as NACK_AFTER_S
from meshnode.rooms.room_events import RoomEvents as RoomEvents
from meshnode.rooms.room_links import RoomLinks
from meshnode.rooms.upkeep import KEY_TICK_S as KEY_TICK_S
from meshnode.rooms.upkeep import RoomUpkeep as RoomUpkeep
from meshnode.runtime.bootstrap import dial_once
from meshnode.runtime.room import LIVE_OVERLAY, RoomRuntime
from meshnode.store import RoomRecord
from meshnode.web.people import PeopleRoom
from protocol.change import change_id

log = logging.getLogger("meshnode.node")

__all__ = ["JOIN_GRACE_S", "RoomHost"]

JOIN_GRACE_S = 10.0


class RoomHost(RoomLinks):
    """The hosted rooms (see the module docstring). ``await load()`` once, then serve;
    ``await aclose()`` saves snapshots and closes the rooms."""

    async def load(self) -> None:
        """Host every stored room, and create the default room on a first run."""
        for record in await asyncio.to_thread(self.store.rooms):
            await self._host(record)
        if not self.rooms and self.config.default_room:
            await self.create_room(self.config.default_room_name, default=True)
        self._tasks.spawn(self._key_loop(), "private room keys")

    async def aclose(self) -> None:
        """Stop this host's tasks, save every room's snapshot, close the rooms."""
        await self._tasks.aclose()
        for hosted in self.rooms.values():
            await self._save_snapshot(hosted)
        for hosted in self.rooms.values():
            hosted.runtime.close()
        await self.history_reader.aclose()

    async def latest_snapshot(self, room_id: bytes) -> bytes | None:
        """The room's latest stored snapshot (None if none yet)."""
        snap = await asyncio.to_thread(self.store.latest_snapshot, room_id)
        return None if snap is None else snap[0]

    async def join_snapshot(self, room_id: bytes) -> bytes | None:
        """The snapshot a joining client starts from: the room's join snapshot (frontier
        near its heads, ``meshnode.rooms.head_snapshots``), or the stored one if this node
        cannot write one now (a blind host, a reader waiting for a key); None if none."""
        hosted = self.rooms.get(room_id)
        if hosted is not None:
            data = await self.join_snapshots.get(hosted.runtime.replica)
            if data is not None:
                return data
        return await self.latest_snapshot(room_id)

    # ------------------------------------------------------------------ rooms

    async def _host(self, record: RoomRecord) -> HostedRoom:
        started = time.perf_counter()
        store, room_id = self.store, record.room_id
        snapshot = await self.latest_snapshot(room_id)
        loaded = await asyncio.to_thread(
            load_replica, record.genesis, self.identity,
            functools.partial(store.changes, room_id), snapshot,
            functools.partial(store.change_bytes, room_id),
            keep_unserved=bool(record.settings.get("joined_from_snapshot")))
        if room_id in self.rooms:  # hosted meanwhile (two joins with one token)
            return self.rooms[room_id]
        self._report_replay(room_id, loaded.report)
        replica = loaded.replica
        overrides: dict[str, Any] = dict(self.config.presence)
        tuning = dataclasses.replace(LIVE_OVERLAY, **overrides)
        overlay = RoomOverlay(replica, self.identity, tuning,
                              rng=random.Random(os.urandom(16)), wall_clock=time.time)
        durable = self.durable
        runtime = RoomRuntime(
            overlay,
            send=self._send_frame,
            # applied=True: the replica holds the change already; never drop it from the log.
            persist=lambda rid, cid, data: durable.append(rid, cid, data, applied=True),
            on_event=lambda ev: self._on_room_event(room_id, ev),
            history=None if replica.private else functools.partial(self.history_reader.read,
                                                                   room_id),
        )
        hosted = HostedRoom(runtime, dict(record.settings),
                            reader_snapshot=loaded.foreign_snapshot)
        self.rooms[room_id] = hosted
        self.join_snapshots.warm(replica)
        self.metrics.rooms.set(len(self.rooms))
        self.metrics.room_changes.labels(room_id.hex()[:16]).set(replica.change_count())
        if loaded.snapshot_problem is not None:
            log.warning("room %s: stored snapshot not used (%s): replayed the whole log",
                        room_id.hex()[:16], loaded.snapshot_problem)
        log.info("room %s (%s): %d changes loaded%s in %.2f s", room_id.hex()[:16], record.name,
                 replica.change_count(), " from a snapshot" if loaded.from_snapshot else "",
                 time.perf_counter() - started)
        return hosted

    async def create_room(self, name: str, *, default: bool = False,
                          admit: str | None = None, private: bool = False) -> bytes:
        """Found a room owned by this node; returns its ID. ``private``: a private room
        (sealed scene, presence and name; docs/protocol.md, "Private rooms"), for invite-only
        rooms (an ``open`` room admits anyone, so it cannot be private)."""
        admit = admit or self.config.admit
        if private and admit == "open":
            raise ValueError("an open room admits anyone, so it cannot be private: create it "
                             "with admit invite")
        replica = SceneReplica.create(self.identity, time.time(), name=name,
                                      nonce=os.urandom(16), private=private)
        settings: dict[str, object] = {"admit": admit, "default": default}
        if private:
            settings["private"] = True
        # A private room's name is sealed in its history: the store's room table holds "".
        await asyncio.to_thread(self.store.add_room, replica.room_id, replica.genesis,
                                "" if private else name, settings)
        if private:  # the owner's second change: the first epoch and the sealed name
            await asyncio.to_thread(self.store.append_changes, replica.room_id,
                                    [(change_id(c), c) for c in replica.changes_since({})[1:]])
        record = next(r for r in await asyncio.to_thread(self.store.rooms)
                      if r.room_id == replica.room_id)
        await self._host(record)
        self._rooms_changed()
        return replica.room_id

    async def join_room(self, token: str) -> bytes:
        """Host a room from an invite token, and dial the nodes it names. Raises
        ``DecodeError`` or ``ValueError`` for a bad or expired token."""
        invite = parse_invite(token)
        problem = invite.verify(int(time.time() * 1000))
        if problem is not None:
            raise ValueError(f"invite is not valid: {problem}")
        if invite.room_id not in self.rooms:
            # A pruned history cannot be synced: start from the inviter's frontier snapshot
            # (meshnode.rooms.join_snapshot), stored re-signed as this node's own.
            pruned = await pruned_room_replica(invite, token, self.identity)
            replica = pruned or SceneReplica.from_genesis(invite.genesis, self.identity)
            name = replica.room_name
            settings: dict[str, object] = {"admit": "invite", "invite": token}
            if replica.private:
                settings["private"] = True
            if pruned is not None:
                settings["joined_from_snapshot"] = True  # its log never holds that history
            await asyncio.to_thread(self.store.add_room, invite.room_id, invite.genesis, name,
                                    settings)
            if pruned is not None:  # not hosted yet: nothing else touches it meanwhile
                data = await asyncio.to_thread(pruned.snapshot)
                await asyncio.to_thread(self.store.save_snapshot, invite.room_id, data,
                                        pruned.change_count())
            record = next(r for r in await asyncio.to_thread(self.store.rooms)
                          if r.room_id == invite.room_id)
            await self._host(record)
            self._rooms_changed()
        self._tasks.spawn(self._reach_inviter(invite), f"join {invite.room_id.hex()[:12]}")
        if self.on_join is not None:
            self.on_join(invite.room_id)
        return invite.room_id

    async def _reach_inviter(self, invite: Invite) -> None:
        """Link to the inviter's node unless the room finds peers another way first (through
        bootstrap nodes that host it, the overlay then reaches the inviter by relayed
        signaling, which also works behind NATs)."""
        if self.config.bootstrap:
            await asyncio.sleep(JOIN_GRACE_S)
        hosted = self.rooms.get(invite.room_id)
        if hosted is None or hosted.runtime.peers():
            return
        # A denied inviter is not dialled (the room may have other hosts; the policy refuses
        # the inviter's hello anyway, whoever else answers at its URL). Only ``deny`` here:
        # an invite may be signed by a person, and ``allow`` binds nodes.
        issuer = peer_id_from_public_key(invite.issuer)
        if self.links.policy_refusal(issuer, "client", "the inviter, named by an invite"):
            return
        for url in invite.urls:
            if url != self.url:
                await dial_once(self.links, url)

    def invite(self, room_id: bytes, role: str = "editor", ttl_s: float = 7 * 86_400,
               max_uses: int | None = None) -> str:
        """An invite token for ``room_id`` signed by this node; ``max_uses``: how many members
        it may admit (None: no limit). Its ID is ``parse_invite(token).id``. Raises
        ``PermissionDenied`` for an invite that could never admit anyone (``mint_problem``)."""
        hosted = self.rooms[room_id]
        replica = hosted.runtime.replica
        problem = mint_problem(replica, self.identity.public_key, role)
        if problem is not None:
            raise PermissionDenied(problem)
        # Every invite gets its own key pair (meshnode.crdt.redemption): the token carries the
        # secret half, so a blind host can admit its holder, and only its holder, by proof.
        secret, _public = invite_keypair(os.urandom(32))
        inv = make_invite(room_id, replica.genesis, role, self.identity.public_key,
                          self.identity.sign, int((time.time() + ttl_s) * 1000), [self.url],
                          max_uses or 0, invite_secret=secret)
        return inv.token()

    async def set_role(self, room_id: bytes, peer: str, role: str) -> None:
        """Give ``peer`` a role in the room ("admin", "editor", "viewer", "host" or "none"),
        as a signed change. A lower role names the member's cut-off: every replica retracts
        the member's changes that had not seen it (in a private room, a removal also rotates
        the keys in the same change, timed in ``meshnode_rotation_seconds``). Raises
        ``KeyError`` (no such room), ``ValueError`` (bad PeerID or role) or
        ``PermissionDenied`` (this node's role may not)."""
        hosted = self.rooms[room_id]
        replica = hosted.runtime.replica
        rotates = replica.private and replica.is_reader(public_key_from_peer_id(peer)) \
            and role in ("none", "host")
        started = time.perf_counter()
        await hosted.runtime.edit(lambda r: r.grant(peer, role))
        if rotates:
            self.metrics.rotation_seconds.labels(room_id.hex()[:16]).observe(
                time.perf_counter() - started)
        log.info("room %s: %s is now %s", room_id.hex()[:16], peer, role)

    async def remove_member(self, room_id: bytes, peer: str) -> None:
        """Remove ``peer`` from the room (role none, with a cut-off); see ``set_role``."""
        await self.set_role(room_id, peer, "none")

    async def revoke_invite(self, room_id: bytes, invite_id: bytes) -> None:
        """Revoke an invite of the room by ID: no replica admits anyone with it any more
        (grants naming it that the revocation had not seen count for nothing). Raises
        ``KeyError``, ``ValueError`` or ``PermissionDenied`` as ``set_role`` does."""
        hosted = self.rooms[room_id]
        await hosted.runtime.edit(lambda r: r.revoke_invite(invite_id))
        log.info("room %s: invite %s revoked", room_id.hex()[:16], invite_id.hex()[:16])

    def default_room_id(self) -> bytes | None:
        """The default room (or the first room; None if the node hosts none)."""
        for rid, hosted in self.rooms.items():
            if hosted.settings.get("default"):
                return rid
        return next(iter(self.rooms), None)

    def default_room_hex(self) -> str:
        """The default room's ID in hex ("" if none), for the web client."""
        rid = self.default_room_id()
        return rid.hex() if rid is not None else ""

    def room(self, hex_id: str) -> PeopleRoom | None:
        """A room as this node's browsers see it, by hex ID: each person in a browser
        authors their own changes and presence (``meshnode.web.people``)."""
        try:
            hosted = self.rooms.get(bytes.fromhex(hex_id))
        except ValueError:
            return None
        if hosted is None:
            return None
        if hosted.browser_view is None:
            hosted.browser_view = PeopleRoom(
                hosted.runtime, admit_policy=lambda: hosted.settings.get("admit"),
                admit_role=self.config.admit_role)
        return hosted.browser_view

    def _rooms_changed(self) -> None:
        self.metrics.rooms.set(len(self.rooms))
        for est in list(self.links.links.values()):
            self.sharing.share(est)
