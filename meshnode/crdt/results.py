"""What ``SceneReplica.apply`` reports, and the errors of the local editing API."""

from dataclasses import dataclass

APPLIED = "applied"
BUFFERED = "buffered"
DUPLICATE = "duplicate"
REJECTED = "rejected"

# Rejection reasons that depend on this replica's clock or knowledge, not on the change
# alone: the same change may be accepted when it is offered again later.
TRANSIENT_REASONS = frozenset({"future_timestamp", "unknown_author"})

# Rejection reasons that are no fault of the peer that sent the change: the transient ones,
# and ``behind_frontier`` (a change stamped below this replica's snapshot frontier that the
# snapshot's writer lacked: a late change, honest after a partition or an offline edit, that
# only a fresh snapshot can take). The overlay does not score a peer for these.
SENDER_BLAMELESS = TRANSIENT_REASONS | {"behind_frontier"}


@dataclass(frozen=True, slots=True)
class ApplyResult:
    """The outcome of offering one change to a replica.

    ``status`` is one of ``"applied"``, ``"buffered"`` (waiting for deps), ``"duplicate"``
    or ``"rejected"``; ``reason`` says why for the last three. ``applied`` lists every change
    this call applied: the change itself and any buffered changes it released.
    """

    status: str
    reason: str | None = None
    change_id: bytes | None = None
    applied: tuple[bytes, ...] = ()


@dataclass(frozen=True, slots=True)
class Equivocation:
    """Evidence that ``author`` signed two different changes with the same ``seq``."""

    author: bytes
    seq: int
    change_ids: tuple[bytes, bytes]


class PermissionDenied(PermissionError):
    """The local identity's role does not allow this edit."""


class WaitingForKey(PermissionDenied):
    """Scene edits in a private room while some content here still waits for its key: the
    edit could depend on what this replica cannot read yet. Wait for a reader's ``SHARE``."""

    reason = "waiting_for_key"


class BatchFull(RuntimeError):
    """The uncommitted batch is as large as one change may be: call ``commit()`` first."""


class QuotaExceeded(PermissionDenied):
    """The local member has created as many entities as its role allows in this room
    (``meshnode.crdt.quota``); every replica would reject the change as ``quota``."""

    reason = "quota"


class CommitRefused(RuntimeError):
    """``commit()`` cannot sign the batch without emitting a change that peers would reject or
    that would reuse a seq. The batch is kept: fix the cause (or ``discard()``) and commit
    again. ``reason`` is a stable label for logs and metrics."""

    reason = "commit_refused"

    def __init__(self, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        if reason is not None:
            self.reason = reason


class OwnHistoryMissing(CommitRefused):
    """This identity already signed changes up to a seq this replica has not applied (e.g. a
    replay lost some): signing the next seq again would equivocate, and skipping seqs makes
    peers reject the change (``bad_seq``). Sync with peers until the own history is back."""

    reason = "own_history_missing"


@dataclass(frozen=True, slots=True)
class ReplayFailure:
    """One stored change that ``SceneReplica.replay`` could not apply: its position in the
    input, its ID (None if it does not even decode) and a stable reason (an apply rejection
    reason, ``missing_deps`` if it still waits for history, or ``evicted``)."""

    index: int
    change_id: bytes | None
    reason: str


@dataclass(frozen=True, slots=True)
class ReplayReport:
    """What ``SceneReplica.replay`` did with a node's stored changes.

    Every input change is counted exactly once: ``applied`` (now part of the scene),
    ``duplicates`` (already known), ``rejected`` (invalid: corrupt bytes, bad signature, or a
    rule violation), or ``missing_history`` (valid so far but some of its causal past is not
    in the store; it stays buffered unless evicted, and ``missing_deps`` says what to ask peers
    for). ``own_seq`` is the highest seq of this replica's own identity seen in the input:
    the floor below which it will never sign again.
    """

    applied: int
    duplicates: int
    rejected: tuple[ReplayFailure, ...]
    missing_history: tuple[ReplayFailure, ...]
    missing_deps: tuple[bytes, ...]
    own_seq: int

    @property
    def ok(self) -> bool:
        """True if every stored change is applied (or was already known)."""
        return not self.rejected and not self.missing_history

    @property
    def failures(self) -> tuple[ReplayFailure, ...]:
        """Every change that is not applied, rejected ones first."""
        return self.rejected + self.missing_history

    def refused_by_reason(self) -> dict[str, int]:
        """How many stored changes were rejected, by reason."""
        out: dict[str, int] = {}
        for failure in self.rejected:
            out[failure.reason] = out.get(failure.reason, 0) + 1
        return out

    def describe(self, room_id: bytes) -> str:
        """A log line that says what was found and what happens next."""
        parts = []
        if self.missing_history:
            parts.append(
                f"{len(self.missing_history)} stored change(s) lack their history "
                f"({len(self.missing_deps)} missing dependency(ies)); they stay invisible until "
                f"a peer that has the history syncs with this node"
            )
        refused = self.refused_by_reason()
        if refused:
            shown = ", ".join(f"{r}={n}" for r, n in sorted(refused.items()))
            parts.append(f"{len(self.rejected)} stored change(s) refused ({shown})")
        what = "; ".join(parts) if parts else "every stored change is visible"
        total = self.applied + self.duplicates + len(self.rejected) + len(self.missing_history)
        return f"room {room_id.hex()[:16]}: {total} change(s) replayed: {what}"


class Rejected(Exception):
    """Internal: a change failed validation; ``reason`` is its stable label."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
