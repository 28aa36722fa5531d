"""Cut-offs and invite accounting: what makes a revocation hold against a backdating member.

A role op that *lowers* a member's role (a demotion, or a removal: role none) names the
member's **cut-off**: the highest seq of that member in the revoking change's causal past
(exactly that value, or the change is rejected ``bad_cutoff``). Every replica then *retracts*
each change of that member whose seq is above the cut-off and which has not seen the
revocation (the revocation is not in its causal past), whatever its deps. So a demoted admin
who keeps signing on an old copy of the room (next seq, deps from before) gets nothing
accepted: the changes are kept in the hash graph as tombstones (so honest changes that list
them as deps are not stuck), but none of their ops has an effect.

Retraction cascades deterministically:

* the grants of a retracted change do not count, so the changes of a member whose only grant
  came from a retracted change (or from a void invite use, below) are retracted too
  (``authority_revoked``);
* an entity created by a retracted change is *dead*: ops of live changes that touch a dead
  entity (set, move, delete, a create under it) are no-ops, and a child created under a dead
  entity is dead too.

Invites: a grant made by redeeming an invite names the invite's ID and its use limit
(``max_uses``, 0 for none). Of all live grants naming one invite, ordered by
``(hlc, author, change ID, op index)``, only those that a live revocation of the invite has
seen (each revocation's causal past holds them) stay valid, and of those only the first
``limit`` (the smallest ``max_uses`` any of them names) take effect; the others are *void*
(their grant counts for nothing).

The verdicts are a function of the set of changes a replica holds, never of the order they
arrived in: ``SceneReplica`` judges each new change against this book, and when a new change
invalidates changes it already applied (a cut-off with victims, an invite use or revocation
that voids an earlier use), it rebuilds its state from the stored change bytes
(``needs_rebuild``). Revocations are rare, so O(history) there is fine.

Trade-off (documented in ``docs/protocol.md``): an honest edit the member made concurrently
with its demotion (not having seen it yet) is retracted too. A revoker cannot tell a
backdated change from a concurrent one, and letting either through is what made revocation
useless.
"""

from collections.abc import Callable, Iterable
from dataclasses import dataclass

Node = tuple[bytes, int]


@dataclass(frozen=True, slots=True)
class Cut:
    """A live role op that lowered ``member``'s role: changes of the member above
    ``cutoff`` that have not seen change ``change_id`` are retracted."""

    member: bytes
    change_id: bytes
    author: bytes
    seq: int
    cutoff: int


@dataclass(frozen=True, slots=True)
class InviteUse:
    """A grant made by redeeming invite ``invite_id`` (op ``op_index`` of a live change)."""

    invite_id: bytes
    hlc: int
    author: bytes
    change_id: bytes
    op_index: int
    member: bytes
    max_uses: int  # 0: no limit

    @property
    def key(self) -> tuple[int, bytes, bytes, int]:
        """The deterministic order of uses: ``(hlc, author, change ID, op index)``."""
        return (self.hlc, self.author, self.change_id, self.op_index)


@dataclass(frozen=True, slots=True)
class InviteRevocation:
    """A live revocation of invite ``invite_id`` (in change ``change_id``)."""

    invite_id: bytes
    change_id: bytes


InPast = Callable[[bytes, bytes], bool]
"""``in_past(target, of)``: is change ``target`` ``of`` itself or in its causal past?"""


class RevocationBook:
    """The retracted changes, the dead entities, and the live cut-offs and invite ops."""

    __slots__ = ("cuts", "dead", "dead_entities", "needs_rebuild", "revocations", "uses")

    def __init__(self) -> None:
        self.dead: dict[bytes, str] = {}  # change ID -> reason ("revoked", ...)
        self.dead_entities: set[Node] = set()
        self.cuts: dict[bytes, dict[bytes, Cut]] = {}
        self.uses: dict[bytes, dict[tuple[bytes, int], InviteUse]] = {}
        self.revocations: dict[bytes, dict[bytes, InviteRevocation]] = {}
        self.needs_rebuild = False

    # ------------------------------------------------------------------ recording

    def add_cut(self, cut: Cut) -> None:
        """Record a live cut-off."""
        self.cuts.setdefault(cut.member, {})[cut.change_id] = cut

    def add_use(self, use: InviteUse) -> None:
        """Record a live grant naming an invite."""
        self.uses.setdefault(use.invite_id, {})[(use.change_id, use.op_index)] = use

    def add_revocation(self, rev: InviteRevocation) -> None:
        """Record a live revocation of an invite."""
        self.revocations.setdefault(rev.invite_id, {})[rev.change_id] = rev

    # ------------------------------------------------------------------ verdicts

    def cutting(self, member: bytes, seq: int, has_seen: Callable[[Cut], bool]) -> Cut | None:
        """The first live cut-off (by change ID) that retracts ``member``'s change ``seq``,
        given ``has_seen(cut)``: whether that change has the cut's change in its past."""
        cuts = self.cuts.get(member)
        if not cuts:
            return None
        for cid in sorted(cuts):
            cut = cuts[cid]
            if seq > cut.cutoff and not has_seen(cut):
                return cut
        return None

    def effective_uses(self, invite_id: bytes, in_past: InPast) -> list[InviteUse]:
        """The uses of ``invite_id`` that take effect (see the module docstring), in order."""
        uses = sorted(self.uses.get(invite_id, {}).values(), key=lambda u: u.key)
        revs = self.revocations.get(invite_id)
        if revs:
            uses = [u for u in uses if all(in_past(u.change_id, r) for r in sorted(revs))]
        limit = min((u.max_uses for u in uses if u.max_uses > 0), default=0)
        return uses if limit == 0 else uses[:limit]

    def use_count(self, invite_id: bytes, in_past: InPast) -> int:
        """How many uses of the invite take effect."""
        return len(self.effective_uses(invite_id, in_past))

    def is_revoked_invite(self, invite_id: bytes) -> bool:
        """True if a live change revoked the invite."""
        return bool(self.revocations.get(invite_id))

    def copy_knowledge(self) -> tuple[dict[bytes, dict[bytes, Cut]],
                                      dict[bytes, dict[tuple[bytes, int], InviteUse]],
                                      dict[bytes, dict[bytes, InviteRevocation]]]:
        """The cut-offs and invite ops (copied), to seed the next pass of a rebuild."""
        return (
            {m: dict(c) for m, c in self.cuts.items()},
            {i: dict(u) for i, u in self.uses.items()},
            {i: dict(r) for i, r in self.revocations.items()},
        )

    def seed(self, knowledge: tuple[dict[bytes, dict[bytes, Cut]],
                                    dict[bytes, dict[tuple[bytes, int], InviteUse]],
                                    dict[bytes, dict[bytes, InviteRevocation]]]) -> None:
        """Know, before a rebuild pass replays anything, what the previous pass found live:
        a cut-off can retract changes that sort before it."""
        cuts, uses, revs = knowledge
        for per in cuts.values():
            for cut in per.values():
                self.add_cut(cut)
        for per_u in uses.values():
            for use in per_u.values():
                self.add_use(use)
        for per_r in revs.values():
            for rev in per_r.values():
                self.add_revocation(rev)

    def drop_changes(self, change_ids: Iterable[bytes]) -> None:
        """Forget cut-offs and invite ops carried by ``change_ids`` (found retracted)."""
        gone = set(change_ids)
        if not gone:
            return
        for member in list(self.cuts):
            kept = {c: v for c, v in self.cuts[member].items() if c not in gone}
            if kept:
                self.cuts[member] = kept
            else:
                del self.cuts[member]
        for inv in list(self.uses):
            kept_u = {k: u for k, u in self.uses[inv].items() if k[0] not in gone}
            if kept_u:
                self.uses[inv] = kept_u
            else:
                del self.uses[inv]
        for inv in list(self.revocations):
            kept_r = {c: r for c, r in self.revocations[inv].items() if c not in gone}
            if kept_r:
                self.revocations[inv] = kept_r
            else:
                del self.revocations[inv]


__all__ = ["Cut", "InPast", "InviteRevocation", "InviteUse", "RevocationBook"]
