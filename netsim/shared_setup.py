"""Set-up in time and memory linear in the room's size: replicas cloned from one template.

Every replica of a simulated room starts from the same state: the genesis, then the owner's
set-up changes granting every member a role. Applying them replica by replica costs N grant
ops on each of N replicas, and each replica's role book then holds its own copy of all N
grants: quadratic in time and memory (10,000 nodes: 10^8 grant ops, tens of GB).

Here one throwaway *template* replica applies the set-up changes once; each node's replica is
a copy of it for the node's own identity (:func:`clone_for`):

- what depends on the identity (:data:`IDENTITY_FIELDS`: the key pair, the interned public
  key, the cached own role, the own seq floor and entity counter, the private-room secrets)
  comes from a fresh ``SceneReplica.from_genesis`` for that identity, exactly what the node's
  replica had before it applied the set-up (the template applied nothing of its own, so none
  of these moved);
- the role book is a :class:`SharedRoleBook`: it reads the template's grant tables in place
  and copies them the first time this replica records or drops a grant (copy-on-write), so
  N replicas hold one set of N grants until a role changes;
- the process-wide key table and the limits are shared as they are; the hash graph's memo
  of version-vector look-ups (a pure cache, filled with an entry per member by the set-up)
  starts empty; the rest (hash graph, clock, scene, buffers: a few objects per set-up
  change) is deep-copied.

Only public rooms are cloned: a private room's replicas derive identity-bound key material
while they apply the set-up, so they keep applying it themselves. ``tests/netsim/
test_caches.py`` checks that results.json is byte-identical with and without cloning.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from typing import Any

from meshnode.crdt import SceneReplica
from meshnode.crdt.roles import Grant, RoleBook
from meshnode.identity import Identity

__all__ = ["IDENTITY_FIELDS", "SharedRoleBook", "clone_for"]

IDENTITY_FIELDS = (
    "_identity", "_me", "_my_role", "_seq_floor", "_counter", "_random_bytes", "_x25519",
)
"""Replica attributes that belong to its identity, taken from a fresh replica of that
identity rather than from the template."""


class SharedRoleBook(RoleBook):
    """A role book reading another book's grant tables until it first changes them.

    The tables it starts from must never change afterwards (the template's book is used by
    nobody else): every write goes through :meth:`add`, :meth:`add_inert` or
    :meth:`drop_stamp`, which first give this book its own copy of the tables (``drop_stamp``
    only if it has something to drop); the grant tuples, never changed in place, stay
    shared."""

    __slots__ = ("_shared",)

    def __init__(self, source: RoleBook) -> None:
        super().__init__(source.owner)
        self.grants = source.grants
        self.inert = source.inert
        self._shared = True

    def _own(self) -> None:
        if self._shared:
            self.grants = {m: list(gs) for m, gs in self.grants.items()}
            self.inert = {m: list(gs) for m, gs in self.inert.items()}
            self._shared = False

    def add(self, member: bytes, grant: Grant) -> None:
        self._own()
        super().add(member, grant)

    def add_inert(self, member: bytes, grant: Grant) -> None:
        self._own()
        super().add_inert(member, grant)

    def drop_stamp(self, stamp: list[Any], members: Any = None) -> None:
        # A rollback or commit without grants of this stamp changes nothing: no copy.
        if self._shared:
            targets = list(self.grants) if members is None else members
            if not any(g[0] is stamp for m in targets for g in self.grants.get(m, ())):
                return
        self._own()
        super().drop_stamp(stamp, members)


def clone_for(template: SceneReplica, identity: Identity, **kwargs: Any) -> SceneReplica:
    """A replica for ``identity`` in exactly the state ``template`` is in, as if it had
    applied the same changes itself (see the module docstring). ``template`` must have
    applied changes only (no local edits) and must not be used afterwards."""
    fresh = SceneReplica.from_genesis(template.genesis, identity, **kwargs)
    state = {k: v for k, v in vars(template).items() if k not in IDENTITY_FIELDS}
    memo: dict[int, Any] = {
        id(template._keys): template._keys,  # the simulation's key table, shared by all
        id(template.limits): template.limits,
        id(template._roles): SharedRoleBook(template._roles),
        # A memo of version-vector look-ups per head set (pure: an applied change's vector
        # never changes); the set-up fills it with an entry per member, so each clone
        # starts it empty rather than copying N entries.
        id(template._graph.vv_memo): OrderedDict(),
    }
    clone: SceneReplica = SceneReplica.__new__(SceneReplica)
    vars(clone).update(copy.deepcopy(state, memo))
    for name in IDENTITY_FIELDS:
        setattr(clone, name, getattr(fresh, name))
    return clone
