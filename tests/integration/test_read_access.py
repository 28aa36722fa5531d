"""Read access over links, against a real node: an invite-only room gives nothing to a
stranger (issue: trust, read access). Each test here failed on the node before the fix."""

import time
from pathlib import Path

import pytest

from meshnode.client import AdmissionRefused, ClientError, connect
from meshnode.crdt import ROOT
from meshnode.identity import Identity
from protocol.link import Refused, Rooms
from tests.integration.nodeproc import NodeProcess, start_host
from tests.integration.test_line import ICE, until


def _rejections(node: NodeProcess, reason: str) -> float:
    return sum(v for k, v in node.metrics().items()
               if k.startswith("meshnode_rejections_total") and f'reason="{reason}"' in k)


async def test_a_stranger_on_the_open_room_learns_nothing_of_an_invite_only_room(
        tmp_path: Path) -> None:
    a = NodeProcess(tmp_path / "a").start()
    try:
        secret = a.post("/api/rooms", {"name": "board meeting", "admit": "invite",
                                       "private": False})["id"]
        assert a.default_room is not None
        async with connect(a.url, a.default_room, Identity.generate(), ice=ICE) as stranger:
            links = stranger._links
            assert links is not None and stranger.node_peer_id is not None
            est = links.links[stranger.node_peer_id]
            # Neither the hello nor any Rooms message named the invite-only room.
            assert bytes.fromhex(secret) not in est.rooms
            assert bytes.fromhex(a.default_room) in est.rooms

            # Asking for it over the link anyway (a Rooms message) is refused, with a reason.
            refusals: list[Refused] = []
            stranger.refused = lambda _est, msg: refusals.append(msg)  # type: ignore[method-assign]
            links.send_link(est.peer, Rooms((bytes.fromhex(a.default_room),
                                             bytes.fromhex(secret))))
            await until(lambda: refusals, "a Refused message")
            assert refusals[0].room_id == bytes.fromhex(secret)
            assert refusals[0].reason == "not_member"
            await until(lambda: _rejections(a, "not_member") >= 1, "the refusal counted")

            # The open room still works for the stranger (it may join it).
            cube = stranger.create_entity(ROOT, {"name": {"value": "cube"}})
            await stranger.flush()
            assert stranger.replica.exists(cube)
    finally:
        a.kill()


async def test_connect_without_an_invite_is_refused_with_a_reason(tmp_path: Path) -> None:
    a = NodeProcess(tmp_path / "a").start()
    try:
        room = a.post("/api/rooms", {"name": "by invite", "admit": "invite",
                                     "private": False})["id"]
        token = a.post(f"/api/rooms/{room}/invites", {"role": "editor"})["token"]
        async with connect(a.url, room, Identity.generate(), ice=ICE, invite=token) as member:
            member.create_entity(ROOT, {"name": {"value": "private thing"}})
            await member.flush()
        # Over HTTP the room does not exist for a stranger (not even its genesis), and the
        # error says what to do.
        with pytest.raises(ClientError, match="does not host room") as info:
            async with connect(a.url, room, Identity.generate(), ice=ICE, timeout_s=10):
                pass
        assert "invite" in str(info.value)
        # An expired invite: the node says so over the link.
        expired = a.post(f"/api/rooms/{room}/invites", {"role": "editor", "ttl_s": 0.001})
        time.sleep(0.01)
        with pytest.raises(AdmissionRefused) as refused:
            async with connect(a.url, room, Identity.generate(), ice=ICE, timeout_s=10,
                               invite=expired["token"]):
                pass
        assert refused.value.reason == "invite_expired"
    finally:
        a.kill()


async def test_members_still_share_an_invite_only_room(tmp_path: Path) -> None:
    """Hosting nodes are members: the room is named to them after the hello and syncs."""
    a = NodeProcess(tmp_path / "a").start()
    b = None
    try:
        room = a.post("/api/rooms", {"name": "by invite", "admit": "invite",
                                     "private": False})["id"]
        b = start_host(tmp_path / "b", a, room, bootstrap=a)
        token = a.post(f"/api/rooms/{room}/invites", {"role": "editor"})["token"]
        async with connect(a.url, room, Identity.generate(), ice=ICE, invite=token) as c:
            c.create_entity(ROOT, {"name": {"value": "shared"}})
            await c.flush()
        await until(lambda: b.get(f"/api/rooms/{room}/heads")["changes"]
                    == a.get(f"/api/rooms/{room}/heads")["changes"], "B syncs the room")
        assert b.get(f"/api/rooms/{room}/heads")["changes"] >= 3  # genesis, grants, the edit
    finally:
        a.kill()
        if b is not None:
            b.kill()
