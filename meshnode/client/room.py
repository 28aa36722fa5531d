"""The Python client: join a room on a node over WebRTC and edit its scene.

    async with meshnode.client.connect("http://127.0.0.1:8470", room_id, identity) as room:
        cube = room.create_entity(ROOT, {"name": {"value": "cube"}})
        room.set_field(cube, "transform", "position", [0.0, 1.0, 0.0])
        await room.flush()            # returns once the node has stored the change durably
        room.on_change(lambda change_id, peer: print(room.state()))

The client is a small peer: it keeps its own ``SceneReplica`` (so reads are local and every
change it receives is checked the same way a node checks it), runs the room's overlay core
with one link, to its node, and signs its edits with its own identity. The node acknowledges
each change once durable; ``flush`` waits for that acknowledgement.

When its node dies or refuses it, the client links to another host of the room and
redelivers what no host has acknowledged yet (``meshnode.client.failover`` says where hosts
come from and exactly what is guaranteed); ``on_connection`` reports it.
"""

import asyncio
import dataclasses
import json
import logging
import os
import random
import time
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiortc import MediaStreamTrack

from meshnode.client.failover import (
    Connected,
    ConnectionEvent,
    FailoverSettings,
    HostRing,
    Reconnecting,
    UnackedChanges,
    behind_frontier,
    parse_hosts,
    redelivery_frames,
)
from meshnode.client.media import ClientMedia, Publication, TrackCallback
from meshnode.crdt import ROOT, EntityId, PermissionDenied, SceneReplica
from meshnode.crdt.tree import Node as NodeRef
from meshnode.identity import Identity
from meshnode.metrics import NodeMetrics
from meshnode.overlay import RoomOverlay
from meshnode.overlay.events import (
    ChangeApplied,
    ConnectRequest,
    Event,
    PresenceExpired,
    PresenceUpdated,
)
from meshnode.rooms.access import Refusal
from meshnode.rooms.invite import parse_invite
from meshnode.rooms.key_upkeep import KeyUpkeep
from meshnode.rooms.readers import INVITE_HEADER
from meshnode.runtime.links import Established, LinkManager, LinkService
from meshnode.runtime.room import LIVE_OVERLAY, RoomRuntime
from meshnode.signaling.signed_request import sign_request
from meshnode.transport.ice import IceSettings
from meshnode.transport.link import LinkSettings, LocalHello
from protocol.change import change_id
from protocol.errors import DecodeError
from protocol.frames import PROTOCOL_VERSION
from protocol.link import Ack, LinkMessage, Nack, Refused

log = logging.getLogger("meshnode.client")

ChangeCallback = Callable[[bytes, str | None], None]
ConnectionCallback = Callable[[ConnectionEvent], None]
NOT_A_HOST = "not_a_host"

FAILOVER_REFUSALS = frozenset({Refusal.UNKNOWN_ROOM.value, Refusal.NOT_MEMBER.value})
"""Refusals that speak for one node, not the room: it no longer hosts the room, or has not
yet heard that we are a member. A client already in the room fails over to another host."""


class ClientError(Exception):
    """The client could not join the room (the message says why)."""


class StoreUnavailable(ClientError):
    """The node cannot make our change durable now: its store fails for :attr:`reason`
    (``disk_full``, ``io_error``, ``locked``...; a stable label).

    Nothing is lost: the change is signed, the node holds it and retries, and acknowledges it
    once it is durable. A later :meth:`RoomClient.flush` that succeeds means this change is
    durable too (the node acknowledges a change only after its whole causal past).
    """

    def __init__(self, url: str, reason: str, change_ids: tuple[bytes, ...]) -> None:
        shown = ", ".join(cid.hex()[:12] for cid in change_ids[:3])
        super().__init__(
            f"the node at {url} cannot store change {shown} yet: its store fails "
            f"({reason}). The node keeps the change and retries; flush again later (a "
            f"successful flush covers this change too) or ask the operator to fix the node"
        )
        self.reason = reason
        self.change_ids = change_ids


class AdmissionRefused(ClientError):
    """The node will not let us into the room; ``reason`` is its stable label
    (``not_member``, ``invite_expired``, ``invite_bad_signature``, ``unknown_room``, ...)."""

    def __init__(self, reason: str, detail: str) -> None:
        suffix = f" ({detail})" if detail else ""
        super().__init__(f"the node refused us the room: {reason}{suffix}")
        self.reason = reason
        self.detail = detail


class RoomClient(LinkService):
    """A joined room; build it with :func:`connect`."""

    link_messages = (Ack, Nack, Refused)

    def __init__(self, url: str, room_id: bytes, identity: Identity, *,
                 ice: IceSettings, invite: str | None, timeout_s: float,
                 signaling: str = "http", failover: FailoverSettings | None = None,
                 full_history: bool = False) -> None:
        self.url = url.rstrip("/")
        self.full_history = full_history
        self.joined_from_snapshot = False
        self.room_id = room_id
        self.identity = identity
        self.peer_id = identity.public_id
        self.node_peer_id: str | None = None
        self._ice = ice
        self._invite = invite
        self._timeout = timeout_s
        self._signaling = signaling
        self._runtime: RoomRuntime | None = None
        self._links: LinkManager | None = None
        self._change_cbs: list[ChangeCallback] = []
        self._presence_cbs: list[Callable[[str, dict[str, Any] | None], None]] = []
        self._connected = asyncio.Event()
        self._closing = False
        self._reconnect: asyncio.Task[None] | None = None
        self._refusal: AdmissionRefused | None = None
        self.reconnects = 0
        self.rejoins = 0  # restarts from a snapshot after the node's frontier passed us
        self._frontier_checks: set[asyncio.Task[None]] = set()
        self._late_seen = 0  # behind_frontier refusals already acted on
        self.failover = failover if failover is not None else FailoverSettings()
        self._ring = HostRing(self.url, self.failover.urls)
        self._unacked = UnackedChanges()
        self._connection_cbs: list[ConnectionCallback] = []
        self._learning: asyncio.Task[None] | None = None
        self._opened = False
        # Private rooms: share keys with keyless readers, rotate on schedule (a reader only).
        self.key_upkeep = KeyUpkeep()
        self._keys_task: asyncio.Task[None] | None = None
        self._key_rng = random.Random(os.urandom(16))
        self._linked_once = False
        self._first_node: str | None = None
        self.media = ClientMedia(room_id, self.peer_id, ice)

    # ------------------------------------------------------------------ joining

    async def open(self) -> None:
        """Fetch the room's genesis, link to the node, and sync (see :func:`connect`)."""
        hex_id = self.room_id.hex()
        # An invite carries the room's genesis: with one, the node's verdict on it comes
        # over the link, with its reason (AdmissionRefused), not as an HTTP 404.
        genesis = self._invite_genesis()
        if genesis is None:
            genesis = await self._fetch("genesis")
        if genesis is None:
            raise ClientError(f"{self.url} does not host room {hex_id} (or, if the room is "
                              "invite-only, does not let this identity read it: pass an "
                              "invite)")
        # An invite-only room shows its heads to members only: a newcomer reads them once
        # admitted (below).
        raw_heads = await self._fetch("heads")
        heads: dict[str, Any] = json.loads(raw_heads) if raw_heads is not None else {}
        if change_id(genesis) != self.room_id:
            raise ClientError("the node sent a genesis change that is not this room's")
        replica = None if self.full_history else await self._replica_from_snapshot(genesis)
        if replica is None:
            replica = SceneReplica.from_genesis(genesis, self.identity)
        self._runtime = self._make_runtime(replica)
        self._links = LinkManager(self.identity, LinkSettings(ice=self._ice), self.local_hello,
                                  NodeMetrics(), max_links=1)
        # A node that stops answering is given up after dead_after_s, not ICE's ~30 s.
        self._links.dead_after_s = self.failover.dead_after_s
        self._links.keepalive_s = min(self._links.keepalive_s, self.failover.dead_after_s / 3)
        self._links.register(self)
        if self._invite:
            self._ring.learn(parse_invite(self._invite).urls)
        self.media.bind(self._links)
        try:
            est = await asyncio.wait_for(
                self._links.dial_url(self.url, signaling=self._signaling), self._timeout)
        except TimeoutError:
            raise ClientError(f"no link to {self.url} within {self._timeout:g} s") from None
        except Exception as err:  # LinkRefused, LinkClosed, HelloRejected
            reason = getattr(err, "reason", type(err).__name__)
            raise ClientError(f"could not link to {self.url}: {reason}: {err}") from err
        self.node_peer_id = self._first_node = est.peer
        if raw_heads is not None:
            await self._wait_for_heads(replica, heads)
        # A stranger never reads a room: wait until we are a member (or the node says why
        # we will not be).
        await self._wait_admitted()
        if raw_heads is None:
            raw_heads = await self._fetch("heads")
            if raw_heads is not None:
                await self._wait_for_heads(self.replica, json.loads(raw_heads))
        self._opened = True
        if replica.private:
            self._keys_task = asyncio.ensure_future(self._key_loop())
        if self.failover.learn_hosts:
            self._learning = asyncio.ensure_future(self._learn_hosts())

    def _make_runtime(self, replica: SceneReplica) -> RoomRuntime:
        overlay = RoomOverlay(replica, self.identity,
                              dataclasses.replace(LIVE_OVERLAY, active_view_size=1,
                                                  rewire_interval_s=0.0),
                              rng=random.Random(os.urandom(16)), wall_clock=time.time)
        return RoomRuntime(overlay, send=self._send, on_event=self._on_event)

    async def _check_frontier(self) -> None:
        """After a reconnect: if the node pruned history this replica lacks (its frontier
        passed us while we were away), start again from the node's signed snapshot."""
        try:
            raw = await self._fetch("heads")
        except ClientError as err:
            log.info("could not ask %s for the room's frontier: %s", self.url, err)
            return
        if raw is None or self._runtime is None or self._closing:
            return
        try:
            frontier = {bytes.fromhex(k): int(v)
                        for k, v in json.loads(raw).get("frontier", {}).items()}
        except (ValueError, AttributeError, TypeError):
            log.warning("%s sent heads that do not parse; frontier not checked", self.url)
            return
        if behind_frontier(self.replica.version_vector(), frontier):
            await self._rejoin_from_snapshot()

    async def _rejoin_from_snapshot(self, *, keep_unacked: bool = False) -> None:
        """Replace the replica with one started from the node's snapshot (plus the changes
        after it, synced as on a first join). ``keep_unacked``: our changes the node has not
        acknowledged are carried over and redelivered (the node holds their past: a late
        change, ``_note_late_changes``); otherwise they are dropped (built on history below
        the node's pruning frontier, they cannot be merged any more)."""
        old = self._runtime
        if old is None:
            return
        replica = await self._replica_from_snapshot(old.replica.genesis)
        if replica is None or self._runtime is not old or self._closing:
            log.warning("room %s: behind the node's frontier and no usable snapshot: the "
                        "history it pruned cannot be synced", self.room_id.hex()[:16])
            return
        kept: list[bytes] = []
        if keep_unacked:
            mine = [d for d in (old.replica.change_bytes(c) for c in self._unacked)
                    if d is not None]
            replica.replay(mine)  # our own, signed here: their seqs stay ours
            kept = [d for d in mine if replica.has_change(change_id(d))
                    or replica.is_buffered(change_id(d))]
            log.info("room %s: the node applied a change below our snapshot's frontier; "
                     "started again from its current snapshot (%d unacknowledged change(s) "
                     "kept)", self.room_id.hex()[:16], len(kept))
        else:
            log.warning("room %s: the node pruned history this replica lacks; rejoined from "
                        "its signed snapshot (%d unacknowledged change(s) dropped)",
                        self.room_id.hex()[:16], len(self._unacked))
        peers = old.peers()
        subscribers = list(old._subscribers)
        for peer in peers:
            old.detach(peer)
        old.close()
        self._unacked = UnackedChanges()
        for data in kept:
            self._unacked.add(change_id(data))
        self._late_seen = 0
        runtime = self._runtime = self._make_runtime(replica)
        for cb in subscribers:  # subscribe() returned unsubscribers bound to the old one
            runtime.subscribe(cb)
        self.rejoins += 1
        for peer in peers:
            runtime.attach(peer)
            for frame in redelivery_frames(self.room_id, kept):
                self._send(peer, "sync", frame)

    def _note_late_changes(self) -> None:
        """The node sent a change our replica refused as ``behind_frontier``: stamped at or
        before our snapshot's frontier, it reached the node after it wrote that snapshot (an
        author that was offline). Our summary lacks it, so we would diverge: start again
        from the node's current snapshot (which the node rebuilds, ``meshnode.rooms.
        head_snapshots``), keeping our unacknowledged changes."""
        if self._runtime is None or self.full_history or self._closing:
            return
        late = self._runtime.replica.rejections.get("behind_frontier", 0)
        if late <= self._late_seen or self._frontier_checks:
            return
        self._late_seen = late
        task = asyncio.ensure_future(self._rejoin_from_snapshot(keep_unacked=True))
        self._frontier_checks.add(task)
        task.add_done_callback(self._frontier_checks.discard)

    async def _replica_from_snapshot(self, genesis: bytes) -> SceneReplica | None:
        """Start from the node's latest signed snapshot (then sync only the changes after
        it), or None to replay the whole history: no snapshot yet, one this identity may not
        read, or one that does not verify (bad signature, signer not a member, another
        room), which is logged."""
        data = await self._fetch("snapshot")
        if data is None:
            return None
        try:
            # Verifying and decoding a long room's snapshot takes a while: off the loop.
            replica = await asyncio.to_thread(SceneReplica.from_snapshot, data, self.identity)
        except DecodeError as err:
            log.warning("room %s: the node's snapshot was refused (%s: %s); replaying the "
                        "whole history instead", self.room_id.hex()[:16], err.reason, err)
            return None
        if replica.genesis != genesis:
            log.warning("room %s: the node's snapshot is another room's; replaying the whole "
                        "history instead", self.room_id.hex()[:16])
            return None
        if replica.scene_missing:
            # A private room's snapshot not sealed to us (a blind host's, or we were not a
            # reader when it was written): its scene would never be ours.
            log.info("room %s: the node's snapshot is not sealed to this member; replaying "
                     "the history instead", self.room_id.hex()[:16])
            return None
        self.joined_from_snapshot = True
        return replica

    def _invite_genesis(self) -> bytes | None:
        if not self._invite:
            return None
        try:
            invite = parse_invite(self._invite)
        except DecodeError as err:
            raise ClientError(f"the invite is not a valid token: {err}") from None
        if invite.room_id != self.room_id:
            raise ClientError(f"the invite is for room {invite.room_id.hex()}, not "
                              f"{self.room_id.hex()}")
        return invite.genesis

    async def _wait_for_heads(self, replica: SceneReplica, heads: dict[str, Any]) -> None:
        target = {bytes.fromhex(k): int(v) for k, v in heads.get("vv", {}).items()}
        await self._wait(lambda: all(replica.version_vector().get(a, 0) >= s
                                     for a, s in target.items()), "sync with the node")

    async def _fetch(self, part: str, url: str | None = None) -> bytes | None:
        """GET one of the room's HTTP endpoints, signed with our identity (members of an
        invite-only room may read it) and, for the genesis, with our invite; None if the
        node does not let us read it."""
        base = url or self.url
        parts = urlsplit(base)
        host = parts.netloc.rpartition("@")[2]
        path = f"{parts.path.rstrip('/')}/api/rooms/{self.room_id.hex()}/{part}"
        headers = {"Host": host, **sign_request(self.identity, "GET", path, host)}
        if part == "genesis" and self._invite:
            headers[INVITE_HEADER] = self._invite.strip()
        timeout = aiohttp.ClientTimeout(total=self._timeout)
        try:
            async with aiohttp.ClientSession(timeout=timeout) as http, \
                    http.get(f"{base}/api/rooms/{self.room_id.hex()}/{part}",
                             headers=headers) as resp:
                if resp.status == 404:
                    return None
                if resp.status != 200:
                    raise ClientError(f"{base} refused to give the room's {part}: "
                                      f"{resp.status} {await resp.text()}")
                return await resp.read()
        except (aiohttp.ClientError, TimeoutError) as err:
            raise ClientError(f"cannot reach {base}: {err or type(err).__name__}") from None

    async def _wait_admitted(self) -> None:
        """Wait until we are a member. A newcomer to an invite-only room whose node pruned
        its history cannot apply the grant that admits it: the grant builds on history
        below the node's frontier, which a replica started from the genesis never gets (the
        room's snapshot is for members only). Once the node has admitted us we may read its
        snapshot: while changes wait for missing deps, ask whether the frontier passed us
        and, if so, start again from the snapshot (``_check_frontier``)."""
        deadline = checked = time.monotonic()
        deadline += self._timeout
        while self.replica.role_of(self.peer_id) == "none":
            if self._refusal is not None:
                raise self._refusal
            now = time.monotonic()
            if now > deadline:
                raise ClientError("timed out waiting for admission to the room")
            if self.replica.buffered_count() and not self.full_history and now - checked > 1.0:
                checked = now
                await self._check_frontier()
            await asyncio.sleep(0.02)

    async def _wait(self, predicate: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + self._timeout
        while not predicate():
            if self._refusal is not None:
                raise self._refusal
            if time.monotonic() > deadline:
                raise ClientError(f"timed out waiting for {what}")
            await asyncio.sleep(0.01)

    async def close(self) -> None:
        """Leave: close the link and stop the room's timers."""
        self._closing = True
        for task in (self._reconnect, self._learning, self._keys_task,
                     *self._frontier_checks):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        await self.media.aclose()
        if self._links is not None:
            await self._links.aclose()
        if self._runtime is not None:
            self._runtime.close()

    async def __aenter__(self) -> "RoomClient":
        try:
            await self.open()
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.close()

    # ------------------------------------------------------------------ LinkService

    def local_hello(self, kind_hint: str) -> LocalHello:
        """We are a client in exactly one room."""
        invites: tuple[bytes, ...] = ()
        if self._invite:
            # Our redemption signature for our own key; the invite's secret stays here.
            invites = (parse_invite(self._invite).presented(self.identity.public_key),)
        # Version 1 only: our node sends us canonical changes, never the compact form
        # (protocol.compact), as it does to browsers and to nodes that predate it.
        return LocalHello("client", (self.room_id,), "", invites, (PROTOCOL_VERSION,))

    def link_up(self, est: Established) -> None:
        """Attach the room to the link to our node (after a failover, only if the node holds
        a role in the room by our replica)."""
        if not self._may_host(est.peer):
            # Not a member by our replica: whatever its URL claims, it is no host of ours.
            log.warning("%s is %s, which holds no role in the room: not used", self.url,
                        est.peer)
            if self._links is not None:
                self._links.close(est.peer, NOT_A_HOST)
            return
        self._connected.set()
        self.node_peer_id = est.peer
        if self.room_id in est.rooms:
            self._attach(est.peer)
        self._emit(Connected(self.url, est.peer, self._linked_once))
        if self._linked_once and not self.full_history and self._runtime is not None \
                and not self._runtime.replica.private:
            task = asyncio.ensure_future(self._check_frontier())
            self._frontier_checks.add(task)
            task.add_done_callback(self._frontier_checks.discard)
        self._linked_once = True

    def _may_host(self, peer: str) -> bool:
        return (self._runtime is None or not self._linked_once or peer == self._first_node
                or self._runtime.replica.role_of(peer) != "none")

    def _attach(self, peer: str) -> None:
        """Attach the room to the link and redeliver what no host has acknowledged."""
        if self._runtime is None or peer in self._runtime.peers():
            return
        self._runtime.attach(peer)
        datas = [d for d in (self.replica.change_bytes(cid) for cid in self._unacked)
                 if d is not None]
        if datas:
            log.info("redelivering %d unacknowledged change(s) to %s", len(datas), peer)
            for frame in redelivery_frames(self.room_id, datas):
                self._send(peer, "sync", frame)

    def link_down(self, est: Established, reason: str) -> None:
        """Our node went away: fail over to another host of the room."""
        self._connected.clear()
        if self._runtime is not None:
            self._runtime.detach(est.peer)
        if reason in ("shutdown", NOT_A_HOST) or self._closing:
            log.info("link to node %s closed: %s", est.peer, reason)
            return
        log.warning("link to node %s (%s) closed: %s; failing over", est.peer, self.url, reason)
        self._emit(Reconnecting(self.url, reason))
        if self._reconnect is None or self._reconnect.done():
            self._reconnect = asyncio.ensure_future(self._fail_over(self.url))

    async def _fail_over(self, lost: str) -> None:
        """Link to a host of the room: every known host once, round-robin from the one
        after ``lost`` (``lost`` last), then a bounded backoff, until one links or we close.
        Unacknowledged changes are redelivered on the new link (``_attach``)."""
        rounds = 0
        while not self._closing and self._links is not None:
            for url in self._ring.order_after(lost):
                if self._closing:
                    return
                if await self._try_host(url):
                    return
            rounds += 1
            await asyncio.sleep(HostRing.backoff(rounds, self.failover))

    async def _try_host(self, url: str) -> bool:
        """Link to ``url`` and keep the link if its node may host the room."""
        assert self._links is not None
        previous = self.url
        self.url = url  # link_up reports it
        try:
            est = await asyncio.wait_for(
                self._links.dial_url(url, signaling=self._signaling),
                self.failover.dial_timeout_s)
        except Exception as err:  # LinkRefused, LinkClosed, HelloRejected, TimeoutError
            self.url = previous
            log.info("failover: %s: %s", url, getattr(err, "reason", None) or
                     str(err) or type(err).__name__)
            return False
        if not self._may_host(est.peer):  # link_up closes its link
            self.url = previous
            return False
        self.reconnects += 1
        log.info("failover: linked to %s (%s)", url, est.peer)
        return True

    async def _learn_hosts(self) -> None:
        """Ask the node for the room's hosts now and every ``hosts_refresh_s``; keep those
        whose PeerID holds a role in the room by our replica (its grants)."""
        while not self._closing:
            if self._connected.is_set():
                try:
                    raw = await self._fetch("hosts")
                except ClientError as err:
                    log.debug("could not ask %s for the room's hosts: %s", self.url, err)
                    raw = None
                if raw is not None:
                    try:
                        body: object = json.loads(raw)
                    except ValueError:
                        body = None
                    for entry in parse_hosts(body):
                        if entry.peer_id == self.peer_id:
                            continue
                        if self.replica.role_of(entry.peer_id) == "none":
                            log.info("the node names %s as a host, but it holds no role in "
                                     "the room: ignored", entry.peer_id)
                            continue
                        if self._ring.learn(entry.urls, entry.peer_id):
                            log.info("learnt host %s at %s", entry.peer_id,
                                     ", ".join(entry.urls))
            await asyncio.sleep(self.failover.hosts_refresh_s)

    def _emit(self, event: ConnectionEvent) -> None:
        for cb in list(self._connection_cbs):
            try:
                cb(event)
            except Exception:  # an app's bug must not stop the failover
                log.exception("a connection callback failed")

    def rooms_changed(self, est: Established, rooms: set[bytes]) -> None:
        """The node now shares these rooms with us: (re)attach or detach ours."""
        if self._runtime is None:
            return
        shared = self.room_id in rooms
        if shared and est.peer not in self._runtime.peers():
            self._refusal = None
            self._attach(est.peer)
        elif not shared and est.peer in self._runtime.peers():
            self._runtime.detach(est.peer)

    def refused(self, est: Established, msg: Refused) -> None:
        """The node will not share our room with us (``open`` raises it)."""
        if msg.room_id != self.room_id:
            return
        log.warning("node %s refused room %s: %s %s", est.peer, self.room_id.hex()[:16],
                    msg.reason, msg.detail)
        if self._opened and msg.reason in FAILOVER_REFUSALS and self._links is not None:
            # This node, not the room, refuses us: another host will take us.
            self._links.close(est.peer, f"refused:{msg.reason}")
            return
        self._refusal = AdmissionRefused(msg.reason, msg.detail)

    def frame(self, est: Established, channel: str, data: bytes, room_id: bytes) -> None:
        """A room frame from the node."""
        if self._runtime is not None and room_id == self.room_id:
            self._runtime.receive(est.peer, channel, data)
            self._note_late_changes()

    def link_message(self, est: Established, msg: LinkMessage) -> None:
        """``Ack``: the node stored these changes durably; ``Nack``: it cannot yet;
        ``Refused``: it will not share the room with us."""
        if isinstance(msg, Refused):
            self.refused(est, msg)
        elif isinstance(msg, Nack):
            self.nack(est, msg)
        elif (self._runtime is not None and isinstance(msg, Ack)
                and msg.room_id == self.room_id):
            self._unacked.acked(msg.ids)
            self._runtime.mark_durable(msg.ids)

    def nack(self, est: Established, msg: Nack) -> None:
        """The node cannot store these changes yet: their ``flush`` raises
        :class:`StoreUnavailable`."""
        if self._runtime is not None and msg.room_id == self.room_id:
            log.warning("node %s cannot store %d change(s) yet: %s", est.peer, len(msg.ids),
                        msg.reason)
            self._runtime.mark_not_durable(
                msg.ids, StoreUnavailable(self.url, msg.reason, msg.ids))

    def _send(self, peer: str, channel: str, frame: bytes) -> bool:
        return self._links.send(peer, channel, frame) if self._links is not None else False

    def _on_event(self, event: Event) -> None:
        rt = self._runtime
        if rt is None:
            return
        # A callback's bug must not stop the room: log it and go on.
        if isinstance(event, ChangeApplied) and event.peer is None:
            self._unacked.add(event.change_id)  # ours: kept until a host acknowledges it
        try:
            if isinstance(event, ChangeApplied):
                for cb in list(self._change_cbs):
                    cb(event.change_id, event.peer)
            elif isinstance(event, PresenceUpdated):
                for pcb in list(self._presence_cbs):
                    pcb(event.participant, event.fields)
            elif isinstance(event, PresenceExpired):
                for pcb in list(self._presence_cbs):
                    pcb(event.participant, None)
        except Exception:
            log.exception("a room callback failed")
        if isinstance(event, ConnectRequest):
            rt.connect_failed(event.peer)  # a client has one link

    # ------------------------------------------------------------------ the room

    @property
    def runtime(self) -> RoomRuntime:
        """The room's runtime (for advanced use)."""
        if self._runtime is None:
            raise ClientError("not connected")
        return self._runtime

    @property
    def replica(self) -> SceneReplica:
        """The live local replica (read it; edit through this object's methods)."""
        return self.runtime.replica

    def state(self) -> dict[str, dict[str, Any]]:
        """The canonical scene view (``SceneReplica.state()``)."""
        return self.runtime.state()

    def role(self) -> str:
        """Our role in the room."""
        return self.replica.role_of(self.peer_id)

    @property
    def private(self) -> bool:
        """True for a private room (sealed scene, presence and name)."""
        return self.replica.private

    @property
    def readable(self) -> bool:
        """True if we can read the whole scene now: a room that is not private, or a private
        room where we are a reader holding every key (until a reader shares them with us,
        the scene shows only what we could open, and edits raise ``WaitingForKey``)."""
        return self.replica.readable

    async def wait_readable(self, timeout_s: float | None = None) -> None:
        """Return once :attr:`readable` (a private room's keys arrive when a reader who
        holds them is online: ``TimeoutError``-like ``ClientError`` otherwise)."""
        saved = self._timeout
        if timeout_s is not None:
            self._timeout = timeout_s
        try:
            await self._wait(lambda: self.replica.readable, "the room's keys from a reader")
        finally:
            self._timeout = saved

    async def _key_loop(self) -> None:
        """A reader's part in a private room (``meshnode.rooms.key_upkeep``): share the keys
        with readers who lack them, after a jitter, and rotate on schedule. Runs only between
        the user's edits (never commits a half-made batch of theirs)."""
        while not self._closing:
            await asyncio.sleep(0.5)
            replica = self.replica
            if replica.pending_ops or self._refusal is not None:
                continue
            work = self.key_upkeep.plan(replica, self.identity.public_key, time.monotonic(),
                                        self._key_rng, time.time())
            if work.empty:
                continue
            try:
                for member in work.shares:
                    replica.share(member)
                if work.rotate:
                    replica.rotate()
                await self.flush()
            except (ClientError, PermissionDenied, ValueError, TimeoutError) as err:
                log.warning("could not write the room's keys: %s", err)

    def create_entity(self, parent: NodeRef = ROOT,
                      components: Mapping[str, Mapping[str, object]] | None = None) -> EntityId:
        """Create an entity (sent on the next :meth:`flush`)."""
        return self.replica.create_entity(parent, components)

    def set_field(self, entity: NodeRef, component: str, field: str, value: object) -> None:
        """Set a field (sent on the next :meth:`flush`)."""
        self.replica.set_field(entity, component, field, value)

    def move(self, entity: NodeRef, new_parent: NodeRef) -> None:
        """Reparent an entity (sent on the next :meth:`flush`)."""
        self.replica.move(entity, new_parent)

    def delete(self, entity: NodeRef) -> None:
        """Delete an entity (sent on the next :meth:`flush`)."""
        self.replica.delete(entity)

    async def flush(self, timeout_s: float | None = None) -> bytes | None:
        """Sign the edits made since the last flush as one change, send it, and return its
        ID once the node has stored it and its whole history durably (None if there was
        nothing to send). Raises :class:`StoreUnavailable` (naming the reason) if the node
        says its store cannot keep the change now, and ``TimeoutError`` if the node does not
        answer in time. Either way the change is signed and sent, and the next ``flush`` does
        not resend it; a later ``flush`` that succeeds covers it too. Raises
        :class:`AdmissionRefused` if the node no longer shares the room with us (we were
        removed): nothing we send is taken any more."""
        if self._refusal is not None:
            raise self._refusal
        return await asyncio.wait_for(self.runtime.publish(), timeout_s or self._timeout)

    @property
    def refusal(self) -> "AdmissionRefused | None":
        """Why the node stopped sharing the room with us (``reason`` ``removed`` once an
        admin removed us), or None while it shares it."""
        return self._refusal

    def on_connection(self, callback: ConnectionCallback) -> None:
        """Call ``callback(event)`` when the link to our host is lost (``Reconnecting``) and
        when the client is linked to a host (``Connected``, ``failover`` true after a loss):
        an app shows "reconnecting…" / "connected to X" with it."""
        self._connection_cbs.append(callback)

    @property
    def connected(self) -> bool:
        """Whether the client is linked to a host now."""
        return self._connected.is_set()

    @property
    def hosts(self) -> tuple[str, ...]:
        """The host URLs known for failover, in the order they are tried."""
        return self._ring.urls

    @property
    def unacknowledged(self) -> int:
        """How many of our changes no host has acknowledged yet (redelivered on failover)."""
        return len(self._unacked)

    def on_change(self, callback: ChangeCallback) -> None:
        """Call ``callback(change_id, peer)`` after each change applied (peer None: ours)."""
        self._change_cbs.append(callback)

    def set_presence(self, fields: dict[str, Any]) -> bool:
        """Publish our presence (pose, pointer...); False if rate-limited."""
        return self.runtime.set_presence(fields)

    def set_presence_interest(self, *, budget_msgs_per_s: float = 0.0,
                              budget_bytes_per_s: float = 0.0,
                              view_radius: float = 0.0) -> None:
        """Say how much presence this client wants from its node (a phone on 3G asks for
        little): at most ``budget_msgs_per_s`` updates and ``budget_bytes_per_s`` bytes a
        second, and full detail only within ``view_radius`` of our own ``position`` (the
        nearest and whoever speaks still come at the full rate; everyone else at least
        every few seconds). 0 leaves a value at the node's default; the node never gives
        more than its operator's cap. Kept across failovers (sent to every new node).

        Raises ``protocol.errors.BadPresenceInterest`` (a ``ValueError``, ``reason``
        ``bad_presence_interest``) for a value that is not 0 or within range: budget 1 to
        10,000 updates/s, 1,024 to 100,000,000 bytes/s, radius 0.01 to 1,000,000."""
        rt = self.runtime
        rt.overlay.set_presence_interest(budget_msgs_per_s, budget_bytes_per_s, view_radius)
        rt.pump()

    def presence(self) -> dict[str, dict[str, Any]]:
        """Who is present: PeerID -> their latest fields."""
        return self.runtime.presence()

    def on_presence(self, callback: Callable[[str, dict[str, Any] | None], None]) -> None:
        """Call ``callback(participant, fields)`` on every presence update received
        (``fields`` None: the participant's presence expired)."""
        self._presence_cbs.append(callback)

    async def publish(self, track: MediaStreamTrack) -> Publication:
        """Publish an aiortc ``MediaStreamTrack`` (audio or video) in the room, relayed by
        the node to the other participants; returns once the node receives it. The handle's
        ``stop()`` ends it. Raises ``MediaRefusedError`` (``reason``: ``not_member``,
        ``too_many_publications``, ``relay_full``...) if the node will not relay it."""
        return await self.media.publish(track, self._timeout)

    def on_track(self, callback: TrackCallback) -> None:
        """Call ``callback(participant_peer_id, track)`` for each track the node forwards to
        us: a receivable aiortc ``MediaStreamTrack`` (``await track.recv()``)."""
        self.media.on_track(callback)

    def set_media(self, *, audio_only: bool = False, max_kbps: int | None = None) -> None:
        """Ask the node for audio only, and/or at most ``max_kbps`` of media in all; without
        either, the node adapts to our bandwidth estimate."""
        self.media.set_media(audio_only=audio_only, max_kbps=max_kbps)

    def subscribe(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback()`` after any change or presence update; returns unsubscribe."""
        return self.runtime.subscribe(callback)


def connect(url: str, room_id: bytes | str, identity: Identity, *,
            ice: IceSettings | None = None, invite: str | None = None,
            timeout_s: float = 30.0, signaling: str = "http",
            failover: FailoverSettings | None = None,
            full_history: bool = False) -> RoomClient:
    """Join ``room_id`` (bytes or hex) through the node at ``url``; use as
    ``async with connect(...) as room``. Entering links to the node, syncs the scene, and, in
    a room that admits clients (or with an ``invite`` token), waits until we are a member.
    ``signaling``: how the WebRTC offer reaches the node, ``"http"`` (a POST) or
    ``"websocket"``. ``failover``: where to find the room's other hosts and how fast to
    move to one when the node dies (``meshnode.client.failover``; on by default).

    The scene starts from the node's latest signed snapshot (verified: signed by a member of
    the room) and only the changes after it are synced, so joining costs the room's size, not
    its history. ``full_history=True`` replays every change from the genesis instead (to
    audit the history: each change's signature and rules are checked; a snapshot is taken
    on trust from its signer)."""
    rid = bytes.fromhex(room_id) if isinstance(room_id, str) else room_id
    if signaling not in ("http", "websocket"):
        raise ValueError("signaling must be 'http' or 'websocket'")
    return RoomClient(url, rid, identity, ice=ice or IceSettings(), invite=invite,
                      timeout_s=timeout_s, signaling=signaling, failover=failover,
                      full_history=full_history)
