"""Discovery's decisions, sans-I/O: what to announce and when, which found providers to check
and which to trust, which hosts to dial, and when to leave a bad peer alone.

Nothing here reads a clock, a socket or the DHT: callers pass ``now`` and what they found,
and get action values back. The driver (``meshnode.discovery.service``) does the I/O.

Rules:
- Every hosted room with announce on is provided (and its card published) at once, then
  every ``announce_interval_s``; a failed announce is retried sooner, doubling up to the
  interval. When new DHT peers are learned, every room is announced again soon (a node that
  started alone provided only to itself).
- A provider record is only a claim (records live 48 h; a killed host stays listed): a
  provider is returned as *live* only after a liveness check. At most ``max_providers`` are
  looked at per lookup and at most ``max_checks`` checked (a flood of records costs a
  bounded amount of work); the rest are skipped with a reason.
- A peer that failed a check (dead, or not the PeerID it claimed) is backed off: not checked
  or dialled again for ``backoff_base_s``, doubling per failure up to ``backoff_max_s``. The
  table is bounded (``max_tracked``, oldest forgotten first): garbage peers cannot grow it.
- Found hosts are dialled only when live, not linked already, not us, allowed by the
  federation policy (``may_link``), at most ``max_dials`` at once, in PeerID order.
- A provider record is anyone's claim: whoever knows a room's ID can announce itself as a
  host. A node that holds the room's replica *and has been admitted* (its grants are the
  room's) trusts only providers that hold a role in the room (``member``); the others are
  skipped (``not_in_room``) before any liveness check, so a stranger is never even contacted.
- A joiner (``pick_join_dials``: not admitted yet, its replica knows only the founder) dials
  in bounded rounds: first only the hosts it can vouch for (the founder, by the genesis, and
  the inviter, by the invite); hosts it cannot vouch for (each would see the invite in our
  hello) only from round ``join_unverified_round`` on, when neither answered; once admitted,
  only members. Failed hosts are backed off, so no host is dialled in a loop.
"""

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from meshnode.discovery import HostRecord
from meshnode.identity import public_key_from_peer_id

__all__ = ["AnnounceSchedule", "Check", "Dial", "PeerBackoff", "PlannerConfig", "Rejection",
           "Skip", "pick_dials", "pick_join_dials", "triage"]


class Rejection(StrEnum):
    """Why discovery ignored a peer or record (stable: a metric label, with the card reasons
    of ``meshnode.discovery.card.CardReason``)."""

    DEAD_PROVIDER = "dead_provider"
    """A provider record whose host did not answer the liveness check."""
    BACKING_OFF = "backing_off"
    """A peer that failed recently: not checked or dialled again yet."""
    TOO_MANY_PROVIDERS = "too_many_providers"
    """More provider records than a lookup looks at (a flood)."""
    BAD_PROVIDER = "bad_provider"
    """A provider whose PeerID is not a meshnode (Ed25519) PeerID."""
    DENIED = "denied"
    """The federation policy forbids linking to the peer."""
    BAD_SEED = "bad_seed"
    """A node's ``/api/libp2p`` answer was garbage or named another PeerID."""
    BAD_DHT_PEER = "bad_dht_peer"
    """A DHT peer whose addresses could not be dialled or used."""
    NOT_IN_ROOM = "not_in_room"
    """A provider (or linked node) that holds no role in the room by our replica: a
    stranger who knows the room's ID announcing itself as a host."""
    BAD_DHT_ANSWER = "bad_dht_answer"
    """A DHT peer answered a query with garbage (undecodable, wrongly signed records)."""


@dataclass(frozen=True, slots=True)
class PlannerConfig:
    """Discovery's knobs (``[discovery]`` in the node's configuration sets some)."""

    announce_interval_s: float = 600.0
    retry_announce_s: float = 5.0
    card_ttl_s: float = 3600.0
    max_providers: int = 20
    max_checks: int = 8
    backoff_base_s: float = 5.0
    backoff_max_s: float = 600.0
    max_tracked: int = 1024
    max_dials: int = 4
    join_rounds: int = 5
    join_wait_s: float = 2.0
    join_unverified_round: int = 3

    def __post_init__(self) -> None:
        if self.announce_interval_s <= 0 or self.retry_announce_s <= 0:
            raise ValueError("announce intervals must be above 0 seconds")
        if self.card_ttl_s < self.announce_interval_s:
            raise ValueError("card_ttl_s must be at least announce_interval_s: a card must "
                             "outlive the interval before it is republished")


class AnnounceSchedule:
    """When each announced room is due (see the module docstring)."""

    def __init__(self, config: PlannerConfig) -> None:
        self._config = config
        self._next: dict[bytes, float] = {}
        self._retry: dict[bytes, float] = {}

    @property
    def rooms(self) -> frozenset[bytes]:
        """The rooms announced."""
        return frozenset(self._next)

    def update(self, rooms: Iterable[bytes], now: float) -> None:
        """The rooms to announce now: new ones are due at once, dropped ones forgotten."""
        wanted = set(rooms)
        for room in list(self._next):
            if room not in wanted:
                del self._next[room]
                self._retry.pop(room, None)
        for room in wanted:
            self._next.setdefault(room, now)

    def due(self, now: float) -> list[bytes]:
        """Rooms to announce now (in order); they are not due again until ``done``."""
        out = sorted(r for r, at in self._next.items() if at <= now)
        for room in out:
            self._next[room] = float("inf")
        return out

    def done(self, room: bytes, ok: bool, now: float) -> None:
        """An announce of ``room`` finished (``ok``: provided and its card published)."""
        if room not in self._next:
            return
        if ok:
            self._retry.pop(room, None)
            self._next[room] = now + self._config.announce_interval_s
            return
        wait = min(self._retry.get(room, self._config.retry_announce_s / 2) * 2,
                   self._config.announce_interval_s)
        self._retry[room] = wait
        self._next[room] = now + wait

    def soon(self, now: float, delay: float = 1.0) -> None:
        """Announce every room again within ``delay`` (new DHT peers were learned)."""
        for room, at in self._next.items():
            if at != float("inf"):
                self._next[room] = min(at, now + delay)

    def get_timer(self) -> float | None:
        """When the next room is due (None: nothing scheduled)."""
        pending = [at for at in self._next.values() if at != float("inf")]
        return min(pending) if pending else None


class PeerBackoff:
    """Peers that failed a check or a dial, and when they may be tried again."""

    def __init__(self, config: PlannerConfig) -> None:
        self._config = config
        self._entries: dict[str, tuple[int, float]] = {}  # peer -> (failures, retry_at)

    def __len__(self) -> int:
        return len(self._entries)

    def may_try(self, peer: str, now: float) -> bool:
        """Whether ``peer`` may be checked or dialled now."""
        entry = self._entries.get(peer)
        return entry is None or entry[1] <= now

    def failed(self, peer: str, now: float) -> float:
        """``peer`` failed: back it off; returns when it may be tried again."""
        failures = self._entries.pop(peer, (0, 0.0))[0] + 1
        wait: float = min(self._config.backoff_base_s * 2.0 ** min(failures - 1, 30),
                   self._config.backoff_max_s)
        self._entries[peer] = (failures, now + wait)  # re-inserted: newest last
        while len(self._entries) > self._config.max_tracked:
            del self._entries[next(iter(self._entries))]
        return now + wait

    def succeeded(self, peer: str) -> None:
        """``peer`` answered: forget its failures."""
        self._entries.pop(peer, None)


@dataclass(frozen=True, slots=True)
class Check:
    """Check that provider ``peer_id`` is alive (at ``addrs``) before trusting it."""

    peer_id: str
    addrs: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Skip:
    """Ignore provider ``peer_id`` (count ``reason``)."""

    peer_id: str
    reason: Rejection


@dataclass(frozen=True, slots=True)
class Dial:
    """Link to host ``peer_id`` at ``url``."""

    peer_id: str
    url: str


def _meshnode_peer(peer_id: str) -> bool:
    try:
        public_key_from_peer_id(peer_id)
    except ValueError:
        return False
    return True


def triage(providers: Sequence[tuple[str, tuple[str, ...]]], *, me: str,
           known_live: Iterable[str], backoff: PeerBackoff, may_link: Callable[[str], bool],
           now: float, config: PlannerConfig,
           member: Callable[[str], bool] | None = None) -> list[Check | Skip]:
    """What to do with the providers a lookup returned, ``(peer_id, addrs)`` each: ``Check``
    those worth checking, ``Skip`` the rest with a reason. Ourselves and hosts already known
    live (linked) need neither. ``member``: given when our replica of the room is
    authoritative (we were admitted), whether a PeerID holds a role in it; non-members are
    skipped unchecked."""
    live = set(known_live)
    out: list[Check | Skip] = []
    seen: set[str] = set()
    checks = 0
    for peer, addrs in providers:
        if peer in seen or peer == me:
            continue
        seen.add(peer)
        if len(seen) > config.max_providers:
            out.append(Skip(peer, Rejection.TOO_MANY_PROVIDERS))
        elif not _meshnode_peer(peer):
            out.append(Skip(peer, Rejection.BAD_PROVIDER))
        elif not may_link(peer):
            out.append(Skip(peer, Rejection.DENIED))
        elif member is not None and not member(peer):
            out.append(Skip(peer, Rejection.NOT_IN_ROOM))
        elif peer in live:
            continue
        elif not backoff.may_try(peer, now):
            out.append(Skip(peer, Rejection.BACKING_OFF))
        elif checks >= config.max_checks:
            out.append(Skip(peer, Rejection.TOO_MANY_PROVIDERS))
        else:
            checks += 1
            out.append(Check(peer, addrs))
    return out


def pick_dials(records: Iterable[HostRecord], *, me: str, linked: Iterable[str],
               may_link: Callable[[str], bool], backoff: PeerBackoff, now: float,
               config: PlannerConfig) -> list[Dial]:
    """The found hosts to link to (see the module docstring): one ``Dial`` each, by its
    first URL."""
    return _dialable(records, me, linked, may_link, backoff, now)[:config.max_dials]


def _dialable(records: Iterable[HostRecord], me: str, linked: Iterable[str],
              may_link: Callable[[str], bool], backoff: PeerBackoff, now: float) -> list[Dial]:
    skip = set(linked) | {me}
    out = []
    for rec in sorted(records, key=lambda r: r.peer_id):
        if (rec.live and rec.urls and rec.peer_id not in skip and may_link(rec.peer_id)
                and backoff.may_try(rec.peer_id, now)):
            out.append(Dial(rec.peer_id, rec.urls[0]))
            skip.add(rec.peer_id)
    return out


def pick_join_dials(records: Iterable[HostRecord], *, me: str, linked: Iterable[str],
                    may_link: Callable[[str], bool], backoff: PeerBackoff, now: float,
                    config: PlannerConfig, round_no: int, admitted: bool,
                    vouched: Callable[[str], bool]) -> list[Dial]:
    """The hosts a joiner dials in join round ``round_no`` (see the module docstring).

    ``admitted``: our replica holds our grant (it is the room's, then), and ``vouched(peer)``
    says whether the peer holds a role in it; before that, ``vouched`` says whether the
    genesis or the invite vouch for the peer (the founder, the inviter). Vouched hosts come
    first; unvouched ones only before admission and from ``join_unverified_round`` on."""
    unverified_ok = not admitted and round_no >= config.join_unverified_round
    picked = _dialable(records, me, linked, may_link, backoff, now)
    ranked = sorted(picked, key=lambda d: (not vouched(d.peer_id), d.peer_id))
    return [d for d in ranked if unverified_ok or vouched(d.peer_id)][:config.max_dials]
