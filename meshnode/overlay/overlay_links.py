"""``OverlayLinks``: a room overlay's state, its outbox, its links and who it serves.

The base of ``RoomOverlay`` (``RoomOverlay(OverlaySync(OverlayLinks))``, one file each;
``meshnode.overlay.overlay`` has the driver surface): ``__init__`` (every attribute of the
chain), the frames and events it hands the driver (``frames_to_send``, ``next_event``, the
outbox and its per-peer byte bound, changes framed in batches), links coming and going, read
access (which linked peers are served, reviewed when roles move), the ``Heads`` a link is
greeted with, and defence (penalties, equivocation evidence).
"""

import random
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from meshnode.crdt import SceneReplica
from meshnode.identity import Identity, peer_id_from_public_key, public_key_from_peer_id
from meshnode.overlay.broadcast import Broadcast
from meshnode.overlay.budget import IngressQuota, ReplyBudget
from meshnode.overlay.compact_hold import CompactHold
from meshnode.overlay.config import OverlayConfig
from meshnode.overlay.events import (
    DisconnectRequest,
    EquivocationDetected,
    Event,
    PeerMisbehaved,
    RefusalReason,
    RequestRefused,
)
from meshnode.overlay.history_reads import HistoryReads
from meshnode.overlay.membership import PartialView
from meshnode.overlay.presence import PresenceTable
from meshnode.overlay.scoring import PeerScores
from protocol.bloom import BloomFilter
from protocol.compact import compact_change, is_compact
from protocol.frames import (
    Changes,
    ForwardJoin,
    Heads,
    Message,
    Presence,
    PresenceInterest,
    encode_frame,
)

SYNC = "sync"
PRESENCE = "presence"


@dataclass(slots=True)
class OverlayStats:
    """Counters for metrics and benchmarks."""

    frames_out: int = 0
    bytes_out: int = 0
    bytes_out_by_kind: dict[str, int] = field(default_factory=dict)
    frames_in: int = 0
    payload_pushed_in: int = 0
    payload_pulled_in: int = 0
    duplicates_in: int = 0
    changes_applied: int = 0
    frames_dropped_outbox: int = 0
    frames_dropped_rate: int = 0
    events_dropped: int = 0
    presence_from_strangers: int = 0
    changes_out: int = 0
    reply_bytes_out: int = 0
    refused: dict[str, int] = field(default_factory=dict)  # RefusalReason -> items refused
    # Compact changes (protocol.compact): "sent", "received", "ambiguous" (resolved by the
    # signature), "held", "completed" (expanded once their deps came), "evicted",
    # "prefixes_wanted" (asked for by WantPrefix) and "prefixes_answered".
    compact: dict[str, int] = field(default_factory=dict)


class OverlayLinks:
    """A room overlay's state, outbox, links, access and defence (see the module docstring)."""

    def __init__(
        self,
        replica: SceneReplica,
        identity: Identity,
        config: OverlayConfig | None = None,
        *,
        rng: random.Random,
        wall_clock: Callable[[], float],
    ) -> None:
        """``rng``: every random choice of this overlay (seed it for a reproducible run).
        ``wall_clock``: seconds since the Unix epoch, read for the scene clock only; every
        ``now`` argument is monotonic time (see the module docstring)."""
        self.replica = replica
        self.identity = identity
        self.config = config or OverlayConfig()
        self.rng = rng
        self.wall_clock = wall_clock
        self.me = identity.public_id
        self.room_id = replica.room_id
        self.connected: set[str] = set()
        # Leaves: peers served outside the partial view (a node's own clients). They get
        # every change and presence update, never count against active_view_size and are
        # never offered to others as neighbours.
        self.leaves: set[str] = set()
        # Peers whose hello lists protocol.compact.COMPACT_VERSION: sent compact changes.
        self.compact_peers: set[str] = set()
        self.compact_hold = CompactHold(self.config.compact_hold_changes,
                                        self.config.compact_hold_bytes)
        self._prefix_want_at: dict[str, float] = {}
        self.stats = OverlayStats()
        self._out: list[tuple[str, str, bytes]] = []
        self._out_bytes: dict[str, int] = {}
        self._pushq: dict[str, list[bytes]] = {}
        self._held = 0
        self._pullq: dict[str, list[bytes]] = {}
        self._events: deque[Event] = deque()
        self._want_at: dict[str, float] = {}
        # Changes we got by pull (graft, want, heads) and not yet by push: the first push of
        # one comes from our tree parent, which must not be pruned.
        self._pulled: OrderedDict[bytes, None] = OrderedDict()
        self._heads_at: dict[str, float] = {}
        # Connected peers that hold a role in the room, and so are served (module docstring).
        self._serving: set[str] = set()
        self._peer_keys: dict[str, bytes | None] = {}
        self._member_self = replica.role_of(identity.public_key) != "none"
        # The replica's roles_version at the last access review (None: never reviewed).
        self._roles_reviewed: int | None = None
        self.replies = ReplyBudget(self.config)
        self.quota = IngressQuota(self.config)
        self._presence_seq = 0
        self._interest: PresenceInterest | None = None  # what we asked of our peers
        self._equivocations_seen = len(replica.equivocations)
        self.view = PartialView(self.me, self.room_id, self.config, self.rng, self._send,
                                self._emit)
        self.tree = Broadcast(self.room_id, self.config, self.rng, self._send, self._push,
                              self._broken_promise)
        self.presence = PresenceTable(self.config, identity.public_key)
        self.scores = PeerScores(self.config)
        self.next_anti_entropy: float | None = None
        self._reads = HistoryReads()
        self._defer_history = False

    # ------------------------------------------------------------------ outputs

    def frames_to_send(self) -> list[tuple[str, str, bytes]]:
        """Frames to put on links, as ``(peer_id, channel, frame)``; only connected peers."""
        out = [f for f in self._out if f[0] in self.connected]
        self._out = []
        self._out_bytes.clear()
        return out

    def next_event(self) -> Event | None:
        """The oldest event not yet taken, or None."""
        return self._events.popleft() if self._events else None

    def get_timer(self) -> float | None:
        """When ``handle_timer`` must next be called (None: no timer)."""
        t = self.view.next_deadline()
        for d in (self.tree.next_deadline(), self.presence.next_deadline(),
                  self.next_anti_entropy):
            if d is not None and d < t:
                t = d
        return t

    def active_peers(self) -> set[str]:
        """The active view: the neighbours this node gossips with (leaves not included)."""
        return set(self.view.active)

    def serving(self) -> set[str]:
        """Connected peers this node serves (those holding a role in the room)."""
        return set(self._serving)

    def _targets(self) -> set[str]:
        """Who gets pushes, announcements and presence: neighbours and leaves that are
        members."""
        peers = self.view.active | self.leaves if self.leaves else self.view.active
        return peers & self._serving

    def _emit(self, event: Event) -> None:
        if len(self._events) >= self.config.max_events:
            self._events.popleft()
            self.stats.events_dropped += 1
        self._events.append(event)

    def _send(self, peer: str, msg: Message) -> None:
        channel = PRESENCE if isinstance(msg, Presence) else SYNC
        self._enqueue(peer, channel, encode_frame(msg), type(msg).__name__)

    def _enqueue(self, peer: str, channel: str, frame: bytes, kind: str) -> None:
        size = len(frame)
        used = self._out_bytes.get(peer, 0)
        if used + size > self.config.max_outbox_bytes:
            # Anti-entropy repairs whatever a full outbox drops.
            self.stats.frames_dropped_outbox += 1
            return
        self._out_bytes[peer] = used + size
        self._out.append((peer, channel, frame))
        st = self.stats
        st.frames_out += 1
        st.bytes_out += size
        st.bytes_out_by_kind[kind] = st.bytes_out_by_kind.get(kind, 0) + size

    def _push(self, peer: str, data: bytes) -> None:
        self._pushq.setdefault(peer, []).append(data)

    def hold_changes(self) -> None:
        """Keep changes queued for neighbours instead of framing them after each input,
        until :meth:`release_changes` (a driver does this for one turn of its loop, so the
        changes of many inputs leave in few ``Changes`` frames). Nests."""
        self._held += 1

    def release_changes(self) -> None:
        """End one :meth:`hold_changes`; the last one frames what was held."""
        self._held = max(0, self._held - 1)
        self._flush_changes()

    def _flush_changes(self) -> None:
        if self._held > 0 or (not self._pushq and not self._pullq):
            return
        # The same batch usually goes to several neighbours (a push fans out): encode it once.
        encoded: dict[tuple[tuple[bytes, ...], bool, bool], tuple[bytes, int]] = {}
        for queue, push in ((self._pushq, True), (self._pullq, False)):
            for peer, datas in queue.items():
                batch: list[bytes] = []
                size = 0
                for data in datas:
                    if batch and size + len(data) > self.config.frame_target_bytes:
                        self._send_changes(peer, batch, push, encoded)
                        batch, size = [], 0
                    batch.append(data)
                    size += len(data) + 5
                if batch:
                    self._send_changes(peer, batch, push, encoded)
            queue.clear()

    def _send_changes(self, peer: str, batch: list[bytes], push: bool,
                      encoded: dict[tuple[tuple[bytes, ...], bool, bool], tuple[bytes, int]]
                      ) -> None:
        kind = "Changes.push" if push else "Changes.pull"
        self.stats.changes_out += len(batch)
        compact = peer in self.compact_peers
        key = (tuple(batch), push, compact)
        got = encoded.get(key)
        if got is None:
            datas = tuple(compact_change(d) for d in batch) if compact else key[0]
            got = encoded[key] = (encode_frame(Changes(self.room_id, datas, push)),
                                  sum(map(is_compact, datas)) if compact else 0)
        frame, n_compact = got
        if n_compact:
            self._count_compact("sent", n_compact)
        self._enqueue(peer, SYNC, frame, kind)

    def _count_compact(self, what: str, n: int = 1) -> None:
        c = self.stats.compact
        c[what] = c.get(what, 0) + n

    # ------------------------------------------------------------------ links

    def introduce(self, peers: Iterable[str], now: float) -> None:
        """Tell the overlay about peers it may link to (bootstrap list, discovery)."""
        view = self.view
        for peer in peers:
            if peer != self.me and not self.scores.is_banned(peer, now):
                if peer not in view.active and peer not in view.passive:
                    view.alarm(now)  # a peer we did not know: groups may be meeting
                view.add_passive(peer)
        view.next_repair = min(view.next_repair, now)

    def connect(self, peer: str, now: float, *, leaf: bool = False,
                compact: bool = False) -> None:
        """A link to ``peer`` is up (both data channels open, identity checked).

        ``leaf``: serve ``peer`` outside the partial view (a client of this node): it is
        always accepted and gets everything, but is never a neighbour for the overlay.
        ``compact``: its hello lists ``protocol.compact.COMPACT_VERSION``, so changes go to
        it in the compact form (and it may be asked for changes by prefix)."""
        if peer == self.me or peer in self.connected:
            return
        if self.scores.is_banned(peer, now):
            self._emit(DisconnectRequest(peer, "banned"))
            return
        self.connected.add(peer)
        if compact:
            self.compact_peers.add(peer)
        self.scores.add(peer, now)
        self._member_self = self._role_of_self() != "none"
        if self._is_member(peer):
            self._serving.add(peer)
        if leaf:
            self.leaves.add(peer)
            self.presence.set_leaf(peer, self._peer_keys.get(peer))
            self._accepted(peer, now)
            self._flush_changes()
            return
        alone = not self.view.active
        if self.view.on_connect(peer, now):
            if alone:
                # No other neighbour: JOIN (a full peer takes us anyway and walks us in).
                self._send(peer, ForwardJoin(self.room_id, self.me, self.config.forward_join_ttl))
            self._accepted(peer, now)
        if self.next_anti_entropy is None:
            self.next_anti_entropy = now + self._ae_interval()
        self._flush_changes()

    def _accepted(self, peer: str, now: float) -> None:
        """``peer`` became a neighbour or leaf (or, already one, a member): start syncing."""
        if self._interest is not None:
            self._send(peer, self._interest)  # what presence we want from it
        if peer in self._serving:
            self._send(peer, self._heads(reply=True))
            for seen in self.presence.seen.values():
                self.presence.enqueue(seen.msg, lambda: {peer}, None, now)
        elif not self._member_self:
            # We are joining: ask to be served, even by a host we do not know as a member.
            self._send(peer, self._heads(reply=True))

    # ------------------------------------------------------------------ access

    def _role_of_self(self) -> str:
        return self.replica.role_of(self.identity.public_key)

    def _is_member(self, peer: str) -> bool:
        if peer not in self._peer_keys:
            try:
                self._peer_keys[peer] = public_key_from_peer_id(peer)
            except ValueError:
                self._peer_keys[peer] = None  # not a PeerID: never a member
        key = self._peer_keys[peer]
        return key is not None and self.replica.role_of(key) != "none"

    def _review_access(self, now: float) -> None:
        """Roles may have changed: serve peers that became members, stop serving those
        that lost their role (see the module docstring)."""
        self._roles_reviewed = self.replica.roles_version
        self._member_self = self._role_of_self() != "none"
        for peer in sorted(self.connected):
            member = self._is_member(peer)
            if member and peer not in self._serving:
                self._serving.add(peer)
                if peer in self.leaves or peer in self.view.active:
                    self._accepted(peer, now)
            elif not member and peer in self._serving:
                self._serving.discard(peer)
                self._stop_serving(peer)

    def _stop_serving(self, peer: str) -> None:
        """Drop everything queued for a peer that is no longer served."""
        self._pushq.pop(peer, None)
        self._pullq.pop(peer, None)
        self._reads.finish(peer)
        self.presence.forget_peer(peer)
        self.tree.announce.pop(peer, None)
        self._out = [f for f in self._out if f[0] != peer]
        self._out_bytes.pop(peer, None)

    def _refuse(self, peer: str, reason: RefusalReason, count: int, now: float, *,
                score: bool = True) -> None:
        st = self.stats
        st.refused[reason.value] = st.refused.get(reason.value, 0) + count
        self._emit(RequestRefused(peer, reason, count, now))
        if reason is RefusalReason.NOT_A_MEMBER and score:
            self._penalize(peer, "not_a_member", now)

    def disconnect(self, peer: str, now: float) -> None:
        """The link to ``peer`` is down."""
        self.connected.discard(peer)
        if peer in self.leaves:
            self.leaves.discard(peer)
        else:
            self.view.on_disconnect(peer, now)
        self._forget(peer)

    def connect_failed(self, peer: str, now: float) -> None:
        """A link asked for with ``ConnectRequest`` could not be opened."""
        self.view.on_connect_failed(peer)

    def _forget(self, peer: str) -> None:
        self._serving.discard(peer)
        self._peer_keys.pop(peer, None)
        self.replies.forget(peer)
        self.tree.forget_peer(peer)
        self.presence.forget_link(peer)
        self.scores.remove(peer)
        self._pushq.pop(peer, None)
        self._pullq.pop(peer, None)
        self._reads.finish(peer)
        self._want_at.pop(peer, None)
        self._heads_at.pop(peer, None)
        self.compact_peers.discard(peer)
        self._prefix_want_at.pop(peer, None)
        self.compact_hold.forget_peer(peer)

    # ------------------------------------------------------------------ anti-entropy

    def _heads(self, reply: bool) -> Heads:
        vv = tuple(sorted(self.replica.version_vector().items()))
        bloom = b""
        if self.replica.equivocations:
            # Version vectors are ambiguous once an author has equivocated: add a Bloom filter
            # of recent change IDs (Kleppmann and Howard's reconciliation).
            recent = self.replica.recent_changes(self.config.bloom_recent)
            bloom = BloomFilter.build(recent, self.rng.randbytes(4)).encode()
        return Heads(self.room_id, tuple(self.replica.heads()), vv, bloom, reply)

    def _ae_interval(self) -> float:
        return self.config.anti_entropy_interval_s * (0.75 + 0.5 * self.rng.random())

    # ------------------------------------------------------------------ defence

    def _broken_promise(self, peer: str, now: float) -> None:
        if peer in self.connected:
            self._penalize(peer, "broken_promise", now)

    def _penalize(self, peer: str, reason: str, now: float) -> None:
        score, cut = self.scores.penalize(peer, reason, now)
        self._emit(PeerMisbehaved(peer, reason, score, now))
        if cut:
            self.connected.discard(peer)
            self.leaves.discard(peer)
            self.view.forget(peer)
            self._forget(peer)
            self._stop_serving(peer)
            self._emit(DisconnectRequest(peer, "misbehaving"))

    def _check_equivocations(self, now: float) -> None:
        evidence = self.replica.equivocations
        for e in evidence[self._equivocations_seen:]:
            author = peer_id_from_public_key(e.author)
            self._emit(EquivocationDetected(author, e.seq, e.change_ids, now))
            if author in self.connected:
                self._penalize(author, "equivocation", now)
        self._equivocations_seen = len(evidence)
