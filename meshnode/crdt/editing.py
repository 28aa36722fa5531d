"""Local editing: the uncommitted batch behind ``create_entity``, ``set_field``, ``move``,
``delete``, ``grant``, ``commit`` and ``discard``.

Local edits apply to the replica at once and collect in one batch; ``commit(now)`` signs it as
one change. Until then its ops carry an "infinitely late" stamp, so changes applied from peers
in between sort before them, exactly as they will once the batch is stamped (its clock value is
taken at commit, after everything applied so far). ``LocalEdits`` is the root base of
``SceneReplica`` (``SceneReplica(... PrivateRoom(LocalEdits))``, ``meshnode.crdt.replica``:
single inheritance, which mypyc can compile, unlike two mixins): it declares the replica state
it works on.

What it guarantees: a refused edit (any exception from an editing method) leaves no trace, so
every change ``commit`` returns is one every honest replica applies. Each method first checks
everything that can fail (arguments, values, names, role, quota, room in the batch) and only
then touches the batch and the scene; ``commit`` re-checks what a change applied from a peer in
the meantime can invalidate (role, quota), never reuses a seq it signed before, and never
returns an empty change or one over the wire limits.
"""

import dataclasses
from collections.abc import Collection, Mapping
from typing import Any

from meshnode.crdt.clock import HybridClock
from meshnode.crdt.epochs import EpochBook
from meshnode.crdt.graph import ChangeGraph, ChangeMeta
from meshnode.crdt.ids import ROOT, TRASH, EntityId
from meshnode.crdt.quota import quota_problem
from meshnode.crdt.results import (
    BatchFull,
    CommitRefused,
    OwnHistoryMissing,
    PermissionDenied,
    QuotaExceeded,
)
from meshnode.crdt.roles import (
    ROLE_ADMIN,
    ROLE_BY_NAME,
    ROLE_EDITOR,
    ROLE_HOST,
    ROLE_NAMES,
    ROLE_NONE,
    ROLE_OWNER,
    ROLE_VIEWER,
    RoleBook,
    may_set_role,
)
from meshnode.crdt.tree import MoveTree, Stamp, make_entry
from meshnode.identity import Identity, public_key_from_peer_id
from protocol.change import (
    MAX_INVITE_USES,
    OP_CREATE,
    OP_DELETE,
    OP_MOVE,
    OP_REVOKE_INVITE,
    OP_ROLE,
    OP_SET,
    Op,
    change_id,
    encode_change,
)
from protocol.limits import Limits
from protocol.msgpack_io import pack
from protocol.private_ops import OP_NAME
from protocol.values import InvalidValue, Value, normalize_value

INF_HLC = 1 << 64
"""Clock value of an uncommitted local batch: later than any real stamp."""

# Upper bounds of the msgpack size of each op, its value excluded, so that a batch that fits
# its byte budget always encodes within ``max_change_bytes``. A reference is at most
# ``[actor index, counter]``: array header 1 + uint16 3 + uint64 9.
_REF_BYTES = 13
SET_OP_BYTES = 1 + 1 + _REF_BYTES + 3 + 3
CREATE_OP_BYTES = 1 + 1 + 9 + _REF_BYTES
MOVE_OP_BYTES = 1 + 1 + 2 * _REF_BYTES
DELETE_OP_BYTES = 1 + 1 + _REF_BYTES
ROLE_OP_BYTES = 1 + 1 + 3 + 1 + 9  # with the cut-off seq (uint64 at most)
INVITE_EXTRA_BYTES = 2 + 32 + 9  # the invite ID and max_uses
ACTOR_BYTES = 2 + 32
DEP_BYTES = 2 + 32
ENVELOPE_BYTES = 256
"""Array headers, author, seq, hlc and the 64-byte signature, rounded up (deps apart)."""

Node = tuple[bytes, int]
Register = tuple[Stamp, Value]
Fields = dict[str, dict[str, Register]]


@dataclasses.dataclass(slots=True)
class PrivateBatch:
    """What a commit adds to a private room's change besides the batch's ops."""

    rotate: bool = False
    shares: list[bytes] = dataclasses.field(default_factory=list)


class EditBatch:
    """The uncommitted local batch: ops in wire form plus what is needed to roll it back."""

    __slots__ = (
        "actor_index",
        "actors",
        "bytes",
        "counter_before",
        "creates",
        "field_undo",
        "has_role_ops",
        "name_index",
        "names",
        "ops",
        "required",
        "revokes",
        "role_ops",
        "set_index",
        "shadowed",
        "stamp",
    )

    def __init__(self, me: bytes, counter: int) -> None:
        self.stamp: Stamp = [INF_HLC, me, b""]
        self.ops: list[Op] = []
        self.actors: list[bytes] = []
        self.actor_index: dict[bytes, int] = {}
        self.names: list[str] = []
        self.name_index: dict[str, int] = {}
        self.set_index: dict[tuple[Node, str, str], Op] = {}
        self.creates: list[Node] = []
        self.field_undo: list[tuple[dict[str, Register], str, Register | None]] = []
        self.shadowed: list[tuple[dict[str, Register], str, Register]] = []
        self.role_ops: list[tuple[bytes, int]] = []
        self.has_role_ops = False  # any OP_ROLE in ``ops`` (``grant`` or ``admit``)
        self.revokes: list[bytes] = []
        self.required = ROLE_VIEWER
        self.counter_before = counter
        self.bytes = 0  # an upper bound of the encoded ops, actors and names


class LocalEdits:
    """The local editing API of ``SceneReplica`` (its root base; the state lives in the
    replica)."""

    _me: bytes
    _keys: dict[bytes, bytes]
    _identity: Identity
    _roles: RoleBook
    _my_role: int | None
    _batch: EditBatch | None
    _counter: int
    _creation: dict[Node, int]
    _created_by: dict[Node, list[bytes]]
    _tree: MoveTree
    _fields: dict[Node, Fields]
    _graph: ChangeGraph
    _clock: HybridClock
    _max_ops: int
    _max_batch_bytes: int
    _seq_floor: int
    limits: Limits
    room_id: bytes
    _epochs: EpochBook | None  # private rooms
    _private_batch: PrivateBatch | None

    # Provided by PrivateRoom (meshnode.crdt.privacy), the subclass. Real methods, not
    # TYPE_CHECKING stubs: mypyc compiles this class and allows no conditional class body.

    def _check_sealable(self) -> None:
        raise NotImplementedError  # PrivateRoom's

    def _seal_batch(
        self, ops: list[Any], batch_actors: list[bytes], names: list[str],
        vv: Mapping[bytes, int], deps: list[bytes], seq: int, hlc: int,
    ) -> tuple[list[bytes], list[Any], dict[str, Any]]:
        raise NotImplementedError  # PrivateRoom's

    def _commit_private(self, cid: bytes, seq: int, hlc: int, deps: list[bytes],
                        booked: dict[str, Any]) -> None:
        raise NotImplementedError  # PrivateRoom's

    def _check_host_grant(self, op: list[Any], member: bytes, target_role: int,
                          hlc: int, vv: Mapping[bytes, int], deps: list[bytes]) -> bytes:
        raise NotImplementedError  # PrivateRoom's

    def _record_role_ops(
        self, cid: bytes, author: bytes, seq: int, hlc: int, stamp: Stamp,
        roles: list[tuple[int, bytes, list[Any], int, int]], revokes: list[bytes],
    ) -> None:
        raise NotImplementedError  # SceneReplica's

    def invite_uses(self, invite_id: bytes) -> int:
        raise NotImplementedError  # SceneReplica's

    def invite_revoked(self, invite_id: bytes) -> bool:
        raise NotImplementedError  # SceneReplica's

    def _key(self, key: bytes) -> bytes:
        """Intern a public key so the many entity IDs that embed it share one object."""
        return self._keys.setdefault(key, key)


    def _member_key(self, member: str | bytes) -> bytes:
        if isinstance(member, bytes):
            if len(member) != 32:
                raise ValueError("a member is a 32-byte public key or a PeerID string")
            return self._key(member)
        return self._key(public_key_from_peer_id(member))

    def _role(self) -> int:
        """The local role for editing; a host edits nothing (it admits with ``admit``)."""
        if self._my_role is None:
            role = self._roles.current_role(self._me)
            self._my_role = ROLE_NONE if role == ROLE_HOST else role
        return self._my_role

    def _touch_batch(self) -> None:
        """Open the batch (for ops that ``commit`` adds: rotations, shares)."""
        if self._batch is None:
            self._batch = EditBatch(self._me, self._counter)

    def _require(
        self,
        level: int,
        what: str,
        ops: int = 1,
        nbytes: int = 0,
        names: Collection[str] = (),
        actors: Collection[bytes] = (),
        *,
        scene: bool = True,
    ) -> EditBatch:
        """Check the role and that ``ops`` more ops (``nbytes`` encoded, using ``names`` and
        entities of ``actors``) fit in the batch; only then open the batch and return it.
        Raises before touching anything, so a refused edit leaves no trace. ``scene``: the
        op is sealed in a private room (which needs every key, ``WaitingForKey``)."""
        batch = self._batch
        if (
            batch is not None and level <= batch.required and self._role() >= level
            and (not scene or self._epochs is None)
            and len(batch.ops) + ops <= self._max_ops
        ):
            # The batch already passed every other check (as in set_field); creators new
            # to it take room (``_ref`` lists them).
            room = self._byte_budget() - batch.bytes - nbytes
            me, listed, name_index = self._me, batch.actor_index, batch.name_index
            new = len({a for a in actors if a != me and a not in listed})
            if room >= ACTOR_BYTES * new and all(n in name_index for n in names) and (
                not new or len(batch.actors) + new <= self.limits.max_actors_per_change
            ):
                return batch
        if self._role() < level:
            raise PermissionDenied(
                f"role {ROLE_NAMES[self._role()]!r} may not {what} in this room"
            )
        if scene and self._epochs is not None:
            self._check_sealable()
        self._check_room(ops, nbytes, names, actors)
        batch = self._batch
        if batch is None:
            batch = self._batch = EditBatch(self._me, self._counter)
        if level > batch.required:
            batch.required = level
        return batch

    def _own_history_problem(self) -> str | None:
        have = self._graph.vv_all.get(self._me, 0)
        if self._seq_floor <= have:
            return None
        return (
            f"this identity already signed seq {self._seq_floor} in this room but this replica "
            f"holds its changes only up to seq {have}"
        )

    def _byte_budget(self) -> int:
        """Bytes the batch's ops, actors and names may take: what is left of a change once the
        envelope and one dep per current head are counted."""
        return self._max_batch_bytes - DEP_BYTES * len(self._graph.heads)

    def _check_room(
        self, ops: int, nbytes: int, names: Collection[str], actors: Collection[bytes]
    ) -> None:
        batch = self._batch
        limits = self.limits
        n_ops, used = (0, 0) if batch is None else (len(batch.ops), batch.bytes)
        if n_ops + ops > self._max_ops:
            raise BatchFull(
                f"the uncommitted batch holds {n_ops} ops and one change may hold "
                f"{self._max_ops}: call commit() first"
            )
        new_names = {n for n in names if batch is None or n not in batch.name_index}
        if new_names:
            have = 0 if batch is None else len(batch.names)
            if have + len(new_names) > limits.max_names_per_change:
                raise BatchFull("too many different names in one batch: commit() first")
            nbytes += sum(len(n.encode()) + 3 for n in new_names)
        new_actors = {
            a for a in actors if a != self._me and (batch is None or a not in batch.actor_index)
        }
        if new_actors:
            have = 0 if batch is None else len(batch.actors)
            if have + len(new_actors) > limits.max_actors_per_change:
                raise BatchFull("too many different creators in one batch: commit() first")
            nbytes += ACTOR_BYTES * len(new_actors)
        if used + nbytes > self._byte_budget():
            raise BatchFull(
                f"the uncommitted batch would take {used + nbytes} of the "
                f"{self._byte_budget()} bytes one change has room for: call commit() first"
            )

    def _check_name(self, name: object) -> None:
        if type(name) is not str or not name or len(name) > self.limits.max_name_chars:
            raise ValueError(
                f"component and field names are 1..{self.limits.max_name_chars} chars, "
                f"not {name!r}"
            )

    def _prepared_value(self, value: object) -> tuple[Value, int]:
        """The value as it will be sent, and (an upper bound of) its encoded size; raises
        ``ValueError`` if the wire cannot carry it."""
        if type(value) is list and len(value) <= 16:
            for x in value:
                if type(x) is not float or x - x != 0.0:
                    break
            else:
                return list(value), 9 * len(value) + 3  # the common case: a float vector
        out = self._normalized(value)
        size = len(pack(out))
        if size > self.limits.max_value_bytes:
            raise ValueError(f"value of {size} bytes is over {self.limits.max_value_bytes}")
        return out, size

    def _ref(self, batch: EditBatch, ent: Node) -> Any:
        if ent == ROOT:
            return None
        if ent[0] == self._me:
            return ent[1]
        idx = batch.actor_index.get(ent[0])
        if idx is None:
            if len(batch.actors) >= self.limits.max_actors_per_change:
                raise BatchFull("too many different creators in one batch: commit() first")
            idx = batch.actor_index[ent[0]] = len(batch.actors)
            batch.actors.append(ent[0])
            batch.bytes += 34
        return [idx, ent[1]]

    def _name(self, batch: EditBatch, name: str) -> int:
        idx = batch.name_index.get(name)
        if idx is None:
            if type(name) is not str or not name or len(name) > self.limits.max_name_chars:
                raise ValueError(
                    f"component and field names are 1..{self.limits.max_name_chars} chars"
                )
            if len(batch.names) >= self.limits.max_names_per_change:
                raise BatchFull("too many different names in one batch: commit() first")
            idx = batch.name_index[name] = len(batch.names)
            batch.names.append(name)
            batch.bytes += len(name.encode()) + 3
        return idx

    def _live(self, entity: Node, what: str) -> Node:
        if not isinstance(entity, tuple) or len(entity) != 2:
            raise TypeError(f"{what} must be an EntityId")
        if entity != ROOT and not self._tree.is_live(entity):
            raise ValueError(f"{what} {entity} is deleted or unknown")
        return (self._key(entity[0]), entity[1]) if entity != ROOT else ROOT

    def _needed_for(self, ent: Node) -> int:
        return ROLE_EDITOR if ent[0] == self._me else ROLE_ADMIN

    def create_entity(
        self,
        parent: Node = ROOT,
        components: Mapping[str, Mapping[str, object]] | None = None,
    ) -> EntityId:
        """Create an entity under ``parent`` with initial ``components``
        (``{component: {field: value}}``); returns its ID.

        All or nothing: if any part is refused (``ValueError``, ``TypeError``,
        ``PermissionDenied``, ``QuotaExceeded``, ``BatchFull``) nothing is created."""
        if components is not None and not isinstance(components, Mapping):
            raise TypeError("components must be a mapping of component -> {field: value}")
        prepared: list[tuple[str, str, Value, int]] = []
        for comp, fields in (components or {}).items():
            if not isinstance(fields, Mapping):
                raise TypeError(f"component {comp!r} must map field names to values")
            self._check_name(comp)
            for field, value in fields.items():
                self._check_name(field)
                prepared.append((comp, field, *self._prepared_value(value)))
        par = self._live(parent, "parent")
        problem = self._own_history_problem()
        if problem is not None:
            # The missing changes may have created entities: their numbers are unknown here.
            raise OwnHistoryMissing(f"{problem}: new entities must wait until peers send them")
        counter = self._counter + 1
        if self._role() >= ROLE_EDITOR:
            problem = quota_problem(self._role(), counter)
            if problem is not None:
                raise QuotaExceeded(problem)
        # Reserve room for the whole entity so it is never committed half-made.
        batch = self._require(
            ROLE_EDITOR,
            "create entities",
            1 + len(prepared),
            CREATE_OP_BYTES + sum(size + SET_OP_BYTES for *_, size in prepared),
            [n for comp, field, *_ in prepared for n in (comp, field)],
            [par[0]] if par != ROOT else [],
        )
        ent = EntityId(self._me, counter)
        node: Node = (self._me, counter)
        idx = len(batch.ops)
        batch.ops.append([OP_CREATE, counter, self._ref(batch, par)])
        batch.bytes += CREATE_OP_BYTES
        self._counter = counter
        self._creation[node] = self._graph.vv_all.get(self._me, 0) + 1
        batch.creates.append(node)
        self._tree.push_local(make_entry(batch.stamp, idx, node, par))
        for comp, field, value, size in prepared:
            self._put_field(batch, node, comp, field, value, size)
        return ent

    def set_field(self, entity: Node, component: str, field: str, value: object) -> None:
        """Set one field of one component of an entity (last writer wins)."""
        # The hot path of local editing: kept flat on purpose (see docs/performance.md).
        try:
            creator, counter = entity
        except (TypeError, ValueError):
            raise TypeError("entity must be an EntityId") from None
        creator = self._keys.get(creator)  # type: ignore[assignment]
        ent: Node = (creator, counter)
        if creator is None or ent not in self._creation:
            raise ValueError(f"entity {entity} is unknown")
        level = ROLE_EDITOR if creator is self._me else ROLE_ADMIN
        if type(value) is list and len(value) <= 16:
            for x in value:
                if type(x) is not float or x - x != 0.0:
                    value, size = self._prepared_value(value)
                    break
            else:
                value = list(value)
                size = 9 * len(value) + 3
        elif type(value) is str and (size := len(value.encode()) + 5) <= min(
                self.limits.max_value_bytes, self.limits.max_str_bytes):
            pass  # a str header takes at most 5 bytes: within both limits
        else:
            value, size = self._prepared_value(value)
        batch = self._batch
        key = (ent, component, field)
        op = ci = fi = None
        fast = False
        if batch is not None and level <= batch.required:
            # Everything this op needs may already be in the batch (role checked, names and
            # creator listed): then only the room left needs a look.
            op = batch.set_index.get(key)
            room = self._max_batch_bytes - DEP_BYTES * len(self._graph.heads) - batch.bytes
            if op is not None:
                fast = size <= room
            elif size + SET_OP_BYTES <= room and len(batch.ops) < self._max_ops:
                names = batch.name_index
                ci = names.get(component)
                fi = names.get(field)
                fast = (
                    ci is not None and fi is not None
                    and (
                        creator is self._me or creator in batch.actor_index
                        # a creator new to the batch: ``_ref`` below lists it
                        or (size + SET_OP_BYTES + ACTOR_BYTES <= room
                            and len(batch.actors) < self.limits.max_actors_per_change)
                    )
                )
        if not fast:
            self._check_name(component)
            self._check_name(field)
            new_op = batch is None or key not in batch.set_index
            batch = self._require(
                level,
                "edit this entity",
                1 if new_op else 0,
                size + (SET_OP_BYTES if new_op else 0),
                (component, field) if new_op else (),
                (creator,) if new_op else (),
            )
            op = batch.set_index.get(key)
        assert batch is not None  # opened by _require, or ``fast`` (for the type checker)
        # From here on nothing can fail (the body of _put_field, inlined for speed).
        if op is not None:
            batch.bytes += size
            op[4] = value  # a later write in the same batch replaces the earlier one
        else:
            if ci is None:
                ci = self._name(batch, component)
            if fi is None:
                fi = self._name(batch, field)
            if creator is self._me:
                ref: Any = counter
            else:
                idx = batch.actor_index.get(creator)
                ref = self._ref(batch, ent) if idx is None else [idx, counter]
            op = [OP_SET, ref, ci, fi, value]
            batch.ops.append(op)
            batch.set_index[key] = op
            batch.bytes += size + SET_OP_BYTES
        comps = self._fields.get(ent)
        if comps is None:
            comps = self._fields[ent] = {}
        fd = comps.get(component)
        if fd is None:
            fd = comps[component] = {}
        stamp = batch.stamp
        prev = fd.get(field)
        if prev is None or prev[0] is not stamp:
            # (A field set again in this batch already has its pre-batch register saved.)
            batch.field_undo.append((fd, field, prev))
        fd[field] = (stamp, value)

    def _put_field(
        self, batch: EditBatch, ent: Node, component: str, field: str, value: Value, size: int
    ) -> None:
        """Record a checked ``SET`` in the batch and show it in the scene (cannot fail; the
        same steps are inlined at the end of ``set_field``)."""
        key = (ent, component, field)
        op = batch.set_index.get(key)
        if op is not None:
            batch.bytes += size
            op[4] = value  # a later write in the same batch replaces the earlier one
        else:
            names = batch.name_index
            ci = names.get(component)
            if ci is None:
                ci = self._name(batch, component)
            fi = names.get(field)
            if fi is None:
                fi = self._name(batch, field)
            ref = ent[1] if ent[0] is self._me else self._ref(batch, ent)
            op = [OP_SET, ref, ci, fi, value]
            batch.ops.append(op)
            batch.set_index[key] = op
            batch.bytes += size + SET_OP_BYTES
        comps = self._fields.get(ent)
        if comps is None:
            comps = self._fields[ent] = {}
        fd = comps.get(component)
        if fd is None:
            fd = comps[component] = {}
        batch.field_undo.append((fd, field, fd.get(field)))
        fd[field] = (batch.stamp, value)

    def _normalized(self, value: object) -> Value:
        try:
            return normalize_value(value, self.limits)
        except InvalidValue as err:
            raise ValueError(str(err)) from None

    def move(self, entity: Node, new_parent: Node) -> None:
        """Move an entity (and its subtree) under ``new_parent``."""
        if entity == ROOT:
            raise ValueError("the root cannot be moved")
        ent = self._live(entity, "entity")
        if not isinstance(new_parent, tuple) or len(new_parent) != 2:
            raise TypeError("new parent must be an EntityId")
        tree_parent = self._tree.parent
        # (An unknown key is not interned: the walk below refuses its entity.)
        par = ROOT if new_parent == ROOT else (
            self._keys.get(new_parent[0], new_parent[0]), new_parent[1])
        if tree_parent.get(ent) == par:  # (then the new parent is live: the entity is)
            if self._role() < self._needed_for(ent):
                raise PermissionDenied(f"role {ROLE_NAMES[self._role()]!r} may not move this")
            return  # already there: no op (as Loro does), so nothing to sign or send
        # One walk up from the new parent: it must reach the root (else it is deleted or
        # unknown) without passing the entity (else the move makes a cycle).
        node: Node | None = par
        while node != ROOT:
            if node == ent:
                raise ValueError("moving an entity under itself or its descendant makes a cycle")
            node = tree_parent.get(node)  # type: ignore[arg-type]
            if node is None:
                raise ValueError(f"new parent {new_parent} is deleted or unknown")
        batch = self._require(
            self._needed_for(ent), "move this entity", 1, MOVE_OP_BYTES, (),
            [n[0] for n in (ent, par) if n != ROOT],
        )
        idx = len(batch.ops)
        batch.ops.append([OP_MOVE, self._ref(batch, ent), self._ref(batch, par)])
        batch.bytes += MOVE_OP_BYTES
        self._tree.push_local(make_entry(batch.stamp, idx, ent, par))

    def delete(self, entity: Node) -> None:
        """Delete an entity and, with it, its subtree."""
        if entity == ROOT:
            raise ValueError("the root cannot be deleted")
        ent = self._live(entity, "entity")
        batch = self._require(
            self._needed_for(ent), "delete this entity", 1, DELETE_OP_BYTES, (), [ent[0]]
        )
        idx = len(batch.ops)
        batch.ops.append([OP_DELETE, self._ref(batch, ent)])
        batch.bytes += DELETE_OP_BYTES
        self._tree.push_local(make_entry(batch.stamp, idx, ent, TRASH))

    def grant(
        self, member: str | bytes, role: str, *, invite: bytes | None = None,
        max_uses: int = 0,
    ) -> None:
        """Give ``member`` (PeerID or public key) a role: "admin", "editor", "viewer" or
        "none" (removes them). See ``meshnode.crdt.roles`` for who may grant what.

        A grant that lowers a role names the member's cut-off (filled in at ``commit``):
        every replica then retracts the member's changes that had not seen it.
        ``invite``: the ID of the invite being redeemed, whose use limit is ``max_uses``
        (0: none); ``PermissionDenied`` if it is used up or revoked here.
        """
        key = self._member_key(member)
        code = ROLE_BY_NAME.get(role)
        if code is None or code == ROLE_OWNER:
            raise ValueError(f"role must be one of admin, editor, viewer, none; not {role!r}")
        if key == self._me:
            raise PermissionDenied("a member cannot change their own role")
        if not may_set_role(self._role(), self._roles.current_role(key), code):
            raise PermissionDenied(
                f"a {ROLE_NAMES[self._role()]} may not make this member {role!r}"
            )
        if invite is not None:
            if type(invite) is not bytes or len(invite) != 32 or code == ROLE_NONE:
                raise ValueError("an invite is a 32-byte ID and grants a role other than none")
            if not 0 <= max_uses < MAX_INVITE_USES:
                raise ValueError(f"max_uses must be in [0, {MAX_INVITE_USES})")
            if self.invite_revoked(invite):
                raise PermissionDenied("this invite was revoked")
            if max_uses and self.invite_uses(invite) >= max_uses:
                raise PermissionDenied(f"this invite was used {max_uses} time(s) already")
        op_bytes = ROLE_OP_BYTES + (INVITE_EXTRA_BYTES if invite is not None else 0)
        batch = self._require(ROLE_ADMIN, "change roles", 1, op_bytes, (), [key], scene=False)
        if key not in batch.actor_index:
            batch.actor_index[key] = len(batch.actors)
            batch.actors.append(key)
            batch.bytes += ACTOR_BYTES
        op: Op = [OP_ROLE, batch.actor_index[key], code, 0]  # cut-off: set at commit
        if invite is not None:
            op += [invite, max_uses]
        batch.ops.append(op)
        batch.has_role_ops = True
        batch.bytes += op_bytes
        batch.role_ops.append((key, code))
        seq = self._graph.vv_all.get(self._me, 0) + 1
        self._roles.add(key, (batch.stamp, code, self._me, seq))

    def revoke(self, member: str | bytes) -> None:
        """Remove a member: their role becomes none, and every replica retracts their
        changes that had not seen the removal (see ``grant``)."""
        self.grant(member, "none")

    def revoke_invite(self, invite_id: bytes) -> None:
        """Revoke an invite: grants naming it that this change has not seen count for
        nothing, on every replica (owner and admins may)."""
        if type(invite_id) is not bytes or len(invite_id) != 32:
            raise ValueError("an invite ID is 32 bytes")
        batch = self._require(ROLE_ADMIN, "revoke invites", scene=False)
        batch.ops.append([OP_REVOKE_INVITE, invite_id])
        batch.bytes += 40
        batch.revokes.append(invite_id)

    def admit(self, member: str | bytes, role: str, *, invite_id: bytes, max_uses: int,
              proof: bytes, now: float) -> None:
        """Grant ``member`` the role of an invite it redeemed, on the invite's authority:
        ``proof`` is ``meshnode.crdt.redemption.make_proof(...)`` (the signed invite and the
        invitee's redemption signature). Any member may do it, a ``host`` only this way.
        Raises ``PermissionDenied`` (with the reason every replica would give) if the proof
        does not admit ``member`` now (``now``: wall-clock seconds, for the expiry)."""
        from meshnode.crdt.clock import hlc_from_seconds
        from meshnode.crdt.results import Rejected

        key = self._member_key(member)
        code = ROLE_BY_NAME.get(role)
        if code is None or code in (ROLE_NONE, ROLE_OWNER) or key == self._me:
            raise ValueError(f"admit gives viewer, editor, admin or host to another member, "
                             f"not {role!r}")
        if self._roles.current_role(self._me) == ROLE_NONE:
            raise PermissionDenied("only members write grants")
        vv = dict(self._graph.vv_all)
        op: Op = [OP_ROLE, 0, code, vv.get(key, 0), invite_id, max_uses, proof]
        try:
            self._check_host_grant(op, key, self._roles.role_in_past(key, vv), hlc_from_seconds(
                now), vv, sorted(self._graph.heads))
        except Rejected as rej:
            raise PermissionDenied(f"the invite does not admit this member: {rej.reason}") \
                from None
        if self.invite_revoked(invite_id):
            raise PermissionDenied("this invite was revoked")
        if max_uses and self.invite_uses(invite_id) >= max_uses:
            raise PermissionDenied(f"this invite was used {max_uses} time(s) already")
        op_bytes = ROLE_OP_BYTES + INVITE_EXTRA_BYTES + len(proof) + 3
        batch = self._require(ROLE_NONE, "admit", 1, op_bytes, (), [key], scene=False)
        if key not in batch.actor_index:
            batch.actor_index[key] = len(batch.actors)
            batch.actors.append(key)
            batch.bytes += ACTOR_BYTES
        op[1] = batch.actor_index[key]
        batch.ops.append(op)
        batch.has_role_ops = True
        batch.bytes += op_bytes
        seq = self._graph.vv_all.get(self._me, 0) + 1
        self._roles.add(key, (batch.stamp, code, self._me, seq))

    def set_room_name(self, name: str) -> None:
        """Rename a private room (owner and admins; sealed like scene ops). A room that is
        not private has its name in the genesis, which cannot change."""
        if self._epochs is None:
            raise ValueError("only a private room's name can be set (it is sealed)")
        if type(name) is not str or len(name) > 200:
            raise ValueError("a room name is a string of at most 200 characters")
        batch = self._require(ROLE_ADMIN, "rename the room", 1, len(name.encode()) + 8)
        batch.ops.append([OP_NAME, name])
        batch.bytes += len(name.encode()) + 8

    def _fill_cutoffs(self, batch: EditBatch, vv: Mapping[bytes, int]) -> None:
        """Each role op names the member's highest seq this replica has seen."""
        if not batch.has_role_ops:
            return  # (most batches: no walk over every op at each commit)
        for op in batch.ops:
            if op[0] == OP_ROLE:
                op[3] = vv.get(batch.actors[op[1]], 0)

    def _commit_role_ops(self, batch: EditBatch, cid: bytes, seq: int, hlc: int) -> None:
        """Book the role ops of a just-committed batch as a peer's would be booked."""
        # ``admit`` (a host's grant by proof) is in ``ops`` but not ``role_ops`` (which
        # ``commit`` checks against the author's own authority): it is booked here too.
        if not batch.has_role_ops and not batch.revokes:
            return
        stamp = batch.stamp
        self._roles.drop_stamp(stamp, batch.actors)  # booked again below, as committed grants
        vv = self._graph.vv_all
        roles = [
            (i, m, op, op[3], self._roles.role_in_past(m, vv))
            for i, op in enumerate(batch.ops) if op[0] == OP_ROLE
            for m in (batch.actors[op[1]],)
        ]
        self._record_role_ops(cid, self._me, seq, hlc, stamp, roles, batch.revokes)

    @property
    def pending_ops(self) -> int:
        """How many local ops wait for ``commit``."""
        return 0 if self._batch is None else len(self._batch.ops)

    def commit(self, now: float, *, mono: float | None = None) -> bytes | None:
        """Sign the uncommitted batch as one change; return its bytes (None if empty).

        ``now`` is wall-clock time (seconds) for the change's clock stamp; ``mono`` the
        monotonic reading taken with it (None: same as ``now``; see ``SceneReplica.apply``).

        If a change applied since the edits took away the right to make them (role or entity
        quota), the batch is rolled back and ``PermissionDenied`` (``QuotaExceeded``) raised.
        ``CommitRefused`` (the batch is kept) if the change could not be valid now: this
        identity signed later seqs than this replica holds (``OwnHistoryMissing``), more
        heads than one change may name, or a change over ``max_change_bytes``.
        """
        batch = self._batch
        if batch is None:
            return None
        if not batch.ops and self._private_batch is None:
            self.discard()  # nothing to sign: an empty change is invalid everywhere
            return None
        graph = self._graph
        vv = dict(graph.vv_all)
        role = self._roles.role_in_past(self._me, vv)
        if role == ROLE_HOST:
            role = ROLE_VIEWER  # its batch holds only proof-carrying grants (``admit``)
        allowed = role >= batch.required and all(
            may_set_role(role, self._roles.role_in_past(m, vv), r) for m, r in batch.role_ops
        )
        if not allowed:
            self.discard()
            raise PermissionDenied("this replica's role changed: the batch was rolled back")
        if batch.creates:
            problem = quota_problem(role, max(n[1] for n in batch.creates))
            if problem is not None:
                self.discard()
                raise QuotaExceeded(f"{problem}: the batch was rolled back")
        seq = vv.get(self._me, 0) + 1
        problem = self._own_history_problem()
        if problem is not None:
            raise OwnHistoryMissing(
                f"{problem}: signing seq {seq} again would equivocate and skipping ahead is "
                "refused by peers (bad_seq). Sync with peers until its own changes are back; "
                "the batch is kept"
            )
        self._fill_cutoffs(batch, vv)
        deps = sorted(graph.heads)
        if len(deps) > self.limits.max_deps:
            raise CommitRefused(
                f"the replica has {len(deps)} heads and one change may name "
                f"{self.limits.max_deps}: wait until peers' changes merge them; the batch is kept",
                "too_many_heads",
            )
        hlc = self._clock.tick(now, mono)
        booked: dict[str, Any] | None = None
        ops, names, pub_actors = batch.ops, batch.names, batch.actors
        if self._epochs is not None:
            if self._epochs.blocked and any(op[0] not in (OP_ROLE, OP_REVOKE_INVITE)
                                            for op in ops):
                raise CommitRefused("some content here waits for an epoch key: the sealed "
                                    "edits wait for a reader's SHARE; the batch is kept",
                                    "waiting_for_key")
            pub_actors, ops, booked = self._seal_batch(
                batch.ops, batch.actors, batch.names, vv, deps, seq, hlc)
            names = []
        actors = self._actors_by_dep(pub_actors, deps) if pub_actors else []
        data = encode_change(
            author=self._me,
            seq=seq,
            deps=deps,
            hlc=hlc,
            actors=actors,
            names=names,
            ops=ops,
            room_id=self.room_id,
            sign=self._identity.sign,
        )
        if len(data) > self.limits.max_change_bytes:
            # Only when heads grew since the edits were made: the bytes are never sent.
            raise CommitRefused(
                f"the change would take {len(data)} bytes, over {self.limits.max_change_bytes} "
                "(the replica's heads grew since the edits): discard() and redo them in "
                "smaller batches; the batch is kept",
                "too_large",
            )
        cid = change_id(data)
        stamp = batch.stamp
        stamp[0] = hlc
        stamp[2] = cid
        for node in batch.creates:
            self._creation[node] = seq
            self._created_by.setdefault(node, []).append(cid)
        vv[self._me] = seq
        self._batch = None
        graph.add(cid, ChangeMeta(self._me, seq, hlc, tuple(deps), vv), data)
        if booked is not None:
            batch.ops, batch.actors = ops, pub_actors  # book role ops as peers see them
            self._commit_private(cid, seq, hlc, deps, booked)
        self._commit_role_ops(batch, cid, seq, hlc)
        return data

    def _actors_by_dep(self, keys: list[bytes], deps: list[bytes]) -> list[bytes | int]:
        """The actor list as sent: a key that authored one of ``deps`` is that dep's index
        (1 byte, not 33). (The graph's columns are read inline: a commit names ~20 deps.)"""
        graph = self._graph
        index, col_author, authors = graph.index, graph.col_author, graph.authors
        head_author: dict[bytes, int] = {}
        for i, d in enumerate(deps):
            p = index[d]
            a = authors[col_author[p]] if p >= 0 else graph.base_entries[~p].author
            if a not in head_author:
                head_author[a] = i
        return [head_author.get(a, a) for a in keys]

    def discard(self) -> None:
        """Roll back every uncommitted local edit."""
        batch = self._batch
        self._private_batch = None
        if batch is None:
            return
        self._batch = None
        self._tree.remove_pending(batch.stamp)
        for fd, field, prev in reversed(batch.field_undo):
            if prev is None:
                fd.pop(field, None)
            else:
                fd[field] = prev
        for fd, field, reg in batch.shadowed:
            cur = fd.get(field)
            if cur is None or cur[0] <= reg[0]:
                fd[field] = reg
        for node in batch.creates:
            self._creation.pop(node, None)
        self._roles.drop_stamp(batch.stamp, batch.actors)
        self._my_role = None
        self._counter = batch.counter_before
