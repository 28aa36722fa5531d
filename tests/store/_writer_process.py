"""Helper process for the kill -9 test: append changes through DurableLog, print each ack.

Usage: ``python _writer_process.py DB_PATH``. Prints ``ready``, then the hex change_id of every
change right after its future resolved (the moment the node would acknowledge it), flushing
stdout each time. Runs until killed. The bytes of a change are derived from its id, so the test
can check what was stored, not just that something was.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import os
import sys
from pathlib import Path

from meshnode.store import ChangeStore, DurableLog

ROOM = b"\x07" * 32


def change_bytes(change_id: bytes) -> bytes:
    """The bytes stored for ``change_id`` (the test recomputes them)."""
    return hashlib.sha256(change_id).digest() * 4


async def main(path: Path) -> None:
    store = ChangeStore.open(path)  # synchronous=FULL, as the node runs it
    store.add_room(ROOM, b"genesis", "kill -9", {})
    log = DurableLog(store, max_pending=1000)
    await log.start()
    out = sys.stdout.buffer

    def ack(change_id: bytes, future: asyncio.Future[None]) -> None:
        if future.exception() is not None:
            os._exit(3)  # an unacknowledged failure; the test sees the exit code
        out.write(change_id.hex().encode() + b"\n")
        out.flush()

    out.write(b"ready\n")
    out.flush()
    wave = 0
    while True:
        # Waves of 1..40 appends in one loop tick, so commits are group commits of varied size.
        futures = []
        for _ in range(1 + wave % 40):
            change_id = os.urandom(16)
            future = log.append(ROOM, change_id, change_bytes(change_id))
            future.add_done_callback(functools.partial(ack, change_id))
            futures.append(future)
        await asyncio.gather(*futures)
        wave += 1


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1])))
