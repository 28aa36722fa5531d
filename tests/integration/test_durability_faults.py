"""An acknowledged edit is never lost (issue 9, item 4), on real processes and a real full disk.

- The node's data directory lives on a small tmpfs that the test fills: commits fail with a
  real ``SQLITE_FULL``. Clients get ``StoreUnavailable("disk_full")`` instead of an
  acknowledgement, ``/healthz`` answers 503 naming the reason, metrics count the failures;
  once space is freed the kept commits land, ``flush`` works again, and after a restart every
  edit (acknowledged or nacked) and its history is there.
- A second ``meshnode up`` on a data directory in use refuses to start, naming the holder.
- Stored changes whose history is missing are reported at start-up, not hidden.
"""

import asyncio
import contextlib
import errno
import json
import os
import sqlite3
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from meshnode.client import StoreUnavailable, connect
from meshnode.crdt import ROOT, EntityId
from meshnode.identity import Identity
from tests.integration.nodeproc import NodeProcess
from tests.integration.test_line import ICE, until

PAYLOAD = "x" * 3000  # a few WAL pages per change: the full disk shows at once


@contextlib.contextmanager
def small_filesystem(path: Path, size: str = "4m") -> Iterator[Path]:
    """A tmpfs of ``size`` mounted at ``path`` (needs root, as in CI), unmounted afterwards."""
    path.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root (CI runs as root): run as root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs",
                           str(path)], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.fail(f"running as root but cannot mount a tmpfs at {path}: {done.stderr}")
    try:
        yield path
    finally:
        if subprocess.run(["umount", str(path)], capture_output=True, check=False).returncode:
            subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)


def fill(path: Path) -> None:
    """Write zeros to ``path`` until the file system is full."""
    chunk = b"\0" * 65536
    with path.open("wb", buffering=0) as f:
        try:
            while True:
                f.write(chunk)
        except OSError as err:
            assert err.errno == errno.ENOSPC, err
        # The last partial chunk: take every byte that is left.
        try:
            while True:
                f.write(b"\0" * 512)
        except OSError as err:
            assert err.errno == errno.ENOSPC, err


def healthz(node: NodeProcess) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(node.url + "/healthz", timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


async def edit(client: Any, name: str) -> EntityId:
    ent: EntityId = client.create_entity(ROOT, {"name": {"value": name},
                                                "data": {"blob": PAYLOAD}})
    return ent


async def test_disk_full_nacks_then_every_edit_survives_a_restart(tmp_path: Path) -> None:
    with small_filesystem(tmp_path / "disk") as disk:
        node = NodeProcess(disk / "n")
        try:
            node.start()
            room = node.default_room
            assert room is not None
            names: dict[str, str] = {}  # entity -> name: everything that must survive
            filler = disk / "filler"
            async with connect(node.url, room, Identity.generate(), ice=ICE) as client:
                for i in range(3):
                    ent = await edit(client, f"before{i}")
                    await client.flush(timeout_s=20)
                    names[str(ent)] = f"before{i}"

                fill(filler)
                ent = await edit(client, "first-on-full-disk")
                with pytest.raises(StoreUnavailable) as info:
                    await client.flush(timeout_s=20)
                assert info.value.reason == "disk_full"
                assert "disk_full" in str(info.value)
                names[str(ent)] = "first-on-full-disk"

                # 30 more edits, each its own change: none is acknowledged, all are nacked.
                flushes = []
                for i in range(30):
                    ent = await edit(client, f"full{i}")
                    names[str(ent)] = f"full{i}"
                    flushes.append(asyncio.ensure_future(client.flush(timeout_s=30)))
                    while client.replica.pending_ops:  # signed as a change of its own
                        await asyncio.sleep(0)
                results = await asyncio.gather(*flushes, return_exceptions=True)
                assert all(isinstance(r, StoreUnavailable) and r.reason == "disk_full"
                           for r in results), results

                status, body = healthz(node)
                assert status == 503
                assert body["ok"] is False
                assert body["store"]["failing"] == "disk_full"
                assert body["store"]["attempts"] >= 1
                metrics = node.metrics()
                assert metrics["meshnode_store_failing"] == 1.0
                assert metrics['meshnode_store_failed_commits_total{reason="disk_full"}'] >= 1
                assert metrics["meshnode_store_commit_retries_total"] >= 1
                assert metrics['meshnode_nacks_sent_total{reason="disk_full"}'] >= 31

                filler.unlink()  # the operator frees space: the next retry lands
                await until(lambda: healthz(node)[0] == 200, "the store to recover", 30)
                status, body = healthz(node)
                assert body["ok"] is True and "store" not in body
                assert node.metrics()["meshnode_store_failing"] == 0.0
                ent = await edit(client, "after")
                await client.flush(timeout_s=30)  # works again, and covers all of the above
                names[str(ent)] = "after"
            assert "store commit failed (disk_full" in node.log()
            assert "the store works again" in node.log()
            changes = node.get(f"/api/rooms/{room}/heads")["changes"]

            assert node.terminate() == 0
            node.start()
            heads = node.get(f"/api/rooms/{room}/heads")
            assert heads["changes"] == changes
            async with connect(node.url, room, Identity.generate(), ice=ICE) as check:
                state = check.state()
                lost = [n for e, n in names.items() if e not in state]
                assert not lost, f"{len(lost)} of {len(names)} edits lost: {lost[:5]}"
                assert all(state[e]["components"]["name"]["value"] == n for e, n in names.items())
            assert "lack their history" not in node.log()
        finally:
            node.kill()


def test_second_node_on_a_data_dir_in_use_refuses_to_start(tmp_path: Path) -> None:
    first = NodeProcess(tmp_path / "n").start()
    try:
        assert first.proc is not None
        done = subprocess.run(
            [sys.executable, "-m", "meshnode", "up", "--config", str(first.config_path),
             "--data-dir", str(first.data_dir), "--listen", "127.0.0.1:0"],
            capture_output=True, text=True, timeout=30, check=False,
            env=dict(os.environ, PYTHONUNBUFFERED="1"))
        assert done.returncode != 0
        assert "is up" not in done.stdout
        errors = done.stderr.strip().splitlines()
        assert len(errors) == 1, done.stderr
        assert errors[0].startswith("meshnode up: the data directory")
        assert f"in use by process {first.proc.pid}" in errors[0]
        status, _ = healthz(first)
        assert status == 200  # the running node is untouched
    finally:
        first.kill()


async def test_stored_changes_missing_history_are_reported_at_start(tmp_path: Path) -> None:
    node = NodeProcess(tmp_path / "n").start()
    try:
        room = node.default_room
        assert room is not None
        cids = []
        async with connect(node.url, room, Identity.generate(), ice=ICE) as client:
            for i in range(3):
                client.create_entity(ROOT, {"name": {"value": f"e{i}"}})
                cid = await client.flush(timeout_s=20)
                assert cid is not None
                cids.append(cid)
        assert node.terminate() == 0
        # A store that lost one change (an old node's dropped commit, a partial backup).
        conn = sqlite3.connect(node.data_dir / "meshnode.db")
        try:
            with conn:
                assert conn.execute("DELETE FROM changes WHERE change_id = ?",
                                    (cids[0],)).rowcount == 1
        finally:
            conn.close()
        node.start()
        assert "2 stored change(s) lack their history (1 missing dependency(ies))" in node.log()
        assert node.metrics()["meshnode_store_changes_missing_history"] == 2.0
    finally:
        node.kill()
