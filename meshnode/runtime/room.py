"""``RoomRuntime``: runs one room's sans-I/O ``RoomOverlay`` on an asyncio loop.

It is the thin driver of the core for one room, shared by the node and the Python client:
it feeds the overlay links, frames and the monotonic clock, fires its timer, hands the frames
it produces to a ``send`` callback, and turns its events into durable writes,
acknowledgements and subscriber callbacks. It owns no sockets: links belong to the caller.

Clocks: every ``now`` it gives the overlay, and every timer it arms, is on ``clock``
(``time.monotonic`` by default), so a wall clock stepped back never stalls gossip. Wall
time (the scene's stamps) comes only from the overlay's injected ``wall_clock``, which this
runtime also uses to stamp its own commits.
"""

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

from meshnode.crdt import APPLIED, ApplyResult, SceneReplica
from meshnode.overlay import OverlayConfig, RoomOverlay
from meshnode.overlay.events import (
    ChangeApplied,
    ConnectRequest,
    DisconnectRequest,
    EquivocationDetected,
    Event,
    HistoryWanted,
    PeerMisbehaved,
    PresenceExpired,
    PresenceUpdated,
    RefusalReason,
    RequestRefused,
)
from meshnode.rooms.privacy_info import private_info
from meshnode.runtime.apply_trace import record_applied
from protocol.change import change_id
from protocol.frames import Presence

T = TypeVar("T")

LIVE_OVERLAY = OverlayConfig(presence_interval_s=0.02, rewire_interval_s=60.0)
"""The overlay tuning for real links. Presence waits ``presence_interval_s`` at every hop to
be coalesced; netsim's 50 ms default would put 150 ms on a client-node-node-client path, so
live nodes coalesce for 20 ms (at most 50 presence frames per neighbour per second, about an
avatar mixer's frame: Vircadia's runs at 45 Hz). A node pays per data-channel message more
than per update: in a room of 50 at 20 Hz, 10 ms flushes kept one core 91-100% busy and the
nearest-10 p99 swung from 93 ms to 1.4 s between runs, 20 ms ones used 62% and gave 54-62 ms
(docs/performance.md, "Presence interest"). Live
nodes rewire (swap a neighbour for a passive peer) at most once a minute after their topology
moves, backing off to once per ``rewire_max_interval_s``, so that groups split by a long
partition merge again (``meshnode/overlay/membership.py``)."""
log = logging.getLogger("meshnode.room")

SendFrame = Callable[[str, str, bytes], bool]
Persist = Callable[[bytes, bytes, bytes], "asyncio.Future[None]"]
HistoryFetch = Callable[[list[bytes]], Awaitable[Mapping[bytes, bytes]]]


class RoomRuntime:
    """One room on one event loop (see the module docstring).

    ``send(peer, channel, frame)`` puts a frame on a link; ``persist(room_id, change_id,
    data)`` (None for an in-memory client) returns a future that completes once the change is
    durable; ``on_event`` sees every overlay event after the runtime has handled it;
    ``clock`` is monotonic time for the overlay's ``now`` and timers (never the wall clock).
    ``history(change_ids)`` (optional) reads old change bytes off the loop (e.g.
    ``HistoryReader.read`` for the room): with it the overlay never reads its replica's
    history source itself but asks through ``HistoryWanted`` events, which this runtime
    answers (``meshnode.overlay.history_reads``).
    """

    def __init__(
        self,
        overlay: RoomOverlay,
        *,
        send: SendFrame,
        persist: Persist | None = None,
        on_event: Callable[[Event], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        history: HistoryFetch | None = None,
    ) -> None:
        self.overlay = overlay
        self.replica: SceneReplica = overlay.replica
        self.room_id = overlay.room_id
        self.me = overlay.identity.public_id
        self._send = send
        self._persist = persist
        self._on_event = on_event
        self._clock = clock
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._durable: dict[bytes, asyncio.Future[None]] = {}
        self._subscribers: list[Callable[[], None]] = []
        self._presence: dict[str, dict[str, Any]] = {}
        self._closed = False
        self._pumping = False
        self._holding = False
        self.store_failures = 0
        self._stored_before_gossip: set[bytes] = set()
        self._history = history
        self._reading: set[asyncio.Future[Mapping[bytes, bytes]]] = set()
        self.history_failures = 0
        if history is not None:
            overlay.defer_history_reads()

    # ------------------------------------------------------------------ links

    def attach(self, peer: str, *, leaf: bool = False, compact: bool = False) -> None:
        """A link to ``peer`` now carries this room (``leaf``: a client of ours, served
        outside the overlay's partial view; ``compact``: its hello lists
        ``protocol.compact.COMPACT_VERSION``, see ``RoomOverlay.connect``)."""
        self.overlay.connect(peer, self._clock(), leaf=leaf, compact=compact)
        self.pump()

    def now(self) -> float:
        """The overlay's monotonic clock (what its timers and views are stamped with)."""
        return self._clock()

    def detach(self, peer: str) -> None:
        """The link to ``peer`` no longer carries this room."""
        self.overlay.disconnect(peer, self._clock())
        self.pump()

    def connect_failed(self, peer: str) -> None:
        """A link the overlay asked for could not be opened."""
        self.overlay.connect_failed(peer, self._clock())
        self.pump()

    def introduce(self, peers: list[str]) -> None:
        """Peers this room may link to (bootstrap, address book)."""
        self.overlay.introduce(peers, self._clock())
        self.pump()

    def receive(self, peer: str, channel: str, frame: bytes) -> None:
        """A frame for this room arrived from ``peer``."""
        self._hold()
        self.overlay.receive(peer, channel, frame, self._clock())
        self.pump()

    def _hold(self) -> None:
        """Hold the overlay's outgoing changes until the end of this loop turn: the changes
        that arrive (or are made here) in one turn leave in one ``Changes`` frame per
        neighbour instead of one frame each, so every hop decodes, checks quotas, applies
        and pumps once per batch. The link's outbox sends at the end of the turn anyway, so
        they leave at most one pass of the loop later than they did one by one."""
        if not self._holding:
            self._holding = True
            self.overlay.hold_changes()
            asyncio.get_running_loop().call_soon(self._release)

    def _release(self) -> None:
        self._holding = False
        self.overlay.release_changes()
        self.pump()

    def peers(self) -> set[str]:
        """Peers whose links carry this room."""
        return set(self.overlay.connected)

    # ------------------------------------------------------------------ reading

    @property
    def room_name(self) -> str:
        """The room's name (a private room's is sealed: "" until this replica reads it)."""
        return self.replica.room_name

    def state(self) -> dict[str, dict[str, Any]]:
        """The canonical scene view (``SceneReplica.state()``)."""
        return self.replica.state()

    def presence(self) -> dict[str, dict[str, Any]]:
        """Live presence: participant PeerID -> fields."""
        return dict(self._presence)

    def privacy(self) -> dict[str, Any]:
        """The room's privacy as pages show it (``meshnode.rooms.privacy_info``), with
        ``node``: the PeerID of whoever renders the room here."""
        return {**private_info(self.replica, self.me), "node": self.me}

    def subscribe(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback`` after every applied change or presence change; returns a
        function that unsubscribes."""
        self._subscribers.append(callback)

        def unsubscribe() -> None:
            if callback in self._subscribers:
                self._subscribers.remove(callback)

        return unsubscribe

    # ------------------------------------------------------------------ local input

    async def edit(self, fn: Callable[[SceneReplica], T]) -> T:
        """Run ``fn`` on the replica's local batch, commit it as one signed change, spread it,
        and return ``fn``'s result once the change is durable. On any error the batch is
        discarded and the error raised."""
        if self.replica.pending_ops:
            self.replica.discard()  # never commit someone else's half-made batch
        try:
            result = fn(self.replica)
        except BaseException:
            self.replica.discard()
            raise
        await self.publish()
        return result

    async def publish(self) -> bytes | None:
        """Commit the uncommitted local batch (if any), spread it, and wait until it is
        durable (at this node, or acknowledged by the node for a client). Returns the change
        ID."""
        waiter = self.publish_soon()
        if waiter is None:
            return None
        # Shielded: a caller that stops waiting (a browser that left) must not cancel the
        # future others wait on (the node's acknowledgement, metrics).
        return await asyncio.shield(waiter)

    def publish_soon(self) -> "asyncio.Future[bytes] | None":
        """Commit the uncommitted local batch now (None if it is empty) and spread it; the
        future resolves to the change ID once it is durable, like :meth:`publish`.

        Without a store (a client) the change is committed and handed to the overlay before
        this returns, so a writer can stream many changes, each waiting for its own
        acknowledgement, without a task per change. With a store the change is written
        before anyone sees it (see :meth:`publish`), so it spreads once stored."""
        # The monotonic reading goes with the wall one: the replica bounds its stamps' lead
        # over the peers' time with it (a wall clock that jumps ahead cannot run away).
        data = self.replica.commit(self.overlay.wall_clock(), mono=self._clock())
        if data is None:
            return None
        cid = change_id(data)
        if self._persist is not None:
            stored = asyncio.ensure_future(self._store_then_spread(cid, data))
            stored.add_done_callback(_retrieve)
            return stored
        return self._spread(cid, data)

    async def _store_then_spread(self, cid: bytes, data: bytes) -> bytes:
        assert self._persist is not None
        # Our own change is stored before anyone sees it: after a crash, the replica
        # rebuilt from the store must know every seq we ever signed, or our next edit
        # would reuse one (an equivocation, for which peers cut us off).
        await asyncio.shield(self._persist(self.room_id, cid, data))
        self._stored_before_gossip.add(cid)
        return await self._spread(cid, data)

    def _spread(self, cid: bytes, data: bytes) -> "asyncio.Future[bytes]":
        self._hold()
        self.overlay.submit_change(data, self._clock())
        waiter = self.durable(cid)
        self.pump()
        done: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        done.add_done_callback(_retrieve)

        def resolve(fut: "asyncio.Future[None]") -> None:
            if done.done():
                return
            if fut.cancelled():
                done.cancel()
            elif (err := fut.exception()) is not None:
                done.set_exception(err)
            else:
                done.set_result(cid)

        waiter.add_done_callback(resolve)
        return done

    async def submit_signed(self, data: bytes) -> ApplyResult:
        """Apply and spread a change someone else signed (a person in a browser this node
        serves: ``meshnode.web.people``), judged like one from a link; once applied, wait
        until it is durable here. Returns the replica's verdict."""
        res = self.overlay.submit_change(data, self._clock())
        self.pump()
        if res.status == APPLIED and res.change_id is not None:
            await asyncio.shield(self.durable(res.change_id))
        return res

    def submit_signed_presence(self, msg: Presence) -> str | None:
        """Publish a presence update someone else signed (see ``submit_signed``); None if
        taken, else why not (``RoomOverlay.submit_signed_presence``)."""
        reason = self.overlay.submit_signed_presence(msg, self._clock())
        self.pump()
        return reason

    def durable(self, change_id: bytes) -> "asyncio.Future[None]":
        """A future that completes when ``change_id`` is durable (see ``mark_durable``)."""
        fut = self._durable.get(change_id)
        if fut is None:
            fut = self._durable[change_id] = asyncio.get_running_loop().create_future()
            # Whoever gave up waiting (a timed-out flush) must not make the loop complain
            # about an exception nobody retrieved when the room closes.
            fut.add_done_callback(_retrieve)
            if self._persist is None and self._closed:
                fut.set_exception(ConnectionError("room closed"))
        return fut

    def mark_durable(self, change_ids: list[bytes] | tuple[bytes, ...]) -> None:
        """These changes are durable (a client calls this when its node acknowledges)."""
        for cid in change_ids:
            fut = self._durable.pop(cid, None)
            if fut is not None and not fut.done():
                fut.set_result(None)

    def mark_not_durable(self, change_ids: list[bytes] | tuple[bytes, ...],
                         error: BaseException) -> None:
        """Fail the waits on these changes with ``error`` (a client calls this when its node
        says it cannot store them yet). The changes stay in the replica; a later
        acknowledgement of them finds no waiter and changes nothing."""
        for cid in change_ids:
            fut = self._durable.pop(cid, None)
            if fut is not None and not fut.done():
                fut.set_exception(error)

    def set_presence(self, fields: dict[str, Any]) -> bool:
        """Publish our presence; False if dropped by the rate limit."""
        ok = self.overlay.submit_presence(fields, self._clock())
        if ok:
            self._presence[self.me] = dict(fields)
        self.pump()
        if ok:
            self._notify()  # our own pages show our presence too
        return ok

    def _notify(self) -> None:
        for cb in list(self._subscribers):
            try:
                cb()
            except Exception:  # a subscriber's bug must not stop the room
                log.exception("room subscriber failed")

    # ------------------------------------------------------------------ the pump

    def pump(self) -> None:
        """Send what the overlay produced, handle its events, and re-arm its timer."""
        if self._closed or self._pumping:
            return
        self._pumping = True
        try:
            notify = False
            for _ in range(4):  # handling events can produce frames and more events
                for peer, channel, frame in self.overlay.frames_to_send():
                    self._send(peer, channel, frame)
                event = self.overlay.next_event()
                if event is None:
                    break
                while event is not None:
                    notify |= self._handle(event)
                    event = self.overlay.next_event()
            if notify:
                self._notify()
        finally:
            self._pumping = False
        self._arm_timer()

    def _handle(self, event: Event) -> bool:
        notify = False
        stored_already: bytes | None = None
        if isinstance(event, ChangeApplied):
            notify = True
            record_applied(event.change_id)
            if event.change_id in self._stored_before_gossip:
                # publish() wrote it before spreading it: no second write.
                self._stored_before_gossip.discard(event.change_id)
                stored_already = event.change_id
            elif self._persist is not None:
                data = self.replica.change_bytes(event.change_id)
                if data is not None:
                    try:
                        fut = self._persist(self.room_id, event.change_id, data)
                    except Exception as err:  # StoreBusy, StoreClosed: not durable here
                        log.error("could not queue change %s for the store: %s",
                                  event.change_id.hex()[:12], err)
                        self.store_failures += 1
                    else:
                        fut.add_done_callback(
                            functools.partial(self._stored, event.change_id))
        elif isinstance(event, PresenceUpdated):
            self._presence[event.participant] = dict(event.fields)
            notify = True
        elif isinstance(event, PresenceExpired):
            notify = self._presence.pop(event.participant, None) is not None
        elif isinstance(event, PeerMisbehaved):
            log.warning("peer %s misbehaved in room %s: %s (score %.0f)", event.peer,
                        self.room_id.hex()[:12], event.reason, event.score)
        elif isinstance(event, RequestRefused):
            # Quota and reply budget only slow a peer down; a non-member asking is counted
            # (a joiner's heads before its grant are routine; scoring says the rest).
            level = (logging.INFO if event.reason is RefusalReason.NOT_A_MEMBER
                     else logging.DEBUG)
            log.log(level, "refused %d item(s) from %s in room %s: %s", event.count,
                    event.peer, self.room_id.hex()[:12], event.reason.value)
        elif isinstance(event, EquivocationDetected):
            log.warning("author %s equivocated at seq %d in room %s", event.author, event.seq,
                        self.room_id.hex()[:12])
        elif isinstance(event, HistoryWanted):
            self._read_history(event)
        elif isinstance(event, ConnectRequest | DisconnectRequest):
            pass  # the link owner acts on these through on_event
        if self._on_event is not None:
            self._on_event(event)
        if stored_already is not None:
            # After on_event, so that waiters it registers (the node's ack) resolve too.
            self.mark_durable([stored_already])
        return notify

    def _stored(self, cid: bytes, fut: "asyncio.Future[None]") -> None:
        if fut.cancelled():
            return
        err = fut.exception()
        waiter = self._durable.get(cid)
        if err is not None:
            log.error("could not store change %s: %s", cid.hex()[:12], err)
            if waiter is not None and not waiter.done():
                self._durable.pop(cid, None)
                waiter.set_exception(err)
            return
        self.mark_durable([cid])

    def _read_history(self, event: HistoryWanted) -> None:
        if self._history is None:  # the overlay defers only when given a reader
            return
        fut = asyncio.ensure_future(self._history(list(event.change_ids)))
        self._reading.add(fut)
        fut.add_done_callback(functools.partial(self._history_read, event.read))

    def _history_read(self, read: int, fut: "asyncio.Future[Mapping[bytes, bytes]]") -> None:
        self._reading.discard(fut)
        if self._closed or fut.cancelled():
            return
        err = fut.exception()
        data: Mapping[bytes, bytes] = {}
        if err is not None:
            # Those changes are skipped in this reply; the peer's next anti-entropy round
            # asks again.
            log.error("could not read old history of room %s: %s", self.room_id.hex()[:12], err)
            self.history_failures += 1
        else:
            data = fut.result()
        self.overlay.history_loaded(read, data, self._clock())
        self.pump()

    def _arm_timer(self) -> None:
        if self._closed:
            return
        at = self.overlay.get_timer()
        if at == self._timer_at and self._timer is not None:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = at
        if at is not None:
            delay = max(0.0, at - self._clock())
            self._timer = asyncio.get_running_loop().call_later(delay, self._fire)

    def _fire(self) -> None:
        self._timer = None
        self._timer_at = None
        if self._closed:
            return
        self.overlay.handle_timer(self._clock())
        self.pump()

    def close(self) -> None:
        """Stop the timer and fail every waiter; the room can no longer be used."""
        self._closed = True
        for reading in list(self._reading):
            reading.cancel()
        self._reading.clear()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for fut in self._durable.values():
            if not fut.done():
                fut.set_exception(ConnectionError("room closed before the change was durable"))
        self._durable.clear()
        self._subscribers.clear()


def _retrieve(fut: "asyncio.Future[Any]") -> None:
    if not fut.cancelled():
        fut.exception()
