"""The agent inside one node's namespace: the node's admin calls and the room's client.

Started by the runner as ``ip netns exec NS python -m netsim.emulate.agent DATA_DIR IP``. It
speaks JSON lines: requests on stdin (``{"id": n, "op": ...}``), replies on stdout
(``{"re": n, "ok": true, ...}`` or ``{"re": n, "ok": false, "error": "..."}``) and, once the
client is in the room, observations (``{"ev": "sent" | "seen", "cid": hex, "t": monotonic}``).
Every process on the machine reads the same monotonic clock, so the runner subtracts a
receiver's ``seen`` from the sender's ``sent`` to get the change's latency from node to node.

Operations: ``admin`` (an admin API request to the node, from inside its namespace, with its
admin token), ``join`` (connect the Python client to the node), ``initial`` (create the editor's
first entities), ``run`` (edit on the given schedule from a start time; presence too), ``heads``
(the node's version vector) and ``stop``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

from meshnode.client import FailoverSettings, RoomClient, connect
from meshnode.crdt import EntityId
from meshnode.identity import Identity
from meshnode.transport.ice import IceSettings
from netsim.emulate.workload import Editor

NODE_PORT = 8470


class Agent:
    """One namespace's agent (see the module docstring)."""

    def __init__(self, data_dir: Path, address: str) -> None:
        self.data_dir = data_dir
        self.address = address
        self.client: RoomClient | None = None
        self.watcher: RoomClient | None = None
        self.editor: Editor | None = None
        self.tasks: set[asyncio.Future[Any]] = set()
        self.recording = False

    def emit(self, msg: dict[str, Any]) -> None:
        """Write one JSON line to the runner."""
        sys.stdout.write(json.dumps(msg) + "\n")
        sys.stdout.flush()

    async def admin(self, method: str, path: str, body: Any = None) -> Any:
        """An admin API call to our node over loopback (admin routes answer only there)."""
        token = (self.data_dir / "admin.token").read_text(encoding="ascii").strip()
        headers = {"Authorization": f"Bearer {token}"}
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http, \
                http.request(method, f"http://127.0.0.1:{NODE_PORT}{path}", json=body,
                             headers=headers) as resp:
            text = await resp.text()
            if resp.status != 200:
                raise RuntimeError(f"{method} {path}: {resp.status} {text}")
            return json.loads(text)

    async def join(self, room: str, invite: str, watch_own: bool = False) -> None:
        """Connect the client to our node (its host addresses: this namespace's only)."""
        url = f"http://{self.address}:{NODE_PORT}"
        self.client = connect(url, room, Identity.generate(),
                              ice=IceSettings(host_addresses=(self.address,)), invite=invite,
                              timeout_s=60.0,
                              failover=FailoverSettings(learn_hosts=False, dial_timeout_s=5.0))
        self.client.on_change(self._on_change)
        await self.client.open()
        if watch_own:
            # A second client at the editor's own node sees each change after the two local
            # hops (client -> node -> client) that every emulated latency includes.
            self.watcher = connect(url, room, Identity.generate(),
                                   ice=IceSettings(host_addresses=(self.address,)),
                                   invite=invite, timeout_s=60.0,
                                   failover=FailoverSettings(learn_hosts=False,
                                                             dial_timeout_s=5.0))
            self.watcher.on_change(self._on_local)
            await self.watcher.open()

    def _on_local(self, cid: bytes, peer: str | None) -> None:
        if self.recording and peer is not None:
            self.emit({"ev": "local", "cid": cid.hex(), "t": time.monotonic()})

    def _on_change(self, cid: bytes, peer: str | None) -> None:
        if self.recording:
            self.emit({"ev": "sent" if peer is None else "seen", "cid": cid.hex(),
                       "t": time.monotonic()})

    def _target(self) -> _Target:
        assert self.client is not None
        return _Target(self.client)

    async def initial(self, seed: int, node: int, count: int) -> None:
        """Create this editor's first entities and wait until the node stored them."""
        assert self.client is not None
        self.editor = Editor(seed, node)
        self.editor.create_initial(self._target(), count)
        await self.client.flush()

    async def run(self, t0: float, edits: list[list[Any]], presence_hz: float,
                  stop_s: float, seed: int, node: int) -> None:
        """Edit at ``t0 + at_s`` for each ``[at_s, kind]``; presence at ``presence_hz``."""
        self.recording = True
        if self.editor is None:
            self.editor = Editor(seed, node)
        if presence_hz > 0:
            self._spawn(self._presence(t0, presence_hz, stop_s))
        for at_s, kind in edits:
            delay = t0 + float(at_s) - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            client = self.client
            if client is None or not client.connected:
                continue  # our node is down: an editor cannot edit through it
            self.editor.edit(self._target(), str(kind))
            # publish() as a task of its own (flush() would wrap it in one more): its first
            # step, at the next turn of the loop, signs and sends this edit as one change.
            task = asyncio.ensure_future(client.runtime.publish())
            self.tasks.add(task)
            task.add_done_callback(self._published)
            # Let the flush commit this edit now: an overdue next edit must not join it.
            await asyncio.sleep(0)

    def _published(self, task: asyncio.Future[Any]) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            # The node crashed meanwhile: the client redelivers the change.
            logging.getLogger("netsim.emulate").info("publish: %s", task.exception())

    async def _presence(self, t0: float, hz: float, stop_s: float) -> None:
        k = 0
        while time.monotonic() < t0 + stop_s:
            k += 1
            delay = t0 + k / hz - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            if self.client is not None and self.client.connected:
                assert self.editor is not None
                pos = [round(self.editor.rng.uniform(-10, 10), 2) for _ in range(3)]
                self.client.set_presence({"position": pos})

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def handle(self, req: dict[str, Any]) -> dict[str, Any]:
        """Carry out one request; its reply fields."""
        op = req["op"]
        if op == "admin":
            return {"body": await self.admin(req["method"], req["path"], req.get("body"))}
        if op == "join":
            await self.join(req["room"], req["invite"], bool(req.get("watch_own")))
            return {}
        if op == "initial":
            await self.initial(int(req["seed"]), int(req["node"]), int(req["count"]))
            return {}
        if op == "run":
            self._spawn(self.run(float(req["t0"]), req["edits"], float(req["presence_hz"]),
                                 float(req["stop_s"]), int(req["seed"]), int(req["node"])))
            return {}
        if op == "heads":
            body = await self.admin("GET", f"/api/rooms/{req['room']}/heads")
            return {"body": body}
        raise ValueError(f"unknown op {op!r}")

    async def serve(self) -> None:
        """Answer requests until ``stop`` or end of input."""
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        while line := await reader.readline():
            req = json.loads(line)
            if req["op"] == "stop":
                break
            self._spawn(self._answer(req))
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        for client in (self.client, self.watcher):
            if client is not None:
                await client.close()

    async def _answer(self, req: dict[str, Any]) -> None:
        try:
            extra = await self.handle(req)
            self.emit({"re": req["id"], "ok": True, **extra})
        except Exception as err:
            self.emit({"re": req["id"], "ok": False, "error": f"{type(err).__name__}: {err}"})


class _Target:
    """A ``RoomClient`` with ``exists`` (the editor's :class:`EditTarget`)."""

    def __init__(self, client: RoomClient) -> None:
        self.client = client

    def create_entity(self, parent: Any = None, components: Any = None) -> EntityId:
        from meshnode.crdt import ROOT

        return self.client.create_entity(ROOT if parent is None else parent, components)

    def set_field(self, entity: Any, component: str, field: str, value: object) -> None:
        self.client.set_field(entity, component, field, value)

    def delete(self, entity: Any) -> None:
        self.client.delete(entity)

    def move(self, entity: Any, new_parent: Any) -> None:
        self.client.move(entity, new_parent)

    def exists(self, entity: EntityId) -> bool:
        return self.client.replica.exists(entity)


def main(argv: list[str] | None = None) -> int:
    """``python -m netsim.emulate.agent DATA_DIR ADDRESS``."""
    args = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    agent = Agent(Path(args[0]), args[1])
    try:
        import uvloop

        uvloop.run(agent.serve())
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
