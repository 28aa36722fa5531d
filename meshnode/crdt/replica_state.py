"""``ReplicaState``: a scene replica's state and every question asked of it.

The first class of the replica's own chain (``SceneReplica(ReplicaApply(ReplicaIntegrate(
ReplicaContent(ReplicaState(PrivateRoom(...))))))``, one file each; ``meshnode.crdt.replica``
lists it): ``__init__`` (every attribute the chain uses), adopting the genesis, and the
read-only API: the change history (heads, bytes, version vectors, what a peer lacks), roles
and invites, the live scene. Nothing here changes the history or the scene (``use_history``
only moves where old bytes live).
"""

import itertools
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from meshnode.crdt.clock import HybridClock, hlc_millis
from meshnode.crdt.content import SceneContent
from meshnode.crdt.editing import ENVELOPE_BYTES, EditBatch, Fields, PrivateBatch
from meshnode.crdt.epochs import EpochBook
from meshnode.crdt.graph import ChangeGraph, ChangeMeta, PendingBuffer
from meshnode.crdt.ids import ROOT, EntityId
from meshnode.crdt.key_table import key_table
from meshnode.crdt.privacy import ROTATION_MARGIN_BYTES, PrivateRoom, default_random_bytes
from meshnode.crdt.results import Equivocation
from meshnode.crdt.revocation import RevocationBook
from meshnode.crdt.roles import ROLE_NAMES, ROLE_NONE, RoleBook
from meshnode.crdt.tree import MoveTree
from meshnode.identity import Identity
from protocol.change import Change
from protocol.limits import DEFAULT_LIMITS, Limits
from protocol.values import Value

Node = tuple[bytes, int]


class ReplicaState(PrivateRoom):
    """The state of a ``SceneReplica`` and its read-only API (see the module docstring)."""

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


def _copy_value(value: Value) -> Value:
    t = type(value)
    if t is list:
        return [_copy_value(v) for v in value]
    if t is dict:
        return {k: _copy_value(v) for k, v in value.items()}
    return value
