"""What each hosted room's runtime reports, handled: changes applied are counted, stored
durably and acknowledged to the client that sent them (or ``Nack``ed while the store
fails), members' role changes re-share the room on every link, the overlay's link requests
are dialled or refused, and misbehaviour is counted."""

import asyncio
import functools
import logging
import time

from meshnode.crdt import ReplayReport, SceneReplica
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
from meshnode.rooms.hosted import HostedRoom
from meshnode.rooms.upkeep import RoomUpkeep
from meshnode.store import StoreError
from protocol.compact import COMPACT_VERSION
from protocol.link import Nack

log = logging.getLogger("meshnode.node")

NACK_AFTER_S = 1.0  # a client's change not durable after this long, store failing: Nack


class RoomEvents(RoomUpkeep):
    """The rooms' runtime events of a ``RoomHost``."""

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
