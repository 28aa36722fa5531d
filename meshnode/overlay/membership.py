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

Rewiring (``rewire_interval_s``): now and then a node whose active view is full links to a
random passive peer, evicts a random neighbour for it, and sends a ``ForwardJoin`` naming
itself with TTL 0: a JOIN that asks to be taken (evicting if full) but starts no walk. Views
fill up from whoever is reachable, so after a long partition two groups can each be complete
and refuse every link from the other; only such a swap links them again.
"""

import random
from collections.abc import Callable

from meshnode.overlay.config import OverlayConfig
from meshnode.overlay.events import ConnectRequest, DisconnectRequest, Event
from protocol.frames import Disconnect, ForwardJoin, Message, Shuffle, ShuffleReply


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
        self.next_rewire = (config.rewire_interval_s * (0.5 + rng.random())
                            if config.rewire_interval_s > 0 else float("inf"))
        self.next_shuffle = 0.0
        self.next_repair = 0.0

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
            # Our rewire: make room, and ask the peer to take us even if it is full.
            if len(self.active) >= self.config.active_view_size:
                self.evict(self.rng.choice(sorted(self.active)), "rewire")
            self.active.add(peer)
            self._remove_passive(peer)
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
        self.active.add(peer)
        self._remove_passive(peer)
        return True

    def on_join(self, peer: str, now: float, walk: bool = True) -> bool:
        """``peer`` sent a ForwardJoin naming itself: take it even if the view is full, and
        (``walk``: a newcomer's JOIN, not a rewire) walk it into the overlay. True if it just
        became active."""
        accepted = False
        if self.pending.pop(peer, None) is not None:
            if len(self.active) >= self.config.active_view_size:
                self.evict(self.rng.choice(sorted(self.active)), "make_room")
            self.active.add(peer)
            self._remove_passive(peer)
            accepted = True
        if peer in self.active and walk:
            for other in sorted(self.active - {peer}):
                self._send(other, ForwardJoin(self.room_id, peer, self.config.forward_join_ttl))
        return accepted

    def reject_pending(self, peer: str) -> None:
        """Refuse a held link: the view is full and the peer has other neighbours."""
        if self.pending.pop(peer, None) is not None:
            self._send(peer, Disconnect(self.room_id, tuple(self.sample(peer))))
            self._emit(DisconnectRequest(peer, "view_full"))
            self.add_passive(peer)

    def on_disconnect(self, peer: str) -> bool:
        """A link went down; returns True if the peer was active."""
        self.requested.pop(peer, None)
        self.walk_ends.discard(peer)
        self.swaps.discard(peer)
        self.pending.pop(peer, None)
        if peer in self.active:
            self.active.discard(peer)
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
            self.active.discard(peer)
            self.add_passive(peer)
            self._emit(DisconnectRequest(peer, reason))

    def forget(self, peer: str) -> None:
        """Remove ``peer`` from every view (e.g. banned)."""
        self.active.discard(peer)
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

    def on_disconnect_msg(self, sender: str, msg: Disconnect) -> None:
        """A neighbour dropped us; its alternatives become candidates."""
        self.active.discard(sender)
        self.add_passive(sender)
        for p in msg.peers:
            self.add_passive(p)

    # -- upkeep -------------------------------------------------------------------------

    def request(self, peer: str, now: float) -> None:
        """Ask the driver for a link to ``peer``."""
        self.requested[peer] = now
        self._emit(ConnectRequest(peer))

    def tick(self, now: float) -> None:
        """Shuffle, time out unanswered link requests and refill a short active view."""
        for peer, asked in list(self.requested.items()):
            if now - asked > self.config.connect_timeout_s:
                self.on_connect_failed(peer)
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
            self.next_rewire = now + self.config.rewire_interval_s * (
                0.75 + 0.5 * self.rng.random()
            )
            if len(self.active) >= self.config.active_view_size and not self.swaps:
                candidates = sorted(p for p in self.passive if p not in self.requested)
                if candidates:
                    peer = self.rng.choice(candidates)
                    self.swaps.add(peer)
                    self.request(peer, now)
        if now >= self.next_repair:
            self.next_repair = now + self.config.repair_interval_s
            free = self.config.active_view_size - len(self.active) - len(self.requested)
            candidates = [p for p in self.passive if p not in self.requested]
            self.rng.shuffle(candidates)
            for peer in candidates[: max(0, free)]:
                self.request(peer, now)

    def next_deadline(self) -> float:
        """When ``tick`` next has work."""
        return min(self.next_shuffle, self.next_repair, self.next_rewire)
