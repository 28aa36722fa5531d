"""Three operators host a room; one is killed (the founder's node, then one that joined by
invite): its client fails over to another host and keeps editing, the other clients keep
editing, and when the node returns everyone converges. No
acknowledged edit is lost and none is applied twice (every edit is counted)."""

import asyncio
import contextlib
from collections import Counter
from pathlib import Path

from meshnode.client import Connected, ConnectionEvent, Reconnecting, RoomClient, connect
from meshnode.crdt import ROOT
from meshnode.identity import Identity
from tests.integration.nodeproc import NodeProcess, start_host
from tests.integration.test_line import ICE, until


class Editor:
    """One client editing in a loop: one new entity per change, named ``<who>-<i>``."""

    def __init__(self, who: str, client: RoomClient) -> None:
        self.who = who
        self.client = client
        self.made: list[str] = []  # every edit signed and sent
        self.acked: list[str] = []  # those a host acknowledged (flush returned)
        self.events: list[ConnectionEvent] = []
        client.on_connection(self.events.append)
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            name = f"{self.who}-{len(self.made)}"
            self.client.create_entity(ROOT, {"name": {"value": name}})
            self.made.append(name)
            try:
                await self.client.flush(timeout_s=30)
            except TimeoutError:
                continue  # kept and redelivered: a later flush covers it
            self.acked.append(name)
            await asyncio.sleep(0.05)

    async def stop(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
        await self.client.flush(timeout_s=30)  # the last edit, if its flush was cut off


def names(client: RoomClient) -> Counter[str]:
    """How many entities of the room carry each name."""
    values = (e["components"].get("name", {}).get("value") for e in client.state().values())
    return Counter(v for v in values if isinstance(v, str) and v[:2] in ("a-", "b-", "c-"))


async def kill_and_return(node: NodeProcess, editors: list[Editor], i: int,
                          others: list[NodeProcess]) -> None:
    """Kill ``node`` mid-stream: its client (``editors[i]``) fails over to one of
    ``others`` and every client keeps editing; then the node returns (same port, its
    store) and the editing goes on."""
    port = node.url.rsplit(":", 1)[1]
    node.kill()
    killed_at = [len(e.acked) for e in editors]
    moved = editors[i]
    reconnects = moved.client.reconnects
    await until(lambda: all(len(e.acked) >= k + 15
                            for e, k in zip(editors, killed_at, strict=True))
                and moved.client.reconnects > reconnects,
                f"every client ({moved.who}'s after failover) to keep editing")
    assert any(isinstance(ev, Reconnecting) for ev in moved.events)
    last = moved.events[-1]
    assert isinstance(last, Connected) and last.failover
    assert last.url in [o.url for o in others]
    assert last.peer_id in [o.peer_id for o in others]
    node.start(extra=["--listen", f"127.0.0.1:{port}"])  # it returns, from its store
    await until(lambda: all(len(e.acked) >= k + 25
                            for e, k in zip(editors, killed_at, strict=True)),
                "editing to go on after the node returned")


async def test_any_host_killed_clients_fail_over_and_converge(tmp_path: Path) -> None:
    a = NodeProcess(tmp_path / "a").start()
    nodes = [a]
    try:
        room = a.default_room
        assert room is not None
        b = start_host(tmp_path / "b", a, room, bootstrap=a)
        nodes.append(b)
        c = start_host(tmp_path / "c", a, room, bootstrap=b)
        nodes.append(c)
        async with contextlib.AsyncExitStack() as stack:
            # B and C host the room as an invite-only one: their clients bring an invite.
            invites = [None] + [a.post(f"/api/rooms/{room}/invites", {"role": "editor"})["token"]
                                for _ in (b, c)]
            clients = [await stack.enter_async_context(
                connect(n.url, room, Identity.generate(), ice=ICE, invite=inv))
                for n, inv in zip(nodes, invites, strict=True)]
            # The room's other hosts are learnt from the node (not configured).
            await until(lambda: all(len(cl.hosts) == 3 for cl in clients),
                        "every client to learn the room's three hosts")
            editors = [Editor(who, cl) for who, cl in zip("abc", clients, strict=True)]
            await until(lambda: all(len(e.acked) >= 10 for e in editors), "10 edits each")

            # The founder's node dies mid-stream, then a host that joined by invite: each
            # one's client fails over to a host still up, then the node returns from its
            # store (same processes throughout: one kill per kind of host).
            for i, node in ((0, a), (1, b)):
                await kill_and_return(node, editors, i, [n for n in nodes if n is not node])
            for e in editors:
                await e.stop()
            made = Counter(name for e in editors for name in e.made)
            assert all(n == 1 for n in made.values())
            # The last edits' acks may still be on their way: wait for them (bounded).
            await until(lambda: all(e.client.unacknowledged == 0 for e in editors),
                        "every edit acknowledged")
            # Everyone converges: the three nodes and the three clients hold every edit once.
            heads = [lambda n=n: n.get(f"/api/rooms/{room}/heads")["vv"] for n in nodes]
            a.wait_for(lambda: heads[0]() == heads[1]() == heads[2](), "the hosts to converge")
            await until(lambda: all(names(cl) == made for cl in clients),
                        "every client to hold every edit exactly once")
    finally:
        for n in nodes:
            n.kill()
