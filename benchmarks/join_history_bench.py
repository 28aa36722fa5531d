"""Join time against history length on a real node (issue 18).

Run ``python benchmarks/join_history_bench.py [--sizes 1000,10000,100000] [--joins 5]``. For
each size, a fresh ``meshnode up`` process whose room (1,000 entities) has that many changes
of history, written into its store while it is stopped (signed by the node's own identity,
as ``tests/integration/test_long_history.py`` does) with a snapshot every 5,000 changes (as
the node's ``snapshot_every`` would leave); then ``--joins`` new Python clients connect one
after the other, each timed from ``connect`` to synced (the snapshot fetched and verified,
link up, admitted, the changes after the snapshot synced). Prints ONE JSON object; the
median is the figure (``longevity_bench.py --mode join`` measures the client's part alone,
in-process). ``--pruned``: the node runs with ``[store] history_days`` of 86 s (the
history's clocks cannot be older than the room's genesis, made at the node's first start, so
it falls below the frontier that long after), and the first join's grant, once the history
is that old, makes it prune; the joins after that are timed against the pruned node.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks._env import environment  # noqa: E402
from meshnode.client import connect  # noqa: E402
from meshnode.crdt import ROOT as SCENE_ROOT  # noqa: E402
from meshnode.identity import Identity  # noqa: E402
from meshnode.transport.ice import IceSettings  # noqa: E402
from tests.integration.nodeproc import LOOPBACK_CONFIG, NodeProcess, stopped_node_room  # noqa: E402

ENTITIES = 1_000
SNAPSHOT_EVERY = 5_000


def write_history(data_dir: Path, room_hex: str, changes: int) -> None:
    """``changes`` changes (the first creates the room's entities) into the stopped node's
    log, a snapshot every SNAPSHOT_EVERY."""
    with stopped_node_room(data_dir, room_hex) as (store, replica, room_id):
        now = time.time() - 3_600.0
        ents = [replica.create_entity(SCENE_ROOT, {"p": {"x": 0.0}}) for _ in range(ENTITIES)]
        batch: list[tuple[bytes, bytes]] = []
        for i in range(changes):
            if i:
                replica.set_field(ents[i % ENTITIES], "p", "x", float(i))
            now += 0.01
            data = replica.commit(now)
            assert data is not None
            batch.append((replica.recent_changes(1)[0], data))
            if len(batch) == SNAPSHOT_EVERY or i == changes - 1:
                store.append_changes(room_id, batch)
                batch.clear()
                store.save_snapshot(room_id, replica.snapshot(), replica.change_count())


def _pruned(node: NodeProcess) -> bool:
    return "pruned below the retention frontier" in node.log()


async def joins(node: NodeProcess, room: str, count: int) -> list[float]:
    ice = IceSettings(host_addresses=("127.0.0.1",))
    out = []
    for _ in range(count):
        t0 = time.perf_counter()
        async with connect(node.url, room, Identity.generate(), ice=ice):
            out.append(time.perf_counter() - t0)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="1000,10000,100000")
    ap.add_argument("--joins", type=int, default=5)
    ap.add_argument("--pruned", action="store_true")
    args = ap.parse_args()
    result: dict[str, Any] = {"env": environment(), "entities": ENTITIES, "pruned": args.pruned,
                              "joins": []}
    config = LOOPBACK_CONFIG + ("\n[store]\nhistory_days = 0.001\nsnapshot_every = 1\n"
                                if args.pruned else "")
    for size in (int(s) for s in args.sizes.split(",")):
        with tempfile.TemporaryDirectory() as tmp:
            node = NodeProcess(Path(tmp) / "n", config=config).start()
            try:
                room = node.default_room
                assert room is not None
                assert node.terminate() == 0
                write_history(node.data_dir, room, size)
                node.start()
                deadline = time.monotonic() + 300.0
                while args.pruned and not _pruned(node):  # each join's grant: a snapshot
                    assert time.monotonic() < deadline, "the node did not prune"
                    asyncio.run(joins(node, room, 1))
                    time.sleep(5.0)
                times = asyncio.run(joins(node, room, args.joins))
            finally:
                node.kill()
        result["joins"].append({"changes": size, "join_s": [round(t, 3) for t in times],
                                "median_s": round(statistics.median(times), 3)})
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
