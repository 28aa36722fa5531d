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

The client is one chain of classes, a file each: ``base`` (its state, runtime and HTTP
reads), ``snapshot_join`` (the replica it starts from and keeps in step), ``host_links``
(its link to a host, and failover) and this module (joining, leaving, and the room's API).
"""

import asyncio
import json
import logging
import time
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any

from aiortc import MediaStreamTrack

from meshnode.client.base import ChangeCallback as ChangeCallback
from meshnode.client.base import ClientBase as ClientBase
from meshnode.client.base import ConnectionCallback as ConnectionCallback
from meshnode.client.errors import AdmissionRefused as AdmissionRefused
from meshnode.client.errors import ClientError as ClientError
from meshnode.client.errors import StoreUnavailable as StoreUnavailable
from meshnode.client.failover import FailoverSettings
from meshnode.client.host_links import FAILOVER_REFUSALS as FAILOVER_REFUSALS
from meshnode.client.host_links import NOT_A_HOST as NOT_A_HOST
from meshnode.client.host_links import HostLinks
from meshnode.client.media import Publication, TrackCallback
from meshnode.client.snapshot_join import SnapshotJoin as SnapshotJoin
from meshnode.crdt import ROOT, EntityId, PermissionDenied, SceneReplica
from meshnode.crdt.tree import Node as NodeRef
from meshnode.identity import Identity
from meshnode.metrics import NodeMetrics
from meshnode.rooms.invite import parse_invite
from meshnode.runtime.links import LinkManager
from meshnode.transport.ice import IceSettings
from meshnode.transport.link import LinkSettings
from protocol.change import change_id

log = logging.getLogger("meshnode.client")


class RoomClient(HostLinks):
    """A joined room; build it with :func:`connect`."""

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

    # ------------------------------------------------------------------ the room

    # (``runtime`` and ``replica``: ClientBase's properties)

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

    def set_media(self, *, audio_only: bool = False, max_kbps: float | None = None) -> None:
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
