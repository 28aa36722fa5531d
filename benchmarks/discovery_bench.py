"""Discovery benchmark: py-libp2p Kademlia hosts in one process, on the node's loop (trio in
guest mode on uvloop, exactly as the node runs them), finding a room's hosts.

Run ``python benchmarks/discovery_bench.py [--quick]``. It prints ONE JSON object and exits 0
if at least 90% of the lookups found a host (1 otherwise). Figures:

* **baseline loop lag**: an asyncio task asks to wake every 1 ms for ``--lag-s`` seconds with
  no libp2p in the process; how late each wake-up is (p50/p99/max, ms).
* For each size (10 and 50 hosts): the hosts start (each with its own identity, DHT in server
  mode, the ``meshroom`` validator), each dials host 0 and one random earlier host; ``rooms``
  rooms are each announced (provide + signed card) by 2 random hosts; then ``lookups``
  lookups run from random other hosts, one at a time: ``find_providers`` of the room's
  rendezvous CID, then the card of the first provider found. Reported: time to find a host
  (p50/p90/max, ms), time to its card, the share of lookups that found one of the room's
  announcing hosts, and the loop lag measured *during* the lookups, also as a ratio to the
  baseline (``loop_lag_p99_added_ms``: what the libp2p host adds to the node's loop).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._env import environment
from meshnode.discovery.bridge import TrioBridge
from meshnode.discovery.card import CardValidator, make_card
from meshnode.discovery.keys import card_key, rendezvous, rendezvous_cid
from meshnode.discovery.libp2p_host import Libp2pHost
from meshnode.identity import Identity, public_key_from_peer_id


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3)


class LagProbe:
    """How late a 1 ms asyncio timer fires while it runs (ms)."""

    def __init__(self) -> None:
        self.lateness: list[float] = []
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            start = time.perf_counter()
            await asyncio.sleep(0.001)
            self.lateness.append(max(0.0, (time.perf_counter() - start - 0.001) * 1000))

    def start(self) -> None:
        self.lateness = []
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> dict[str, float]:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        lat = self.lateness
        return {"samples": len(lat), "p50_ms": pct(lat, 0.5), "p99_ms": pct(lat, 0.99),
                "max_ms": round(max(lat), 3) if lat else float("nan")}


async def one_size(n: int, rooms: int, lookups: int, rng: random.Random) -> dict[str, Any]:
    bridge = TrioBridge()
    await bridge.start()
    validator = CardValidator(lambda: int(time.time() * 1000))
    ids = [Identity.generate() for _ in range(n)]
    hosts = [Libp2pHost(i, bridge, validator) for i in ids]
    started = time.perf_counter()
    try:
        for h in hosts:
            await h.start()
        for i, h in enumerate(hosts[1:], start=1):
            for j in {0, rng.randrange(i)}:
                await h.connect(hosts[j].peer_id, hosts[j].addrs(), 10)
        setup_s = time.perf_counter() - started
        room_hosts: dict[bytes, set[int]] = {}
        for _ in range(rooms):
            room = os.urandom(32)
            owners = set(rng.sample(range(n), 2))
            room_hosts[room] = owners
            for o in owners:
                await hosts[o].provide(rendezvous_cid(room))
                card = make_card(rendezvous(room), ids[o].public_key, ids[o].sign,
                                 [f"http://host{o}:8470"], hosts[o].addrs(),
                                 int(time.time() * 1000), 600_000)
                await hosts[o].put_value(card.key, card.encode())
        probe = LagProbe()
        probe.start()
        find_ms: list[float] = []
        card_ms: list[float] = []
        ok = 0
        for _ in range(lookups):
            room = rng.choice(sorted(room_hosts))
            owners = room_hosts[room]
            asker = hosts[rng.choice([i for i in range(n) if i not in owners])]
            t0 = time.perf_counter()
            found = await asker.find_providers(rendezvous_cid(room), 20, 5.0)
            t1 = time.perf_counter()
            hits = [p for p, _ in found if p in {hosts[o].peer_id for o in owners}]
            if hits:
                ok += 1
                find_ms.append((t1 - t0) * 1000)
                key = card_key(rendezvous(room), public_key_from_peer_id(hits[0]))
                if await asker.get_value(key, 5.0) is not None:
                    card_ms.append((time.perf_counter() - t1) * 1000)
        lag = await probe.stop()
        return {"hosts": n, "rooms": rooms, "lookups": lookups, "setup_s": round(setup_s, 2),
                "found": ok, "success_share": round(ok / lookups, 3),
                "find_ms": {"p50": pct(find_ms, 0.5), "p90": pct(find_ms, 0.9),
                            "max": round(max(find_ms), 3) if find_ms else None,
                            "mean": round(statistics.fmean(find_ms), 3) if find_ms else None},
                "card_ms": {"p50": pct(card_ms, 0.5), "p90": pct(card_ms, 0.9)},
                "loop_lag_during_lookups": lag}
    finally:
        for h in hosts:
            await h.aclose()
        await bridge.aclose()


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(args.seed)
    out: dict[str, Any] = {"benchmark": "discovery", "environment": environment(),
                           "quick": args.quick, "seed": args.seed}
    out["environment"]["libp2p"] = _version("libp2p")
    out["environment"]["trio"] = _version("trio")
    probe = LagProbe()
    probe.start()
    await asyncio.sleep(args.lag_s)
    out["baseline_loop_lag"] = await probe.stop()
    lookups = 10 if args.quick else 50
    out["sizes"] = [await one_size(n, 3 if args.quick else 10, lookups, rng)
                    for n in (10, 50)]
    base = out["baseline_loop_lag"]
    out["summary"] = {
        f"find_ms_p50_{s['hosts']}_hosts": s["find_ms"]["p50"] for s in out["sizes"]} | {
        f"success_share_{s['hosts']}_hosts": s["success_share"] for s in out["sizes"]} | {
        f"loop_lag_p99_added_ms_{s['hosts']}_hosts": round(
            s["loop_lag_during_lookups"]["p99_ms"] - base["p99_ms"], 3) for s in out["sizes"]
    } | {"baseline_loop_lag_p99_ms": base["p99_ms"]}
    return out


def _version(pkg: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run (under a minute)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--lag-s", type=float, default=2.0,
                        help="seconds of baseline loop-lag sampling")
    args = parser.parse_args()
    import logging

    logging.getLogger("libp2p").setLevel(logging.CRITICAL)
    try:
        import uvloop

        out = uvloop.run(main_async(args))
    except ImportError:
        out = asyncio.run(main_async(args))
    print(json.dumps(out, indent=2))
    return 0 if all(s["success_share"] >= 0.9 for s in out["sizes"]) else 1


if __name__ == "__main__":
    sys.exit(main())
