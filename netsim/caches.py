"""The process settings a simulation needs, owned by the simulation and scoped to it.

Thousands of cores in one process decode and verify the very same bytes, so a run installs
four caches (signature checks, frames, changes, compact changes' expansions), one table of
interned public keys shared by every replica (``meshnode/crdt/key_table.py``) and raises the
GC thresholds. All six are
process-global hooks: ``SimulationCaches.active()`` installs this simulation's own caches and
thresholds for the duration of a block and restores whatever was there before when the block
ends (even on error), so nothing a simulation switches on leaks into later code in the same
process (other tests, a node). The caches only remember what a decode or check would answer,
and what they hand out is immutable, the caller's own copy, or (decoded changes) one object
every replica only reads, so results are byte-for-byte the same with or without them.
"""

import gc
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

from meshnode.crdt.key_table import using_key_table
from meshnode.identity import VerifyCache, using_verify_cache
from meshnode.tuning import GC_THRESHOLDS
from protocol.change import ChangeCache, using_change_cache
from protocol.compact_cache import ExpansionCache, using_expansion_cache
from protocol.frames import FrameCache, using_frame_cache


class SimulationCaches:
    """One simulation's decode and verify caches (see the module docstring)."""

    def __init__(self, *, verify: int = 200_000, frames: int = 100_000,
                 changes: int = 100_000, expansions: int = 100_000) -> None:
        self.verify = VerifyCache(verify)
        self.frames = FrameCache(frames)
        self.changes = ChangeCache(changes, share=True)  # replicas only read a Change
        self.expansions = ExpansionCache(expansions)
        self.keys: dict[bytes, bytes] = {}  # public key -> the one object every replica keeps

    @contextmanager
    def active(self) -> Iterator[None]:
        """Install these caches and the simulator's GC thresholds inside the block."""
        thresholds = gc.get_threshold()
        with ExitStack() as stack:
            stack.enter_context(using_verify_cache(self.verify))
            stack.enter_context(using_frame_cache(self.frames))
            stack.enter_context(using_change_cache(self.changes))
            stack.enter_context(using_expansion_cache(self.expansions))
            stack.enter_context(using_key_table(self.keys))
            gc.set_threshold(*GC_THRESHOLDS)
            try:
                yield
            finally:
                gc.set_threshold(*thresholds)


@contextmanager
def frozen_setup() -> Iterator[None]:
    """Move every object alive now (a simulation's set-up: identities, replicas, links,
    tens of millions of objects at 10,000 nodes) out of the collector's reach for the block
    (``gc.freeze``), so that each full collection during the run scans only what the run
    allocated; ``gc.unfreeze`` at the end. Collection frees only unreachable cycles, so no
    result changes. Left alone if something else (a node's ``tune_gc``) froze the heap."""
    if gc.get_freeze_count():
        yield
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()
