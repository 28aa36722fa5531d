"""Plumtree broadcast (Leitão, Pereira, Rodrigues, *Epidemic Broadcast Trees*, SRDS 2007),
with one tree per author.

A new change is pushed in full ("eagerly") to every active neighbour except those that pruned
its author, and announced by ID ("lazily", batched ``IHave``) to those. A neighbour that
receives a pushed change twice answers ``Prune(author)``, so each author's changes settle on a
spanning tree made of the fastest links (the first copy wins). A node that hears of a change
only by announcement waits ``graft_timeout_s``, then sends ``Graft`` to an announcer, which
sends the change and pushes that author's changes eagerly again: the tree repairs itself.
A grafted announcer that is merely slow (a lossy link retransmitting) is not to blame: only
if the change has still not arrived from anyone ``promise_timeout_s`` after the graft is
the promise counted as broken.
Trees per author, rather than one shared tree, keep each author's latency close to the
shortest path.
"""

import random
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from meshnode.overlay.config import OverlayConfig
from protocol.frames import Graft, IHave, Message, Prune

MAX_LAZY_AUTHORS = 4_096
"""Authors for whom some neighbour asked for announcements only (Prune). One entry per
author: without a bound, a room with churn would keep one for every identity that ever
wrote, as long as the neighbour stays linked."""


@dataclass(slots=True)
class Missing:
    """A change announced to us that we have not received yet."""

    announcers: list[str]
    deadline: float
    grafted: str | None = None  # the announcer we asked last
    tried: set[str] = field(default_factory=set)


class Broadcast:
    """Eager/lazy push state of one node in one room."""

    def __init__(
        self,
        room_id: bytes,
        config: OverlayConfig,
        rng: random.Random,
        send: Callable[[str, Message], None],
        push: Callable[[str, bytes], None],
        broken_promise: Callable[[str, float], None],
    ) -> None:
        self.room_id = room_id
        self.config = config
        self.rng = rng
        self._send = send
        self._push = push
        self._broken_promise = broken_promise
        self.lazy: dict[bytes, set[str]] = {}  # author -> peers that pruned that author
        self.missing: OrderedDict[bytes, Missing] = OrderedDict()
        # change -> neighbours known to have it (bounded, oldest forgotten first)
        self.holders: OrderedDict[bytes, set[str]] = OrderedDict()
        self.announce: dict[str, list[bytes]] = {}
        self.next_announce: float | None = None
        # (grafted peer, change id) -> when the promise is due; in due order
        self.promises: OrderedDict[tuple[str, bytes], float] = OrderedDict()

    def broadcast(
        self, change_id: bytes, author: bytes, data: bytes, source: str | None,
        active: set[str], now: float,
    ) -> None:
        """Spread a change we just applied (``source``: who sent it, None if local)."""
        self.missing.pop(change_id, None)
        lazy = self.lazy.get(author, set())
        for peer in sorted(active):
            if peer == source:
                continue
            if peer in lazy:
                self.announce.setdefault(peer, []).append(change_id)
            else:
                self._push(peer, data)
        if self.announce and self.next_announce is None:
            self.next_announce = now + self.config.ihave_interval_s

    def on_duplicate_push(self, peer: str, author: bytes) -> None:
        """``peer`` pushed us a change we had: it is not on this author's tree toward us."""
        self._send(peer, Prune(self.room_id, (author,)))

    def on_prune(self, peer: str, origins: tuple[bytes, ...]) -> None:
        """``peer`` asks us to only announce these authors' changes to it."""
        lazy = self.lazy
        for author in origins:
            peers = lazy.pop(author, None)  # re-inserted: the table is in last-prune order
            lazy[author] = peers if peers is not None else set()
            lazy[author].add(peer)
        while len(lazy) > MAX_LAZY_AUTHORS:
            # The author pruned longest ago (most likely gone) is pushed eagerly again:
            # at worst a few duplicate pushes, which prune it anew.
            del lazy[next(iter(lazy))]

    def on_graft(self, peer: str, author: bytes) -> None:
        """``peer`` wants this author's changes pushed eagerly again."""
        lazy = self.lazy.get(author)
        if lazy is not None:
            lazy.discard(peer)
            if not lazy:
                del self.lazy[author]

    def peer_has(self, peer: str, cid: bytes) -> None:
        """``peer`` has change ``cid`` (it announced or sent it): never announce it back."""
        holders = self.holders.get(cid)
        if holders is None:
            if len(self.holders) >= self.config.max_missing:
                self.holders.popitem(last=False)
            holders = self.holders[cid] = set()
        holders.add(peer)

    def on_ihave(self, peer: str, ids: tuple[bytes, ...], known: Callable[[bytes], bool],
                 now: float) -> None:
        """Remember announced changes we lack; graft if they do not arrive in time."""
        for cid in ids:
            self.peer_has(peer, cid)
            if known(cid):
                continue
            entry = self.missing.get(cid)
            if entry is None:
                if len(self.missing) >= self.config.max_missing:
                    self.missing.popitem(last=False)
                self.missing[cid] = Missing([peer], now + self.config.graft_timeout_s)
            elif peer not in entry.announcers:
                entry.announcers.append(peer)

    def tick(self, now: float, known: Callable[[bytes], bool], active: set[str],
             graft_from: set[str]) -> None:
        """Send batched announcements (to ``active``: the neighbours served) and grafts
        (to announcers in ``graft_from``: any linked neighbour) that are due."""
        if self.next_announce is not None and now >= self.next_announce:
            self.next_announce = None
            holders = self.holders
            for peer, ids in self.announce.items():
                if peer not in active:
                    continue
                # Announcements are batched, so by now many neighbours have announced or sent
                # the same change to us: they have it, and need no IHave from us.
                fresh = [c for c in dict.fromkeys(ids) if peer not in holders.get(c, ())]
                for i in range(0, len(fresh), 512):
                    self._send(peer, IHave(self.room_id, tuple(fresh[i:i + 512])))
            self.announce.clear()
        grafts: dict[str, list[bytes]] = {}
        for cid, entry in list(self.missing.items()):
            if entry.deadline > now:
                continue
            if known(cid):
                del self.missing[cid]
                continue
            candidates = [p for p in entry.announcers
                          if p in graft_from and p not in entry.tried]
            if not candidates:
                del self.missing[cid]  # anti-entropy will bring it
                continue
            peer = candidates[0]
            entry.tried.add(peer)
            entry.grafted = peer
            entry.deadline = now + self.config.graft_timeout_s
            grafts.setdefault(peer, []).append(cid)
            self.promises.pop((peer, cid), None)
            self.promises[(peer, cid)] = now + self.config.promise_timeout_s
        for peer, ids in grafts.items():
            self._send(peer, Graft(self.room_id, tuple(ids)))
        liars: dict[str, None] = {}
        while self.promises:
            (peer, cid), due = next(iter(self.promises.items()))
            if due > now:
                break
            del self.promises[(peer, cid)]
            if not known(cid):
                # We asked and it never came, from anyone: the announcer broke its promise.
                liars[peer] = None
        for peer in liars:
            # One penalty per peer per round, not per change: a whole graft batch lost on a
            # bad link must not cost an honest neighbour its place.
            self._broken_promise(peer, now)

    def forget_peer(self, peer: str) -> None:
        """A neighbour left: drop it from every table."""
        for author in [a for a, lazy in self.lazy.items() if peer in lazy]:
            lazy = self.lazy[author]
            lazy.discard(peer)
            if not lazy:
                del self.lazy[author]  # authors who left must not stay keys forever
        self.announce.pop(peer, None)
        for key in [k for k in self.promises if k[0] == peer]:
            del self.promises[key]

    def next_deadline(self) -> float | None:
        """When ``tick`` next has work (None: nothing pending)."""
        t = self.next_announce
        if self.missing:
            m = min(e.deadline for e in self.missing.values())
            if t is None or m < t:
                t = m
        if self.promises:
            p = next(iter(self.promises.values()))
            if t is None or p < t:
                t = p
        return t
