"""``RoomRuntime.publish_soon``: commit the local batch now and spread it, with a future per
change (what a writer streaming many changes uses instead of a task per ``publish``)."""

import asyncio
import random
import time

import pytest

from meshnode.crdt import ROOT, SceneReplica
from meshnode.identity import Identity
from meshnode.overlay import OverlayConfig, RoomOverlay
from meshnode.runtime.room import RoomRuntime
from protocol.change import change_id
from protocol.frames import Changes, decode_frame

ME = Identity.from_private_bytes(bytes(range(32)))
PEER = Identity.from_private_bytes(bytes(range(1, 33)))


def _runtime(persist: object = None) -> tuple[RoomRuntime, list[bytes], list[int]]:
    replica = SceneReplica.create(ME, now=time.time(), name="stream", nonce=b"\x02" * 16)
    replica.grant(PEER.public_id, "editor")
    assert replica.commit(time.time()) is not None
    sent: list[bytes] = []
    per_frame: list[int] = []

    def send(peer: str, channel: str, frame: bytes) -> bool:
        msg = decode_frame(frame)
        if isinstance(msg, Changes):
            sent.extend(msg.changes)
            per_frame.append(len(msg.changes))
        return True

    runtime = RoomRuntime(RoomOverlay(replica, ME, OverlayConfig(), rng=random.Random(1),
                                      wall_clock=time.time),
                          send=send, persist=persist)  # type: ignore[arg-type]
    runtime.attach(PEER.public_id)
    return runtime, sent, per_frame


async def test_without_a_store_a_turn_of_changes_leaves_in_one_frame() -> None:
    runtime, sent, per_frame = _runtime()
    await asyncio.sleep(0)
    per_frame.clear()
    try:
        assert runtime.publish_soon() is None  # nothing to commit
        ent = runtime.replica.create_entity(ROOT)
        futures = []
        for i in range(3):
            runtime.replica.set_field(ent, "transform", "position", [float(i), 0.0, 0.0])
            fut = runtime.publish_soon()
            assert fut is not None
            futures.append(fut)
        assert sent == []  # each committed (signed) on its own, held until the turn ends...
        await asyncio.sleep(0)
        assert per_frame == [3]  # ...then framed together
        ids = [change_id(data) for data in sent]
        assert not any(f.done() for f in futures)
        runtime.mark_durable([ids[1]])  # acknowledgements may come in any order
        await asyncio.sleep(0)
        assert [f.done() for f in futures] == [False, True, False]
        assert futures[1].result() == ids[1]
        runtime.mark_not_durable([ids[0]], ConnectionError("store full"))
        runtime.mark_durable([ids[2]])
        await asyncio.sleep(0)
        with pytest.raises(ConnectionError):
            futures[0].result()
        assert futures[2].result() == ids[2]
    finally:
        runtime.close()


async def test_with_a_store_the_change_spreads_once_stored() -> None:
    stored: list[tuple[bytes, asyncio.Future[None]]] = []

    def persist(room_id: bytes, cid: bytes, data: bytes) -> "asyncio.Future[None]":
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        stored.append((cid, fut))
        return fut

    runtime, sent, _ = _runtime(persist)
    try:
        runtime.replica.create_entity(ROOT)
        fut = runtime.publish_soon()
        assert fut is not None
        await asyncio.sleep(0)
        assert len(stored) == 1 and sent == []  # written before anyone sees it
        cid, disk = stored[0]
        disk.set_result(None)
        assert await asyncio.wait_for(fut, 5) == cid
        await asyncio.sleep(0)  # stored here: durable, no second write
        assert [change_id(d) for d in sent] == [cid] and len(stored) == 1
        assert await runtime.publish() is None  # publish is built on it: nothing left
    finally:
        runtime.close()
