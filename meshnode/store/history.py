"""What replaying a room's stored log found: changes whose history the store does not hold.

A node rebuilds each room from its change log at start-up. The log should never hold a change
without its causal past (``DurableLog`` stores in causal order and never drops a failed commit),
but an older node, a hand-edited file or a restored partial backup may. Such changes are buffered
by the replica, invisible, until a peer supplies the missing history. :func:`replay_report`
counts them (and any the replica refused) so the node reports them, with a log line and metrics,
instead of hiding them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from meshnode.crdt.replica import SceneReplica
from meshnode.crdt.results import REJECTED, ApplyResult

__all__ = ["ReplayReport", "replay_report"]


@dataclass(frozen=True, slots=True)
class ReplayReport:
    """One room's replay: ``stored`` changes read, ``missing_history`` of them still waiting
    for dependencies the store lacks (``missing_deps`` distinct hashes), and ``refused``
    counts by the replica's rejection reason."""

    room_id: bytes
    stored: int
    missing_history: int
    missing_deps: int
    refused: dict[str, int] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        """Whether every stored change is visible."""
        return self.missing_history == 0 and not self.refused

    def describe(self) -> str:
        """A log line that says what was found and what happens next."""
        parts = []
        if self.missing_history:
            parts.append(
                f"{self.missing_history} stored change(s) lack their history "
                f"({self.missing_deps} missing dependency(ies)); they stay invisible until a "
                f"peer that has the history syncs with this node"
            )
        if self.refused:
            shown = ", ".join(f"{r}={n}" for r, n in sorted(self.refused.items()))
            parts.append(f"{sum(self.refused.values())} stored change(s) refused ({shown})")
        what = "; ".join(parts) if parts else "every stored change is visible"
        return f"room {self.room_id.hex()[:16]}: {self.stored} change(s) replayed: {what}"


def replay_report(replica: SceneReplica, results: Iterable[ApplyResult]) -> ReplayReport:
    """Summarise a replay from its ``apply_many`` results and the replica's state afterwards
    (a change buffered early in the replay may have been released by a later one, so the
    results alone cannot tell what is still waiting)."""
    # Buffered changes wait on each other too: count only the hashes nobody here holds.
    absent = [d for d in replica.missing_deps() if not replica.is_buffered(d)]
    stored = 0
    refused: dict[str, int] = {}
    for result in results:
        stored += 1
        if result.status == REJECTED:
            reason = result.reason or "unknown"
            refused[reason] = refused.get(reason, 0) + 1
    return ReplayReport(replica.room_id, stored, replica.buffered_count(), len(absent), refused)
