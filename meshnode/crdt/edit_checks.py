"""``EditChecks``: what every local edit checks before it touches anything.

The root base of ``SceneReplica``'s chain (``meshnode.crdt.replica``): it declares the replica
state the local edits work on, the methods its subclasses provide (real methods, not
``TYPE_CHECKING`` stubs), and the checks and bookkeeping the editing API
(``meshnode.crdt.editing.LocalEdits``) shares: role, room in the batch (ops, bytes, names,
creators), names and values as the wire carries them, references into the batch.
"""

from collections.abc import Collection, Mapping
from typing import Any

from meshnode.crdt.clock import HybridClock
from meshnode.crdt.edit_batch import (
    ACTOR_BYTES,
    DEP_BYTES,
    EditBatch,
    Fields,
    Node,
    PrivateBatch,
)
from meshnode.crdt.epochs import EpochBook
from meshnode.crdt.graph import ChangeGraph
from meshnode.crdt.ids import ROOT
from meshnode.crdt.results import BatchFull, PermissionDenied
from meshnode.crdt.roles import ROLE_ADMIN, ROLE_EDITOR, ROLE_HOST, ROLE_NAMES, ROLE_NONE, RoleBook
from meshnode.crdt.tree import MoveTree, Stamp
from meshnode.identity import Identity, public_key_from_peer_id
from protocol.limits import Limits
from protocol.msgpack_io import pack
from protocol.values import InvalidValue, Value, normalize_value


class EditChecks:
    """The checks and batch bookkeeping of ``LocalEdits`` (the root base of ``SceneReplica``;
    the state lives in the replica)."""

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

    def _normalized(self, value: object) -> Value:
        try:
            return normalize_value(value, self.limits)
        except InvalidValue as err:
            raise ValueError(str(err)) from None
