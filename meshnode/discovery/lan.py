"""What an mDNS announcement may say, and which LAN peers to dial when. Sans-I/O: no
sockets, no clock (``now`` is passed in), no logging.

A node on the LAN announces (``meshnode.discovery.mdns``) a ``_meshnode._tcp`` service whose
TXT record carries exactly three keys: ``v=1``, ``peer=<PeerID>`` and ``url=<meshnode URL>``;
never a room ID. Anyone on the LAN can answer mDNS queries, so every announcement is parsed
here with limits (``parse_announcement``: a typed ``LanRejected`` with a stable ``reason``
otherwise), and the peers found live in a bounded table (``LanPeers``) that decides whom to
dial: never ourselves, never a peer the federation policy refuses, never one already linked
or being dialled, at most ``dials_per_tick`` new dials per tick, and a peer whose dial failed
waits an exponential backoff (``base_backoff_s`` doubling up to ``max_backoff_s``), whatever
URL it announces next. So a responder that floods names, PeerIDs or URLs fills at most
``capacity`` entries and costs at most one dial per entry per backoff, never a dial loop; a
dial is always bound to the announced PeerID (a hello from anyone else fails).
"""

import ipaddress
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from meshnode.identity import public_key_from_peer_id

__all__ = ["MAX_TXT_BYTES", "LanAnnouncement", "LanDial", "LanPeers", "LanRejected",
           "parse_announcement"]

MAX_TXT_BYTES = 1_024
MAX_URL_CHARS = 512
TXT_VERSION = b"1"


class LanRejected(Exception):
    """An mDNS announcement ignored; ``reason`` is a stable metric label: ``too_large``,
    ``bad_version``, ``missing_field``, ``bad_peer_id``, ``bad_url``, ``table_full``,
    ``self`` (our own announcement), or the federation policy's ``denied``/``not_allowed``."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class LanAnnouncement:
    """What a LAN peer announced: its PeerID and the URL of its HTTP endpoint."""

    peer_id: str
    url: str


@dataclass(frozen=True, slots=True)
class LanDial:
    """Dial ``url``, expecting ``peer_id`` to answer."""

    peer_id: str
    url: str


def _text(value: bytes | None, key: str) -> str:
    if value is None or not value:
        raise LanRejected("missing_field", f"no {key}")
    try:
        return value.decode("ascii")
    except UnicodeDecodeError:
        raise LanRejected(f"bad_{key}" if key != "peer" else "bad_peer_id",
                          f"{key} is not ASCII") from None


def parse_announcement(properties: Mapping[bytes, bytes | None]) -> LanAnnouncement:
    """Check an announcement's TXT properties; raises ``LanRejected`` with the reason."""
    size = sum(len(k) + len(v or b"") + 2 for k, v in properties.items())
    if size > MAX_TXT_BYTES or len(properties) > 16:
        raise LanRejected("too_large", f"{size} bytes in {len(properties)} keys")
    if properties.get(b"v") != TXT_VERSION:
        raise LanRejected("bad_version", repr(properties.get(b"v")))
    peer = _text(properties.get(b"peer"), "peer")
    try:
        public_key_from_peer_id(peer)
    except ValueError as err:
        raise LanRejected("bad_peer_id", str(err)) from None
    url = _text(properties.get(b"url"), "url")
    check_lan_url(url)
    return LanAnnouncement(peer, url)


def check_lan_url(url: str) -> None:
    """A URL a LAN peer may make us dial: ``http(s)://host[:port][/path]``, no user info,
    no query, and if the host is an IP address, not a loopback, unspecified or multicast one
    (those would point our dial at ourselves or nowhere). Raises ``LanRejected``."""
    if len(url) > MAX_URL_CHARS or any(c.isspace() or ord(c) < 33 for c in url):
        raise LanRejected("bad_url", "too long or contains spaces")
    try:
        parts = urlsplit(url)
        host, _port = parts.hostname, parts.port
    except ValueError as err:
        raise LanRejected("bad_url", str(err)) from None
    if parts.scheme not in ("http", "https") or not host or parts.username is not None \
            or parts.query or parts.fragment:
        raise LanRejected("bad_url", "not an http(s)://host[:port] URL")
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        return  # a name (a public_url): resolved when dialled
    if addr.is_loopback or addr.is_unspecified or addr.is_multicast:
        raise LanRejected("bad_url", f"{host} is not a peer's address")


@dataclass(slots=True)
class _Entry:
    url: str
    names: set[str]
    next_try: float = 0.0
    failures: int = 0


class LanPeers:
    """The LAN peers found by mDNS and when to dial them (see the module docstring).

    ``refusal(peer)`` is the federation policy (a reason, or None when the peer may be
    linked). Feed it ``seen``/``gone`` as announcements come and go, ask ``due`` every tick,
    and report each dial's result with ``dialled``.
    """

    def __init__(self, me: str, refusal: Callable[[str], str | None], *, capacity: int = 64,
                 base_backoff_s: float = 5.0, max_backoff_s: float = 300.0,
                 dials_per_tick: int = 1) -> None:
        self.me = me
        self.refusal = refusal
        self.capacity = capacity
        self.base_backoff_s = base_backoff_s
        self.max_backoff_s = max_backoff_s
        self.dials_per_tick = dials_per_tick
        self._peers: dict[str, _Entry] = {}
        self._by_name: dict[str, str] = {}

    def __len__(self) -> int:
        return len(self._peers)

    def peers(self) -> dict[str, str]:
        """PeerID -> announced URL, of the peers in the table."""
        return {peer: e.url for peer, e in self._peers.items()}

    def seen(self, name: str, ann: LanAnnouncement, now: float) -> None:
        """An announcement under the service name ``name``; raises ``LanRejected`` when it
        is ignored."""
        if ann.peer_id == self.me:
            raise LanRejected("self")
        refused = self.refusal(ann.peer_id)
        if refused is not None:
            self.gone(name)
            raise LanRejected(refused, ann.peer_id)
        old = self._by_name.get(name)
        if old is not None and old != ann.peer_id:
            self.gone(name)  # the name now announces another PeerID
        entry = self._peers.get(ann.peer_id)
        if entry is None:
            if len(self._peers) >= self.capacity:
                raise LanRejected("table_full", f"{self.capacity} LAN peers known")
            entry = self._peers[ann.peer_id] = _Entry(ann.url, set(), now)
        # A new URL does not reset the backoff: flapping URLs gets no faster redials.
        entry.url = ann.url
        entry.names.add(name)
        self._by_name[name] = ann.peer_id

    def gone(self, name: str) -> None:
        """The service ``name`` was withdrawn (or expired)."""
        peer = self._by_name.pop(name, None)
        if peer is None:
            return
        entry = self._peers.get(peer)
        if entry is not None:
            entry.names.discard(name)
            if not entry.names:
                del self._peers[peer]

    def due(self, now: float, busy: Iterable[str]) -> list[LanDial]:
        """The dials to start now: peers not ``busy`` (linked or being dialled) whose time
        has come, earliest first (then by PeerID), at most ``dials_per_tick``."""
        skip = set(busy)
        ready = sorted((e.next_try, peer) for peer, e in self._peers.items()
                       if peer not in skip and e.next_try <= now)
        out = []
        for _at, peer in ready[:self.dials_per_tick]:
            entry = self._peers[peer]
            # Until the dial reports, do not pick it again.
            entry.next_try = now + self.max_backoff_s
            out.append(LanDial(peer, entry.url))
        return out

    def dialled(self, peer: str, ok: bool, now: float) -> None:
        """A dial's result: a link (it may be dialled again ``base_backoff_s`` after it
        drops) or a failure (exponential backoff)."""
        entry = self._peers.get(peer)
        if entry is None:
            return
        entry.failures = 0 if ok else entry.failures + 1
        wait = self.base_backoff_s * (2 ** min(entry.failures, 16) if not ok else 1)
        entry.next_try = now + min(self.max_backoff_s, wait)
