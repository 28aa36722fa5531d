"""Hybrid logical clock: 48 bits of milliseconds, 16 bits of logical counter, in one int."""

LOGICAL_BITS = 16
LOGICAL_MASK = (1 << LOGICAL_BITS) - 1


def hlc_from_seconds(now: float) -> int:
    """The HLC value of wall-clock time ``now`` (seconds) with a zero logical part."""
    return max(0, int(now * 1000.0)) << LOGICAL_BITS


def hlc_millis(hlc: int) -> int:
    """The physical (milliseconds) part of an HLC value."""
    return hlc >> LOGICAL_BITS


class HybridClock:
    """Issues stamps greater than every stamp seen so far and never far behind real time.

    With ``now`` constant (e.g. always 0.0) it degenerates into a Lamport clock, which the
    differential tests against Loro rely on.
    """

    __slots__ = ("value",)

    def __init__(self, value: int = 0) -> None:
        self.value = value

    def tick(self, now: float) -> int:
        """A new stamp for a local change made at ``now``."""
        self.value = max(self.value + 1, hlc_from_seconds(now))
        return self.value

    def observe(self, remote: int) -> None:
        """Take a remote stamp into account (it was already checked against the skew bound)."""
        if remote > self.value:
            self.value = remote
