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
"""

import asyncio
import contextlib
import dataclasses
import functools
import logging
import os
import random
import time
from collections.abc import Callable
from typing import Any

from meshnode.config import NodeConfig
from meshnode.crdt import PermissionDenied, ReplayReport, SceneReplica
from meshnode.crdt.redemption import check_proof, invite_keypair
from meshnode.crdt.roles import ROLE_BY_NAME
from meshnode.identity import Identity, peer_id_from_public_key, public_key_from_peer_id
from meshnode.metrics import NodeMetrics
from meshnode.overlay import RoomOverlay
from meshnode.overlay.events import (
    ChangeApplied,
    ChangeRedelivered,
    ConnectRequest,
    DisconnectRequest,
    Event,
    PeerMisbehaved,
    PresenceUpdated,
    RequestRefused,
)
from meshnode.rooms.access import (
    Refusal,
    Refuse,
    Share,
    announced_in_hello,
)
from meshnode.rooms.acks import AckBatcher
from meshnode.rooms.admission import invite_problem, may_auto_admit, may_grant, mint_problem
from meshnode.rooms.head_snapshots import JoinSnapshots
from meshnode.rooms.hosted import HostedRoom
from meshnode.rooms.invite import Invite, decode_invite_bytes, make_invite, parse_invite
from meshnode.rooms.join_snapshot import pruned_room_replica
from meshnode.rooms.key_upkeep import KeyUpkeep
from meshnode.rooms.loading import frontier_for, load_replica, worth_compacting
from meshnode.rooms.reader_snapshots import ReaderSnapshots
from meshnode.rooms.sharing import RoomSharing
from meshnode.runtime.bootstrap import dial_once
from meshnode.runtime.links import Established, LinkManager, LinkService
from meshnode.runtime.room import LIVE_OVERLAY, RoomRuntime
from meshnode.runtime.tasks import TaskSet
from meshnode.store import ChangeStore, DurableLog, HistoryReader, RoomRecord, StoreError
from meshnode.transport.link import LocalHello
from meshnode.web.people import PeopleRoom
from protocol.change import change_id
from protocol.compact import COMPACT_VERSION
from protocol.errors import DecodeError
from protocol.link import MAX_ROOMS_PER_LINK, LinkMessage, Nack, Refused

log = logging.getLogger("meshnode.node")

__all__ = ["JOIN_GRACE_S", "RoomHost"]

JOIN_GRACE_S = 10.0
KEY_TICK_S = 0.5  # how often private rooms' key upkeep (auto-SHARE, rotation) looks
NACK_AFTER_S = 1.0  # a client's change not durable after this long, store failing: Nack


class RoomHost(LinkService):
    """The hosted rooms (see the module docstring). ``await load()`` once, then serve;
    ``await aclose()`` saves snapshots and closes the rooms."""

    link_messages = (Refused,)

    def __init__(self, identity: Identity, config: NodeConfig, store: ChangeStore,
                 durable: DurableLog, links: LinkManager, metrics: NodeMetrics, *,
                 url: Callable[[], str],
                 on_crash: Callable[[str, BaseException], None] | None = None) -> None:
        self.identity = identity
        self.peer_id = identity.public_id
        self.config = config
        self.store = store
        self.durable = durable
        self.links = links
        self.metrics = metrics
        self._url = url
        self.rooms: dict[bytes, HostedRoom] = {}
        self._tasks = TaskSet("rooms", on_crash)
        # One Ack per (client, room) per loop turn, for every change that became durable.
        self._acks = AckBatcher(links.send_link,
                                lambda flush: asyncio.get_running_loop().call_soon(flush))
        self.sharing = RoomSharing(self.rooms, links, metrics)
        self._members: dict[bytes, dict[str, str]] = {}  # per room, to notice role changes
        # Told the room ID of each invite redeemed (discovery dials the room's other hosts).
        self.on_join: Callable[[bytes], None] | None = None
        self._keys: dict[bytes, KeyUpkeep] = {}  # private rooms this node reads
        self._key_rng = random.Random(os.urandom(16))
        self._key_writing: set[bytes] = set()
        # Old history a peer asks for is read on this reader's own thread and connection,
        # never on the loop (meshnode.overlay.history_reads).
        self.history_reader = HistoryReader(store.path)
        links.register(self)
        # Readers' sealed snapshots handed to blind hosts (docs/protocol.md).
        self.reader_snapshots = ReaderSnapshots(self.rooms, links, metrics, self.peer_id,
                                                store.save_snapshot, self._tasks.spawn)
        # What joining clients start from: frontier near the heads (meshnode.rooms.
        # head_snapshots); the stored snapshot keeps the retention window for nodes.
        self.join_snapshots = JoinSnapshots(self._tasks.spawn)

    @property
    def url(self) -> str:
        """Where this node serves (known once HTTP is up)."""
        return self._url()

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

    # ------------------------------------------------------------------ private rooms' keys

    async def _key_loop(self) -> None:
        """Every ``KEY_TICK_S``: in each private room this node reads, share the keys with
        readers who lack them (after a jitter, unless another reader does first) and rotate
        on schedule (``meshnode.rooms.key_upkeep``). Blind hosts do nothing here."""
        while True:
            await asyncio.sleep(KEY_TICK_S)
            for room_id, hosted in list(self.rooms.items()):
                if hosted.runtime.replica.private and room_id not in self._key_writing:
                    self._key_tick(room_id, hosted)
                if hosted.runtime.replica.private:
                    self.reader_snapshots.tick(hosted)

    def _key_tick(self, room_id: bytes, hosted: HostedRoom) -> None:
        upkeep = self._keys.setdefault(room_id, KeyUpkeep(
            share_jitter_s=self.config.share_jitter_s,
            rotate_every_s=self.config.rotate_every_s))
        work = upkeep.plan(hosted.runtime.replica, self.identity.public_key,
                           time.monotonic(), self._key_rng, time.time())
        if work.empty:
            return
        self._key_writing.add(room_id)
        self._tasks.spawn(self._write_keys(room_id, hosted, work.shares, work.rotate),
                          f"keys {room_id.hex()[:12]}")

    async def _write_keys(self, room_id: bytes, hosted: HostedRoom, shares: tuple[bytes, ...],
                          rotate: bool) -> None:
        label = room_id.hex()[:16]

        def write(replica: SceneReplica) -> None:
            for member in shares:
                if member in replica.keyless_readers():
                    replica.share(member)
            if rotate:
                replica.rotate()

        started = time.perf_counter()
        try:
            await hosted.runtime.edit(write)
        except (PermissionDenied, ValueError, StoreError, ConnectionError) as err:
            log.warning("room %s: could not write keys: %s", label, err)
            return
        finally:
            self._key_writing.discard(room_id)
        if rotate:
            self.metrics.rotation_seconds.labels(label).observe(time.perf_counter() - started)
            log.info("room %s: keys rotated (scheduled)", label)
        if shares:
            self.metrics.key_shares.labels(label).inc(len(shares))
            log.info("room %s: keys shared with %d reader(s)", label, len(shares))

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

    def _snapshot(self, hosted: HostedRoom) -> None:
        """Save the room's snapshot in the background, unless a save is under way."""
        if hosted.stored_since_snapshot and not hosted.saving_snapshot:
            self._tasks.spawn(self._save_snapshot(hosted),
                              f"snapshot {hosted.runtime.room_id.hex()[:12]}")

    async def _save_snapshot(self, hosted: HostedRoom) -> None:
        # Encoded here, on the loop (the replica changes only there), written in a thread.
        replica = hosted.runtime.replica
        if hosted.stored_since_snapshot == 0 or hosted.saving_snapshot:
            return
        if replica.private and replica.is_reader() and not replica.snapshot_sealed:
            # A reader that cannot seal now (content waiting for a key, the next commit
            # rotates): keep the last sealed snapshot rather than write one it cannot open.
            return
        if hosted.reader_snapshot and not replica.is_reader():
            # A blind host serving a reader's sealed snapshot: its own (public part only)
            # would replace it; restarts replay the log after the reader's snapshot.
            hosted.stored_since_snapshot = 0
            return
        hosted.saving_snapshot = True
        try:
            covered = hosted.stored_since_snapshot
            retention = self.config.history_days * 86_400.0
            frontier = frontier_for(time.time(), retention)
            # A private room's scene is sealed in its snapshot (docs/protocol.md, "Sealed
            # snapshots"); only a reader that seals prunes it. A blind host writes the public
            # part only and keeps the whole history: the scene below a frontier would be
            # lost to the members who later join through it.
            prunable = not replica.private or replica.snapshot_sealed
            if retention > 0 and prunable and worth_compacting(replica, frontier):
                # Prune below the retention frontier (docs/operators.md, "Pruning rule").
                data = await self._compact(replica, frontier)
            else:
                data, count = replica.snapshot(), replica.change_count()
                await asyncio.to_thread(self.store.save_snapshot, replica.room_id, data, count)
            hosted.stored_since_snapshot -= covered  # those stored meanwhile count on
            if data is not None and replica.private and replica.snapshot_sealed:
                self.reader_snapshots.offer(hosted, data)
        except Exception:
            log.exception("snapshot of room %s failed", replica.room_id.hex()[:16])
        finally:
            hosted.saving_snapshot = False

    async def _compact(self, replica: SceneReplica, frontier: int) -> bytes | None:
        """Prune a room's history below ``frontier`` without stalling the loop: the export
        runs here, the signing and re-import in a worker thread, the adoption (and the few
        changes applied meanwhile) back here, then the store's one transaction (snapshot
        stored, covered changes deleted) in a thread (``meshnode.crdt.compaction``). Nothing
        is deleted unless the replica adopted the snapshot that covers it. Returns the
        stored snapshot (None if the compaction was abandoned)."""
        job = replica.prepare_compaction(frontier)
        await asyncio.to_thread(job.build)
        done = replica.finish_compaction(job)
        if done is None:
            log.info("room %s: compaction abandoned (history changed meanwhile); next time",
                     replica.room_id.hex()[:16])
            return None
        data, dropped = done
        count = replica.change_count()
        await asyncio.to_thread(self.store.compact, replica.room_id, data, count, dropped)
        log.info("room %s: %d changes pruned below the retention frontier",
                 replica.room_id.hex()[:16], len(dropped))
        return data

    # ------------------------------------------------------------------ room events

    def _send_frame(self, peer: str, channel: str, frame: bytes) -> bool:
        return self.links.send(peer, channel, frame)

    def _on_room_event(self, room_id: bytes, event: Event) -> None:
        hosted = self.rooms.get(room_id)
        if hosted is None:
            return
        runtime = hosted.runtime
        if isinstance(event, ChangeApplied):
            label = room_id.hex()[:16]
            self.metrics.room_changes.labels(label).set(runtime.replica.change_count())
            if event.peer is None:
                self.metrics.changes_local.inc()
            else:
                self.metrics.changes_in.inc()
                made = runtime.replica.change_time(event.change_id)
                if made is not None:
                    # Author's clock to ours: includes any clock skew between the two.
                    self.metrics.change_latency.observe(max(0.0, time.time() - made))
            hosted.stored_since_snapshot += 1
            self.join_snapshots.moved(runtime.replica, event.change_id)
            self._members_may_have_changed(room_id, runtime.replica)
            started = time.perf_counter()
            waiter = runtime.durable(event.change_id)
            waiter.add_done_callback(functools.partial(
                self._stored, hosted, room_id, event.change_id, event.peer, started))
            if event.peer is not None and event.peer in hosted.clients:
                asyncio.get_running_loop().call_later(
                    NACK_AFTER_S, self._nack_if_stuck, hosted, room_id, event.change_id,
                    event.peer, waiter)
        elif isinstance(event, ChangeRedelivered):
            if event.peer in hosted.clients:
                self._tasks.spawn(self._ack_redelivered(hosted, room_id, event.change_id,
                                                        event.peer),
                                  f"ack {event.change_id.hex()[:12]}")
        elif isinstance(event, ConnectRequest):
            est = self.links.links.get(event.peer)
            if est is not None:
                if room_id in est.rooms:
                    runtime.attach(event.peer, compact=COMPACT_VERSION in est.hello.versions)
                else:
                    runtime.connect_failed(event.peer)
            else:
                self.links.dial_peer(event.peer)
        elif isinstance(event, DisconnectRequest):
            runtime.overlay.disconnect(event.peer, runtime.now())
            if event.reason == "misbehaving" or event.reason == "banned":
                self.links.close(event.peer, event.reason)
            else:
                self._close_if_unused(event.peer)
        elif isinstance(event, PeerMisbehaved):
            self.metrics.rejections.labels(event.reason).inc()
        elif isinstance(event, RequestRefused):
            self.metrics.rejections.labels(event.reason.value).inc(event.count)
            if event.reason.value.startswith("compact_"):
                log.warning("%d compact change(s) from %s refused: %s", event.count,
                            event.peer, event.reason.value)
        elif isinstance(event, PresenceUpdated):
            self.metrics.presence_updates.inc()
            self.metrics.participants.labels(room_id.hex()[:16]).set(len(runtime.presence()))

    def _members_may_have_changed(self, room_id: bytes, replica: SceneReplica) -> None:
        """After a change: if it granted or took away a role, share or unshare the room on
        every link to match (a removed member stops reading at once)."""
        members = replica.members()
        if members == self._members.get(room_id):
            return
        self._members[room_id] = members
        for est in list(self.links.links.values()):
            self.sharing.share(est)

    def _nack_if_stuck(self, hosted: HostedRoom, room_id: bytes, cid: bytes, peer: str,
                       waiter: "asyncio.Future[None]") -> None:
        """A client's change is still not durable: if the store is failing, tell the client
        why (a ``Nack``; the ``Ack`` follows once the retried commit lands); if it is only
        slow, look again later."""
        if waiter.done() or peer not in hosted.clients:
            return  # stored, or the client is gone (it resyncs and flushes again)
        failure = self.durable.failing
        if failure is None:
            asyncio.get_running_loop().call_later(
                NACK_AFTER_S, self._nack_if_stuck, hosted, room_id, cid, peer, waiter)
            return
        self.metrics.nacks_sent.labels(failure.reason).inc()
        self.links.send_link(peer, Nack(room_id, (cid,), str(failure.reason)))

    async def _ack_redelivered(self, hosted: HostedRoom, room_id: bytes, cid: bytes,
                               peer: str) -> None:
        """A client redelivered a change we hold (it failed over to us, or relinked before
        our Ack reached it): acknowledge it once it is durable here, with its causal past
        (guarantee 3 of ``store/durable.py``). A change held but never queued for the
        store (a failed append) gets no Ack: the client keeps it."""
        try:
            await self.durable.wait_durable(room_id, cid)
        except (KeyError, StoreError):
            return
        if peer in hosted.clients:
            self._acks.add(peer, room_id, cid)

    def _report_replay(self, room_id: bytes, report: ReplayReport) -> None:
        """Stored changes that replay could not make visible are reported, never hidden."""
        if report.ok:
            return
        log.warning("%s", report.describe(room_id))
        self.metrics.store_missing_history.inc(len(report.missing_history))
        for reason, n in report.refused_by_reason().items():
            self.metrics.store_replay_refused.labels(reason).inc(n)

    def _stored(self, hosted: HostedRoom, room_id: bytes, cid: bytes, peer: str | None,
                started: float, fut: "asyncio.Future[None]") -> None:
        if fut.cancelled() or fut.exception() is not None:
            return
        self.metrics.changes_stored.inc()
        self.metrics.store_latency.observe(time.perf_counter() - started)
        if peer is not None and peer in hosted.clients:
            self._acks.add(peer, room_id, cid)
        if hosted.stored_since_snapshot >= self.config.snapshot_every:
            self._snapshot(hosted)

    def _close_if_unused(self, peer: str) -> None:
        est = self.links.links.get(peer)
        if est is None or est.hello.kind == "client":
            return
        if not any(peer in h.runtime.peers() for h in self.rooms.values()):
            self.links.close(peer, "unused")

    # ------------------------------------------------------------------ links (LinkService)

    def dial_failed(self, peer: str) -> None:
        """The overlay's rooms learn that ``peer`` could not be reached."""
        for hosted in self.rooms.values():
            hosted.runtime.connect_failed(peer)

    def local_hello(self, kind_hint: str) -> LocalHello:
        """Our hello, sent before we know who the peer is: our open rooms and the rooms we
        are joining (with their invites), our URL. Invite-only rooms are named to a peer
        only once it has shown it may read them, with a ``Rooms`` message
        (``meshnode.rooms.access``)."""
        invites: list[bytes] = []
        joining: list[bytes] = []
        for rid, hosted in self.rooms.items():
            token = hosted.settings.get("invite")
            if isinstance(token, str) and hosted.runtime.replica.role_of(self.peer_id) == "none":
                with contextlib.suppress(DecodeError):
                    # The presented form: our redemption signature, never the secret half.
                    invites.append(parse_invite(token).presented(self.identity.public_key))
                    joining.append(rid)
        opened = {rid: h.settings.get("admit") == "open" for rid, h in self.rooms.items()}
        rooms = announced_in_hello(opened, joining[:4])
        return LocalHello("node", tuple(rooms[:MAX_ROOMS_PER_LINK]), self.url,
                          tuple(invites[:4]))

    def link_up(self, est: Established) -> None:
        """Redeem the peer's invites, admit it, share the rooms it may read."""
        for raw in est.hello.invites:
            verdict = self._redeem(est.peer, raw)
            if verdict is not None:
                self.sharing.presented(est.peer, *verdict)
        if est.hello.kind == "client":
            for rid in est.rooms & set(self.rooms):
                hosted = self.rooms[rid]
                if isinstance(self.sharing.decision(est, rid), Share):
                    hosted.clients.add(est.peer)
                if (hosted.settings.get("admit") == "open"
                        and not self.sharing.has_presented(est.peer, rid)
                        and may_auto_admit(hosted.runtime.replica, est.peer)):
                    self._admit(hosted, est.peer, self.config.admit_role)
            for rid in sorted(est.rooms - set(self.rooms)):
                self.sharing.refuse(est, rid, Refuse(Refusal.UNKNOWN_ROOM.value,
                                                     "this node does not host the room"))
        self.sharing.share(est)

    def _redeem(self, peer: str, raw: bytes) -> tuple[bytes, str, bytes] | None:
        """Check an invite from a hello and admit its bearer; returns (room, problem, invite
        ID) with problem "" when the invite is good (None if it does not decode or names no
        room of ours)."""
        try:
            invite: Invite = decode_invite_bytes(raw)
        except DecodeError as err:
            self.metrics.rejections.labels("bad_invite").inc()
            log.warning("bad invite from %s: %s", peer, err)
            return None
        hosted = self.rooms.get(invite.room_id)
        if hosted is None:
            return None
        replica = hosted.runtime.replica
        problem = invite_problem(replica, invite, peer, int(time.time() * 1000))
        if problem is None and not self._may_grant_itself(replica, peer, invite.role):
            problem = self._proof_problem(replica, invite, peer)
        if problem is not None:
            self.metrics.rejections.labels(f"invite_{problem}").inc()
            log.warning("invite from %s refused: %s", peer, problem)
            return invite.room_id, problem, invite.id
        self._admit(hosted, peer, invite.role, invite)
        return invite.room_id, "", invite.id

    def _may_grant_itself(self, replica: SceneReplica, peer: str, role: str) -> bool:
        """Whether this node's own role lets it grant ``role`` (a blind host's never does: it
        admits only on an invite's authority, with the invitee's redemption proof)."""
        return (replica.role_of(self.peer_id) != "host"
                and may_grant(replica, self.peer_id, peer, role))

    def _proof_problem(self, replica: SceneReplica, invite: Invite, peer: str) -> str | None:
        """Why ``invite`` cannot be redeemed by proof for ``peer`` here (None: it can):
        ``no_redemption`` (a token without a key pair, or a hello without the redemption
        signature) or the reason every replica would give (``bad_redemption``...)."""
        proof = invite.proof()
        if proof is None or replica.role_of(self.peer_id) == "none":
            return "no_redemption"
        _terms, reason = check_proof(proof, replica.room_id, invite.id,
                                     ROLE_BY_NAME[invite.role], invite.max_uses,
                                     public_key_from_peer_id(peer))
        return reason or None

    def _admit(self, hosted: HostedRoom, peer: str, role: str,
               invite: Invite | None = None) -> None:
        replica = hosted.runtime.replica
        if replica.role_of(peer) != "none" or peer == self.peer_id:
            return
        by_proof = not self._may_grant_itself(replica, peer, role)
        proof = invite.proof() if invite is not None else None
        if by_proof and (invite is None or proof is None):
            log.info("cannot admit %s as %s: this node is %s and has no redemption proof",
                     peer, role, replica.role_of(self.peer_id))
            return

        async def grant() -> None:
            try:
                if by_proof:
                    assert invite is not None and proof is not None
                    await hosted.runtime.edit(lambda r: r.admit(
                        peer, role, invite_id=invite.id, max_uses=invite.max_uses,
                        proof=proof, now=time.time()))
                elif invite is None:
                    await hosted.runtime.edit(lambda r: r.grant(peer, role))
                else:  # the grant names the invite, so every replica counts its uses
                    await hosted.runtime.edit(lambda r: r.grant(
                        peer, role, invite=invite.id, max_uses=invite.max_uses))
                log.info("admitted %s as %s in room %s", peer, role,
                         replica.room_id.hex()[:16])
            except (PermissionDenied, ValueError, StoreError, ConnectionError) as err:
                log.warning("could not admit %s: %s", peer, err)

        self._tasks.spawn(grant(), f"admit {peer[:12]}")

    def link_message(self, est: Established, msg: LinkMessage) -> None:
        """A ``Refused``: a peer will not share a room with us; say so in the log (the
        operator of a node that joined with a bad invite learns it here)."""
        if isinstance(msg, Refused):
            log.warning("%s refused room %s: %s (%s)", est.peer, msg.room_id.hex()[:16],
                        msg.reason, msg.detail)

    def link_down(self, est: Established, reason: str) -> None:
        """Detach the peer from every room."""
        self.sharing.forget(est.peer)
        for hosted in self.rooms.values():
            hosted.clients.discard(est.peer)
            if est.peer in hosted.runtime.peers():
                hosted.runtime.detach(est.peer)

    def frame(self, est: Established, channel: str, data: bytes, room_id: bytes) -> None:
        """Give a room frame to its room."""
        hosted = self.rooms.get(room_id)
        if hosted is None:
            return
        if est.peer not in hosted.runtime.peers():
            # A frame for a room the peer may not read (or has not been given): it costs
            # the sender, like any bytes the link does not carry.
            self.links.count_garbage(est, "not_shared")
            return
        hosted.runtime.receive(est.peer, channel, data)

    def rooms_changed(self, est: Established, rooms: set[bytes]) -> None:
        """The peer's room list changed: attach and detach rooms to match."""
        for rid in est.rooms - rooms:
            hosted = self.rooms.get(rid)
            if hosted is not None and est.peer in hosted.runtime.peers():
                hosted.runtime.detach(est.peer)
        est.rooms = set(rooms)
        self.sharing.share(est)
