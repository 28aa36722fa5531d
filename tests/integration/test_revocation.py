"""Revocation against a real ``meshnode up`` process (issue 9 item 3): the operator demotes and
removes members with the CLI, a removed admin who keeps signing on its own copy of the room
from before the removal gets nothing accepted, and invites honour ``--max-uses`` and
revocation. Real aiortc links, real SQLite, the real Python client."""

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from meshnode.client import AdmissionRefused, connect
from meshnode.crdt import ROOT, PermissionDenied, SceneReplica
from meshnode.identity import Identity
from protocol.frames import Changes, encode_frame
from tests.integration.nodeproc import NodeProcess
from tests.integration.test_line import ICE, until


async def cli(node: NodeProcess, *args: str) -> str:
    """Run ``meshnode ARGS --node URL`` as the operator would (off the event loop, so the
    clients' links keep running)."""
    cmd = [sys.executable, "-m", "meshnode", *args, "--node", node.url,
           "--data-dir", str(node.data_dir)]
    done = await asyncio.to_thread(subprocess.run, cmd, capture_output=True, text=True,
                                   timeout=60)
    assert done.returncode == 0, f"meshnode {' '.join(args)} failed:\n{done.stderr}"
    return done.stdout


async def invite(node: NodeProcess, room: str, role: str, *extra: str) -> dict[str, str]:
    return json.loads(await cli(node, "room", "invite", room, "--role", role, "--json", *extra))


def _rejections(node: NodeProcess, reason: str) -> float:
    return sum(v for k, v in node.metrics().items()
               if k.startswith("meshnode_rejections_total") and f'reason="{reason}"' in k)


def entities(node: NodeProcess, room: str) -> int:
    return next(r["entities"] for r in node.get("/api/rooms") if r["id"] == room)


def changes(node: NodeProcess, room: str) -> int:
    return next(r["changes"] for r in node.get("/api/rooms") if r["id"] == room)


async def test_a_removed_admin_cannot_backdate_entities_or_grants(tmp_path: Path) -> None:
    a = NodeProcess(tmp_path / "a", args=["--no-default-room"]).start()
    try:
        room = a.post("/api/rooms", {"name": "revocation", "admit": "invite",
                                     "private": False})["id"]
        mallory, bob, sock = Identity.generate(), Identity.generate(), Identity.generate()
        watch = await invite(a, room, "viewer")
        mallory_invite = (await invite(a, room, "admin"))["token"]
        async with connect(a.url, room, mallory, ice=ICE, invite=mallory_invite) as m, \
                connect(a.url, room, bob, ice=ICE,
                        invite=(await invite(a, room, "editor"))["token"]) as b, \
                connect(a.url, room, Identity.generate(), ice=ICE,
                        invite=watch["token"]) as observer:
            assert m.role() == "admin" and b.role() == "editor"
            m.create_entity(ROOT, {"name": {"text": "before the removal"}})
            assert await m.flush() is not None
            # Mallory keeps her own copy of the room as it is now.
            kept = m.replica.changes_since([])
            assert entities(a, room) == 1

            # The operator demotes Bob and removes Mallory, with the CLI.
            out = await cli(a, "room", "role", room, bob.public_id, "viewer")
            assert f"{bob.public_id} is now viewer" in out
            await cli(a, "room", "remove", room, mallory.public_id)
            # Bob learns of his demotion; Mallory is told she was removed and gets nothing
            # of the room any more (not even the change that removed her).
            await until(lambda: b.role() == "viewer" and m.refusal is not None,
                        "the demotion and the removal to reach the members")
            assert m.refusal is not None and m.refusal.reason == "removed"
            with pytest.raises(AdmissionRefused):
                await m.flush()
            with pytest.raises(PermissionDenied):
                b.create_entity(ROOT)

            # Mallory signs her next seq on her old copy (deps from before the removal):
            # a new entity, and an editor grant to a sockpuppet.
            old = SceneReplica.from_genesis(m.replica.genesis, mallory)
            old.apply_many(kept, time.time())
            assert old.role_of(mallory.public_id) == "admin"
            forged_entity = old.create_entity(ROOT, {"name": {"text": "backdated"}})
            old.grant(sock.public_id, "editor")
            forged = old.commit(time.time())
            assert forged is not None
            before = changes(a, room)
            # Over her own link, the node takes nothing from her any more.
            assert m._links is not None and m.node_peer_id is not None
            frame = encode_frame(Changes(bytes.fromhex(room), (forged,)))
            m._links.send(m.node_peer_id, "sync", frame)
            await until(lambda: _rejections(a, "not_shared") >= 1, "her frame refused")
            # So a member who is still in the room (Bob, hostile too) relays it, raw, over
            # his real link: the replica's rule must hold on its own.
            assert b._links is not None and b.node_peer_id is not None
            b._links.send(b.node_peer_id, "sync", frame)
            await until(lambda: changes(a, room) > before,
                        "the node to receive the forged change")
            await until(lambda: observer.replica.change_count() == changes(a, room),
                        "the observer to sync")
            # The node kept it as a tombstone: no entity, no grant, on the node and beyond.
            assert entities(a, room) == 1
            assert not observer.replica.exists(forged_entity)
            assert observer.replica.role_of(sock.public_id) == "none"
            assert observer.replica.role_of(mallory.public_id) == "none"
            assert observer.replica.role_of(bob.public_id) == "viewer"
            assert len(observer.state()) == 1
        # The invite Mallory came in with does not bring her back.
        with pytest.raises(AdmissionRefused) as back:
            async with connect(a.url, room, mallory, ice=ICE, invite=mallory_invite,
                               timeout_s=10):
                pass
        assert back.value.reason == "removed"
    finally:
        a.kill()


async def test_invites_honour_max_uses_and_revocation(tmp_path: Path) -> None:
    a = NodeProcess(tmp_path / "a", args=["--no-default-room"]).start()
    try:
        room = a.post("/api/rooms", {"name": "invites", "admit": "invite", "private": False})["id"]
        once = await invite(a, room, "editor", "--max-uses", "1")
        assert len(bytes.fromhex(once["id"])) == 32 and once["max_uses"] == 1
        async with connect(a.url, room, Identity.generate(), ice=ICE,
                           invite=once["token"]) as first:
            assert first.role() == "editor"
        with pytest.raises(AdmissionRefused) as used_up:
            async with connect(a.url, room, Identity.generate(), ice=ICE,
                               invite=once["token"], timeout_s=5):
                pass
        assert used_up.value.reason == "invite_used_up"
        await until(lambda: any('invite_used_up' in k and v >= 1
                                for k, v in a.metrics().items()),
                    "the used-up invite to be counted")

        revoked = await invite(a, room, "viewer")
        out = await cli(a, "room", "revoke-invite", room, revoked["id"])
        assert f"invite {revoked['id']} revoked" in out
        with pytest.raises(AdmissionRefused) as refused:
            async with connect(a.url, room, Identity.generate(), ice=ICE,
                               invite=revoked["token"], timeout_s=5):
                pass
        assert refused.value.reason == "invite_revoked"
        await until(lambda: any('invite_revoked' in k and v >= 1
                                for k, v in a.metrics().items()),
                    "the revoked invite to be counted")
        # Another invite still works.
        fresh = await invite(a, room, "viewer")
        async with connect(a.url, room, Identity.generate(), ice=ICE,
                           invite=fresh["token"]) as c:
            assert c.role() == "viewer"
    finally:
        a.kill()
