"""``RoomOverlay``: how one node takes part in one room's mesh. Sans-I/O.

It composes a HyParView partial view (``membership``), per-author Plumtree broadcast
(``broadcast``), anti-entropy by heads and Bloom filters (here), presence (``presence``) and
per-peer defence (``scoring``) around a ``SceneReplica``. The driver feeds it links, frames and
time, and carries out what it asks for:

    overlay.connect(peer_id, now, compact=...) / disconnect(peer_id, now) / connect_failed(...)
    overlay.receive(peer_id, channel, frame, now)
    overlay.submit_change(change_bytes, now); overlay.submit_presence(fields, now)
    overlay.handle_timer(now) when now >= overlay.get_timer()
    overlay.frames_to_send() -> [(peer_id, channel, frame)]   channel: "sync" | "presence"
    overlay.next_event() -> Event | None

Two clocks, as in aioquic. Every ``now`` passed in is MONOTONIC time (seconds from any
origin): timer deadlines, rate limits, scores and budgets use it, so a wall clock stepped back
or forward (NTP, a board without a real-time clock, a restored VM) never stalls or rushes
them. Wall time (the scene's hybrid logical clock: the horizon a remote change's stamp is
checked against, the stamps of presence updates) comes from ``wall_clock``, a source the driver
owns and injects at construction. A simulator or test may give both the same virtual clock.

Read access (who is served). A peer linked to the room is served (changes pushed or pulled,
``IHave``, ``Heads``, presence) only while it holds a role in the room (viewer or above; hosting
nodes are members with a role), judged by this replica's current roles:

    peer's role   we send it                    its Heads / Want / Graft
    none          membership frames only (*)    refused (``RequestRefused``, NOT_A_MEMBER), scored
    viewer+       everything                    answered, within its reply budget

(*) and, while this node holds no role itself (it is joining with an invite), its own
``Heads``, so that a host it does not yet know as a member can serve it. Changes from any peer
are accepted (they are signed; the replica checks their authors). When a grant makes a linked
peer a member, it is served at once (``Heads`` then sync, presence); when it loses its role,
nothing more is sent to it, queued frames included. Peers' roles are reviewed after a batch of
applied changes only if the replica's ``roles_version`` moved since the last review (a
plain scene change leaves it alone).
"""

import random
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from meshnode.crdt import APPLIED, BUFFERED, DUPLICATE, REJECTED, ApplyResult, SceneReplica
from meshnode.crdt.results import SENDER_BLAMELESS
from meshnode.identity import (
    Identity,
    peer_id_from_public_key,
    public_key_from_peer_id,
    verify_signature,
)
from meshnode.overlay.broadcast import Broadcast
from meshnode.overlay.budget import IngressQuota, ReplyBudget
from meshnode.overlay.compact_hold import CompactHold
from meshnode.overlay.config import OverlayConfig
from meshnode.overlay.events import (
    ChangeApplied,
    ChangeRedelivered,
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
from meshnode.overlay.history_reads import HistoryReads, PendingReply
from meshnode.overlay.membership import PartialView
from meshnode.overlay.presence import PresenceTable
from meshnode.overlay.presence_interest import Interest
from meshnode.overlay.scoring import PeerScores
from meshnode.overlay.sealed_presence import open_presence, seal_presence
from protocol.bloom import BloomFilter
from protocol.change import change_id
from protocol.compact import MALFORMED as COMPACT_MALFORMED
from protocol.compact import MARKER as COMPACT_MARKER
from protocol.compact import (
    PREFIX_BYTES,
    Expanded,
    MissingDeps,
    compact_change,
    expand_change,
    is_compact,
)
from protocol.compact_cache import shared_expansion
from protocol.errors import DecodeError
from protocol.frames import (
    Changes,
    Disconnect,
    ForwardJoin,
    Graft,
    Heads,
    IHave,
    Message,
    Presence,
    PresenceInterest,
    Prune,
    Shuffle,
    ShuffleReply,
    Snapshot,
    Want,
    WantPrefix,
    check_presence_interest,
    decode_frame,
    encode_frame,
    make_presence,
    presence_payload,
)
from protocol.values import InvalidValue, normalize_value

SYNC = "sync"
PRESENCE = "presence"
MAX_WANT = 256
MAX_PULLED = 4_096
MAX_PREFIX_MATCHES = 4  # changes sent for one prefix of a WantPrefix (a collision: 2 at most)
_CHANGE_PREFIX = b"\x95\xc4\x20"  # a change is [author: bin8 of 32 bytes, seq, deps, hlc, ops]
# Framing a change in a Changes frame adds at most this much (its bin header, and a frame's
# header when a large change goes alone): charged with each reply, so the budget bounds bytes
# on the wire, not just change bytes.
_REPLY_OVERHEAD = 48


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


def _note_in_frame(in_frame: dict[bytes, list[bytes]], data: bytes) -> bytes:
    """Let the changes after ``data`` in its frame resolve its ID by prefix; the ID."""
    cid = change_id(data)
    in_frame.setdefault(cid[:PREFIX_BYTES], []).append(cid)
    return cid


class RoomOverlay:
    """One node's part in one room's overlay; see the module docstring for the surface."""

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

    # ------------------------------------------------------------------ inputs

    def receive(self, peer: str, channel: str, frame: bytes, now: float) -> None:
        """A frame arrived from ``peer``. Never raises on bad input; misbehaviour is scored."""
        if peer not in self.connected:
            return
        self.stats.frames_in += 1
        if not self.scores.admit(peer, len(frame), now):
            self.stats.frames_dropped_rate += 1
            self._penalize(peer, "flood", now)
            return
        self.replies.credit(peer, len(frame), now)
        try:
            msg = decode_frame(frame, self.replica.limits)
        except DecodeError:
            self._penalize(peer, "garbage", now)
            return
        if msg.room_id != self.room_id:
            self._penalize(peer, "wrong_room", now)
            return
        try:
            self._dispatch(peer, msg, now)
        except DecodeError:  # a nested structure (e.g. a Bloom filter) was malformed
            self._penalize(peer, "garbage", now)
        if peer in self.view.pending:
            # A held link whose first frame was not a JOIN: our view is full, refuse it.
            self.view.reject_pending(peer)
        elif peer in self.view.trials and not isinstance(msg, Disconnect):
            self.view.confirm(peer, now)  # it took our rewire (membership.py)
        self._flush_changes()

    def _dispatch(self, peer: str, msg: Message, now: float) -> None:
        if isinstance(msg, Changes):
            self._on_changes(peer, msg, now)
        elif isinstance(msg, IHave):
            self.tree.on_ihave(peer, msg.ids, self._known, now)
        elif isinstance(msg, Graft | Want):
            self._answer_want(peer, msg.ids, isinstance(msg, Graft), now)
        elif isinstance(msg, WantPrefix):
            # By prefix: every change we hold that matches (a collision is the asker's to
            # sort out, by the signature), a few at most per prefix.
            ids: list[bytes] = []
            for p in msg.prefixes[:MAX_WANT]:
                ids += self.replica.changes_by_prefix(p)[:MAX_PREFIX_MATCHES]
            self._count_compact("prefixes_answered", len(msg.prefixes[:MAX_WANT]))
            self._answer_want(peer, tuple(ids), False, now)
        elif isinstance(msg, Prune):
            self.tree.on_prune(peer, msg.origins)
        elif isinstance(msg, Heads):
            self._on_heads(peer, msg, now)
        elif isinstance(msg, Presence):
            self._on_presence(peer, msg, now)
        elif isinstance(msg, PresenceInterest):
            # It can only lower what we send it (budget_for caps it), so it is taken from
            # any linked peer, member or not.
            self.presence.set_interest(
                peer, Interest(msg.msgs_per_s, msg.bytes_per_s, msg.view_radius), now)
        elif peer in self.leaves and isinstance(msg, ForwardJoin | Shuffle | ShuffleReply
                                                   | Disconnect):
            pass  # a leaf takes no part in membership
        elif isinstance(msg, ForwardJoin):
            if msg.peer == peer:
                if self.view.on_join(peer, now, walk=msg.ttl > 0):
                    self._accepted(peer, now)
            else:
                self.view.on_forward_join(peer, msg, now)
        elif isinstance(msg, Shuffle):
            self.view.on_shuffle(peer, msg)
        elif isinstance(msg, ShuffleReply):
            self.view.on_shuffle_reply(msg)
        elif isinstance(msg, Disconnect):
            self.view.on_disconnect_msg(peer, msg, now)
            self._emit(DisconnectRequest(peer, "dropped_by_peer"))
        elif isinstance(msg, Snapshot):
            pass  # snapshots are requested by drivers for late joiners, not gossiped

    def _answer_want(self, peer: str, want: tuple[bytes, ...], graft: bool, now: float) -> None:
        if peer not in self._serving:
            self._refuse(peer, RefusalReason.NOT_A_MEMBER, len(want), now)
            return
        if self._deferring():
            self._serve(peer, list(want[:MAX_WANT]), graft, now)
            return
        for k, cid in enumerate(want[:MAX_WANT]):
            data = self.replica.change_bytes(cid)
            if data is None:
                continue
            if not self._may_reply(peer, len(data) + _REPLY_OVERHEAD, now):
                self._refuse(peer, RefusalReason.REPLY_BUDGET, len(want) - k, now)
                break
            if graft:
                author = self.replica.change_author(cid)
                if author is not None:
                    self.tree.on_graft(peer, author)
            self._pullq.setdefault(peer, []).append(data)

    def _known(self, cid: bytes) -> bool:
        return self.replica.has_change(cid) or self.replica.is_buffered(cid)

    def _within_quota(self, peer: str, datas: Sequence[bytes], now: float,
                      ids: Sequence[bytes | None] | None
                      ) -> tuple[list[bytes], list[bytes | None]]:
        """The changes of ``datas`` whose authors are within their ingress quota (already
        known changes and malformed ones pass: the replica sorts those out), and the ID of
        each (hashed here, or taken from ``ids``: this overlay's own hashes of those very
        bytes; None where it was not needed), which the replica then need not hash again."""
        kept: list[bytes] = []
        kept_ids: list[bytes | None] = []
        over = 0
        for i, data in enumerate(datas):
            cid = None
            if type(data) is bytes and len(data) > 35 and data.startswith(_CHANGE_PREFIX):
                cid = ids[i] if ids is not None else None
                if cid is None:
                    cid = change_id(data)
                if not self._known(cid) and not self.quota.admit(data[3:35], len(data), now):
                    over += 1
                    continue
            kept.append(data)
            kept_ids.append(cid)
        if over:
            self._refuse(peer, RefusalReason.QUOTA, over, now)
        return kept, kept_ids

    def _expand(self, peer: str, datas: tuple[bytes, ...], now: float
                ) -> tuple[list[bytes], list[bytes | None] | None]:
        """The changes of a frame in canonical form: compact ones rebuilt from our graph
        and from the changes before them in the frame (a pulled batch names its own
        changes as deps; ``protocol.compact``); those whose deps we lack are held and asked
        for by prefix, those that cannot be rebuilt are refused (and left out). With them,
        the IDs hashed on the way (None where none were; see ``_within_quota``)."""
        last = -1  # the frame's last compact change: the changes before it are noted
        for i, d in enumerate(datas):
            if type(d) is bytes and d and d[0] == COMPACT_MARKER:  # is_compact, inline
                last = i
        if last < 0:
            return list(datas), None
        out: list[bytes] = []
        out_ids: list[bytes | None] = []
        checks = self.config.compact_checks_per_frame
        refused: dict[RefusalReason, int] = {}
        wanted = False
        received = 0
        in_frame: dict[bytes, list[bytes]] = {}  # prefix -> IDs of the frame's changes so far
        by_prefix = self.replica.changes_by_prefix
        hold_alone = self.replica.hold_alone
        resolve_here: Callable[[bytes], list[bytes]] = by_prefix
        alone_here: Callable[[Sequence[bytes]], bool] = hold_alone
        if last:  # changes before the last compact one are noted: they resolve prefixes too

            def resolve(prefix: bytes) -> list[bytes]:
                found = by_prefix(prefix)
                more = in_frame.get(prefix)
                return found + more if more else found

            def alone(ids: Sequence[bytes]) -> bool:  # resolve(c[:PREFIX_BYTES]) == [c]
                return hold_alone(ids) and not any(c[:PREFIX_BYTES] in in_frame for c in ids)

            resolve_here, alone_here = resolve, alone
        limits = self.replica.limits

        held = self.replica.held_change
        for i, data in enumerate(datas):
            if type(data) is not bytes or not data or data[0] != COMPACT_MARKER:
                out.append(data)
                out_ids.append(_note_in_frame(in_frame, data)
                               if type(data) is bytes and i < last else None)
                continue
            received += 1
            shared = shared_expansion(data, limits, alone_here)
            if shared is not None:  # another replica of this process rebuilt the same bytes
                out.append(shared)
                out_ids.append(_note_in_frame(in_frame, shared) if i < last else None)
                continue
            got = expand_change(data, resolve_here, room_id=self.room_id, verify=verify_signature,
                                limits=limits, max_checks=checks, held=held)
            if isinstance(got, Expanded):
                checks -= got.tried
                if got.tried:
                    self._count_compact("ambiguous")
                out.append(got.data)
                # Only a later change of the frame may name it.
                out_ids.append(_note_in_frame(in_frame, got.data) if i < last else None)
            elif isinstance(got, MissingDeps):
                evicted = self.compact_hold.evicted
                if self.compact_hold.hold(data, peer, got.prefixes):
                    self._count_compact("held")
                wanted = True
                if self.compact_hold.evicted > evicted:
                    n = self.compact_hold.evicted - evicted
                    self._count_compact("evicted", n)
                    full = RefusalReason.COMPACT_HOLD_FULL
                    refused[full] = refused.get(full, 0) + n
            else:
                reason = RefusalReason(got.reason)
                refused[reason] = refused.get(reason, 0) + 1
        c = self.stats.compact
        c["received"] = c.get("received", 0) + received
        for reason, n in refused.items():
            self._refuse(peer, reason, n, now, score=False)
        if refused and refused.get(RefusalReason(COMPACT_MALFORMED)):
            self._penalize(peer, "invalid_change", now)
        if wanted:
            self._want_prefixes(peer, now)
        return out, out_ids

    def _want_prefixes(self, peer: str, now: float) -> None:
        """Ask ``peer`` for the deps its held compact changes name by prefix."""
        last = self._prefix_want_at.get(peer)
        if last is not None and now - last < self.config.want_interval_s:
            return
        prefixes = self.compact_hold.wanted(peer)[:MAX_WANT]
        if prefixes and peer in self.compact_peers:
            self._prefix_want_at[peer] = now
            self._count_compact("prefixes_wanted", len(prefixes))
            self._send(peer, WantPrefix(self.room_id, tuple(prefixes)))

    def _on_changes(self, peer: str, msg: Changes, now: float) -> None:
        datas, ids = self._expand(peer, msg.changes, now)
        applied = self._take_changes(peer, datas, msg.push, now, ids)
        while applied and self.compact_hold:
            # Changes held for their deps that the ones just applied may complete: in a
            # loop, not recursion (a chain of held changes can be long).
            by_peer: dict[str, list[bytes]] = {}
            for origin, data in self.compact_hold.release(applied):
                by_peer.setdefault(origin, []).append(data)
            applied = []
            for origin, held in by_peer.items():
                if origin not in self.connected:
                    continue
                datas, ids = self._expand(origin, tuple(held), now)
                self._count_compact("completed", len(datas))
                applied += self._take_changes(origin, datas, False, now, ids)

    def _take_changes(self, peer: str, changes: list[bytes], push: bool,
                      now: float, ids: list[bytes | None] | None = None) -> list[bytes]:
        """Apply canonical changes from ``peer`` (``ids``: this overlay's own hashes of
        some of them, from ``_expand``); the IDs of every change applied."""
        datas, known = self._within_quota(peer, changes, now, ids)
        results = self.replica.apply_many(datas, self.wall_clock(), mono=now, ids=known)
        if (self.replica.roles_version != self._roles_reviewed
                and any(res.status == APPLIED for res in results)):
            # Before spreading: a grant just applied decides who gets these changes. Only
            # if roles may have moved since the last review: connect() judges a new peer
            # with the same roles, so nothing else can make a review change anything.
            self._review_access(now)
        st = self.stats
        if push:
            st.payload_pushed_in += len(results)
        else:
            st.payload_pulled_in += len(results)
        wants = False
        applied: list[bytes] = []
        for res in results:
            if res.change_id is not None and res.status != REJECTED:
                self.tree.peer_has(peer, res.change_id)
            if res.status == APPLIED:
                applied += res.applied
                for cid in res.applied:
                    if not push:
                        self._pulled[cid] = None
                        if len(self._pulled) > MAX_PULLED:
                            self._pulled.popitem(last=False)
                    self._spread(cid, peer, now)
            elif res.status == DUPLICATE:
                st.duplicates_in += 1
                dup = res.change_id
                if dup is not None and peer in self.leaves:
                    # A client redelivering after a failover: it waits for our Ack.
                    self._emit(ChangeRedelivered(dup, peer, now))
                if push and dup is not None:
                    if self._pulled.pop(dup, False) is None:
                        continue  # pulled before its push arrived: the pusher is our parent
                    author = self.replica.change_author(dup)
                    if author is not None:
                        self.tree.on_duplicate_push(peer, author)
            elif res.status == BUFFERED:
                wants = True
            elif res.status == REJECTED and res.reason not in SENDER_BLAMELESS:
                self._penalize(peer, "invalid_change", now)
                if peer not in self.connected:
                    break
        if wants:
            self._want_missing(peer, now)
        self._check_equivocations(now)
        return applied

    def _spread(self, cid: bytes, source: str | None, now: float) -> None:
        data = self.replica.change_bytes(cid)
        author = self.replica.change_author(cid)
        if data is None or author is None:
            return
        self.stats.changes_applied += 1
        self.tree.broadcast(cid, author, data, source, self._targets(), now)
        self._emit(ChangeApplied(cid, source, now))

    def _want_missing(self, peer: str, now: float) -> None:
        last = self._want_at.get(peer)
        if last is not None and now - last < self.config.want_interval_s:
            return
        missing = sorted(self.replica.missing_deps())[:MAX_WANT]
        if missing:
            self._want_at[peer] = now
            self._send(peer, Want(self.room_id, tuple(missing)))

    def _heads(self, reply: bool) -> Heads:
        vv = tuple(sorted(self.replica.version_vector().items()))
        bloom = b""
        if self.replica.equivocations:
            # Version vectors are ambiguous once an author has equivocated: add a Bloom filter
            # of recent change IDs (Kleppmann and Howard's reconciliation).
            recent = self.replica.recent_changes(self.config.bloom_recent)
            bloom = BloomFilter.build(recent, self.rng.randbytes(4)).encode()
        return Heads(self.room_id, tuple(self.replica.heads()), vv, bloom, reply)

    def _may_reply(self, peer: str, size: int, now: float) -> bool:
        """Pay ``size`` bytes of reply to ``peer`` from its reply budget, so that requests
        (a few bytes) cannot make this node send much more than the peer sent
        (amplification; see ``overlay/budget.py``)."""
        if not self.replies.take(peer, size, now):
            return False
        self.stats.reply_bytes_out += size
        return True

    def _on_heads(self, peer: str, msg: Heads, now: float) -> None:
        last = self._heads_at.get(peer)
        if last is not None and now - last < self.config.heads_min_interval_s:
            return  # answered recently; anti-entropy is periodic, so nothing is lost
        unknown = not all(self.replica.has_change(h) for h in msg.heads)
        if unknown and msg.reply:
            self.view.on_news(peer, now)  # a heal? (membership.py: rewiring)
        if peer not in self._serving:
            if self._member_self:
                # Counted, not scored: every joiner says its heads before its grant is
                # applied. Not marked as answered either, so the heads it sends once it is
                # a member are answered at once, not after the next anti-entropy round.
                self._refuse(peer, RefusalReason.NOT_A_MEMBER, 1, now, score=False)
            elif unknown and msg.reply:
                # We are joining and hold nothing to protect: answer with our heads, so
                # that a peer able to serve us does.
                self._heads_at[peer] = now
                self._reply_heads(peer, now)
            return
        self._heads_at[peer] = now
        if self._deferring():
            ids = self.replica.change_ids_since(msg.heads, dict(msg.vv))
            if unknown and msg.bloom:  # as below
                bloom = BloomFilter.decode(msg.bloom)
                ids = [c for c in ids if c not in bloom]
            if ids:
                self._serve(peer, ids, False, now)
            if unknown and msg.reply:
                self._reply_heads(peer, now)
            return
        missing = self.replica.changes_since(msg.heads, dict(msg.vv))
        if unknown and msg.bloom:
            # changes_since over-approximates what they lack when the room has equivocations;
            # their Bloom filter removes most of what they already have.
            bloom = BloomFilter.decode(msg.bloom)
            missing = [c for c in missing if change_id(c) not in bloom]
        if missing:
            queue = self._pullq.setdefault(peer, [])
            for k, data in enumerate(missing):
                if not self._may_reply(peer, len(data) + _REPLY_OVERHEAD, now):
                    # The rest comes with a later round, as the budget refills.
                    self._refuse(peer, RefusalReason.REPLY_BUDGET, len(missing) - k, now)
                    break
                queue.append(data)
        if unknown and msg.reply:
            self._reply_heads(peer, now)

    # ------------------------------------------------------------------ old history

    def defer_history_reads(self) -> None:
        """Never read old change bytes from the replica's history source here: ask the
        driver for them instead (``HistoryWanted`` events, answered with ``history_loaded``;
        ``meshnode.overlay.history_reads``). For a driver whose history source is a store
        it must not read on its event loop."""
        self._defer_history = True

    def history_loaded(self, read: int, data: Mapping[bytes, bytes], now: float) -> None:
        """The driver read what ``HistoryWanted`` ``read`` asked for: change ID -> bytes
        (those the store lacks left out). A read for a reply no longer wanted is ignored."""
        reply = self._reads.loaded(read, dict(data))
        if reply is not None:
            self._advance(reply, now)
            self._flush_changes()

    def history_reads_pending(self) -> int:
        """How many replies wait for old history (a gauge for the driver's metrics)."""
        return len(self._reads)

    def _deferring(self) -> bool:
        return self._defer_history and self.replica.history_elsewhere

    def _serve(self, peer: str, ids: list[bytes], graft: bool, now: float) -> None:
        """Answer ``peer`` with these changes, in order, reading old bytes through the
        driver (``defer_history_reads``)."""
        ids = list(dict.fromkeys(ids))  # a Want may name a change twice
        have, elsewhere = self.replica.bytes_in_memory(ids)
        if not elsewhere:  # all in memory: answered at once, beside any reply under way
            self._advance(PendingReply(peer, deque(c for c in ids if c in have), have, graft),
                          now)
        elif self._reads.busy(peer, now):
            self._refuse(peer, RefusalReason.HISTORY_BUSY, len(ids), now, score=False)
        else:
            held = set(elsewhere)
            ids = [c for c in ids if c in have or c in held]  # unknown IDs: not served
            self._advance(self._reads.start(peer, ids, have, graft), now)

    def _advance(self, reply: PendingReply, now: float) -> None:
        """Queue the reply's changes until one whose bytes must be read first (then ask
        the driver for the next chunk) or the peer's reply budget runs out."""
        peer, ids, have = reply.peer, reply.ids, reply.have
        queue = self._pullq.setdefault(peer, [])
        while ids:
            cid = ids[0]
            data = have.pop(cid, None)
            if data is None:
                if cid in reply.asked:  # read, and the store has it not: not served
                    ids.popleft()
                    continue
                read, chunk = self._reads.next_read(reply, now)
                self._emit(HistoryWanted(read, tuple(chunk)))
                return
            if not self._may_reply(peer, len(data) + _REPLY_OVERHEAD, now):
                self._refuse(peer, RefusalReason.REPLY_BUDGET, len(ids), now)
                break
            if reply.graft:
                author = self.replica.change_author(cid)
                if author is not None:
                    self.tree.on_graft(peer, author)
            queue.append(data)
            ids.popleft()
        self._reads.finish(peer, reply)

    def _reply_heads(self, peer: str, now: float) -> None:
        heads = encode_frame(self._heads(reply=False))
        if self._may_reply(peer, len(heads), now):
            self._enqueue(peer, SYNC, heads, "Heads")
        else:
            self._refuse(peer, RefusalReason.REPLY_BUDGET, 1, now)

    def _on_presence(self, peer: str, msg: Presence, now: float) -> None:
        seen = self.presence.seen.get(msg.participant)
        if seen is not None and msg.seq <= seen.msg.seq:
            return  # a copy over another path, or stale: normal on a mesh
        if self.replica.role_of(msg.participant) == "none":
            # Not (yet) a member here: the grant of someone just admitted may still be on
            # its way, so the relay is not at fault. Drop it; the next update will pass.
            self.stats.presence_from_strangers += 1
            return
        payload = presence_payload(self.room_id, msg.body)
        if not verify_signature(msg.participant, msg.signature, payload):
            self._penalize(peer, "bad_presence", now)
            return
        if self.presence.accept(msg, now, peer):
            # Presence is latest-wins by the participant's seq, never by our clocks.
            who = peer_id_from_public_key(msg.participant)
            fields = msg.fields
            if self.replica.private:  # relayed blind; shown only if we hold the key
                fields = open_presence(self.replica, msg.participant, msg.seq, fields,
                                       self.replica.limits) or {}
            self._emit(PresenceUpdated(who, fields, now))
            self.presence.enqueue(msg, self._targets, peer, now)

    # ------------------------------------------------------------------ local input

    def submit_change(self, data: bytes, now: float) -> ApplyResult:
        """Spread a local change: one this replica just committed, or one from a client."""
        cid = change_id(data)
        if self.replica.has_change(cid):
            self._review_access(now)  # it may grant or revoke: decide who gets it first
            self._spread(cid, None, now)
            self._flush_changes()
            return ApplyResult(APPLIED, None, cid, (cid,))
        res = self.replica.apply_many([data], self.wall_clock(), mono=now, ids=[cid])[0]
        if res.status == APPLIED:
            self._review_access(now)
            for c in res.applied:
                self._spread(c, None, now)
        self._flush_changes()
        return res

    def submit_signed_presence(self, msg: Presence, now: float) -> str | None:
        """Publish a presence update signed by someone else: a person whose browser this node
        serves (``meshnode.web.people``). Judged as one from a link would be (member,
        signature, newer seq, the participant's rate), but a refusal costs no peer score:
        the caller refuses it to its page. None if taken, else the reason (``not_a_member``,
        ``bad_signature``, ``stale_or_rate_limited``)."""
        if msg.room_id != self.room_id:
            return "wrong_room"
        if self.replica.role_of(msg.participant) == "none":
            return "not_a_member"
        if not verify_signature(msg.participant, msg.signature,
                                presence_payload(self.room_id, msg.body)):
            return "bad_signature"
        if not self.presence.accept(msg, now):
            return "stale_or_rate_limited"
        fields = msg.fields
        if self.replica.private:  # a person's sealed presence: shown here as opened
            fields = open_presence(self.replica, msg.participant, msg.seq, fields,
                                   self.replica.limits) or {}
        self._emit(PresenceUpdated(peer_id_from_public_key(msg.participant), fields, now))
        self.presence.enqueue(msg, self._targets, None, now)
        return None

    def set_presence_interest(self, msgs_per_s: float = 0.0, bytes_per_s: float = 0.0,
                              view_radius: float = 0.0) -> None:
        """State what presence this participant wants from the peers it is linked to (a
        client: from its node): at most ``msgs_per_s`` updates and ``bytes_per_s`` bytes a
        second, full detail within ``view_radius`` of its own position; 0: the peer's
        default. Sent now and to every peer linked later (a failover). Raises
        ``protocol.errors.BadPresenceInterest`` (a ``ValueError``; ``reason``
        ``bad_presence_interest``) on a value out of range (``check_presence_interest``)."""
        m, b, r = check_presence_interest(msgs_per_s, bytes_per_s, view_radius)
        self._interest = PresenceInterest(self.room_id, m, b, r)
        for peer in sorted(self.connected):
            self._send(peer, self._interest)

    def presence_sent(self) -> dict[str, tuple[int, int]]:
        """Per recipient now linked: presence updates and frame bytes sent to it so far
        (counted while it is served)."""
        return {peer: (r.sent_msgs, r.sent_bytes)
                for peer, r in sorted(self.presence.recipients.items())}

    def submit_presence(self, fields: dict[str, Any], now: float) -> bool:
        """Publish the local participant's presence (e.g. ``{"position": [x, y, z]}``).

        Returns False if it was dropped by the local rate limit, or not sent because this
        replica holds no presence key of a private room.
        """
        try:
            value = normalize_value(fields, self.replica.limits)
        except InvalidValue as err:
            raise ValueError(str(err)) from None
        if type(value) is not dict:
            raise TypeError("presence fields must be a mapping")
        # Wall-clock milliseconds, so a restarted participant's seq outruns its old one; +1
        # keeps it growing if the wall clock steps back.
        seq = max(self._presence_seq + 1, int(self.wall_clock() * 1000))
        if self.replica.private:
            # Sealed under the epoch's presence key; without one (a blind host, a reader
            # waiting for its key) nothing is published (meshnode.overlay.sealed_presence).
            sealed = seal_presence(self.replica, self.identity.public_key, seq, value,
                                   self.replica._random_bytes)
            if sealed is None:
                return False
            value = sealed
        msg = make_presence(self.room_id, self.identity.public_key, seq, value,
                            self.identity.sign)
        if not self.presence.accept(msg, now):
            return False
        self._presence_seq = seq
        self.presence.enqueue(msg, self._targets, None, now)
        return True

    # ------------------------------------------------------------------ time

    def _ae_interval(self) -> float:
        return self.config.anti_entropy_interval_s * (0.75 + 0.5 * self.rng.random())

    def handle_timer(self, now: float) -> None:
        """Do whatever is due: view upkeep, announcements, grafts, presence, anti-entropy."""
        self.view.tick(now)
        self.scores.expire_bans(now)
        self.quota.forget_idle(now)
        active = self.view.active
        targets = self._targets()
        self.tree.tick(now, self._known, targets, active | self.leaves)
        for peer, msg in self.presence.flush(now):
            # Encoded once for all its recipients (PresenceTable.frame_of).
            self._enqueue(peer, PRESENCE, self.presence.frame_of(msg), "Presence")
        for gone in self.presence.expire(now):
            self._emit(PresenceExpired(peer_id_from_public_key(gone), now))
        if self.next_anti_entropy is not None and now >= self.next_anti_entropy:
            self.next_anti_entropy = now + self._ae_interval()
            # Members only, unless we are joining (module docstring).
            asked = active & self._serving if self._member_self else active
            if asked:
                self._send(self.rng.choice(sorted(asked)), self._heads(reply=True))
        self._flush_changes()

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
