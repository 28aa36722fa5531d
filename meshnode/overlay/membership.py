"""HyParView-style partial views (Leitão, Pereira, Rodrigues, DSN 2007).

The *active view* is the few peers this node keeps links to and gossips with; the *passive
view* is a larger sample of other peers, kept fresh by shuffles, from which a lost active
neighbour is replaced. A room with many hosts therefore never needs a full mesh.

Links are opened by the driver (``ConnectRequest``) and reported back with ``connect`` or
``connect_failed``; both ends of a link run this logic. A node accepts a link while its active
view has room (or when it asked for the link itself, evicting a random neighbour if needed).
A node whose active view was empty when a link came up announces itself with a ``ForwardJoin``
naming itself (HyParView's JOIN, or a high-priority NEIGHBOR request): a full node holds an
unasked link until the peer's first frame, accepts it (evicting a random neighbour) if that
frame is such a JOIN, and otherwise answers ``Disconnect`` with alternatives from its own
views. Only a JOIN starts ``ForwardJoin`` random walks, so repairs do not cascade; only the
end of such a walk evicts a neighbour to make room (a repair link that arrives once the view
has filled up is refused instead).

Rewiring (``rewire_interval_s``). Views fill up from whoever is reachable, so after a
partition two groups can each be complete and refuse every link from the other: HyParView's
repair only runs while a view has room, and nothing else ever takes a passive peer. So now and
then a node whose active view is full swaps one neighbour for a random passive peer:

1. it links to the passive peer and holds it on top of its full view (a *trial*), sending a
   ``ForwardJoin`` naming itself with TTL 0: a JOIN that asks to be taken but starts no walk;
2. the peer takes it if it has room, or if it is full, has not swapped within the last half
   interval and has a *settled* neighbour (linked for at least half an interval) to evict
   for it; otherwise it refuses with ``Disconnect`` and alternatives;
3. the first frame other than ``Disconnect`` from the peer (or ``connect_timeout_s`` of
   silence) confirms the swap, and only then does the initiator evict one of its own settled
   neighbours. A refused swap costs nobody a neighbour.

The rate is bounded: at most one swap in flight per node, the interval is jittered from the
core's rng and doubles after every swap (up to ``rewire_max_interval_s``); it drops back to
``rewire_interval_s`` when the node sees its topology move (a neighbour's link failed,
discovery introduced a peer it did not know, or a just-linked neighbour's heads name changes
we lack), which is what a partition and its heal look like. A freshly made link is never the
one a swap evicts, so a bridge between two groups outlives at least half an interval, and a
settled mesh sees about one swap per node per ``rewire_max_interval_s``.
"""

import random
from collections.abc import Callable

from meshnode.overlay.config import OverlayConfig
from meshnode.overlay.events import ConnectRequest, DisconnectRequest, Event
from protocol.frames import Disconnect, ForwardJoin, Message, Shuffle, ShuffleReply

# A node that still has neighbours and whose repair links keep being refused by full peers
# (the usual state after a swap evicted it: nearly every view is full) spaces its repairs
# out, doubling repair_interval_s per refusal up to 2**_REPAIR_BACKOFF_MAX times it, so
# that it does not open and close a link every interval (each a WebRTC set-up on a live
# node). A node with no neighbour never backs off; its JOIN is taken anyway.
_REPAIR_BACKOFF_MAX = 4


class PartialView:
    """Active and passive views of one node in one room."""

    def __init__(
        self,
        me: str,
        room_id: bytes,
        config: OverlayConfig,
        rng: random.Random,
        send: Callable[[str, Message], None],
        emit: Callable[[Event], None],
    ) -> None:
        self.me = me
        self.room_id = room_id
        self.config = config
        self.rng = rng
        self._send = send
        self._emit = emit
        self.active: set[str] = set()
        self.passive: list[str] = []
        self.requested: dict[str, float] = {}  # peer -> when we asked the driver to connect
        self.pending: dict[str, float] = {}  # unasked links held while full, until a JOIN
        self.walk_ends: set[str] = set()  # requested links that end a newcomer's ForwardJoin
        self.swaps: set[str] = set()  # requested links that rewire (swap in a passive peer)
        self.trials: dict[str, float] = {}  # swapped-in peers held on top, until they confirm
        self.since: dict[str, float] = {}  # active peer -> when it became a neighbour
        self.last_swap = float("-inf")  # when this node last swapped (either end)
        base = config.rewire_interval_s
        # A node starts quiet: fast rewiring is for after its topology moved (see ``alarm``).
        self.rewire_every = max(base, config.rewire_max_interval_s)
        self.next_rewire = (self.rewire_every * (0.5 + rng.random())
                            if base > 0 else float("inf"))
        self.next_shuffle = 0.0
        self.next_repair = 0.0
        self.refusals = 0  # repair links refused in a row (see _REPAIR_BACKOFF_MAX)

    # -- links --------------------------------------------------------------------------

    def on_connect(self, peer: str, now: float) -> bool:
        """A link to ``peer`` is up. Returns True if the peer joins the active view; an
        unasked link while the view is full is held (``pending``) until the peer's first
        frame."""
        if peer in self.active:
            return True
        asked = self.requested.pop(peer, None) is not None
        walk_end = asked and peer in self.walk_ends
        self.walk_ends.discard(peer)
        swap = asked and peer in self.swaps
        self.swaps.discard(peer)
        if swap:
            # Our rewire: hold the peer on top of the view and ask it to take us even if it
            # is full; a neighbour is evicted for it only once it confirms (``confirm``).
            self._activate(peer, now)
            self.trials[peer] = now
            self._send(peer, ForwardJoin(self.room_id, self.me, 0))
            return True
        if len(self.active) >= self.config.active_view_size:
            if not asked:
                self.pending[peer] = now
                return False
            if not walk_end:
                # A repair link, but the view filled up meanwhile: it is not needed any more
                # (evicting a working neighbour for it would only start another repair).
                self._send(peer, Disconnect(self.room_id, tuple(self.sample(peer))))
                self._emit(DisconnectRequest(peer, "view_full"))
                self.add_passive(peer)
                return False
            # The end of a newcomer's walk: HyParView makes room for it.
            self.evict(self.rng.choice(sorted(self.active)), "make_room")
        self._activate(peer, now)
        return True

    def on_join(self, peer: str, now: float, walk: bool = True) -> bool:
        """``peer`` sent a ForwardJoin naming itself: take it even if the view is full, and
        (``walk``: a newcomer's JOIN, not a rewire) walk it into the overlay. True if it just
        became active."""
        accepted = False
        if peer in self.pending:
            full = len(self.active) >= self.config.active_view_size
            if not walk and full:
                # A rewire: taken only within this node's swap rate, for a settled neighbour.
                settled = self._settled(now, exclude=peer)
                if not settled or now - self.last_swap < self._settle_s():
                    self.reject_pending(peer)
                    return False
                self.pending.pop(peer)
                self.evict(self.rng.choice(settled), "rewire")
                self.last_swap = now
            else:
                self.pending.pop(peer)
                if full:
                    self.evict(self.rng.choice(sorted(self.active)), "make_room")
            self._activate(peer, now)
            accepted = True
        if peer in self.active and walk:
            for other in sorted(self.active - {peer}):
                self._send(other, ForwardJoin(self.room_id, peer, self.config.forward_join_ttl))
        return accepted

    def confirm(self, peer: str, now: float) -> None:
        """``peer``, swapped in by our rewire, answered with something other than
        ``Disconnect``: it took us, so evict one of our settled neighbours for it."""
        if self.trials.pop(peer, None) is None or peer not in self.active:
            return
        self.last_swap = now
        if len(self.active) > self.config.active_view_size:
            victims = self._settled(now, exclude=peer) or sorted(self.active - {peer})
            self.evict(self.rng.choice(victims), "rewire")

    def alarm(self, now: float) -> None:
        """The topology moved (a neighbour's link failed, discovery named a new peer, a new
        neighbour knows changes we lack): what a partition and its heal look like, so
        rewire at the base rate again."""
        base = self.config.rewire_interval_s
        if base <= 0:
            return
        self.rewire_every = base
        self.next_rewire = min(self.next_rewire, now + base * (0.75 + 0.5 * self.rng.random()))

    def on_news(self, peer: str, now: float) -> None:
        """A neighbour linked within ``connect_timeout_s`` holds changes we lack: the two
        of us may have been apart (a heal), so rewire at the base rate again."""
        since = self.since.get(peer)
        if since is not None and now - since <= self.config.connect_timeout_s:
            self.alarm(now)

    def _settle_s(self) -> float:
        return self.config.rewire_interval_s / 2

    def _settled(self, now: float, exclude: str) -> list[str]:
        """Neighbours linked for at least half a rewire interval: the only ones a swap may
        evict, so a fresh bridge is not undone at once."""
        cut = now - self._settle_s()
        return sorted(p for p in self.active
                      if p != exclude and p not in self.trials and self.since.get(p, cut) <= cut)

    def _activate(self, peer: str, now: float) -> None:
        self.active.add(peer)
        self.since[peer] = now
        self._remove_passive(peer)

    def _deactivate(self, peer: str) -> None:
        self.active.discard(peer)
        self.since.pop(peer, None)
        self.trials.pop(peer, None)

    def reject_pending(self, peer: str) -> None:
        """Refuse a held link: the view is full and the peer has other neighbours."""
        if self.pending.pop(peer, None) is not None:
            self._send(peer, Disconnect(self.room_id, tuple(self.sample(peer))))
            self._emit(DisconnectRequest(peer, "view_full"))
            self.add_passive(peer)

    def on_disconnect(self, peer: str, now: float) -> bool:
        """A link went down; returns True if the peer was active (then the link failed: a
        neighbour we drop, or that drops us, leaves the view first)."""
        self.requested.pop(peer, None)
        self.walk_ends.discard(peer)
        self.swaps.discard(peer)
        self.pending.pop(peer, None)
        if peer in self.active:
            if peer not in self.trials:
                self.alarm(now)
                self.refusals = 0  # a neighbour lost: repair at full speed again
            self._deactivate(peer)
            self.add_passive(peer)
            return True
        return False

    def on_connect_failed(self, peer: str) -> None:
        """The driver could not reach ``peer``: forget it."""
        self.requested.pop(peer, None)
        self.walk_ends.discard(peer)
        self.swaps.discard(peer)
        self._remove_passive(peer)

    def evict(self, peer: str, reason: str) -> None:
        """Drop an active neighbour politely (it gets alternatives) and keep it as passive."""
        if peer in self.active:
            self._send(peer, Disconnect(self.room_id, tuple(self.sample(peer))))
            self._deactivate(peer)
            self.add_passive(peer)
            self._emit(DisconnectRequest(peer, reason))

    def forget(self, peer: str) -> None:
        """Remove ``peer`` from every view (e.g. banned)."""
        self._deactivate(peer)
        self.requested.pop(peer, None)
        self.walk_ends.discard(peer)
        self.swaps.discard(peer)
        self.pending.pop(peer, None)
        self._remove_passive(peer)

    # -- passive view -------------------------------------------------------------------

    def add_passive(self, peer: str) -> None:
        """Remember ``peer`` as a candidate neighbour (bounded; random eviction)."""
        if peer == self.me or peer in self.active or peer in self.passive:
            return
        if len(self.passive) >= self.config.passive_view_size:
            self.passive.pop(self.rng.randrange(len(self.passive)))
        self.passive.append(peer)

    def _remove_passive(self, peer: str) -> None:
        if peer in self.passive:
            self.passive.remove(peer)

    def sample(self, exclude: str) -> list[str]:
        """A random sample of known peers (active and passive), for shuffles and referrals."""
        pool = sorted((self.active | set(self.passive)) - {exclude})
        self.rng.shuffle(pool)
        return pool[: self.config.shuffle_sample]

    # -- messages -----------------------------------------------------------------------

    def on_forward_join(self, sender: str, msg: ForwardJoin, now: float) -> None:
        """Random walk of a newcomer: link to it at the end, remember it on the way."""
        peer = msg.peer
        if peer == self.me:
            return
        others = sorted(self.active - {sender, peer})
        if msg.ttl == 0 or not others:
            if peer not in self.active and peer not in self.requested:
                self.request(peer, now)
                self.walk_ends.add(peer)
            return
        if msg.ttl == self.config.passive_join_ttl:
            self.add_passive(peer)
        self._send(self.rng.choice(others), ForwardJoin(self.room_id, peer, msg.ttl - 1))

    def on_shuffle(self, sender: str, msg: Shuffle) -> None:
        """Answer a shuffle with our own sample and keep theirs."""
        self._send(sender, ShuffleReply(self.room_id, tuple(self.sample(sender))))
        self.add_passive(msg.origin)
        for p in msg.peers:
            self.add_passive(p)

    def on_shuffle_reply(self, msg: ShuffleReply) -> None:
        """Keep the peers a shuffle partner told us about."""
        for p in msg.peers:
            self.add_passive(p)

    def on_disconnect_msg(self, sender: str, msg: Disconnect, now: float) -> None:
        """A neighbour dropped us (or refused our link or rewire); its alternatives become
        candidates."""
        since = self.since.get(sender)
        if since is not None and sender not in self.trials:
            if now - since <= self.config.connect_timeout_s:
                self.refusals = min(self.refusals + 1, _REPAIR_BACKOFF_MAX)  # it was full
            else:
                self.refusals = 0  # a settled neighbour lost: repair at full speed again
        self._deactivate(sender)
        self.add_passive(sender)
        for p in msg.peers:
            self.add_passive(p)

    # -- upkeep -------------------------------------------------------------------------

    def request(self, peer: str, now: float) -> None:
        """Ask the driver for a link to ``peer``."""
        self.requested[peer] = now
        self._emit(ConnectRequest(peer))

    def tick(self, now: float) -> None:
        """Shuffle, rewire, time out unanswered link requests and refill a short active
        view."""
        for peer, asked in list(self.requested.items()):
            if now - asked > self.config.connect_timeout_s:
                self.on_connect_failed(peer)
        for peer, since in list(self.trials.items()):
            if now - since > self.config.connect_timeout_s:
                self.confirm(peer, now)  # silent, not refused: it took us
        for peer, since in list(self.pending.items()):
            if now - since > self.config.connect_timeout_s:
                self.reject_pending(peer)
        if now >= self.next_shuffle:
            self.next_shuffle = now + self.config.shuffle_interval_s * (
                0.75 + 0.5 * self.rng.random()
            )
            if self.active:
                target = self.rng.choice(sorted(self.active))
                self._send(
                    target, Shuffle(self.room_id, self.me, 0, tuple(self.sample(target)))
                )
        if now >= self.next_rewire:
            self.next_rewire = now + self.rewire_every * (0.75 + 0.5 * self.rng.random())
            if (len(self.active) >= self.config.active_view_size and not self.swaps
                    and not self.trials and self._settled(now, exclude=self.me)):
                candidates = sorted(p for p in self.passive if p not in self.requested)
                if candidates:
                    peer = self.rng.choice(candidates)
                    self.swaps.add(peer)
                    self.request(peer, now)
                    self.rewire_every = min(2 * self.rewire_every,
                                            max(self.config.rewire_interval_s,
                                                self.config.rewire_max_interval_s))
        if now >= self.next_repair:
            backoff = 2 ** self.refusals if self.active else 1
            self.next_repair = now + self.config.repair_interval_s * backoff
            free = self.config.active_view_size - len(self.active) - len(self.requested)
            candidates = [p for p in self.passive if p not in self.requested]
            self.rng.shuffle(candidates)
            for peer in candidates[: max(0, free)]:
                self.request(peer, now)

    def next_deadline(self) -> float:
        """When ``tick`` next has work."""
        return min(self.next_shuffle, self.next_repair, self.next_rewire)
