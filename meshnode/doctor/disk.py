"""Disk space under the data directory, and how fast the database grows.

A full disk stops every commit: ``/healthz`` turns 503 and no edit is acknowledged until
space is freed (nothing is lost; docs/operators.md, Durability). The growth rate is the
database's size over the age of its oldest room, an average: a busy week grows faster.
"""

import asyncio
import shutil
import sqlite3
import time
from pathlib import Path

from meshnode.doctor.findings import DoctorContext, Finding, Status
from meshnode.store.sqlite import DB_FILENAME

__all__ = ["check_disk", "space_status"]

MIB = 1 << 20
FAIL_FREE_BYTES = 64 * MIB
WARN_FREE_BYTES = 1024 * MIB
WARN_DAYS_LEFT = 30.0
DAY_S = 86_400.0


def _existing(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def space_status(free: int, days_left: float | None) -> Status:
    """How bad ``free`` bytes are, given the days until the database fills them."""
    if free < FAIL_FREE_BYTES:
        return Status.FAIL
    if free < WARN_FREE_BYTES or (days_left is not None and days_left < WARN_DAYS_LEFT):
        return Status.WARN
    return Status.OK


def _database(path: Path) -> dict[str, float]:
    """Size, change count and age of the store (read only; empty if there is none)."""
    if not path.exists():
        return {}
    size = sum(p.stat().st_size for p in (path, Path(f"{path}-wal")) if p.exists())
    out: dict[str, float] = {"bytes": float(size)}
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=2)
        try:
            out["changes"] = float(conn.execute("SELECT count(*) FROM changes").fetchone()[0])
            first = conn.execute("SELECT min(created_at) FROM rooms").fetchone()[0]
            if first is not None:
                out["age_s"] = max(time.time() - float(first), 0.0)
        finally:
            conn.close()
    except sqlite3.Error:
        pass  # the node reports a damaged store itself, at start
    return out


def disk_findings(data_dir: Path) -> list[Finding]:
    """``disk.space`` and ``disk.growth`` (blocking: run it in a thread)."""
    where = _existing(data_dir)
    usage = shutil.disk_usage(where)
    db = _database(data_dir / DB_FILENAME)
    rate = None
    if db.get("age_s", 0.0) >= 3600:  # younger than an hour says nothing about a rate
        rate = db["bytes"] / max(db["age_s"], DAY_S) * DAY_S
    days_left = usage.free / rate if rate else None
    status = space_status(usage.free, days_left)
    data = {"path": str(where), "free_bytes": usage.free, "total_bytes": usage.total}
    message = (f"{usage.free / MIB:,.0f} MiB free of {usage.total / MIB:,.0f} MiB on the file "
               f"system of {where}")
    fix = ""
    if status is Status.FAIL:
        message = "almost no space left: " + message
        fix = (f"free space on that file system (at least {WARN_FREE_BYTES // MIB} MiB), or "
               "move the data directory to a larger one (stop the node first); a node on a "
               "full disk acknowledges no edit (/healthz 503)")
    elif status is Status.WARN:
        fix = "free space, or plan a larger disk before the database fills it"
    space = Finding("disk.space", status, message, fix, data)
    if not db:
        return [space, Finding("disk.growth", Status.SKIP, "no database yet")]
    growth_data = {"database_bytes": int(db["bytes"]), "changes": int(db.get("changes", 0)),
                   "bytes_per_day": round(rate) if rate else None,
                   "days_until_full": round(days_left, 1) if days_left is not None else None}
    text = (f"the database holds {int(db.get('changes', 0)):,} changes in "
            f"{db['bytes'] / MIB:,.1f} MiB")
    if rate and days_left is not None:
        text += (f", growing about {rate / MIB:,.2f} MiB a day (average since the first "
                 f"room): the disk lasts about {days_left:,.0f} more days")
        growth = Status.WARN if days_left < WARN_DAYS_LEFT else Status.OK
    else:
        text += " (too young to estimate its growth)"
        growth = Status.OK
    return [space, Finding("disk.growth", growth, text,
                           "" if growth is Status.OK else "plan more disk space", growth_data)]


async def check_disk(ctx: DoctorContext) -> list[Finding]:
    """``disk.space`` and ``disk.growth``."""
    return await asyncio.to_thread(disk_findings, ctx.config.data_dir)
