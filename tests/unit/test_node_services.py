"""The node as a composition of services: structured start and stop, owned tasks, and no
store call on the event loop. A real in-process node: real SQLite file, real HTTP on a free
port (no peer links are needed for these)."""

import asyncio
import threading
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from meshnode.config import NodeConfig
from meshnode.node import Node, NodeCrashed
from meshnode.rooms.host import RoomHost
from meshnode.runtime.bootstrap import Bootstrap
from meshnode.runtime.links import LinkManager
from meshnode.runtime.tasks import TaskSet
from meshnode.signaling.admin_token import ADMIN_TOKEN_FILE, read_admin_token
from meshnode.store import ChangeStore, DurableLog


def _config(tmp_path: Path, **kw: Any) -> NodeConfig:
    return replace(NodeConfig(), data_dir=tmp_path / "node", listen_port=0,
                   store_synchronous="normal", **kw)


def _record(monkeypatch: pytest.MonkeyPatch, calls: list[str], cls: type, name: str) -> None:
    original = getattr(cls, name)

    async def wrapped(self: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(f"{cls.__name__}.{name}")
        return await original(self, *args, **kwargs)

    monkeypatch.setattr(cls, name, wrapped)


async def test_store_calls_run_off_the_event_loop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", "meshnode.node")
    on_loop: list[str] = []
    loop_thread = threading.current_thread()
    for name in ("rooms", "add_room", "changes", "latest_snapshot", "save_snapshot",
                 "known_peers", "remember_peer", "append_many", "open"):
        original: Callable[..., Any] = getattr(ChangeStore, name)

        def checked(*args: Any, _name: str = name, _original: Callable[..., Any] = original,
                    **kwargs: Any) -> Any:
            if threading.current_thread() is loop_thread:
                on_loop.append(_name)
            return _original(*args, **kwargs)

        monkeypatch.setattr(ChangeStore, name,
                            classmethod(lambda cls, *a, _c=checked, **k: _c(*a, **k))
                            if name == "open" else checked)
    for run in range(2):  # the second start loads the room from the snapshot the first saved
        node = Node(_config(tmp_path, snapshot_every=1))
        await node.start()
        try:
            room = node.rooms.default_room_id()
            assert room is not None
            hosted = node.rooms.rooms[room]
            await hosted.runtime.edit(lambda r: r.create_entity())
            token = read_admin_token(tmp_path / "node" / ADMIN_TOKEN_FILE)
            auth = {"Authorization": f"Bearer {token}"}
            async with aiohttp.ClientSession(headers=auth) as http:
                async with http.post(f"{node.url}/api/rooms", json={"name": f"r{run}"}) as resp:
                    assert resp.status == 200
                async with http.get(f"{node.url}/api/rooms/{room.hex()}/snapshot") as resp:
                    assert resp.status in (200, 404)
        finally:
            await node.stop()
    assert len(node.rooms.rooms) == 3 and len(node.rooms.rooms[room].runtime.state()) == 2
    # The lobby, edited, has a snapshot; the empty rooms have none to save.
    assert sum("loaded from a snapshot" in r.getMessage() for r in caplog.records) == 1
    assert on_loop == []


async def test_stop_closes_services_in_reverse_order(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    for cls, name in ((Bootstrap, "aclose"), (LinkManager, "aclose"), (RoomHost, "aclose"),
                      (DurableLog, "close")):
        _record(monkeypatch, calls, cls, name)
    node = Node(_config(tmp_path))
    await node.start()
    await node.stop()
    await node.stop()  # twice is fine
    assert calls == ["Bootstrap.aclose", "LinkManager.aclose", "RoomHost.aclose",
                     "DurableLog.close"]


async def test_a_failed_start_closes_what_it_opened_and_propagates(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = Node(_config(tmp_path / "a"))
    await first.start()
    try:
        calls: list[str] = []
        for cls, name in ((Bootstrap, "aclose"), (LinkManager, "aclose"),
                          (RoomHost, "aclose"), (DurableLog, "close")):
            _record(monkeypatch, calls, cls, name)
        port = int(first.url.rsplit(":", 1)[1])
        second = Node(replace(_config(tmp_path / "b"), listen_port=port))
        with pytest.raises(OSError):
            await second.start()  # the port is taken: refused before anything is created
        assert calls == [] and not (tmp_path / "b").exists()
        # Another process taking the port between the check and the bind: serving fails.
        monkeypatch.setattr("meshnode.node.check_port_free", lambda host, port: None)
        with pytest.raises(OSError):
            await second.start()
        # Everything entered before serving was closed, last entered first.
        assert calls == ["LinkManager.aclose", "RoomHost.aclose", "DurableLog.close"]
    finally:
        await first.stop()


async def test_a_crashed_task_stops_the_node(tmp_path: Path) -> None:
    node = Node(_config(tmp_path))
    await node.start()

    async def bug() -> None:
        raise KeyError("a bug")

    node.rooms._tasks.spawn(bug(), "bug")
    with pytest.raises(NodeCrashed, match="bug"):
        await asyncio.wait_for(node.run_until_signalled(), 30)


async def test_a_task_set_owns_its_tasks() -> None:
    crashes: list[tuple[str, BaseException]] = []
    tasks = TaskSet("t", lambda name, err: crashes.append((name, err)))
    started = asyncio.Event()

    async def forever() -> None:
        started.set()
        await asyncio.Event().wait()

    async def fails() -> None:
        raise ValueError("boom")

    long = tasks.spawn(forever(), "forever")
    tasks.spawn(fails(), "fails")
    await started.wait()
    await asyncio.sleep(0)
    assert [(n, str(e)) for n, e in crashes] == [("t: fails", "boom")]
    assert len(tasks) == 1
    await tasks.aclose()
    assert long is not None and long.cancelled() and len(tasks) == 0
    late = forever()
    assert tasks.spawn(late, "late") is None  # closed: the coroutine is closed unrun
    assert late.cr_frame is None
