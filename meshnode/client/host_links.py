"""The client's link to its host: what it says in its hello, what the node sends over the
link (frames, acknowledgements, refusals), and failing over to another host of the room
when the link is lost (``meshnode.client.failover`` holds the pure parts)."""

import asyncio
import json
import logging

from meshnode.client.errors import AdmissionRefused, ClientError, StoreUnavailable
from meshnode.client.failover import (
    Connected,
    HostRing,
    Reconnecting,
    parse_hosts,
    redelivery_frames,
)
from meshnode.client.snapshot_join import SnapshotJoin
from meshnode.rooms.access import Refusal
from meshnode.rooms.invite import parse_invite
from meshnode.runtime.links import Established
from meshnode.transport.link import LocalHello
from protocol.frames import PROTOCOL_VERSION
from protocol.link import Ack, LinkMessage, Nack, Refused

log = logging.getLogger("meshnode.client")

NOT_A_HOST = "not_a_host"

FAILOVER_REFUSALS = frozenset({Refusal.UNKNOWN_ROOM.value, Refusal.NOT_MEMBER.value})
"""Refusals that speak for one node, not the room: it no longer hosts the room, or has not
yet heard that we are a member. A client already in the room fails over to another host."""


class HostLinks(SnapshotJoin):
    """The ``LinkService`` side of a ``RoomClient``: one link, to a host of its room."""

    link_messages = (Ack, Nack, Refused)

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
