"""Client failover: which host to link to when ours dies, and what to send it.

A room lives on several operators' nodes. A client links to one of them; when that node dies
(its link closes, or its pings stop for ``dead_after_s``) or refuses the room (it no longer
hosts it), the client links to another host of the room, within seconds, and carries on.

Where the other hosts come from, merged in this order (``HostRing``):

1. the URL the client was given, then the URLs of its invite (the inviter's node);
2. the room's hosts, asked from the node the client is linked to
   (``GET /api/rooms/<room>/hosts``: ``[{"peer_id": PeerID, "urls": [url, ...]}, ...]``,
   signed with the client's identity like the room's other reads), kept only when the
   PeerID holds a role in the room by the client's own replica (the grants); refreshed every
   ``hosts_refresh_s`` while linked;
3. ``FailoverSettings.urls``: extra URLs the application configures.

On a failure the client tries every known host once, round-robin, starting after the one it
lost (which comes last: it may be back), then waits a bounded backoff (``backoff_initial_s``
doubling up to ``backoff_max_s``) and goes round again until it links or is closed. A host
it reaches is kept only if its PeerID (proven by the signed hello) holds a role in the room by
the client's replica: a URL cannot make a client sync with a stranger. (The URL the client
was given first is trusted as the application's choice.)

Delivery guarantee (what ``RoomClient.flush`` means across failovers):

- An edit is **acknowledged** when some host sent an ``Ack`` for its change: that host has
  the change *and its whole causal past* durably stored (``store/durable.py``, guarantee 3).
  ``flush`` returns only then. An acknowledged edit survives that host's crash (it reloads
  it from its store when it restarts, and every host converges with it), and while the
  client runs it also reaches the next host at once: the client keeps every change in its
  replica, and anti-entropy sends the new host whatever it lacks.
- Until acknowledged, the client keeps its own changes in ``UnackedChanges`` and, on every
  new link, **redelivers** them (a ``Changes`` frame with their signed bytes, oldest first).
  The host applies those it lacks and acknowledges them once durable; those it holds already
  (relayed from the dead host before it died) it acknowledges once durable too
  (``ChangeRedelivered``). So a ``flush`` waiting when the host died completes after the
  failover, within its timeout.
- Nothing is applied twice: a change's ID is the hash of its signed bytes, and every replica
  applies an ID once. Redelivery is idempotent; "at least once" delivery of the same bytes
  is "exactly once" in effect.
- What is not covered: edits made after the client process itself dies unflushed (they were
  never signed and sent); and a change of a client whose only link was a host that acked it,
  died, and never returns, *if the client also died* before relinking: then the change lives
  only on that host's disk.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from protocol.frames import Changes, encode_frame

__all__ = [
    "MAX_HOSTS",
    "Connected",
    "ConnectionEvent",
    "FailoverSettings",
    "HostEntry",
    "HostRing",
    "Reconnecting",
    "UnackedChanges",
    "behind_frontier",
    "normalize_url",
    "parse_hosts",
    "redelivery_frames",
]

MAX_HOSTS = 32
"""Host URLs a client keeps (a node that names more is cut off at this many)."""
MAX_URL_CHARS = 256
MAX_URLS_PER_HOST = 4
REDELIVERY_FRAME_BYTES = 48 * 1024
"""Changes redelivered per frame, by size (far below the 256 KiB frame limit)."""
REDELIVERY_FRAME_CHANGES = 64


@dataclass(frozen=True, slots=True)
class FailoverSettings:
    """How a ``RoomClient`` finds another host and how fast it gives up on one."""

    urls: tuple[str, ...] = ()
    """Extra host URLs to try (after the one given and those learnt)."""
    learn_hosts: bool = True
    """Ask the node for the room's other hosts (``GET /api/rooms/<room>/hosts``)."""
    dead_after_s: float = 5.0
    """A link silent this long is dead (nodes ping idle links every 2 s)."""
    dial_timeout_s: float = 8.0
    """Give up on one host's link after this long and try the next."""
    backoff_initial_s: float = 0.2
    backoff_max_s: float = 2.0
    """After a round in which no host could be reached, wait this long (doubling from
    ``backoff_initial_s``, at most ``backoff_max_s``) before the next round."""
    hosts_refresh_s: float = 10.0
    """Ask the node for the room's hosts again this often while linked."""

    def __post_init__(self) -> None:
        for name in ("dead_after_s", "dial_timeout_s", "backoff_initial_s", "backoff_max_s",
                     "hosts_refresh_s"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise ValueError(f"FailoverSettings.{name} must be a positive number of "
                                 f"seconds, not {value!r}")
        if self.dead_after_s < 3.0:
            raise ValueError("FailoverSettings.dead_after_s must be at least 3 s: nodes ping "
                             "an idle link every 2 s, so less would drop healthy links")
        bad = [u for u in self.urls if normalize_url(u) is None]
        if bad:
            raise ValueError(f"FailoverSettings.urls: {bad[0]!r} is not an http(s) URL of a "
                             "node (like http://host:8470)")


@dataclass(frozen=True, slots=True)
class Reconnecting:
    """The link to ``url`` was lost (``reason``: a link-close label such as
    ``keepalive_timeout``, or ``refused:<reason>``); the client is looking for a host."""

    url: str
    reason: str


@dataclass(frozen=True, slots=True)
class Connected:
    """The client is linked to the host at ``url`` (PeerID ``peer_id``); ``failover`` is
    true when it is not the first link of this client."""

    url: str
    peer_id: str
    failover: bool


ConnectionEvent = Reconnecting | Connected


@dataclass(frozen=True, slots=True)
class HostEntry:
    """One host of the room as a node names it: its PeerID and where it serves."""

    peer_id: str
    urls: tuple[str, ...]


def normalize_url(url: object) -> str | None:
    """``url`` as ``scheme://host[:port][/path]`` without a trailing slash, or None if it is
    not an ``http``/``https`` URL a node could serve (too long, credentials, query...)."""
    if not isinstance(url, str) or not url or len(url) > MAX_URL_CHARS:
        return None
    try:
        parts = urlsplit(url.strip())
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    if parts.username is not None or parts.password is not None or parts.query \
            or parts.fragment:
        return None
    return f"{parts.scheme}://{parts.netloc}{parts.path}".rstrip("/")


def parse_hosts(body: object) -> list[HostEntry]:
    """The hosts a node names (the JSON of ``GET /api/rooms/<room>/hosts``). The one decoder
    of that answer: entries that are not ``{"peer_id": str, "urls": [str, ...]}`` with at
    least one good URL are skipped, at most ``MAX_HOSTS`` entries and ``MAX_URLS_PER_HOST``
    URLs each are kept; never raises."""
    if isinstance(body, dict):
        body = body.get("hosts")
    if not isinstance(body, list):
        return []
    out: list[HostEntry] = []
    for item in body[: MAX_HOSTS * 4]:
        if not isinstance(item, dict):
            continue
        peer, raw_urls = item.get("peer_id"), item.get("urls")
        if not isinstance(peer, str) or not 0 < len(peer) <= 128:
            continue
        if isinstance(raw_urls, str):
            raw_urls = [raw_urls]
        if not isinstance(raw_urls, list):
            continue
        urls: list[str] = []
        for raw in raw_urls[:MAX_URLS_PER_HOST]:
            url = normalize_url(raw)
            if url is not None and url not in urls:
                urls.append(url)
        if urls:
            out.append(HostEntry(peer, tuple(urls)))
        if len(out) >= MAX_HOSTS:
            break
    return out


class HostRing:
    """The room's known host URLs in a stable order, and the order to try them in (a pure
    decider: no I/O, no clock). Round-robin: after losing a host, try the ones after it,
    then the ones before it, then it."""

    def __init__(self, first: str, extra: Iterable[str] = ()) -> None:
        url = normalize_url(first)
        if url is None:
            raise ValueError(f"{first!r} is not an http(s) URL of a node")
        self._urls: list[str] = [url]
        self._peers: dict[str, str] = {}  # url -> the PeerID a node named for it
        self.learn(extra)

    @property
    def urls(self) -> tuple[str, ...]:
        """Every known host URL, in ring order."""
        return tuple(self._urls)

    def learn(self, urls: Iterable[str], peer_id: str | None = None) -> bool:
        """Add host URLs (unknown or malformed ones are skipped; at most ``MAX_HOSTS``);
        True if any was new."""
        added = False
        for raw in urls:
            url = normalize_url(raw)
            if url is None:
                continue
            if peer_id is not None:
                self._peers[url] = peer_id
            if url not in self._urls and len(self._urls) < MAX_HOSTS:
                self._urls.append(url)
                added = True
        return added

    def peer_of(self, url: str) -> str | None:
        """The PeerID a node named for ``url`` (None if none did)."""
        return self._peers.get(url)

    def order_after(self, lost: str | None) -> list[str]:
        """Every host, starting after ``lost`` and ending with it (all of them, in ring
        order, if ``lost`` is None or unknown)."""
        lost_url = normalize_url(lost) if lost is not None else None
        if lost_url not in self._urls:
            return list(self._urls)
        i = self._urls.index(lost_url)
        return self._urls[i + 1:] + self._urls[:i + 1]

    @staticmethod
    def backoff(rounds_failed: int, settings: FailoverSettings) -> float:
        """How long to wait after ``rounds_failed`` (>= 1) whole rounds found no host."""
        exponent = min(max(rounds_failed - 1, 0), 16)
        return float(min(settings.backoff_max_s, settings.backoff_initial_s * 2 ** exponent))


class UnackedChanges:
    """Our own changes that no host has acknowledged yet, oldest first (their IDs)."""

    def __init__(self) -> None:
        self._ids: OrderedDict[bytes, None] = OrderedDict()

    def add(self, change_id: bytes) -> None:
        """We signed and sent ``change_id``."""
        self._ids[change_id] = None

    def acked(self, change_ids: Iterable[bytes]) -> None:
        """A host acknowledged these (IDs we never sent are ignored)."""
        for cid in change_ids:
            self._ids.pop(cid, None)

    def __iter__(self) -> Iterator[bytes]:
        return iter(list(self._ids))

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, change_id: object) -> bool:
        return change_id in self._ids


def redelivery_frames(room_id: bytes, changes: Iterable[bytes]) -> list[bytes]:
    """``Changes`` frames (``push`` false: an answer, not a gossip push) carrying these signed
    changes in order, each frame at most ``REDELIVERY_FRAME_CHANGES`` changes and, but for a
    single large change, ``REDELIVERY_FRAME_BYTES`` bytes."""
    frames: list[bytes] = []
    batch: list[bytes] = []
    size = 0
    for data in changes:
        if batch and (size + len(data) > REDELIVERY_FRAME_BYTES
                      or len(batch) >= REDELIVERY_FRAME_CHANGES):
            frames.append(encode_frame(Changes(room_id, tuple(batch), push=False)))
            batch, size = [], 0
        batch.append(data)
        size += len(data)
    if batch:
        frames.append(encode_frame(Changes(room_id, tuple(batch), push=False)))
    return frames


def behind_frontier(vv: Mapping[bytes, int], frontier: Mapping[bytes, int]) -> bool:
    """Whether a replica with version vector ``vv`` lacks changes a node holds only below its
    pruning frontier (``frontier``: author -> seqs below it, the node's ``/heads``): those can
    never be synced, so the replica must start again from the node's snapshot."""
    return any(vv.get(author, 0) < seqs for author, seqs in frontier.items())
