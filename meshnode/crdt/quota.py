"""Per-member entity quotas: how many entities one member may create in one room.

An entity ID embeds ``(creator, counter)`` and an honest replica numbers its creations
1, 2, 3, ... So "the counter is above the quota of the author's role" is a check every replica
makes the same way, from the change alone and the role in its causal past, with no counting
and no lookup; a change that creates an entity above it is rejected as ``quota`` (final).

The quota counts entities ever created, deleted ones included (a counter is never reused), so
it bounds what one member can make every replica store, whatever it deletes in between. The
figures are part of the protocol, not of one node's configuration: a replica with other
numbers would reach other verdicts and diverge. They sit far above what a 2-50 person room
builds by hand (a design review has hundreds of entities), and far below what an attacker
needs to exhaust a replica (one editor once added 100,000 entities in 2.2 s, +117 MB on every
replica). An owner who needs more makes the member an admin.
"""

from meshnode.crdt.roles import ROLE_ADMIN, ROLE_EDITOR, ROLE_NAMES, ROLE_OWNER

ENTITY_QUOTA: dict[int, int | None] = {
    ROLE_EDITOR: 10_000,
    ROLE_ADMIN: 100_000,
    ROLE_OWNER: None,  # unlimited: it is the owner's room
}
"""Highest entity counter each role may create (None: no limit). Viewers create nothing."""


def entity_quota(role: int) -> int | None:
    """The highest entity counter a member with ``role`` may create (None: unlimited; 0 for
    roles that may not create at all)."""
    if role not in ENTITY_QUOTA:
        return 0
    return ENTITY_QUOTA[role]


def quota_problem(role: int, counter: int) -> str | None:
    """None if a member with ``role`` may create entity number ``counter``, else a sentence
    that says why not (with the numbers)."""
    limit = entity_quota(role)
    if limit is None or counter <= limit:
        return None
    return (
        f"entity #{counter} is over the {ROLE_NAMES.get(role, str(role))} quota of {limit} "
        "entities per member in this room (deleted ones count too)"
    )


__all__ = ["ENTITY_QUOTA", "entity_quota", "quota_problem"]
