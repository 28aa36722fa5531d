"""``SceneEdits``: local edits of the scene: create, set a field, move, delete.

The class above ``RoomEdits`` in the editing part of ``SceneReplica``'s chain
(``LocalEdits(SceneEdits(RoomEdits(EditChecks)))``, one file each; ``meshnode.crdt.editing``
says what every edit guarantees). Each method checks everything that can fail, then appends
its op to the batch and shows it in the scene at once (the tree's pending entries, the field
registers under the batch's stamp). ``set_field`` is the hot path of local editing: kept flat
on purpose (docs/performance.md).
"""

from collections.abc import Mapping
from typing import Any

from meshnode.crdt.edit_batch import (
    ACTOR_BYTES,
    CREATE_OP_BYTES,
    DELETE_OP_BYTES,
    DEP_BYTES,
    MOVE_OP_BYTES,
    SET_OP_BYTES,
    EditBatch,
    Node,
)
from meshnode.crdt.edit_room import RoomEdits
from meshnode.crdt.ids import ROOT, TRASH, EntityId
from meshnode.crdt.quota import quota_problem
from meshnode.crdt.results import OwnHistoryMissing, PermissionDenied, QuotaExceeded
from meshnode.crdt.roles import (
    ROLE_ADMIN,
    ROLE_EDITOR,
    ROLE_NAMES,
)
from meshnode.crdt.tree import make_entry
from protocol.change import (
    OP_CREATE,
    OP_DELETE,
    OP_MOVE,
    OP_SET,
)
from protocol.values import Value


class SceneEdits(RoomEdits):
    """The scene edits of ``SceneReplica`` (a base of it, on ``RoomEdits``; the state lives
    in the replica)."""

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
