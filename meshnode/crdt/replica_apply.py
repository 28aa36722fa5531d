"""``ReplicaApply``: taking in changes from peers and the store.

The entry points: ``apply``/``apply_many`` (peers' changes, bounded by the clock), ``replay``
(the node's own store) and ``judge_unsigned`` (a dry run); ``_apply_batch`` decodes, checks
signatures and the frontier, and routes each change to the dep buffer or to integration;
the rejection cache (``_reject``) and the release of buffered changes; the own-seq floor and
a few small queries. What one change does to the state, and rebuilding, are in
``ReplicaIntegrate`` (``meshnode.crdt.replica_integrate``), the class below this one. A base
of ``SceneReplica`` (``meshnode.crdt.replica`` describes the chain).
"""

from collections.abc import Iterable, Sequence

from meshnode.crdt.clock import hlc_from_seconds
from meshnode.crdt.graph import Waiting
from meshnode.crdt.ids import EntityId
from meshnode.crdt.replica_integrate import MAX_REBUILD_PASSES as MAX_REBUILD_PASSES
from meshnode.crdt.replica_integrate import ReplicaIntegrate
from meshnode.crdt.results import (
    APPLIED,
    BUFFERED,
    DUPLICATE,
    REJECTED,
    TRANSIENT_REASONS,
    ApplyResult,
    Rejected,
    ReplayFailure,
    ReplayReport,
)
from meshnode.crdt.roles import ROLE_NONE
from meshnode.crdt.tree import Stamp
from meshnode.identity import verify_signature
from protocol.change import Change, change_id, decode_change, signing_payload
from protocol.errors import DecodeError

Node = tuple[bytes, int]


class ReplicaApply(ReplicaIntegrate):
    """How a ``SceneReplica`` takes in changes (see the module docstring)."""

    # ------------------------------------------------------------------ applying changes

    def apply(self, data: object, now: float, *, mono: float | None = None) -> ApplyResult:
        """Offer one change from a peer (bytes). Never raises on bad input (not even on what
        is not bytes: typed ``object`` because compiled code checks argument types on entry):
        see ``ApplyResult``.

        ``now`` is wall-clock time (seconds): a change stamped more than ``max_clock_skew_s``
        after it is refused as ``future_timestamp`` (transient). ``mono`` is a monotonic
        reading taken with it (None: same as ``now``, for drivers with a single clock such as
        netsim); a driver that passes it must pass readings of the same monotonic clock to
        ``commit`` too, so that a wall clock that jumps cannot drag local stamps ahead of the
        peers' (see ``clock.HybridClock``).
        """
        return self.apply_many([data], now, mono=mono)[0]

    def apply_many(
        self, datas: Iterable[object], now: float, *, mono: float | None = None,
        ids: Sequence[bytes | None] | None = None,
    ) -> list[ApplyResult]:
        """Offer several changes at once (in any order); one result per change, in order.

        Batching lets the tree merge all new moves in one undo-redo pass. ``now`` and
        ``mono`` as for :meth:`apply`.

        ``ids``: for a caller that has already hashed the very bytes it passes (the room
        overlay does, for its ingress quota), ``change_id(datas[i])`` or None for each,
        so that a change is hashed once per node. They are taken as given: pass only IDs
        computed here, from these bytes, never IDs a peer sent (a wrong ID would file the
        change under another change's name).
        """
        datas = list(datas)
        if ids is not None:
            if len(ids) != len(datas):
                raise ValueError(f"{len(ids)} ids for {len(datas)} changes")
            # Gossip delivers most changes several times: a batch of changes all held
            # already gets the answer ``_apply_batch`` would give, without its set-up.
            index, buffer = self._graph.index, self._buffer
            dups: list[ApplyResult] = []
            for cid in ids:
                if cid is None or (cid not in index and cid not in buffer):
                    break
                dups.append(ApplyResult(DUPLICATE, "already_known", cid))
            else:
                if dups:
                    return dups
        horizon = hlc_from_seconds(now + self.max_clock_skew_s) | 0xFFFF
        results = self._apply_batch(datas, horizon, trusted=False, ids=ids)
        latest = 0
        graph = self._graph
        index, author_at, hlc_at = graph.index, graph.author_at, graph.hlc_at
        me = self._me
        for res in results:
            for cid in res.applied:
                p = index[cid]
                if author_at(p) != me and hlc_at(p) > latest:
                    latest = hlc_at(p)
        if latest:
            self._clock.observe_peer(latest, now if mono is None else mono)
        return results

    def replay(self, datas: Iterable[bytes]) -> ReplayReport:
        """Apply changes from this node's own store (any order) and report every one that
        fails; never raises on bad input.

        Stored changes were validated when they were stored, so no clock bound applies: a
        node that restarts with its wall clock far behind (or ahead) keeps every change.
        Signatures and every rule of the causal past are still checked: the store is a file
        that disks, backups and people can damage, and a change kept here is served to peers,
        who would reject a bad one and everything built on it. Changes whose deps are missing
        stay buffered (peers may send the missing history) and are reported as
        ``missing_history``, even if their author is not (yet) known to be a member.

        The replica observes the clock stamp of every correctly signed change, so its own
        stamps never go backwards across a restart, and raises its own-seq floor to the
        highest seq of its own identity found (applied or not): ``commit`` never signs one of
        those seqs again.
        """
        datas = list(datas)
        results = self._apply_batch(datas, None, trusted=True)
        applied = duplicates = 0
        rejected: list[ReplayFailure] = []
        missing: list[ReplayFailure] = []
        for i, res in enumerate(results):
            cid = res.change_id
            if res.status == DUPLICATE:
                duplicates += 1
            elif res.status == REJECTED or cid is None:
                rejected.append(ReplayFailure(i, cid, res.reason or "rejected"))
            elif cid in self._graph.index:
                applied += 1  # applied at once, or released from the buffer later
            elif cid in self._buffer:
                missing.append(ReplayFailure(i, cid, "missing_deps"))
            elif cid in self._rejected:
                rejected.append(ReplayFailure(i, cid, self._rejected[cid]))
            else:
                missing.append(ReplayFailure(i, cid, "evicted"))  # the buffer was full
        return ReplayReport(
            applied=applied,
            duplicates=duplicates,
            rejected=tuple(rejected),
            missing_history=tuple(missing),
            missing_deps=tuple(sorted(d for d in self.missing_deps() if d not in self._buffer)),
            own_seq=self.own_seq,
        )

    def ensure_seq_above(self, seq: int) -> None:
        """Never sign a change with a seq at or below ``seq`` (the highest seq this identity
        is known to have signed in this room, e.g. from the store). If the replica holds fewer
        of its own changes, ``commit`` raises ``OwnHistoryMissing`` until peers send them back:
        peers accept an author's seqs only in order (``bad_seq``), so a gap cannot be skipped,
        and signing a held seq again would be an equivocation."""
        if seq > self._seq_floor:
            self._seq_floor = seq

    @property
    def own_seq(self) -> int:
        """The highest seq this replica's identity is known to have signed in this room."""
        return max(self._seq_floor, self._graph.vv_all.get(self._me, 0))

    def _apply_batch(
        self, datas: Sequence[object], horizon: int | None, *, trusted: bool,
        ids: Sequence[bytes | None] | None = None,
    ) -> list[ApplyResult]:
        """The work of ``apply_many`` (``horizon``: the latest acceptable stamp; ``ids``:
        the caller's hashes of ``datas``, see there) and of ``replay`` (``trusted``: no
        clock bound, every signed stamp and own seq observed, changes with missing deps
        buffered whoever wrote them)."""
        results: list[ApplyResult | None] = [None] * len(datas)
        ready: list[tuple[int, Change, bytes]] = []
        seen: set[bytes] = set()
        index = self._graph.index
        base, base_hlc = self._graph.base, self._graph.base_hlc
        for i, data in enumerate(datas):
            if type(data) is not bytes and isinstance(data, (bytearray, memoryview)):
                data = bytes(data)  # an immutable copy: the caller may reuse its buffer
            if not isinstance(data, bytes):
                results[i] = self._reject(None, "schema")
                continue
            known_id = None
            if type(data) is bytes and len(data) <= self.limits.max_change_bytes:
                # Gossip delivers most changes more than once: hashing (about 1 us) spots a
                # known one before decoding it (about 10 us). Anything decodable gets here.
                if ids is not None:
                    known_id = ids[i]
                if known_id is None:
                    known_id = change_id(data)
                if known_id in index or known_id in self._buffer or known_id in seen:
                    results[i] = ApplyResult(DUPLICATE, "already_known", known_id)
                    continue
            try:
                ch = decode_change(data, self.limits, known_id=known_id)
            except DecodeError as err:
                results[i] = self._reject(None, err.reason)
                continue
            cid = ch.change_id
            if ch.hlc <= base_hlc:
                # Stamped below this replica's frontier (a snapshot's): the frontier holds
                # the author's seqs up to base[author] only as a summary, so a change there
                # is one it has (or an equivocation it cannot place); a later seq is one
                # the frontier never saw, which cannot be merged under it.
                if ch.seq <= base.get(ch.author, 0):
                    results[i] = ApplyResult(DUPLICATE, "behind_frontier", cid)
                elif not verify_signature(ch.author, ch.signature,
                                          signing_payload(self.room_id, ch.body)):
                    # ``behind_frontier`` is no fault of the sender (SENDER_BLAMELESS): only
                    # a genuine change may claim it.
                    results[i] = self._reject(cid, "bad_signature")
                else:
                    results[i] = self._reject(cid, "behind_frontier")
                continue
            cached = self._rejected.get(cid)
            if cached is not None:
                results[i] = self._reject(cid, cached)
                continue
            if not verify_signature(
                ch.author, ch.signature, signing_payload(self.room_id, ch.body)
            ):
                results[i] = self._reject(cid, "bad_signature")
                continue
            if trusted:
                self._clock.observe(ch.hlc)
                if ch.author == self._me:
                    self.ensure_seq_above(ch.seq)
            elif horizon is not None and ch.hlc > horizon:
                results[i] = self._reject(cid, "future_timestamp")
                continue
            seen.add(cid)
            ready.append((i, ch, data))
        # A valid change's clock is later than its deps', so clock order is causal order.
        if len(ready) > 1:
            ready.sort(key=lambda r: (r[1].hlc, r[1].author, r[1].change_id))
        self._tree_batch = []
        try:
            for i, ch, data in ready:
                missing = {d for d in ch.deps if d not in index}
                if missing:
                    if any(d in self._rejected for d in missing):
                        results[i] = self._reject(ch.change_id, "depends_on_rejected")

                    elif not trusted and self._roles.current_role(ch.author) == ROLE_NONE:
                        # Only buffer for known members, so strangers cannot fill the buffer.
                        results[i] = self._reject(ch.change_id, "unknown_author")
                    else:
                        self._buffer.add(ch.change_id, Waiting(data, ch, missing))
                        results[i] = ApplyResult(BUFFERED, "missing_deps", ch.change_id)
                    continue
                results[i] = self._integrate_and_release(ch, data)
        finally:
            entries, self._tree_batch = self._tree_batch, None
            self._tree.apply(entries)
        if self._revocation.needs_rebuild:
            self._rebuild()  # a change in this batch retracted changes applied before
        self._trim_bytes()
        return [r for r in results if r is not None]

    def _reject(self, cid: bytes | None, reason: str) -> ApplyResult:
        self.rejections[reason] = self.rejections.get(reason, 0) + 1
        if cid is not None and reason not in TRANSIENT_REASONS:
            self._rejected[cid] = reason
            if len(self._rejected) > self._rejected_cache_size:
                self._rejected.popitem(last=False)
            for dependent in self._buffer.drop_dependents(cid):
                self._reject(dependent, "depends_on_rejected")
        return ApplyResult(REJECTED, reason, cid)

    def _integrate_and_release(self, ch: Change, data: bytes) -> ApplyResult:
        try:
            retracted = self._integrate(ch, data)
        except Rejected as rej:
            return self._reject(ch.change_id, rej.reason)
        self._count_retraction(retracted)
        applied = [ch.change_id]
        work = [ch.change_id]
        while work:
            for waiting in self._buffer.release(work.pop()):
                try:
                    self._count_retraction(self._integrate(waiting.change, waiting.data))
                except Rejected as rej:
                    self._reject(waiting.change.change_id, rej.reason)
                    continue
                applied.append(waiting.change.change_id)
                work.append(waiting.change.change_id)
        # A retracted change is "applied" as a tombstone: kept, stored and relayed (honest
        # changes may depend on it), its reason says it has no effect.
        return ApplyResult(APPLIED, retracted, ch.change_id, tuple(applied))

    def judge_unsigned(self, body: bytes) -> str | None:
        """Would the change with this ``body``, once its author signs it, be accepted here now
        (its deps all applied)? None if so, else the stable reason every replica would give
        (``not_entity_owner``, ``viewer_cannot_edit``, ``quota``, ``bad_seq``, ...). Nothing
        is changed: a node checks what it asks a person to sign (``meshnode.crdt.authoring``)
        so that a person never signs a seq that no replica will hold."""
        try:
            ch = decode_change(body + bytes(64), self.limits)
        except DecodeError as err:
            return err.reason
        if any(d not in self._graph.index for d in ch.deps):
            return "missing_deps"
        try:
            self._integrate(ch, None, dry_run=True)
        except Rejected as rej:
            return rej.reason
        return None

    @property
    def is_private(self) -> bool:
        """True for a private room (its scene is sealed: ``meshnode.crdt.privacy``)."""
        return self._epochs is not None

    def is_ancestor(self, ancestor: Node, node: Node) -> bool:
        """True if ``ancestor`` is ``node``'s parent, grandparent, ... in the live tree."""
        return self._tree.is_ancestor(ancestor, node)

    def tick_clock(self, now: float, mono: float | None = None) -> int:
        """A fresh clock stamp, later than everything seen here (as ``commit`` takes one), for
        a change composed for another author (``meshnode.crdt.authoring``)."""
        return self._clock.tick(now, mono)

    def last_writers(self) -> dict[str, str]:
        """Each live entity (ID text) mapped to the PeerID of the author of its latest
        applied write (a field set, its creation or a move), for accountability in pages."""
        from meshnode.identity import peer_id_from_public_key

        best: dict[Node, Stamp] = {}
        for entry in self._tree.log:
            stamp, child = entry[0], entry[2]
            if stamp[0] < (1 << 64) and (child not in best or best[child] < stamp):
                best[child] = stamp
        for ent, comps in self._fields.items():
            for fd in comps.values():
                for stamp, _ in fd.values():
                    if stamp[0] < (1 << 64) and (ent not in best or best[ent] < stamp):
                        best[ent] = stamp
        live = self._tree.live_nodes()
        return {str(EntityId(*ent)): peer_id_from_public_key(stamp[1])
                for ent, stamp in best.items() if ent in live and stamp[1]}

    def entity_counter(self, author: bytes) -> int:
        """The highest entity counter ``author`` has created in the changes applied here."""
        return max((n[1] for n in self._creation if n[0] == author), default=0)
