"""What ``SceneReplica.apply`` reports, and the errors of the local editing API."""

from dataclasses import dataclass

APPLIED = "applied"
BUFFERED = "buffered"
DUPLICATE = "duplicate"
REJECTED = "rejected"

# Rejection reasons that depend on this replica's clock or knowledge, not on the change
# alone: the same change may be accepted when it is offered again later.
TRANSIENT_REASONS = frozenset({"future_timestamp", "unknown_author"})


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


class BatchFull(RuntimeError):
    """The uncommitted batch is as large as one change may be: call ``commit()`` first."""


class Rejected(Exception):
    """Internal: a change failed validation; ``reason`` is its stable label."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
