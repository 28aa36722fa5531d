"""``SceneReplica``: one room's scene as a signed, Byzantine-tolerant CRDT.

Sans-I/O: it never reads a clock, a socket or a disk. Callers pass ``now`` (wall-clock
seconds, and optionally a monotonic ``mono`` reading) and move change bytes between replicas
themselves. Changes from the node's own store go through :meth:`SceneReplica.replay`, which
trusts their clocks, reports every change it cannot apply, and sets the floor below which the
replica never signs a seq again.

This module holds construction, reading and the application of changes from peers (validation
against each change's causal past, then the effects); the local editing API comes from
``meshnode.crdt.editing.LocalEdits``. Revocation (cut-offs, invite limits) is judged with
``meshnode.crdt.revocation``: a change it retracts is kept as a tombstone (in the hash graph,
without effects), and when a new change retracts changes already applied, the replica rebuilds
its state from the stored change bytes (``_rebuild``), so the state depends only on the set of
changes held.
"""

import functools
import itertools
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from meshnode.crdt.clock import HybridClock, hlc_from_seconds, hlc_millis
from meshnode.crdt.compaction import MAX_TAIL, CompactionJob
from meshnode.crdt.content import (
    ChangeRecord,
    EntityRecord,
    FieldRecord,
    FrontierContent,
    GrantRecord,
    MoveRecord,
    SceneContent,
)
from meshnode.crdt.editing import ENVELOPE_BYTES, EditBatch, Fields, PrivateBatch
from meshnode.crdt.epochs import EpochBook
from meshnode.crdt.graph import BaseEntry, ChangeGraph, ChangeMeta, PendingBuffer, Waiting
from meshnode.crdt.ids import ROOT, EntityId
from meshnode.crdt.key_table import key_table
from meshnode.crdt.privacy import (
    ROTATION_MARGIN_BYTES,
    SCENE_CODES,
    PrivatePlan,
    PrivateRoom,
    default_random_bytes,
)
from meshnode.crdt.quota import entity_quota
from meshnode.crdt.results import (
    APPLIED,
    BUFFERED,
    DUPLICATE,
    REJECTED,
    TRANSIENT_REASONS,
    ApplyResult,
    Equivocation,
    Rejected,
    ReplayFailure,
    ReplayReport,
)
from meshnode.crdt.revocation import Cut, InviteRevocation, InviteUse, RevocationBook
from meshnode.crdt.roles import (
    ROLE_ADMIN,
    ROLE_EDITOR,
    ROLE_HOST,
    ROLE_NAMES,
    ROLE_NONE,
    ROLE_OWNER,
    ROLE_VIEWER,
    RoleBook,
    may_set_role,
    role_lowered,
)
from meshnode.crdt.scene_rules import SceneMove, SceneSet, judge_scene_ops
from meshnode.crdt.snapshot import (
    DecodedSnapshot,
    SnapshotKeyMissing,
    decode_snapshot,
    encode_snapshot,
    open_snapshot,
)
from meshnode.crdt.snapshot_seal import unwrap_secret
from meshnode.crdt.tree import MoveTree, Stamp, make_entry
from meshnode.identity import Identity, verify_signature
from protocol.change import (
    MAX_NONCE_BYTES,
    OP_GENESIS,
    OP_REVOKE_INVITE,
    OP_ROLE,
    Change,
    change_id,
    decode_change,
    encode_change,
    signing_payload,
)
from protocol.errors import DecodeError, SchemaError
from protocol.limits import DEFAULT_LIMITS, Limits
from protocol.private_ops import GENESIS_FLAG_PRIVATE, OP_SHARE, PRIVATE_OPS
from protocol.values import Value

Node = tuple[bytes, int]

MAX_REBUILD_PASSES = 8
"""A rebuild replays the history until the retracted set stops changing; with an honest
owner two or three passes do (``meshnode.crdt.revocation``). The cap keeps a pathological
history (an owner who equivocated) from looping; the result is still the same everywhere."""


class SceneReplica(PrivateRoom):
    """A replica of one room's scene. Build it with :meth:`create`, :meth:`from_genesis` or
    :meth:`from_snapshot`; see ``docs/architecture.md`` for the rules it enforces."""

    def __init__(
        self,
        identity: Identity,
        *,
        limits: Limits = DEFAULT_LIMITS,
        max_clock_skew_s: float = 60.0,
        max_buffered_changes: int = 10_000,
        max_buffered_bytes: int = 32 * 1024 * 1024,
        rejected_cache_size: int = 4_096,
        random_bytes: Callable[[int], bytes] = default_random_bytes,
    ) -> None:
        self._identity = identity
        self._keys: dict[bytes, bytes] = key_table()  # shared in a simulation (key_table.py)
        self._me = self._key(identity.public_key)
        self.limits = limits
        self._max_ops = limits.max_ops_per_change
        # What a change has room for besides its envelope (its deps are counted at each edit).
        self._max_batch_bytes = limits.max_change_bytes - ENVELOPE_BYTES
        self.max_clock_skew_s = max_clock_skew_s
        self._graph = ChangeGraph()
        self._buffer = PendingBuffer(max_buffered_changes, max_buffered_bytes)
        self._rejected: OrderedDict[bytes, str] = OrderedDict()
        self._rejected_cache_size = rejected_cache_size
        # Stamps stay within half the skew of the peers' time (see clock.py), so honest peers
        # whose clocks agree within the other half accept them at once.
        self._clock = HybridClock(max_lead_s=max_clock_skew_s / 2)
        self._seq_floor = 0  # the highest seq this identity is known to have signed
        self._tree = MoveTree()
        self._fields: dict[Node, Fields] = {}
        self._creation: dict[Node, int] = {}
        self._created_by: dict[Node, list[bytes]] = {}
        self._equivocators: set[bytes] = set()
        self._roles = RoleBook(b"")
        self._revocation = RevocationBook()
        self._base: SceneContent | None = None  # where a rebuild starts (a loaded snapshot)
        self._full_graph: ChangeGraph | None = None  # the whole history, while rebuilding
        # History off the heap (``use_history``): bytes of older changes come from the store.
        self._history: Callable[[list[bytes]], Mapping[bytes, bytes]] | None = None
        self._keep_recent = 0
        self._restored_missing = 0
        self._my_role: int | None = None
        self._counter = 0
        self._batch: EditBatch | None = None
        self._tree_batch: list[list[Any]] | None = None
        self.equivocations: list[Equivocation] = []
        self.room_id = b""
        self.genesis = b""
        self.room_name = ""
        self.rejections: dict[str, int] = {}
        # Private rooms (meshnode.crdt.privacy); None for the others.
        self._epochs: EpochBook | None = None
        self._x25519 = None
        self._random_bytes = random_bytes
        self._private_batch: PrivateBatch | None = None

    # ------------------------------------------------------------------ construction

    @classmethod
    def create(
        cls, owner: Identity, now: float, *, nonce: bytes, name: str = "room",
        private: bool = False, **kwargs: Any,
    ) -> "SceneReplica":
        """Found a new room owned by ``owner``: sign its genesis change.

        ``nonce`` (1 to 32 bytes) makes two rooms with one owner and name distinct. It is
        required because the core has no randomness of its own: a node passes
        ``os.urandom(16)``, a simulation or test a value derived from its seed.

        ``private``: a private room (docs/protocol.md, "Private rooms"): the genesis carries
        the private flag and no name; the owner's second change (committed here, sent with
        the history like any other) creates the first epoch and seals the name.
        """
        if type(nonce) is not bytes or not 1 <= len(nonce) <= MAX_NONCE_BYTES:
            raise ValueError(
                f"nonce must be 1..{MAX_NONCE_BYTES} bytes (e.g. os.urandom(16)), "
                f"not {nonce!r:.40}"
            )
        clock = HybridClock()
        genesis = encode_change(
            author=owner.public_key,
            seq=1,
            deps=[],
            hlc=clock.tick(now),
            actors=[],
            names=[],
            ops=[[OP_GENESIS, name, nonce]] if not private
            else [[OP_GENESIS, "", nonce, GENESIS_FLAG_PRIVATE]],
            room_id=b"",
            sign=owner.sign,
        )
        replica = cls.from_genesis(genesis, owner, **kwargs)
        if private:
            replica.set_room_name(name)
            replica.commit(now)
        return replica

    @classmethod
    def from_genesis(cls, genesis: bytes, identity: Identity, **kwargs: Any) -> "SceneReplica":
        """Join a room knowing only its genesis change. Raises ``DecodeError`` if it is not a
        valid, correctly signed genesis change."""
        replica = cls(identity, **kwargs)
        ch = decode_change(genesis, replica.limits)
        if ch.seq != 1 or ch.deps or len(ch.ops) != 1 or ch.ops[0][0] != OP_GENESIS:
            raise DecodeError("not a genesis change")
        if not verify_signature(ch.author, ch.signature, signing_payload(b"", ch.body)):
            raise DecodeError("genesis signature does not verify")
        replica._adopt_genesis(ch, genesis)
        return replica

    def _adopt_genesis(self, ch: Change, data: bytes | None) -> None:
        self.genesis = data if data is not None else b""
        self.room_id = ch.change_id
        self.room_name = ch.ops[0][1]
        if len(ch.ops[0]) == 4:  # the private flag (the only flag there is)
            if self._epochs is None:
                self._epochs = EpochBook(ch.change_id)
                # Leave room in each change for the rotation and sealing overhead.
                self._max_batch_bytes -= ROTATION_MARGIN_BYTES
            else:
                self._epochs.reset_public()
        owner = self._key(ch.author)
        self._roles = RoleBook(owner)
        self._graph.add(ch.change_id, ChangeMeta(owner, 1, ch.hlc, (), {owner: 1}), data)
        self._clock.observe(ch.hlc)

    # ------------------------------------------------------------------ reading

    @property
    def owner(self) -> bytes:
        """The room owner's public key (the genesis author)."""
        return self._roles.owner

    @property
    def identity(self) -> Identity:
        """The local identity that signs this replica's changes."""
        return self._identity

    def heads(self) -> list[bytes]:
        """Hashes of the changes no other applied change depends on (sorted)."""
        return sorted(self._graph.heads)

    def has_change(self, change_id: bytes) -> bool:
        """True if the change is applied here."""
        return change_id in self._graph.index

    def change_bytes(self, change_id: bytes) -> bytes | None:
        """The wire bytes of an applied change (None if unknown or known only by snapshot)."""
        data = self._graph.raw.get(change_id)
        if data:  # in memory: what _bytes_of would find first, without its lists
            return data
        got = self._bytes_of([change_id])
        return got[0] if got else None

    def _bytes_of(self, ids: list[bytes]) -> list[bytes]:
        """The bytes of applied changes, in order, from memory or the history source; those
        unavailable (below a snapshot, not yet stored) are left out."""
        raw = self._graph.raw
        missing = [c for c in ids if c not in raw and c != self.room_id]
        loaded: Mapping[bytes, bytes] = {}
        if missing and self._history is not None:
            loaded = self._history(missing)
        out = []
        for c in ids:
            data = raw.get(c)
            if data is None:
                data = self.genesis if c == self.room_id else loaded.get(c)
            if data:
                out.append(data)
        return out

    def use_history(self, source: Callable[[list[bytes]], Mapping[bytes, bytes]],
                    keep_recent: int = 4_096) -> None:
        """Keep change bytes off the heap: only the last ``keep_recent`` applied changes'
        bytes stay in memory; older ones are read from ``source`` (change IDs -> bytes, e.g.
        the node's store) when a peer asks for them or a rebuild needs them. The caller
        stores every applied change (its durable log); one not yet stored when it leaves
        memory is simply not served until it is. Private rooms keep their bytes in memory
        (their sync replays history; this call does nothing for them)."""
        if self.private:
            return
        self._history = source
        self._keep_recent = keep_recent
        self._trim_bytes()

    def _trim_bytes(self) -> None:
        raw = self._graph.raw
        if self._history is None or len(raw) <= 2 * self._keep_recent:
            return
        drop = len(raw) - self._keep_recent
        for cid in list(itertools.islice(raw, drop)):
            del raw[cid]

    def change_author(self, change_id: bytes) -> bytes | None:
        """The author's public key of an applied change (None if unknown)."""
        p = self._graph.index.get(change_id)
        return None if p is None else self._graph.author_at(p)

    def change_time(self, change_id: bytes) -> float | None:
        """When an applied change was made, by its author's clock (seconds; None if
        unknown): the physical part of its hybrid logical clock stamp."""
        p = self._graph.index.get(change_id)
        return None if p is None else hlc_millis(self._graph.hlc_at(p)) / 1000.0

    def change_stamp(self, change_id: bytes) -> int | None:
        """An applied change's hybrid logical clock stamp (None if unknown): what a
        frontier (``export_content``) is compared with."""
        p = self._graph.index.get(change_id)
        return None if p is None else self._graph.hlc_at(p)

    def is_buffered(self, change_id: bytes) -> bool:
        """True if the change is verified and waiting for its deps."""
        return change_id in self._buffer

    def recent_changes(self, limit: int) -> list[bytes]:
        """IDs of the last ``limit`` applied changes, oldest first."""
        return self._graph.order[-limit:]

    def change_count(self) -> int:
        """Number of applied changes, genesis (and those below a snapshot's frontier)
        included."""
        return self._graph.count()

    def held_count(self) -> int:
        """Applied changes held one by one (those after the frontier): what memory, a
        compaction's re-import and a restart's log follow, unlike ``change_count``."""
        return len(self._graph.order)

    def buffered_count(self) -> int:
        """Number of verified changes waiting for their deps."""
        return len(self._buffer)

    def held_change(self, author: bytes, seq: int) -> bytes | None:
        """The bytes of the applied change by ``author`` with ``seq`` (the first applied, if
        the author equivocated), or None: none applied, or its bytes are not in memory. A
        compact copy of it is recognised by these (``protocol.compact.expand_change``)."""
        cid = self._graph.by_author_seq.get((author, seq))
        return None if cid is None else self._graph.raw.get(cid)

    def hold_alone(self, change_ids: Iterable[bytes]) -> bool:
        """Whether each change is applied here and is the only one whose ID starts with its
        prefix (``changes_by_prefix(c[:8]) == [c]``, most often without a lookup)."""
        return self._graph.hold_alone(change_ids)

    def changes_by_prefix(self, prefix: bytes) -> list[bytes]:
        """IDs of the applied changes that start with ``prefix`` (8 bytes: the dep of a
        compact change, ``protocol.compact``)."""
        return self._graph.by_prefix(prefix)

    def missing_deps(self) -> set[bytes]:
        """Hashes that buffered changes wait for: what to ask peers for."""
        return self._buffer.missing_deps() - self._graph.index.keys()

    def version_vector(self) -> dict[bytes, int]:
        """Author public key -> highest seq applied here (each author's changes form a chain,
        so this says exactly which changes this replica has, barring equivocation)."""
        return dict(self._graph.vv_all)

    def changes_since(
        self, heads: Iterable[bytes], version_vector: Mapping[bytes, int] | None = None
    ) -> list[bytes]:
        """The applied changes (wire bytes, causal order) that a replica whose heads are
        ``heads`` (and, if given, whose ``version_vector``) lacks. Heads unknown here are
        ignored, so without a version vector a peer that has changes this replica lacks may get
        some it already has. Changes known here only through a snapshot cannot be sent."""
        return self._bytes_of(self.change_ids_since(heads, version_vector))

    @property
    def history_elsewhere(self) -> bool:
        """True if older change bytes live in a history source (``use_history``), not here."""
        return self._history is not None

    def bytes_in_memory(self, ids: Iterable[bytes]) -> tuple[dict[bytes, bytes], list[bytes]]:
        """Split applied changes by where their bytes are: those held in memory (ID -> bytes)
        and, in order, those only the history source has (``use_history``; none without
        one). A driver that must not block reads the second list itself, off its loop
        (``RoomOverlay.defer_history_reads``). Unknown IDs are in neither."""
        raw = self._graph.raw
        found: dict[bytes, bytes] = {}
        elsewhere: list[bytes] = []
        index = self._graph.index
        for c in ids:
            data = raw.get(c)
            if data is None and c == self.room_id and self.genesis:
                data = self.genesis  # kept whole beside the graph: it names the room
            if data is not None:
                found[c] = data
            elif self._history is not None and c in index:
                elsewhere.append(c)
        return found, elsewhere

    def change_ids_since(
        self, heads: Iterable[bytes], version_vector: Mapping[bytes, int] | None = None
    ) -> list[bytes]:
        """The IDs ``changes_since`` would send, in the same order, without their bytes."""
        graph = self._graph
        index = graph.index
        known = [h for h in heads if h in index]
        # Below a frontier only the genesis's bytes are known; a peer with nothing gets it.
        first = [self.room_id] if graph.base and not known and self.genesis and \
            not (version_vector or {}).get(self.owner, 0) else []
        if self.equivocations:
            # Version vectors cannot tell two changes with one (author, seq) apart.
            past = graph.ancestors(known)
            return first + [c for c in graph.order if c not in past and c not in first]
        vv = graph.past_vv(known)
        theirs = version_vector or {}
        wanted: list[bytes] = []
        by_author_seq = graph.by_author_seq.get
        for author, top in graph.vv_all.items():
            # What the peer says it has first: in a room in sync it covers most authors, and
            # then the heads' past need not be looked up at all.
            said = theirs.get(author, 0)
            if said >= top:
                continue
            have = max(vv.get(author, 0), said, graph.base.get(author, 0))
            for seq in range(have + 1, top + 1):
                cid = by_author_seq((author, seq))
                if cid is not None:
                    wanted.append(cid)
        if len(wanted) * 8 > len(graph.order):
            want = set(wanted)
            return first + [c for c in graph.order if c in want]
        hlc_at, author_at = graph.hlc_at, graph.author_at
        wanted.sort(key=lambda c: (hlc_at(index[c]), author_at(index[c]), c))
        return first + wanted

    @property
    def roles_version(self) -> int:
        """A number that changes whenever the roles this replica knows may have changed (a
        grant recorded or dropped, by a change applied, a local edit, a rollback or a
        rebuild; the role book replaced by a reset, a snapshot or a compaction). While it
        stays the same, ``role_of``, ``members`` and ``was_removed`` answer as before: a
        caller that re-checks access after applying changes (the room overlay) can skip
        the check when it has not moved. Only equality means anything."""
        return self._roles.version

    def role_of(self, member: str | bytes) -> str:
        """A member's current role name (``"none"`` if not a member)."""
        return ROLE_NAMES[self._roles.current_role(self._member_key(member))]

    def members(self) -> dict[str, str]:
        """Every member's PeerID mapped to its role name."""
        from meshnode.identity import peer_id_from_public_key

        return {
            peer_id_from_public_key(k): ROLE_NAMES[r] for k, r in self._roles.members().items()
        }

    def was_removed(self, member: str | bytes) -> bool:
        """True if ``member`` held a role that a grant took away (role none now)."""
        key = self._member_key(member)
        return bool(self._roles.grants.get(key)) and self._roles.current_role(key) == ROLE_NONE

    def retraction(self, change_id: bytes) -> str | None:
        """Why an applied change is kept only as a tombstone (``"revoked"``: its author's
        seq is past a cut-off it had not seen; ``"authority_revoked"``: its author's role
        came from a retracted change or a void invite use), or None if it has effect."""
        return self._revocation.dead.get(change_id)

    def retracted_changes(self) -> dict[bytes, str]:
        """Every applied change kept only as a tombstone, with why (see ``retraction``)."""
        return dict(self._revocation.dead)

    def invite_uses(self, invite_id: bytes) -> int:
        """How many grants naming the invite take effect here (its uses so far)."""
        return self._revocation.use_count(invite_id, self._in_past)

    def invite_revoked(self, invite_id: bytes) -> bool:
        """True if a change applied here revoked the invite."""
        return self._revocation.is_revoked_invite(invite_id)

    def invite_admitted(self, invite_id: bytes, member: str | bytes) -> bool:
        """True if the invite has admitted ``member`` before (a grant naming it, applied)."""
        key = self._member_key(member)
        return any(u.member == key for u in self._revocation.uses.get(invite_id, {}).values())

    def _in_past(self, target: bytes, of: bytes) -> bool:
        # While rebuilding, an invite revocation may be known before it is replayed: ask the
        # whole history, which holds the same changes.
        graph = self._full_graph or self._graph
        index = graph.index
        return target in index and of in index and graph.in_past(target, (of,))

    def parent_of(self, entity: Node) -> EntityId | None:
        """The entity's parent, or None if it is deleted or unknown."""
        if not self._tree.is_live(entity):
            return None
        parent = self._tree.parent.get(entity)
        return None if parent is None else EntityId(*parent)

    def exists(self, entity: Node) -> bool:
        """True if the entity is live (reachable from ROOT)."""
        return entity != ROOT and self._tree.is_live(entity)

    def get_field(self, entity: Node, component: str, field: str) -> Value:
        """The current value of one field, or None if never set."""
        reg = self._fields.get(entity, {}).get(component, {}).get(field)
        return None if reg is None else _copy_value(reg[1])

    def entities(self) -> list[EntityId]:
        """Every live entity."""
        return [EntityId(*e) for e in self._tree.live_nodes()]

    def state(self) -> dict[str, dict[str, Any]]:
        """The canonical plain view of the scene.

        ``{entity_id_str: {"parent": parent_id_str, "components": {component: {field:
        value}}}}`` for every live entity; deleted entities are absent. Two replicas that have
        applied the same set of changes return equal views.
        """
        fields = self._fields
        out: dict[str, dict[str, Any]] = {}
        for child, parent in self._tree.live_nodes().items():
            comps: dict[str, dict[str, Value]] = {}
            for cname, fd in fields.get(child, {}).items():
                if fd:
                    comps[cname] = {f: _copy_value(reg[1]) for f, reg in fd.items()}
            out[str(EntityId(*child))] = {
                "parent": str(EntityId(*parent)),
                "components": comps,
            }
        return out

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

    def _count_retraction(self, reason: str | None) -> None:
        if reason is not None:
            self.rejections[reason] = self.rejections.get(reason, 0) + 1

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

    def _integrate(self, ch: Change, data: bytes | None, *, dry_run: bool = False
                   ) -> str | None:
        """Validate a change whose deps are all applied, then apply it (``dry_run``: only
        validate). All or nothing.

        Returns None, or the reason the change is kept only as a tombstone (see
        ``retraction``): acceptance is judged with every grant in the causal past, inert ones
        included, so it never depends on what was retracted; effect, with live grants and
        the cut-offs known here.
        """
        graph = self._graph
        index = graph.index
        author = self._key(ch.author)
        if not ch.deps:
            raise Rejected("foreign_genesis")
        dep_pos = [index[d] for d in ch.deps]
        vv = graph.past_vv(ch.deps)
        seq = ch.seq
        if seq != vv.get(author, 0) + 1:
            raise Rejected("bad_seq")
        hlc_at = graph.hlc_at
        for p in dep_pos:  # not after the latest dep's stamp: a loop, not max() of a generator
            if ch.hlc <= hlc_at(p):
                raise Rejected("clock_not_after_deps")
        equivocators = self._equivocators
        deps = ch.deps

        def in_past(target: bytes) -> bool:
            return graph.in_past(target, deps)

        book = self._roles
        inert = bool(book.inert)
        role = book.role_in_past(author, vv, in_past, equivocators, with_inert=inert)
        if role < ROLE_VIEWER:
            raise Rejected("not_a_member")
        ops = ch.ops
        if role == ROLE_HOST:
            # A host stores, relays and admits: it writes grants that carry an invite's
            # redemption proof, nothing else (meshnode.crdt.redemption).
            if any(op[0] != OP_ROLE or len(op) != 7 for op in ops):
                raise Rejected("host_needs_proof")
        elif role < ROLE_EDITOR and any(op[0] != OP_ROLE and op[0] != OP_SHARE for op in ops):
            raise Rejected("viewer_cannot_edit")
        admin = ROLE_ADMIN <= role <= ROLE_OWNER
        key = self._key
        actors: list[bytes] = []
        for a in ch.actors:
            actor = graph.author_at(dep_pos[a]) if isinstance(a, int) else key(a)
            if actor == author or actor in actors:
                raise Rejected("bad_actor")
            actors.append(actor)
        epochs = self._epochs
        if epochs is not None and any(op[0] in SCENE_CODES for op in ops):
            raise Rejected("unsealed_content")  # a private room's scene ops are sealed
        roles: list[tuple[int, bytes, list[Any], int]] = []  # (index, member, op, cut-off)
        issuers: list[bytes] = []  # whose authority each role op uses
        revokes: list[bytes] = []
        private_ops: list[list[Any]] = []

        def other(idx: int, op: list[Any]) -> None:
            code = op[0]
            if code == OP_ROLE:
                member = actors[op[1]]
                target_role = book.role_in_past(member, vv, in_past, equivocators,
                                                with_inert=inert)
                if len(op) == 7:
                    issuers.append(self._check_host_grant(op, member, target_role, ch.hlc,
                                                          vv, deps))
                elif role == ROLE_HOST or not may_set_role(role, target_role, op[2]):
                    raise Rejected("role_change_not_allowed")
                else:
                    issuers.append(author)
                cutoff = vv.get(member, 0)
                if len(op) >= 4 and op[3] != cutoff:
                    # The cut-off is what the revoker had seen: no more (it would let the
                    # member's backdated changes through), no less (it would retract what
                    # the revoker had already accepted). A 3-element op implies it.
                    raise Rejected("bad_cutoff")
                roles.append((idx, member, op, cutoff))
            elif code == OP_REVOKE_INVITE:
                if not admin:
                    raise Rejected("role_change_not_allowed")
                revokes.append(op[1])
            elif code in PRIVATE_OPS:
                if epochs is None:
                    raise Rejected("not_private")
                private_ops.append(op)
            else:
                raise Rejected("misplaced_genesis")

        creation = self._creation
        created, sets, moves, foreign = judge_scene_ops(
            ops, author, actors, ch.names, admin=admin, quota=entity_quota(role),
            creation=creation, created_by=self._created_by, equivocators=equivocators,
            graph=graph, deps=deps, vv=vv, other=other)
        plan: PrivatePlan | None = None
        if epochs is not None:
            plan = self._judge_private(ch, author, role, vv, actors, roles, private_ops)

        if dry_run:
            return None
        # Accepted. Does it take effect?
        cid = ch.change_id
        revocation = self._revocation
        retracted: str | None = None
        if author in revocation.cuts:

            def has_seen(cut: Cut) -> bool:
                if cut.change_id not in index:
                    return False  # a rebuild knows cut-offs that sort after this change
                if cut.author in equivocators:
                    return graph.in_past(cut.change_id, deps)
                return vv.get(cut.author, 0) >= cut.seq

            if revocation.cutting(author, seq, has_seen) is not None:
                retracted = "revoked"
        live_targets: list[int] = []
        if retracted is None and (roles or inert):
            live = book.role_in_past(author, vv, in_past, equivocators) if inert else role
            live_targets = [book.role_in_past(r[1], vv, in_past, equivocators) for r in roles]
            acting = [live if i is author
                      else book.role_in_past(i, vv, in_past, equivocators) for i in issuers]
            if (
                live < ROLE_VIEWER
                or (not ROLE_EDITOR <= live <= ROLE_OWNER
                    and any(op[0] != OP_ROLE and op[0] != OP_SHARE for op in ops))
                or (not ROLE_ADMIN <= live <= ROLE_OWNER and (foreign or revokes))
                or not all(may_set_role(a, t, r[2][2])
                           for a, t, r in zip(acting, live_targets, roles, strict=True))
            ):
                retracted = "authority_revoked"

        stamp: Stamp = [ch.hlc, author, cid]
        self._scene_effect(stamp, seq, created, sets, moves, retracted is not None)
        if retracted is not None:
            for _, member, op, _ in roles:
                book.add_inert(member, (stamp, op[2], author, seq))
        vv[author] = seq
        twin = graph.add(cid, ChangeMeta(author, seq, ch.hlc, tuple(ch.deps), vv), data)
        if twin is not None:
            self.equivocations.append(Equivocation(author, seq, (twin, cid)))
            self._equivocators.add(author)
        self._clock.observe(ch.hlc)
        if retracted is not None:
            revocation.dead[cid] = retracted
        elif roles or revokes:
            self._record_role_ops(
                cid, author, seq, ch.hlc, stamp,
                [(*r, t) for r, t in zip(roles, live_targets, strict=True)],
                revokes,
            )
        if plan is not None:
            self._record_private(ch, cid, author, plan)
        return retracted

    def _scene_effect(self, stamp: Stamp, seq: int, created: dict[Node, Node],
                      sets: list[SceneSet], moves: list[SceneMove], dead: bool) -> None:
        """Apply the scene ops of an accepted change (or of a sealed payload): record what it
        created; then, unless it is ``dead`` (retracted), its sets and moves."""
        cid = stamp[2]
        creation = self._creation
        created_by = self._created_by
        for ent in created:
            old = creation.get(ent)
            if old is None or old > seq:
                creation[ent] = seq
            makers = created_by.get(ent)
            if makers is None:
                created_by[ent] = [cid]
            else:
                makers.append(cid)  # an equivocator created it twice
        if stamp[1] == self._me:
            for ent in created:
                if ent[1] > self._counter:
                    self._counter = ent[1]
        dead_ents = self._revocation.dead_entities
        if dead:
            dead_ents.update(created)
            return
        if dead_ents:
            # Ops on entities a retracted change created are no-ops, everywhere alike.
            for ent, parent in created.items():
                if parent in dead_ents:
                    dead_ents.add(ent)
            moves = [m for m in moves if m[1] not in dead_ents and m[2] not in dead_ents]
            sets = [x for x in sets if x[0] not in dead_ents]
        if sets:
            self._apply_sets(stamp, sets)
        if moves:
            entries = [make_entry(stamp, i, c, p) for i, c, p in moves]
            if self._tree_batch is not None:
                self._tree_batch.extend(entries)
            else:
                self._tree.apply(entries)

    def _record_role_ops(
        self, cid: bytes, author: bytes, seq: int, hlc: int, stamp: Stamp,
        roles: list[tuple[int, bytes, list[Any], int, int]], revokes: list[bytes],
    ) -> None:
        """Take the role ops of an applied live change (``(op index, member, op, cut-off,
        member's live role before)``) into the books; flag a rebuild if they retract or void
        anything already applied."""
        book = self._roles
        revocation = self._revocation
        vv_all = self._graph.vv_all
        for idx, member, op, cutoff, before in roles:
            grant = (stamp, op[2], author, seq)
            if len(op) >= 6:
                use = InviteUse(op[4], hlc, author, cid, idx, member, op[5])
                was = revocation.effective_uses(op[4], self._in_past)
                revocation.add_use(use)
                now = revocation.effective_uses(op[4], self._in_past)
                if use in now:
                    book.add(member, grant)
                else:
                    book.add_inert(member, grant)  # over the limit, or after a revocation
                if any(u not in now for u in was):
                    revocation.needs_rebuild = True
            else:
                book.add(member, grant)
            if role_lowered(before, op[2]):
                revocation.add_cut(Cut(member, cid, author, seq, cutoff))
                if vv_all.get(member, 0) > cutoff or member in self._equivocators:
                    revocation.needs_rebuild = True  # the member has changes past the cut-off
        for invite_id in revokes:
            was = revocation.effective_uses(invite_id, self._in_past)
            revocation.add_revocation(InviteRevocation(invite_id, cid))
            now = revocation.effective_uses(invite_id, self._in_past)
            if any(u not in now for u in was):
                revocation.needs_rebuild = True
        self._my_role = None

    def _apply_sets(self, stamp: Stamp, sets: list[tuple[Node, str, str, Value]]) -> None:
        fields = self._fields
        batch = self._batch
        pending = batch.stamp if batch is not None else None
        for ent, comp, field, value in sets:
            comps = fields.get(ent)
            if comps is None:
                comps = fields[ent] = {}
            fd = comps.get(comp)
            if fd is None:
                fd = comps[comp] = {}
            cur = fd.get(field)
            if cur is None or cur[0] <= stamp:
                fd[field] = (stamp, value)
            elif cur[0] is pending and batch is not None:
                # Hidden behind an uncommitted local write; needed if that batch is discarded.
                batch.shadowed.append((fd, field, (stamp, value)))

    # ------------------------------------------------------------------ rebuilding

    def _rebuild(self) -> None:
        """Recompute the state from the stored change bytes (from the loaded snapshot, if
        any, on), judging every change with the cut-offs and invite ops the previous pass
        found live, until the retracted set stops changing. A pure function of the set of
        changes held, so every replica with that set ends in the same state."""
        graph = self._graph
        base = self._base
        in_base: set[bytes] = set()
        if base is not None:  # imported with the base itself
            in_base.update(c.change_id for c in base.changes)
            if base.frontier is not None:
                in_base.update(e.change_id for e in base.frontier.entries)
        authors, col_author, col_hlc = graph.authors, graph.col_author, graph.col_hlc
        todo = sorted(
            (col_hlc[p], authors[col_author[p]], cid) for p, cid in enumerate(graph.order)
            if cid != self.room_id and cid not in in_base
        )
        datas = self._bytes_of([cid for _, _, cid in todo])
        changes = [(decode_change(d, self.limits), d) for d in datas]
        batch = self._batch
        pending = [e for e in self._tree.log if batch is not None and e[0] is batch.stamp]
        before = set(self._revocation.dead)
        knowledge = None
        previous: dict[bytes, str] | None = None
        self._full_graph = graph
        for _ in range(MAX_REBUILD_PASSES):
            self._reset_content()
            if knowledge is not None:
                self._revocation.seed(knowledge)
            self._tree_batch = []
            try:
                for ch, data in changes:  # (hlc, author, id) order is a causal order
                    try:
                        self._integrate(ch, data)
                    except Rejected:  # pragma: no cover - acceptance does not depend on it
                        continue
            finally:
                entries, self._tree_batch = self._tree_batch, None
                self._tree.apply(entries)
            book = self._revocation
            book.drop_changes(book.dead)
            found = book.copy_knowledge()
            if found == knowledge and book.dead == previous:
                break
            knowledge, previous = found, dict(book.dead)
        self._full_graph = None
        self._revocation.needs_rebuild = False
        for cid, reason in self._revocation.dead.items():
            if cid not in before:
                self._count_retraction(reason)
        if batch is not None:
            self._carry_batch(batch, pending)

    def _reset_content(self) -> None:
        """Forget every change's effect: back to the genesis (or the loaded snapshot)."""
        self._graph = ChangeGraph()
        self._tree = MoveTree()
        self._fields = {}
        self._creation = {}
        self._created_by = {}
        self._equivocators = set()
        self.equivocations = []
        self._revocation = RevocationBook()
        self._my_role = None
        if self._base is not None:
            self._import_content(self._base)
        else:
            self._adopt_genesis(decode_change(self.genesis, self.limits), self.genesis)

    def _carry_batch(self, batch: EditBatch, pending: list[list[Any]]) -> None:
        """Put the uncommitted local batch back on top of a rebuilt state."""
        seq = self._graph.vv_all.get(self._me, 0) + 1
        self._tree.apply([make_entry(batch.stamp, e[1], e[2], e[3]) for e in pending])
        for node in batch.creates:
            self._creation[node] = seq
        batch.field_undo = []
        batch.shadowed = []
        for (ent, comp, fname), op in batch.set_index.items():
            fd = self._fields.setdefault(ent, {}).setdefault(comp, {})
            batch.field_undo.append((fd, fname, fd.get(fname)))
            fd[fname] = (batch.stamp, op[4])
        for member, code in batch.role_ops:
            self._roles.add(member, (batch.stamp, code, self._me, seq))

    # ------------------------------------------------------------------ snapshots

    def export_content(self, keep_after_hlc: int | None = None, *,
                       opened: bool | None = None) -> SceneContent:
        """The committed state as plain data (what a snapshot holds).

        A private room's content carries its epoch book (``SceneContent.private``); its scene
        and the readers-only part only if ``opened`` (default: if this replica can seal a
        snapshot, ``PrivateRoom._snapshot_seal``), else none of it (a blind replica's).

        ``keep_after_hlc``: the frontier (a hybrid clock stamp; ``clock.hlc_from_seconds``):
        changes stamped after it are listed with their deps, those at or before it only
        summarised (``ChangeGraph.cut``). A replica started from the result validates a
        later change exactly as this one does if the change's deps are after the frontier,
        on its boundary or heads; others (a peer that has seen nothing after the frontier)
        wait for deps that never come, and that peer must start again from a snapshot.
        None: the genesis alone is below the frontier (every change listed)."""
        if self._batch is not None:
            raise RuntimeError("commit() or discard() the local batch first")
        ep = self._epochs
        if opened is None:
            opened = ep is not None and self._snapshot_seal() is not None
        graph = self._graph
        book = self._revocation
        named: set[bytes] = set()
        for comps in self._fields.values():
            for fd in comps.values():
                for stamp, _ in fd.values():
                    named.add(stamp[2])
        named.update(e[0][2] for e in self._tree.log)
        for makers in self._created_by.values():
            named.update(makers)
        for table in (self._roles.grants, self._roles.inert):
            for gl in table.values():
                named.update(g[0][2] for g in gl)
        named.update(book.dead)
        for e in self.equivocations:
            named.update(e.change_ids)
        named.update(c.change_id for per in book.cuts.values() for c in per.values())
        named.update(u.change_id for per in book.uses.values() for u in per.values())
        with_vv = {r.change_id for per in book.revocations.values() for r in per.values()}
        if ep is not None:
            # The key rules read epochs' causal pasts (R3, R4) after the frontier too.
            with_vv.update(ep.epochs)
            if ep.name is not None:
                named.add(ep.name[0][2])
        cut = graph.cut(-1 if keep_after_hlc is None else keep_after_hlc, named, with_vv)
        grants = [
            GrantRecord(member, g[0][2], g[1], inert)
            for inert, table in ((False, self._roles.grants), (True, self._roles.inert))
            for member, gl in table.items()
            for g in gl
        ]
        listed = set(cut.window)
        listed.update(e.change_id for e in cut.entries)
        private = self._export_private(listed, bool(opened))
        scene = private is None or private.opened  # never a private scene unless sealed
        return SceneContent(
            genesis=self.genesis,
            clock=self._clock.value,
            changes=tuple(
                ChangeRecord(cid, graph.author_at(p), graph.seq_at(p), graph.hlc_at(p),
                             graph.deps_at(p))
                for cid in cut.window
                for p in (graph.index[cid],)
            ),
            entities=tuple(
                EntityRecord(ent[0], ent[1], seq, tuple(self._created_by.get(ent, ())))
                for ent, seq in self._creation.items()
            ) if scene else (),
            moves=tuple(MoveRecord(e[0][2], e[1], e[2], e[3]) for e in self._tree.log)
            if scene else (),
            fields=tuple(
                FieldRecord(ent, comp, fname, stamp[2], value)
                for ent, comps in self._fields.items()
                for comp, fd in comps.items()
                for fname, (stamp, value) in fd.items()
            ) if scene else (),
            grants=tuple(grants),
            equivocations=tuple(e.change_ids for e in self.equivocations),
            retracted=tuple(book.dead.items()),
            dead_entities=tuple(sorted(book.dead_entities)) if scene else (),
            cuts=tuple(c for per in book.cuts.values() for c in per.values()),
            invite_uses=tuple(u for per in book.uses.values() for u in per.values()),
            invite_revocations=tuple(
                r for per in book.revocations.values() for r in per.values()
            ),
            frontier=FrontierContent(
                cut.hlc, tuple((a, s, cut.head_of[a]) for a, s in cut.base.items()),
                cut.pruned, cut.entries),
            private=private,
        )

    def _import_content(self, content: SceneContent) -> None:
        """Fill an empty replica from ``content``. Raises ``KeyError``/``ValueError`` if it
        is inconsistent (the snapshot loader turns those into a ``DecodeError``)."""
        gch = decode_change(content.genesis, self.limits)
        self._adopt_genesis(gch, content.genesis)
        graph = self._graph
        key = self._key
        stamps: dict[bytes, Stamp] = {gch.change_id: [gch.hlc, self.owner, gch.change_id]}
        frontier = content.frontier
        if frontier is not None:
            graph = self._graph = ChangeGraph()
            base_entries = [BaseEntry(e.change_id, key(e.author), e.seq, e.hlc, e.kind,
                                      tuple((key(a), s) for a, s in e.lag), e.past)
                            for e in frontier.entries]
            graph.load_frontier({key(a): s for a, s, _ in frontier.authors},
                                {key(a): h for a, _, h in frontier.authors},
                                frontier.pruned, frontier.hlc, base_entries)
            if gch.change_id not in graph.meta:
                raise ValueError("the frontier lacks the genesis")
            for be in base_entries:
                if be.seq > graph.base.get(be.author, 0):
                    raise ValueError("a frontier entry is above its author's count")
                stamps[be.change_id] = [be.hlc, be.author, be.change_id]
        changes = content.changes if frontier is not None else content.changes[1:]
        for c in changes:
            if c.change_id in graph.index or not all(d in graph.index for d in c.deps):
                raise ValueError("changes are not in causal order")
            author = key(c.author)
            # An equivocating pair is recorded from the equivocations below.
            graph.add(c.change_id, ChangeMeta(author, c.seq, c.hlc, c.deps, None), None)
            stamps[c.change_id] = [c.hlc, author, c.change_id]

        def node(n: Node) -> Node:
            return n if n[0] == b"" else (key(n[0]), n[1])

        for e in content.entities:
            ent = node((e.creator, e.counter))
            self._creation[ent] = e.creation_seq
            self._created_by[ent] = [stamps[c][2] for c in e.makers]
        entries = [
            make_entry(stamps[m.change_id], m.op_index, node(m.child), node(m.parent))
            for m in content.moves
        ]
        tree = self._tree
        entries.sort(key=lambda e: (e[0], e[1]))
        for entry in entries:
            tree._do(entry)
        tree.log = entries
        for f in content.fields:
            self._fields.setdefault(node(f.entity), {}).setdefault(f.component, {})[f.field] = (
                stamps[f.change_id], f.value)
        metas = graph.meta
        for g in content.grants:
            m = metas[g.change_id]
            grant = (stamps[g.change_id], g.role, m.author, m.seq)
            if g.inert:
                self._roles.add_inert(key(g.member), grant)
            else:
                self._roles.add(key(g.member), grant)
        for a, b in content.equivocations:
            ma = metas[a]
            if b not in metas:
                raise KeyError("equivocation names an unknown change")
            self.equivocations.append(Equivocation(ma.author, ma.seq, (a, b)))
            self._equivocators.add(ma.author)
            if graph.forked.get(ma.author, ma.seq + 1) > ma.seq:
                graph.forked[ma.author] = ma.seq
        book = self._revocation
        for cid, reason in content.retracted:
            if cid not in metas:
                raise KeyError("a retracted change is unknown")
            book.dead[cid] = reason
        book.dead_entities.update(node(n) for n in content.dead_entities)
        for cut in content.cuts:
            book.add_cut(Cut(key(cut.member), cut.change_id, metas[cut.change_id].author,
                             cut.seq, cut.cutoff))
        for use in content.invite_uses:
            if use.change_id not in metas:
                raise KeyError("an invite use names an unknown change")
            book.add_use(InviteUse(use.invite_id, use.hlc, use.author, use.change_id,
                                   use.op_index, key(use.member), use.max_uses))
        for rev in content.invite_revocations:
            if rev.change_id not in metas:
                raise KeyError("an invite revocation names an unknown change")
            book.add_revocation(rev)
        if content.private is not None:
            self._import_private(content.private, stamps)
        elif self._epochs is not None:
            raise ValueError("a private room's content without its epoch book")
        self._clock.observe(content.clock)
        me = self._me
        self._counter = max((n[1] for n in self._creation if n[0] == me), default=0)

    def snapshot(self, keep_after_hlc: int | None = None) -> bytes:
        """A signed snapshot of the committed state (see ``meshnode.crdt.snapshot``);
        ``keep_after_hlc``: its frontier (see ``export_content``)."""
        return self.snapshot_job(keep_after_hlc)()

    def snapshot_job(self, keep_after_hlc: int | None = None) -> Callable[[], bytes]:
        """:meth:`snapshot` in two steps, so a host keeps the heavy one off its event loop:
        the export runs now (with the replica: one pass over the changes' metadata, no
        crypto); the returned callable encodes, seals and signs it, touching only the
        exported plain data, so it may run in a worker thread while the replica goes on."""
        if self._batch is not None:
            raise RuntimeError("commit() or discard() the local batch before a snapshot")
        ident = self._identity
        seal = self._snapshot_seal() if self._epochs is not None else None
        content = self.export_content(keep_after_hlc, opened=seal is not None)
        room_id = self.room_id
        return functools.partial(encode_snapshot, content, ident.public_key, room_id,
                                 ident.sign, seal)

    @property
    def snapshot_sealed(self) -> bool:
        """True if :meth:`snapshot` writes this private room's scene (sealed): this replica
        is a reader holding the current epoch, with no content waiting for a key. False for
        a blind replica (its snapshot holds the public part only) and for other rooms."""
        return self._epochs is not None and self._snapshot_seal() is not None

    @classmethod
    def from_snapshot(
        cls, data: bytes, identity: Identity, *, trusted_signers: Iterable[bytes] | None = None,
        **kwargs: Any,
    ) -> "SceneReplica":
        """Start a replica from a snapshot instead of replaying history.

        The snapshot's state is taken on trust from its signer: by default any current member
        of the room it describes; pass ``trusted_signers`` (public keys) to narrow that.
        Changes inside the snapshot cannot be retracted by a cut-off that arrives later (the
        replica has no history to replay; ``docs/protocol.md``, Snapshots).
        """
        replica = cls(identity, **kwargs)
        snap = decode_snapshot(data, replica.limits, trusted_signers)
        content = snap.content
        if content.private is not None and snap.sealed is not None:
            content = replica._open_snapshot(snap)
        try:
            replica._import_content(content)
        except (IndexError, KeyError, TypeError, ValueError) as exc:
            raise SchemaError(
                f"snapshot: inconsistent contents ({type(exc).__name__}: {exc})") from None
        if content.private is not None and not content.private.opened and replica.is_reader():
            raise SnapshotKeyMissing(
                "this member is a reader of the private room but the snapshot is not sealed "
                "to it (written before it was admitted, or by a blind host): load the "
                "history instead, or wait for a reader's snapshot")
        if (
            trusted_signers is None
            and snap.signer != replica.owner
            and replica._roles.current_role(snap.signer) == ROLE_NONE
        ):
            raise DecodeError("snapshot signer is not a member of the room")
        replica._base = content
        return replica

    def _open_snapshot(self, snap: DecodedSnapshot) -> SceneContent:
        """The whole content of a sealed snapshot if it was wrapped to this identity, else
        its public part (``docs/protocol.md``, "Sealed snapshots")."""
        section, priv = snap.sealed, snap.content.private
        assert section is not None and priv is not None
        epoch = next((e for e in priv.epochs if e.epoch_id == section.epoch_id), None)
        secret = unwrap_secret(section, snap.room_id, snap.signer, self._identity.public_key,
                               self._private_key(),
                               None if epoch is None else epoch.commitment)
        if secret is None:
            return snap.content
        return open_snapshot(snap, secret, self.limits)

    def restore_bytes(self, datas: Iterable[bytes]) -> list[bytes]:
        """Give a replica started from a snapshot the bytes of the changes it has applied,
        so it serves them to peers again; return the other changes, in order, for
        ``apply_many``. A change's ID is the hash of its bytes, so only the right bytes can
        be attached to an applied change."""
        graph = self._graph
        rest: list[bytes] = []
        seen: set[bytes] = set()
        keep = self._history is None
        for data in datas:
            cid = change_id(data)
            p = graph.index.get(cid)
            if p is None:
                rest.append(data)
            elif p >= 0:
                if keep:
                    graph.raw.setdefault(cid, data)
                else:
                    seen.add(cid)  # stays in the store: only its presence is checked
        if not keep:
            self._restored_missing = sum(1 for c in graph.order
                                         if c not in graph.raw and c not in seen)
        return rest

    def unserved_count(self) -> int:
        """Applied changes whose bytes this replica lacks, so cannot send to peers (those a
        snapshot brought and ``restore_bytes`` did not)."""
        if self._history is not None:
            return self._restored_missing
        graph = self._graph
        return sum(1 for c in graph.order if c not in graph.raw)

    def frontier_vv(self) -> dict[bytes, int]:
        """Author public key -> how many of the author's seqs lie below this replica's
        frontier (held only as a summary, never sent to peers); empty without a frontier. A
        peer whose version vector is below this for some author cannot be brought up to date
        by changes (``behind_frontier``): it must start again from a snapshot."""
        return dict(self._graph.base)

    def prunable(self, keep_after_hlc: int) -> int:
        """How many of the oldest applied changes (in application order, genesis aside) are
        stamped at or before ``keep_after_hlc``: a cheap lower bound of what ``compact``
        would prune, to decide whether it is worth its cost (it re-imports the state)."""
        return self._graph.count_stamped_before(keep_after_hlc)

    def compact(self, keep_after_hlc: int) -> tuple[bytes, list[bytes]]:
        """Prune the history below a frontier (``export_content``): the replica carries on
        from its own frontier snapshot, holding the changes after it and a summary of the
        rest. Returns the signed snapshot (to store before anything is deleted) and the IDs
        of the changes now below the frontier (those a store may delete once the snapshot
        is stored). A peer whose heads are all below the frontier must start again from a
        snapshot (its changes are refused as ``behind_frontier`` or wait for deps).
        The three phases in one call; a host splits them (``meshnode.crdt.compaction``)."""
        job = self.prepare_compaction(keep_after_hlc)
        job.build()
        done = self.finish_compaction(job)
        if done is None:  # pragma: no cover - nothing can intervene within one call
            raise RuntimeError("compaction abandoned")
        return done

    def prepare_compaction(self, keep_after_hlc: int) -> CompactionJob:
        """Phase 1 of a compaction (``meshnode.crdt.compaction``): export the state pruned
        at ``keep_after_hlc``; ``job.build()`` may then run elsewhere (a worker thread)."""
        if self._batch is not None:
            raise RuntimeError("commit() or discard() the local batch before compact()")
        graph = self._graph
        seal = None
        if self._epochs is not None:
            seal = self._snapshot_seal()
            if seal is None:
                raise RuntimeError("only a reader holding the current epoch, with no content "
                                   "waiting for a key, prunes a private room (snapshot_sealed)")
        content = self.export_content(keep_after_hlc, opened=seal is not None)
        ident = self._identity
        limits, skew = self.limits, self.max_clock_skew_s

        def blank() -> SceneReplica:
            return SceneReplica(ident, limits=limits, max_clock_skew_s=skew)

        return CompactionJob(content, graph, len(graph.order), list(graph.index),
                             self.room_id, ident.sign, ident.public_key, blank, seal)

    def finish_compaction(self, job: CompactionJob) -> tuple[bytes, list[bytes]] | None:
        """Phase 3 (after ``job.build()``): adopt the pruned state and re-apply the changes
        applied since phase 1. Returns ``compact``'s result, or None with nothing changed if
        the built state cannot be adopted (see ``meshnode.crdt.compaction``)."""
        old = self._graph
        fresh = job.built
        if fresh is None or old is not job.graph or self._batch is not None \
                or self._full_graph is not None:
            return None
        tail = old.order[job.mark:]
        if len(tail) > MAX_TAIL:
            return None
        # Each tail change must apply on the pruned history as it did on the full one: its
        # deps held there (after the frontier, or on its boundary), its stamp after it.
        fresh_meta, floor = fresh._graph.meta, fresh._graph.base_hlc
        seen: set[bytes] = set()
        for cid in tail:
            m = old.meta[cid]
            if m.hlc <= floor or not all(d in fresh_meta or d in seen for d in m.deps):
                return None
            seen.add(cid)
        datas = self._bytes_of(tail)
        if len(datas) != len(tail):
            return None  # a tail change left memory before it was stored: not re-applicable
        saved = (self._graph, self._tree, self._fields, self._creation, self._created_by,
                 self._equivocators, self.equivocations, self._revocation, self._roles,
                 self._base, self._my_role, self._epochs)
        if fresh._epochs is not None and self._epochs is not None:
            fresh._epochs.secrets.update(self._epochs.secrets)  # learned since phase 1
        (self._graph, self._tree, self._fields, self._creation, self._created_by,
         self._equivocators, self.equivocations, self._revocation, self._roles,
         self._epochs) = (
            fresh._graph, fresh._tree, fresh._fields, fresh._creation, fresh._created_by,
            fresh._equivocators, fresh.equivocations, fresh._revocation, fresh._roles,
            fresh._epochs)
        self._base = job.content
        self._my_role = None
        graph = self._graph
        for cid in graph.order:
            raw = old.raw.get(cid)
            if raw is not None:
                graph.raw[cid] = raw
        if tail:
            self.replay(datas)
            now = self._graph.meta  # a retraction in the tail rebuilds: a new graph
            if not all(c in now for c in tail):  # pragma: no cover - checked above
                (self._graph, self._tree, self._fields, self._creation, self._created_by,
                 self._equivocators, self.equivocations, self._revocation, self._roles,
                 self._base, self._my_role, self._epochs) = saved
                return None
        self._trim_bytes()
        return job.snapshot, job.pruned


def _resolve(ref: Any, author: bytes, actors: list[bytes]) -> Node:
    if ref is None:
        return ROOT
    if type(ref) is int:
        return (author, ref)
    return (actors[ref[0]], ref[1])


def _copy_value(value: Value) -> Value:
    t = type(value)
    if t is list:
        return [_copy_value(v) for v in value]
    if t is dict:
        return {k: _copy_value(v) for k, v in value.items()}
    return value
