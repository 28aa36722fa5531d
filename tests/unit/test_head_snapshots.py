"""``JoinSnapshots`` (meshnode.rooms.head_snapshots): the per-room join snapshot a node
serves its clients, its frontier near the heads, refreshed as the room moves, never served
stale after a late change, none for a private room the node cannot seal."""

import asyncio
from collections.abc import Coroutine
from typing import Any

from meshnode.crdt import ROOT, SceneReplica
from meshnode.crdt.clock import hlc_from_seconds
from meshnode.crdt.snapshot import decode_snapshot
from meshnode.identity import Identity
from meshnode.rooms.head_snapshots import (
    MAX_LISTED,
    MIN_GAP_S,
    MIN_HISTORY,
    REFRESH_CHANGES,
    REFRESH_S,
    SETTLE_S,
    JoinSnapshots,
    refresh_due,
)
from protocol.limits import DEFAULT_LIMITS

NOW = 1_700_000_000.0
NODE, EDITOR = Identity.generate(), Identity.generate()


class _Clocks:
    def __init__(self) -> None:
        self.wall = NOW
        self.mono = 100.0


def _snapshots(clocks: _Clocks, min_history: int = 0,
               ) -> tuple[JoinSnapshots, set["asyncio.Task[None]"]]:
    tasks: set[asyncio.Task[None]] = set()

    def spawn(coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        tasks.add(task)
        return task

    return JoinSnapshots(spawn, clock=lambda: clocks.wall, mono=lambda: clocks.mono,
                         min_history=min_history), tasks


def _room(history: int, age_s: float = 3_600) -> tuple[SceneReplica, SceneReplica]:
    """A room whose history (``history`` changes, ``age_s`` old) the node holds whole."""
    node = SceneReplica.create(NODE, NOW - age_s, name="join", nonce=b"j" * 16)
    node.grant(EDITOR.public_id, "editor")
    node.commit(NOW - age_s)
    editor = SceneReplica.from_genesis(node.genesis, EDITOR)
    editor.apply_many(node.changes_since([]), NOW - age_s)
    ents = [editor.create_entity(ROOT, {"p": {"x": 0.0}}) for _ in range(10)]
    t = NOW - age_s
    for i in range(history):
        if i:
            editor.set_field(ents[i % 10], "p", "x", float(i))
        t += 0.01
        data = editor.commit(t)
        assert data is not None
        assert node.apply(data, t).status == "applied"
    return node, editor


def test_refresh_policy() -> None:
    assert refresh_due(0, None)  # none yet
    assert not refresh_due(REFRESH_CHANGES * 5, MIN_GAP_S / 2)  # never closer than the gap
    assert not refresh_due(0, REFRESH_S * 10)  # nothing moved
    assert refresh_due(REFRESH_CHANGES, MIN_GAP_S)
    assert not refresh_due(REFRESH_CHANGES - 1, REFRESH_S - 1)
    assert refresh_due(1, REFRESH_S)


async def test_join_snapshot_summarises_the_history_and_lists_few_changes() -> None:
    clocks = _Clocks()
    node, _ = _room(2_000)
    snaps, _ = _snapshots(clocks, min_history=MIN_HISTORY)
    snaps.warm(node)
    data = await snaps.get(node)
    assert data is not None
    content = decode_snapshot(data, DEFAULT_LIMITS, None).content
    assert content.frontier is not None
    assert content.changes == ()  # the whole history is older than SETTLE_S
    assert len(content.frontier.entries) < 50  # boundary and what the state names
    assert content.frontier.pruned > 1_900
    client = SceneReplica.from_snapshot(data, Identity.generate())
    assert client.state() == node.state()
    assert client.version_vector() == node.version_vector()
    # The node's own history is untouched: it still serves every change.
    assert node.unserved_count() == 0 and node.frontier_vv() == {}
    # A second request is the cached snapshot.
    assert await snaps.get(node) == data


async def test_none_for_a_short_history() -> None:
    node, _ = _room(MIN_HISTORY // 2)
    snaps, _ = _snapshots(_Clocks(), min_history=MIN_HISTORY)
    snaps.warm(node)
    assert await snaps.get(node) is None  # the client replays it (or takes the stored one)
    big, _ = _room(MIN_HISTORY)
    assert await snaps.get(big) is not None


async def test_none_while_the_node_is_not_a_member() -> None:
    """A node that joined by invite, its grant not applied yet: clients would refuse a
    snapshot it signs, so it serves the stored one until its grant arrives."""
    node, _ = _room(20)
    joiner = SceneReplica.from_genesis(node.genesis, Identity.generate())
    joiner.apply_many(node.changes_since([]), NOW)
    snaps, _ = _snapshots(_Clocks())
    assert await snaps.get(joiner) is None
    node.grant(joiner.identity.public_id, "host")
    grant = node.commit(NOW)
    assert grant is not None and joiner.apply(grant, NOW).status == "applied"
    data = await snaps.get(joiner)
    assert data is not None
    assert SceneReplica.from_snapshot(data, Identity.generate()).state() == node.state()


async def test_a_burst_of_recent_changes_is_summarised_too() -> None:
    """More than MAX_LISTED changes within SETTLE_S: the frontier follows the burst."""
    node, _ = _room(3 * MAX_LISTED, age_s=5.0)
    snaps, _ = _snapshots(_Clocks())
    data = await snaps.get(node)
    assert data is not None
    content = decode_snapshot(data, DEFAULT_LIMITS, None).content
    assert 0 < len(content.changes) <= MAX_LISTED
    client = SceneReplica.from_snapshot(data, Identity.generate())
    assert client.state() == node.state()
    assert client.version_vector() == node.version_vector()


async def test_refreshed_as_the_room_moves_and_never_served_stale() -> None:
    clocks = _Clocks()
    node, editor = _room(50)
    snaps, tasks = _snapshots(clocks)
    first = await snaps.get(node)
    assert first is not None
    cached = snaps.cached(node.room_id)
    assert cached is not None and cached.frontier == hlc_from_seconds(NOW - SETTLE_S)
    # Recent changes: listed after the frontier; the snapshot is refreshed once due.
    for i in range(3):
        editor.set_field(editor.entities()[0], "p", "x", 100.0 + i)
        data = editor.commit(NOW)
        assert data is not None and node.apply(data, NOW).status == "applied"
        snaps.moved(node, node.recent_changes(1)[0])
    assert await snaps.get(node) == first  # not due yet: still the cached one
    clocks.mono += REFRESH_S
    clocks.wall += REFRESH_S
    editor.set_field(editor.entities()[0], "p", "x", 200.0)
    data = editor.commit(NOW + 1)
    assert data is not None and node.apply(data, NOW + 1).status == "applied"
    snaps.moved(node, node.recent_changes(1)[0])
    await asyncio.gather(*tasks)
    second = await snaps.get(node)
    assert second is not None and second != first
    assert SceneReplica.from_snapshot(second, Identity.generate()).state() == node.state()
    # A late change (stamped before the cached frontier, reaching the node only now): the
    # cached snapshot lacks it, so the next request waits for a fresh one.
    editor.set_field(editor.entities()[1], "p", "x", -1.0)
    late = editor.commit(NOW - 3_000)  # clock: after its deps, long before the frontier
    assert late is not None
    assert node.apply(late, NOW + 61).status == "applied"
    snaps.moved(node, node.recent_changes(1)[0])
    assert snaps.cached(node.room_id) is None
    # A background refresh starting now does not bring the stale one back meanwhile.
    clocks.mono += REFRESH_S
    snaps.moved(node, node.recent_changes(1)[0])
    assert snaps.cached(node.room_id) is None
    third = await snaps.get(node)
    assert third is not None
    client = SceneReplica.from_snapshot(third, Identity.generate())
    assert client.state() == node.state()
    assert client.version_vector() == node.version_vector()


async def test_none_for_a_private_room_this_node_cannot_seal() -> None:
    owner = Identity.generate()
    room = SceneReplica.create(owner, NOW, name="secret", nonce=b"p" * 16, private=True)
    room.grant(NODE.public_id, "host")
    room.commit(NOW)
    blind = SceneReplica.from_genesis(room.genesis, NODE)
    blind.apply_many(room.changes_since([]), NOW)
    assert blind.role_of(NODE.public_key) == "host"
    snaps, _ = _snapshots(_Clocks())
    snaps.warm(blind)
    assert await snaps.get(blind) is None  # the host serves the stored (a reader's) one
    # A reader seals it, as its stored snapshots (meshnode.crdt.snapshot_seal).
    data = await snaps.get(room)
    assert data is not None
    snap = decode_snapshot(data, DEFAULT_LIMITS, None)
    assert snap.sealed is not None and snap.content.entities == ()
    assert SceneReplica.from_snapshot(data, owner).state() == room.state()
    frontier = snap.content.frontier
    assert frontier is not None and frontier.hlc >= hlc_from_seconds(NOW - SETTLE_S)
