"""Nodes whose wall clock is wrong, against real processes (Debian's libfaketime): a node
restarted with its clock behind keeps its room and never reuses a seq; a node whose clock is
stepped back while it runs keeps its timers (presence, gossip) going."""

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from meshnode.client import connect
from meshnode.crdt import ROOT
from meshnode.identity import Identity
from tests.fakeclock import WallClock
from tests.integration.nodeproc import NodeProcess, start_host
from tests.integration.test_line import ICE, until


def _entities(node: NodeProcess, room: str) -> int:
    return next(int(r["entities"]) for r in node.get("/api/rooms") if r["id"] == room)


@pytest.fixture
def two_nodes(tmp_path: Path) -> Iterator[tuple[WallClock, NodeProcess, NodeProcess, str]]:
    """Node A on a wall clock the test sets, and node B hosting A's default room."""
    clock = WallClock(tmp_path / "a.clock")
    a = NodeProcess(tmp_path / "a").start(env=clock.env())
    b = None
    try:
        assert a.default_room is not None
        b = start_host(tmp_path / "b", a, a.default_room, bootstrap=a)
        yield clock, a, b, a.default_room
    finally:
        a.kill()
        if b is not None:
            b.kill()


def _participants(node: NodeProcess, room: str) -> list[str]:
    return next(list(r["participants"]) for r in node.get("/api/rooms") if r["id"] == room)


def _vv(node: NodeProcess, room: str) -> dict[str, int]:
    vv: dict[str, int] = node.get(f"/api/rooms/{room}/heads")["vv"]
    return vv


async def test_a_restart_with_the_clock_behind_keeps_the_room_and_never_equivocates(
        two_nodes: tuple[WallClock, NodeProcess, NodeProcess, str]) -> None:
    clock, a, b, room = two_nodes
    async with connect(a.url, room, Identity.generate(), ice=ICE) as c:
        for i in range(5):
            c.create_entity(ROOT, {"name": {"value": f"thing {i}"}})
            await c.flush()
    await until(lambda: _vv(b, room) == _vv(a, room), "B has A's room")
    before = _vv(a, room)
    assert _entities(a, room) == 5

    # A stops and comes back with its wall clock ten minutes behind (no RTC, no NTP yet).
    assert a.terminate() == 0
    clock.set("-10m")
    a.start(env=clock.env())
    assert _entities(a, room) == 5, a.log()
    assert _vv(a, room) == before
    assert "future_timestamp" not in a.log()

    # Still behind (4 min: close enough for links, too far for its peers' changes), A
    # signs a change of its own: it admits a new client. Its seq must follow the stored
    # ones: B, linked again, sees no equivocation and takes the change.
    clock.set("-4m")
    async with connect(a.url, room, Identity.generate(), ice=ICE) as late:
        assert late.role() == "editor"
    await until(lambda: all(_vv(b, room).get(k, 0) >= v for k, v in _vv(a, room).items()),
                "B takes A's new change", timeout=60)
    assert "equivocated" not in b.log(), b.log()
    assert "equivocated" not in a.log()

    # Clocks agree again: edits made at B reach A.
    clock.set("+0")
    token = b.post(f"/api/rooms/{room}/invites", {"role": "editor"})["token"]
    async with connect(b.url, room, Identity.generate(), ice=ICE, invite=token) as cb:
        cb.create_entity(ROOT, {"name": {"value": "after"}})
        await cb.flush()
    await until(lambda: _entities(a, room) == 6, "B's edit reaches A")


async def test_a_wall_clock_stepped_back_does_not_stop_the_timers(
        two_nodes: tuple[WallClock, NodeProcess, NodeProcess, str]) -> None:
    clock, a, b, room = two_nodes
    token = b.post(f"/api/rooms/{room}/invites", {"role": "editor"})["token"]
    async with (connect(a.url, room, Identity.generate(), ice=ICE) as ca,
                connect(b.url, room, Identity.generate(), ice=ICE, invite=token) as cb):
        ca.set_presence({"name": "before", "position": [0.0, 0.0, 0.0]})
        await until(lambda: cb.presence().get(ca.peer_id, {}).get("name") == "before",
                    "presence through A")
        # B's client is present at A too.
        # (Sent until it arrives: presence that reaches A before B's grant of that
        # client is dropped, as it should be.)
        def b_client_present_at_a() -> bool:
            cb.set_presence({"name": "b-client"})
            return cb.peer_id in _participants(a, room)

        await until(b_client_present_at_a, "B's client present at A")
        await asyncio.sleep(1.0)  # B's client's last update has landed at A: now silent
        # A's wall clock steps back ten minutes while it runs (NTP correcting a clock
        # that was ahead). Its deadlines are on the monotonic clock: presence still
        # leaves A, A's next presence is not taken for an old one, and a participant
        # that fell silent still expires after the presence TTL (10 s), not 10 min later.
        clock.set("-10m")
        ca.set_presence({"name": "after", "position": [1.0, 0.0, 0.0]})
        await until(lambda: cb.presence().get(ca.peer_id, {}).get("name") == "after",
                    "presence through A after the step", timeout=30)
        assert a.get("/api/status")["uptime_s"] < -500  # A's clock did step back
        await until(lambda: cb.peer_id not in _participants(a, room),
                    "B's silent client expires at A", timeout=45)
        # Back within the accepted skew: gossip flows through A both ways.
        clock.set("-50")
        thing = cb.create_entity(ROOT, {"name": {"value": "from B"}})
        await cb.flush()
        await until(lambda: ca.replica.exists(thing), "B's edit reaches A's client")
        other = ca.create_entity(ROOT, {"name": {"value": "from A"}})
        await ca.flush()
        await until(lambda: cb.replica.exists(other), "A's client's edit reaches B's")


async def test_a_clock_that_jumps_ahead_and_back_leaves_no_change_unacceptable(
        two_nodes: tuple[WallClock, NodeProcess, NodeProcess, str]) -> None:
    clock, a, b, room = two_nodes
    token = b.post(f"/api/rooms/{room}/invites", {"role": "editor"})["token"]
    async with connect(b.url, room, Identity.generate(), ice=ICE, invite=token) as member:
        member.create_entity(ROOT, {"name": {"value": "from B's side"}})
        await member.flush()
        await until(lambda: _vv(a, room) == _vv(b, room), "A has B's changes")
        # A's wall clock jumps a day ahead (a bad NTP answer), A signs a change (the
        # operator demotes the member), then the clock comes back and A signs another.
        clock.set("+1d")
        a.post(f"/api/rooms/{room}/members", {"peer": member.peer_id, "role": "viewer"})
        await until(lambda: member.role() == "viewer", "the demotion reaches B's member",
                    timeout=30)
        clock.set("+0")
        a.post(f"/api/rooms/{room}/members", {"peer": member.peer_id, "role": "editor"})
        await until(lambda: member.role() == "editor", "the promotion reaches B's member",
                    timeout=30)
        await until(lambda: _vv(a, room) == _vv(b, room), "B takes both of A's changes")
        assert "future_timestamp" not in b.log()
