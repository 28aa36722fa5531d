"""A large catch-up sync reads old history off the event loop (issue 18).

A node keeps only its recent change bytes in memory; a peer that has nothing needs the
whole history, most of it in the store. The overlay asks its driver for those bytes a chunk
at a time (``HistoryWanted``) and the node's ``HistoryReader`` reads them on its own thread
with its own SQLite connection. Measured by counting, not by time: a ticker re-schedules
itself on the loop, and every read records the ticker's count when it starts; the counts
must grow from read to read (the loop ran other callbacks between the chunks), every read
must run on the reader's thread, and the replica's synchronous history source must never be
called on the loop thread during the sync. The catching-up peer ends equal to the node.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from meshnode.crdt import ROOT, SceneReplica
from meshnode.identity import Identity
from meshnode.overlay import OverlayConfig, RoomOverlay
from meshnode.overlay.history_reads import READ_CHUNK
from meshnode.runtime.room import RoomRuntime
from meshnode.store import ChangeStore, HistoryReader

NODE, LATE = Identity.generate(), Identity.generate()
CHANGES = 3_000
KEEP_RECENT = 64


class _CountingReader(HistoryReader):
    """Records, for every thread hop, the thread and how often the loop's ticker ran."""

    def __init__(self, path: Path, ticks: Callable[[], int]) -> None:
        super().__init__(path)
        self.ticks = ticks
        self.seen: list[tuple[int, int]] = []  # (ticker count, thread) per hop

    def _read_all(self, asks: list[tuple[bytes, Sequence[bytes]]]) -> list[dict[bytes, bytes]]:
        self.seen.append((self.ticks(), threading.get_ident()))
        return super()._read_all(asks)


def _history(tmp_path: Path) -> tuple[SceneReplica, ChangeStore]:
    """A node replica with CHANGES changes, all stored; only the last KEEP_RECENT bytes in
    memory."""
    now = time.time() - CHANGES
    node = SceneReplica.create(NODE, now, name="catchup", nonce=b"c" * 16)
    node.grant(LATE.public_id, "editor")
    store = ChangeStore.open(tmp_path / "node.db")
    store.add_room(node.room_id, node.genesis, "catchup", {})
    ents = [node.create_entity(ROOT, {"p": {"x": 0}}) for _ in range(20)]
    rng = random.Random(3)
    batch = []
    for i in range(CHANGES):
        if i:
            node.set_field(rng.choice(ents), "p", "x", i)
        data = node.commit(now + i)
        assert data is not None
        batch.append((node.recent_changes(1)[0], data))
    store.append_changes(node.room_id, batch)
    return node, store


async def test_catch_up_reads_history_off_the_loop(tmp_path: Path) -> None:
    loop = asyncio.get_running_loop()
    loop_thread = threading.get_ident()
    node, store = _history(tmp_path)
    sync_reads_on_loop: list[int] = []

    def source(ids: list[bytes]) -> Mapping[bytes, bytes]:
        if threading.get_ident() == loop_thread:
            sync_reads_on_loop.append(len(ids))
        return store.change_bytes(node.room_id, ids)

    node.use_history(source, keep_recent=KEEP_RECENT)
    assert len(node.bytes_in_memory(node.recent_changes(CHANGES))[1]) >= CHANGES - 2 * KEEP_RECENT

    ticks = 0
    ticking = True

    def tick() -> None:
        nonlocal ticks
        ticks += 1
        if ticking:
            loop.call_soon(tick)

    reader = _CountingReader(store.path, lambda: ticks)
    late = SceneReplica.from_genesis(node.genesis, LATE)
    config = OverlayConfig(anti_entropy_interval_s=0.5)
    runtimes: dict[str, RoomRuntime] = {}

    def sender(src: str) -> Callable[[str, str, bytes], bool]:
        def send(peer: str, channel: str, frame: bytes) -> bool:
            loop.call_soon(lambda: runtimes[peer].receive(src, channel, frame))
            return True
        return send

    served = RoomRuntime(RoomOverlay(node, NODE, config, rng=random.Random(1),
                                     wall_clock=time.time),
                         send=sender(NODE.public_id),
                         history=functools.partial(reader.read, node.room_id))
    joiner = RoomRuntime(RoomOverlay(late, LATE, config, rng=random.Random(2),
                                     wall_clock=time.time), send=sender(LATE.public_id))
    runtimes.update({NODE.public_id: served, LATE.public_id: joiner})
    tick()
    try:
        served.attach(LATE.public_id, leaf=True)
        joiner.attach(NODE.public_id)

        async def caught_up() -> None:
            while late.change_count() < node.change_count():
                await asyncio.sleep(0.01)

        await asyncio.wait_for(caught_up(), 60.0)
    finally:
        ticking = False
        served.close()
        joiner.close()
        await reader.aclose()
        store.close()

    assert late.state() == node.state()
    assert late.heads() == node.heads()
    # Read in chunks, each on the reader's thread, the loop turning between them.
    assert reader.requests >= (CHANGES - 2 * KEEP_RECENT) // READ_CHUNK
    assert all(thread != loop_thread for _, thread in reader.seen)
    counts = [count for count, _ in reader.seen]
    assert all(b > a for a, b in itertools.pairwise(counts)), counts
    assert not sync_reads_on_loop, sync_reads_on_loop
    assert served.history_failures == 0
    assert served.overlay.history_reads_pending() == 0
