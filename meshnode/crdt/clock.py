"""Hybrid logical clock: 48 bits of milliseconds, 16 bits of logical counter, in one int.

What it guarantees (see docs/protocol.md, "Hybrid logical clock"):

* a stamp is greater than every stamp the clock has issued or observed, so a change is always
  later than its deps, and a replica that replays its stored changes at start-up (observing
  each) never stamps backwards across a restart, whatever its wall clock says;
* once it has observed a peer's change together with a *monotonic* reading, it never stamps
  more than ``max_lead_s`` ahead of its estimate of the peers' time (that change's stamp plus
  the monotonic time elapsed since). So a wall clock that jumps ahead cannot push this
  replica's stamps beyond what honest peers accept, and after it jumps back the replica is not
  left holding a clock that peers refuse as ``future_timestamp``.
"""

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
    differential tests against Loro rely on. ``max_lead_s`` (None: no bound) caps how far
    ahead of the peers' estimated time a stamp may be; see :meth:`observe_peer`.
    """

    __slots__ = ("max_lead_ms", "peer_offset_ms", "value")

    def __init__(self, value: int = 0, *, max_lead_s: float | None = None) -> None:
        self.value = value
        self.max_lead_ms = None if max_lead_s is None else int(max_lead_s * 1000.0)
        # max over observed peer changes of (their physical ms - our monotonic ms at receipt):
        # our monotonic clock plus this is the latest time any peer's clock has shown us.
        self.peer_offset_ms: int | None = None

    def tick(self, now: float, mono: float | None = None) -> int:
        """A new stamp for a local change made at wall time ``now``.

        ``mono`` is the monotonic reading taken with it (None: same as ``now``, for drivers
        with one clock); it must come from the clock given to :meth:`observe_peer`.
        """
        wall_ms = int(now * 1000.0)
        offset, lead = self.peer_offset_ms, self.max_lead_ms
        if offset is not None and lead is not None:
            ceiling = int((now if mono is None else mono) * 1000.0) + offset + lead
            if wall_ms > ceiling:
                wall_ms = ceiling  # our wall clock runs ahead of every peer's: do not follow it
        self.value = max(self.value + 1, max(0, wall_ms) << LOGICAL_BITS)
        return self.value

    def observe(self, remote: int) -> None:
        """Take a remote stamp into account (it was already checked against the skew bound)."""
        if remote > self.value:
            self.value = remote

    def observe_peer(self, remote: int, mono: float) -> None:
        """Note that a change stamped ``remote`` by another author was accepted at monotonic
        time ``mono``: it anchors the estimate of the peers' time used by :meth:`tick`."""
        offset = hlc_millis(remote) - int(mono * 1000.0)
        if self.peer_offset_ms is None or offset > self.peer_offset_ms:
            self.peer_offset_ms = offset

    def peer_time(self, mono: float) -> float | None:
        """The estimate of the peers' wall time at monotonic time ``mono`` (seconds), or None
        if no peer's change has been observed with a monotonic reading yet."""
        if self.peer_offset_ms is None:
            return None
        return (int(mono * 1000.0) + self.peer_offset_ms) / 1000.0
