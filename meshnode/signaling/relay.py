"""Routing of relayed offers and answers through the mesh. Sans-I/O.

A node that learnt a peer's PeerID from the overlay (a view repair, a forwarded join) has no
address for it, and it may be behind a NAT anyway. So it sends its SDP offer as a
``Signal`` to its neighbours; each hop forwards it straight to the destination if it is a
neighbour, else to a few neighbours with the TTL decremented; the destination answers, and
the answer walks back along the path the offer took (each hop remembered where the offer came
from). Offers are deduplicated by nonce, so a flood of copies dies out.

A route is remembered for the offer's (nonce, src, dst), and only an answer or error from that
``dst`` to that ``src`` follows it: a peer that saw a nonce go by cannot redirect the answer
by sending an offer of its own under the same nonce.
"""

import random
from collections import OrderedDict
from dataclasses import dataclass, replace

from protocol.link import Signal

DEFAULT_TTL = 4
FANOUT = 3


@dataclass(frozen=True, slots=True)
class Deliver:
    """The signal is for this node."""

    signal: Signal
    via: str


@dataclass(frozen=True, slots=True)
class Forward:
    """Send ``signal`` to ``peer``."""

    peer: str
    signal: Signal


class SignalRelay:
    """Decides what to do with each ``Signal`` a neighbour sends (see the module docstring)."""

    def __init__(self, me: str, rng: random.Random, *, memory: int = 1_024,
                 route_ttl_s: float = 60.0) -> None:
        """``rng`` picks the neighbours an offer is flooded to: the driver passes its own
        (seeded for a reproducible run); there is no hidden fallback."""
        self.me = me
        self.rng = rng
        self.memory = memory
        self.route_ttl_s = route_ttl_s
        # (nonce, offer src, offer dst) -> (peer the offer came from, when); answers from
        # dst to src with that nonce go back that way
        self._routes: OrderedDict[tuple[bytes, str, str], tuple[str, float]] = OrderedDict()
        self._seen: OrderedDict[tuple[bytes, str, str], None] = OrderedDict()
        self.dropped = 0

    def _remember_seen(self, key: tuple[bytes, str, str]) -> bool:
        if key in self._seen:
            return False
        self._seen[key] = None
        if len(self._seen) > self.memory:
            self._seen.popitem(last=False)
        return True

    def handle(self, sig: Signal, from_peer: str, neighbours: set[str],
               now: float) -> list[Deliver | Forward]:
        """What to do with ``sig`` received from neighbour ``from_peer``."""
        if sig.src == self.me or not self._remember_seen((sig.nonce, sig.kind, sig.src)):
            self.dropped += 1
            return []
        if sig.kind == "offer":
            self._routes[(sig.nonce, sig.src, sig.dst)] = (from_peer, now)
            if len(self._routes) > self.memory:
                self._routes.popitem(last=False)
        if sig.dst == self.me:
            return [Deliver(sig, from_peer)]
        if sig.ttl <= 0:
            self.dropped += 1
            return []
        nxt = replace(sig, ttl=sig.ttl - 1)
        if sig.dst in neighbours:
            return [Forward(sig.dst, nxt)]
        if sig.kind != "offer":
            back = self._routes.get((sig.nonce, sig.dst, sig.src))
            if back is not None and now - back[1] <= self.route_ttl_s and back[0] in neighbours:
                return [Forward(back[0], nxt)]
            self.dropped += 1
            return []
        others = sorted(neighbours - {from_peer, sig.src})
        self.rng.shuffle(others)
        return [Forward(p, nxt) for p in others[:FANOUT]]

    def originate(self, sig: Signal, neighbours: set[str]) -> list[Forward]:
        """Where to send a signal this node starts (an offer, or an answer to ``via``)."""
        self._remember_seen((sig.nonce, sig.kind, sig.src))
        if sig.dst in neighbours:
            return [Forward(sig.dst, sig)]
        if sig.kind != "offer":
            back = self._routes.get((sig.nonce, sig.dst, sig.src))
            if back is not None and back[0] in neighbours:
                return [Forward(back[0], sig)]
            return []
        others = sorted(neighbours)
        self.rng.shuffle(others)
        return [Forward(p, sig) for p in others[:FANOUT]]

    def answer_route(self, nonce: bytes) -> str | None:
        """The neighbour an offer with ``nonce`` came from (where its answer must go); the
        latest such offer if several used the nonce."""
        for (n, _, _), (peer, _) in reversed(self._routes.items()):
            if n == nonce:
                return peer
        return None
