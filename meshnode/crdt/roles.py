"""Room membership and roles, held in the replica and judged against each change's past.

A role grant is an op in a signed change, so every replica sees the same grants. Whether a
change's author may do what it does is decided against the grants in that change's *causal
past* (its version vector), never against whatever this replica happens to have received: that
is what makes the verdict identical on every replica, in any delivery order.

That rule alone cannot stop a demoted member: one who keeps signing on a copy of the room from
before the demotion (next seq, deps from before) has changes whose causal past still shows the
old role. So a role op that *lowers* a role names the member's **cut-off** (the highest seq of
that member the revoker had seen), and every replica retracts the member's changes above the
cut-off that have not seen the revocation, whatever their deps (``meshnode.crdt.revocation``).
Trade-off: an honest edit the member made concurrently with the demotion, before hearing of
it, is retracted too; the member redoes it if still allowed.

Grants of retracted changes and void invite uses are kept as *inert* grants: they still count
when a change is checked for acceptance into the hash graph (so whether a change is accepted
never depends on delivery order), but never for what a change may do.

Who may set roles (the state table):

================  ===========================================  ===========================
author's role     may set these roles                          on members whose role is
================  ===========================================  ===========================
owner             none, viewer, editor, admin                  anything but owner
admin             none, viewer, editor                         none, viewer, editor
editor, viewer    nothing                                      --
host              only with an invite's redemption proof       (``meshnode.crdt.redemption``)
================  ===========================================  ===========================

``host`` (wire code 5) ranks with editor in this table (owner and admins may grant it; an
admin may change a host's role) but is no reader: it stores, relays and admits, writes only
``ROLE`` ops that carry a redemption proof, and never receives keys in a private room.
"""

import itertools
from collections.abc import Callable, Iterable, Mapping
from collections.abc import Set as AbstractSet
from typing import Any

from protocol.change import (
    ROLE_ADMIN,
    ROLE_EDITOR,
    ROLE_HOST,
    ROLE_NONE,
    ROLE_OWNER,
    ROLE_VIEWER,
)

ROLE_NAMES = {
    ROLE_NONE: "none",
    ROLE_VIEWER: "viewer",
    ROLE_EDITOR: "editor",
    ROLE_ADMIN: "admin",
    ROLE_OWNER: "owner",
    ROLE_HOST: "host",
}
ROLE_BY_NAME = {name: code for code, name in ROLE_NAMES.items()}

# A grant: (stamp, role, grantor public key, grantor's seq of the granting change)
Grant = tuple[list[Any], int, bytes, int]


READER_ROLES = frozenset({ROLE_VIEWER, ROLE_EDITOR, ROLE_ADMIN, ROLE_OWNER})
"""Roles whose holders receive a private room's keys."""

_RANK = {ROLE_NONE: 0, ROLE_VIEWER: 1, ROLE_EDITOR: 2, ROLE_HOST: 2, ROLE_ADMIN: 3,
         ROLE_OWNER: 4}
_CAN = {ROLE_NONE: 0, ROLE_VIEWER: 1, ROLE_EDITOR: 3, ROLE_ADMIN: 7, ROLE_OWNER: 15,
        ROLE_HOST: 16}  # capability bits: read, edit, admin, own; admit-with-proof


def may_set_role(actor_role: int, target_role: int, new_role: int) -> bool:
    """The state table above, as a function."""
    if target_role == ROLE_OWNER:
        return False
    if actor_role == ROLE_OWNER:
        return True
    if actor_role == ROLE_ADMIN:
        return _RANK[target_role] < ROLE_ADMIN and _RANK[new_role] < ROLE_ADMIN
    return False


def role_lowered(before: int, after: int) -> bool:
    """True if ``after`` takes away something ``before`` allowed (so the grant names a
    cut-off that retracts the member's changes which had not seen it)."""
    if before == ROLE_HOST or after == ROLE_HOST:
        return before != after and before != ROLE_NONE
    return after < before


# Versions of role books: one sequence for every book of the process, so that a new book
# (a replica rebuilt, reset or swapped to a compacted state) never repeats a version an
# earlier book had (see ``RoleBook.version``).
_versions = itertools.count(1)


class RoleBook:
    """Every grant ever applied, per member; roles are computed from them on demand.

    ``version`` changes (to a number no book of this process had before) whenever a grant is
    recorded or dropped: while it stays the same, every role this book answers stays the
    same. It lets a caller re-check access only when roles may have moved
    (``SceneReplica.roles_version``); it is never part of a replica's state or results."""

    __slots__ = ("grants", "inert", "owner", "version")

    def __init__(self, owner: bytes) -> None:
        self.owner = owner
        self.grants: dict[bytes, list[Grant]] = {}
        self.inert: dict[bytes, list[Grant]] = {}
        self.version = next(_versions)

    def add(self, member: bytes, grant: Grant) -> None:
        """Record a grant (already authorised by the caller)."""
        self.grants.setdefault(member, []).append(grant)
        self.version = next(_versions)

    def add_inert(self, member: bytes, grant: Grant) -> None:
        """Record a grant that counts only for acceptance (a retracted change's, or a void
        invite use): see the module docstring."""
        self.inert.setdefault(member, []).append(grant)
        self.version = next(_versions)

    def role_in_past(
        self,
        member: bytes,
        vv: Mapping[bytes, int],
        in_past: Callable[[bytes], bool] | None = None,
        equivocators: AbstractSet[bytes] = frozenset(),
        *,
        with_inert: bool = False,
    ) -> int:
        """The member's role as seen by a change whose causal past has version vector ``vv``.

        A grant by an author who equivocated is checked with ``in_past(grant change ID)``
        instead: the version vector cannot tell that author's two changes with one seq apart.
        ``with_inert``: count inert grants too (the acceptance check).
        """
        if member == self.owner:
            return ROLE_OWNER
        grants = self.grants.get(member)
        if with_inert and member in self.inert:
            grants = (grants or []) + self.inert[member]
        if not grants:
            return ROLE_NONE
        best: Grant | None = None
        for g in grants:
            if vv.get(g[2], 0) < g[3]:
                continue
            if g[2] in equivocators and (in_past is None or not in_past(g[0][2])):
                continue
            # ``>=``: of two grants in one change (one stamp), the later op wins.
            if best is None or g[0] >= best[0]:
                best = g
        return ROLE_NONE if best is None else best[1]

    def current_role(self, member: bytes) -> int:
        """The member's role given every grant this replica holds (latest stamp wins)."""
        if member == self.owner:
            return ROLE_OWNER
        grants = self.grants.get(member)
        if not grants:
            return ROLE_NONE
        best = grants[0]
        for g in grants:
            if g[0] >= best[0]:  # of two grants in one change, the later op wins
                best = g
        return best[1]

    def members(self) -> dict[bytes, int]:
        """Every member with a role other than none, including the owner."""
        out = {self.owner: ROLE_OWNER}
        for member in self.grants:
            role = self.current_role(member)
            if role != ROLE_NONE:
                out[member] = role
        return out

    def drop_stamp(self, stamp: list[Any], members: Iterable[bytes] | None = None) -> None:
        """Forget grants carrying ``stamp`` (an uncommitted local batch being rolled back).
        ``members``: the only members that can hold such grants (the batch's actors), so
        that a commit costs O(its ops), not O(every member ever granted): the owner of a
        room of 20,000 members granting each newcomer was quadratic."""
        targets = list(self.grants) if members is None else members
        for member in targets:
            grants = self.grants.get(member)
            if grants is None:
                continue
            kept = [g for g in grants if g[0] is not stamp]
            if len(kept) == len(grants):
                continue
            self.version = next(_versions)
            if kept:
                self.grants[member] = kept
            else:
                del self.grants[member]


__all__ = [
    "READER_ROLES",
    "ROLE_ADMIN",
    "ROLE_BY_NAME",
    "ROLE_EDITOR",
    "ROLE_HOST",
    "ROLE_NAMES",
    "ROLE_NONE",
    "ROLE_OWNER",
    "ROLE_VIEWER",
    "RoleBook",
    "may_set_role",
    "role_lowered",
]
