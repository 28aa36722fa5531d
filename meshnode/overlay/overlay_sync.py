"""``OverlaySync``: what a room overlay does with the frames its peers send.

A base of ``RoomOverlay`` (``meshnode.overlay.overlay`` describes the chain): ``receive`` and
the dispatch of each frame; changes pushed and pulled (compact ones rebuilt or held for their
deps, ingress quotas, applying, spreading, asking for missing deps); ``Want``/``Graft``/
``WantPrefix`` and ``Heads`` answered within each peer's reply budget (anti-entropy), reading
old history through the driver when it must (``defer_history_reads``); presence from peers.
"""

from collections import deque
from collections.abc import Callable, Mapping, Sequence

from meshnode.crdt import APPLIED, BUFFERED, DUPLICATE, REJECTED
from meshnode.crdt.results import SENDER_BLAMELESS
from meshnode.identity import peer_id_from_public_key, verify_signature
from meshnode.overlay.events import (
    ChangeApplied,
    ChangeRedelivered,
    DisconnectRequest,
    HistoryWanted,
    PresenceUpdated,
    RefusalReason,
)
from meshnode.overlay.history_reads import PendingReply
from meshnode.overlay.overlay_links import SYNC, OverlayLinks
from meshnode.overlay.presence_interest import Interest
from meshnode.overlay.sealed_presence import open_presence
from protocol.bloom import BloomFilter
from protocol.change import change_id
from protocol.compact import MALFORMED as COMPACT_MALFORMED
from protocol.compact import MARKER as COMPACT_MARKER
from protocol.compact import PREFIX_BYTES, Expanded, MissingDeps, expand_change
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
    decode_frame,
    encode_frame,
    presence_payload,
)

MAX_WANT = 256
MAX_PULLED = 4_096
MAX_PREFIX_MATCHES = 4  # changes sent for one prefix of a WantPrefix (a collision: 2 at most)
_CHANGE_PREFIX = b"\x95\xc4\x20"  # a change is [author: bin8 of 32 bytes, seq, deps, hlc, ops]
# Framing a change in a Changes frame adds at most this much (its bin header, and a frame's
# header when a large change goes alone): charged with each reply, so the budget bounds bytes
# on the wire, not just change bytes.
_REPLY_OVERHEAD = 48


def _note_in_frame(in_frame: dict[bytes, list[bytes]], data: bytes) -> bytes:
    """Let the changes after ``data`` in its frame resolve its ID by prefix; the ID."""
    cid = change_id(data)
    in_frame.setdefault(cid[:PREFIX_BYTES], []).append(cid)
    return cid


class OverlaySync(OverlayLinks):
    """How a room overlay answers its peers' frames (see the module docstring)."""

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
