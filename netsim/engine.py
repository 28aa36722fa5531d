"""The discrete-event engine: a virtual clock and a heap of scheduled callbacks.

No wall clock, no threads, no asyncio: time moves only when the next event is popped. Events at
the same instant run in the order they were scheduled (a sequence number breaks ties), so a run
is a pure function of its inputs and seed.
"""

import heapq
from collections.abc import Callable
from typing import Any


class Engine:
    """A virtual clock driving callbacks in time order."""

    __slots__ = ("_heap", "_seq", "events_run", "now")

    def __init__(self) -> None:
        self.now = 0.0
        self._heap: list[tuple[float, int, Callable[..., None], tuple[Any, ...]]] = []
        self._seq = 0
        self.events_run = 0

    def at(self, when: float, fn: Callable[..., None], *args: Any) -> None:
        """Run ``fn(*args)`` at virtual time ``when`` (never earlier than now)."""
        self._seq += 1
        now = self.now
        heapq.heappush(self._heap, (now if now > when else when, self._seq, fn, args))

    def run_until(self, until: float, on_progress: Callable[[float], None] | None = None) -> None:
        """Run events up to and including time ``until``; then the clock reads ``until``.

        ``events_run`` is brought up to date when this returns (or raises), not per event.
        """
        heap = self._heap
        pop = heapq.heappop
        ticks = 0
        try:
            if on_progress is None:
                while heap and heap[0][0] <= until:
                    when, _, fn, args = pop(heap)
                    self.now = when
                    fn(*args)
                    ticks += 1
            else:
                while heap and heap[0][0] <= until:
                    when, _, fn, args = pop(heap)
                    self.now = when
                    fn(*args)
                    ticks += 1
                    if ticks % 5000 == 0:
                        on_progress(when)
        finally:
            # Counted once per call, not per event (the loop is the simulator's hot path).
            self.events_run += ticks
        self.now = until

    def pending(self) -> int:
        """Events still scheduled."""
        return len(self._heap)
