"""The client's state and the plumbing each of its parts uses: the room's runtime (built,
sent through, its events dispatched to the app's callbacks), signed reads of the room's HTTP
endpoints, and waits bounded by the client's timeout.

``RoomClient`` is one chain of classes, each a file: ``ClientBase`` (this), ``SnapshotJoin``
(``snapshot_join``), ``HostLinks`` (``host_links``) and ``RoomClient`` (``room``).
"""

import asyncio
import dataclasses
import logging
import os
import random
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from meshnode.client.errors import AdmissionRefused, ClientError
from meshnode.client.failover import ConnectionEvent, FailoverSettings, HostRing, UnackedChanges
from meshnode.client.media import ClientMedia
from meshnode.crdt import SceneReplica
from meshnode.identity import Identity
from meshnode.overlay import RoomOverlay
from meshnode.overlay.events import (
    ChangeApplied,
    ConnectRequest,
    Event,
    PresenceExpired,
    PresenceUpdated,
)
from meshnode.rooms.key_upkeep import KeyUpkeep
from meshnode.rooms.readers import INVITE_HEADER
from meshnode.runtime.links import LinkManager, LinkService
from meshnode.runtime.room import LIVE_OVERLAY, RoomRuntime
from meshnode.signaling.signed_request import sign_request
from meshnode.transport.ice import IceSettings

log = logging.getLogger("meshnode.client")

ChangeCallback = Callable[[bytes, str | None], None]
ConnectionCallback = Callable[[ConnectionEvent], None]


class ClientBase(LinkService):
    """The state of a ``RoomClient`` and what all its parts use (see the module docstring)."""

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

    def _make_runtime(self, replica: SceneReplica) -> RoomRuntime:
        overlay = RoomOverlay(replica, self.identity,
                              dataclasses.replace(LIVE_OVERLAY, active_view_size=1,
                                                  rewire_interval_s=0.0),
                              rng=random.Random(os.urandom(16)), wall_clock=time.time)
        return RoomRuntime(overlay, send=self._send, on_event=self._on_event)

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

    def _emit(self, event: ConnectionEvent) -> None:
        for cb in list(self._connection_cbs):
            try:
                cb(event)
            except Exception:  # an app's bug must not stop the failover
                log.exception("a connection callback failed")

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

    async def _wait(self, predicate: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + self._timeout
        while not predicate():
            if self._refusal is not None:
                raise self._refusal
            if time.monotonic() > deadline:
                raise ClientError(f"timed out waiting for {what}")
            await asyncio.sleep(0.01)
