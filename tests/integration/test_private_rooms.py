"""Private rooms against real processes (issue 13): an owner's node (a reader), a blind host
node that joined with a ``host`` invite, and two Python clients that join *through the blind
host* with invites it can redeem only by their proofs.

* Canaries written in values, component and field names, presence and the room name never
  appear in anything the blind host sends or receives (its link traffic, captured after
  DTLS by ``MESHNODE_CAPTURE_LINKS``), stores (its SQLite files, byte for byte) or answers
  over HTTP (room reads, the admin API, metrics).
  The blind host writes a snapshot of the room after every stored change here
  (``snapshot_every = 1``): its snapshot rows, served and stored, are checked too.
* A removed member, fed every change written after its removal, reads none of the canaries
  written causally after it.
* A reader node restarts from its own sealed snapshot (not a replay): the snapshot it stores
  holds no canary in clear, and the restarted node reads the room's name again.
"""

import asyncio
import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from meshnode.client import connect
from meshnode.crdt import ROOT, SceneReplica
from meshnode.crdt.snapshot import decode_snapshot
from meshnode.identity import Identity
from meshnode.store.sqlite import DB_FILENAME
from meshnode.transport.capture import CAPTURE_ENV, read_capture
from protocol.limits import DEFAULT_LIMITS
from tests.integration.nodeproc import LOOPBACK_CONFIG, NodeProcess
from tests.integration.test_line import ICE, until

NAME = "Kestrel-name-canary"
COMPONENT = "kestrelcomponentcanary"
FIELD = "kestrelfieldcanary"
VALUE = "Kestrel-value-canary"
PRESENCE = "Kestrel-presence-canary"
AFTER = "Kestrel-after-removal-canary"
CANARIES = (NAME, COMPONENT, FIELD, VALUE, PRESENCE, AFTER)


async def cli(node: NodeProcess, *args: str) -> str:
    cmd = [sys.executable, "-m", "meshnode", *args, "--node", node.url,
           "--data-dir", str(node.data_dir)]
    done = await asyncio.to_thread(subprocess.run, cmd, capture_output=True, text=True,
                                   timeout=60)
    assert done.returncode == 0, f"meshnode {' '.join(args)} failed:\n{done.stderr}"
    return done.stdout


def raw_get(node: NodeProcess, path: str) -> bytes:
    """A GET as the operator, raw bytes (404s too: their bodies must not leak either)."""
    import urllib.error
    import urllib.request

    req = urllib.request.Request(node.url + path,
                                 headers={"Authorization": f"Bearer {node.admin_token}"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            body: bytes = resp.read()
            return body
    except urllib.error.HTTPError as err:
        return err.read() or b""


def leaks(blob: bytes) -> list[str]:
    return [c for c in CANARIES if c.encode() in blob]


def room_of(node: NodeProcess, room: str) -> dict[str, Any]:
    return next(r for r in node.get("/api/rooms") if r["id"] == room)


SNAPSHOT_EVERY_CHANGE = LOOPBACK_CONFIG + """
[store]
snapshot_every = 1
"""


def stored_snapshot(node: NodeProcess, room: str) -> bytes:
    """The room's snapshot row in a stopped node's SQLite store."""
    db = node.data_dir / DB_FILENAME
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        row = conn.execute("SELECT data FROM snapshots WHERE room_id = ?",
                           (bytes.fromhex(room),)).fetchone()
    assert row is not None, f"no snapshot of the room in {db}"
    data: bytes = row[0]
    return data


async def test_a_blind_host_sees_no_canary_and_a_removed_member_reads_nothing_later(
        tmp_path: Path) -> None:
    capture = tmp_path / "host.capture"
    a = NodeProcess(tmp_path / "a", args=["--no-default-room"]).start()
    h: NodeProcess | None = None
    try:
        created = json.loads(await cli(a, "room", "create", NAME))
        room = created["id"]
        assert created["private"] and created["this_node"] == "reader"
        assert created["name"] == NAME  # the owner's node reads its own room
        host_token = a.post(f"/api/rooms/{room}/invites", {"role": "host"})["token"]
        h = NodeProcess(tmp_path / "h", args=["--no-default-room", "--bootstrap", a.url,
                                              "--join", host_token],
                        config=SNAPSHOT_EVERY_CHANGE)
        h.start(env={CAPTURE_ENV: str(capture)})
        h.wait_for(lambda: room_of(h, room)["role"] == "host", "the host to be admitted")
        listed = await cli(h, "room", "list")
        assert "private · this node: host (cannot read)" in listed
        assert "private · this node: reader" in await cli(a, "room", "list")

        alice, bob = Identity.generate(), Identity.generate()
        tokens = [json.loads(await cli(a, "room", "invite", room, "--role", "editor",
                                       "--json"))["token"] for _ in range(2)]
        # Both join through the blind host: it admits them on the invites' authority, with
        # their redemption proofs; the owner's node, online, shares the keys with them.
        async with connect(h.url, room, alice, ice=ICE, invite=tokens[0]) as al, \
                connect(h.url, room, bob, ice=ICE, invite=tokens[1]) as bo:
            assert al.role() == "editor" and bo.role() == "editor"
            await al.wait_readable(60)
            await bo.wait_readable(60)
            assert al.replica.room_name == NAME
            entity = al.create_entity(ROOT, {COMPONENT: {FIELD: VALUE}})
            await al.flush()
            await until(lambda: bo.replica.exists(entity), "Bob to read Alice's entity")
            assert al.set_presence({"status": PRESENCE})
            await until(lambda: bo.presence().get(alice.public_id, {}).get("status")
                        == PRESENCE, "Bob to read Alice's presence (relayed blind)")
            assert room_of(h, room)["keys"] == {alice.public_id: True, bob.public_id: True,
                                                a.peer_id: True}

            # The owner removes Bob (the removal rotates the keys in the same change).
            kept = SceneReplica.from_genesis(bo.replica.genesis, bob)
            kept.apply_many(bo.replica.changes_since([]), time.time())
            epochs_before = len(kept.epoch_ids())
            await cli(a, "room", "remove", room, bob.public_id)
            await until(lambda: al.replica.role_of(bob.public_id) == "none",
                        "Alice to see the removal")
            al.set_field(entity, COMPONENT, FIELD, AFTER)
            await al.flush()
            await until(lambda: room_of(h, room)["changes"] == al.replica.change_count()
                        and room_of(a, room)["changes"] == al.replica.change_count(),
                        "both nodes to hold Alice's last change")

            # Bob's copy, fed every change written since, reads none of the later content.
            assert kept.readable and VALUE in repr(kept.state())
            kept.apply_many(al.replica.changes_since([]), time.time())
            assert len(kept.epoch_ids()) > epochs_before  # it holds the new epoch's change
            assert kept.role_of(bob.public_id) == "none"
            assert AFTER not in repr(kept.state())
            assert AFTER in repr(al.state())  # ... which a member does read
            alice_changes = al.replica.changes_since([])

        # What the blind host answers over HTTP, its snapshot of the room included.
        served = raw_get(h, f"/api/rooms/{room}/snapshot")
        blind = decode_snapshot(served, DEFAULT_LIMITS, None)
        assert blind.content.private is not None and blind.sealed is None  # public part only
        answers = b"".join(raw_get(h, p) for p in (
            "/api/rooms", "/api/status", "/api/metrics", "/metrics", "/api/peers",
            f"/api/rooms/{room}/genesis", f"/api/rooms/{room}/heads",
            f"/api/rooms/{room}/snapshot"))
        assert b'"host"' in answers and leaks(answers) == []
        assert room_of(h, room)["name"] == "" and room_of(h, room)["entities"] == 0
        assert h.terminate() == 0  # (it saves the room's snapshot at shutdown too)
        assert leaks("\n".join(h.lines).encode()) == []
        row = stored_snapshot(h, room)
        assert row[:40].find(b"meshnode-snapshot") >= 0 and leaks(row) == []
        assert decode_snapshot(row, DEFAULT_LIMITS, None).content.private is not None
        # What it stores: every file of its data directory, byte for byte.
        stored = b"".join(p.read_bytes() for p in sorted(h.data_dir.rglob("*")) if p.is_file())
        assert leaks(stored) == []
        # What it sent and received (the capture records what it relayed: Alice's changes).
        traffic = capture.read_bytes()
        records = read_capture(traffic)
        assert any(r for sent, r in records if sent) and any(r for sent, r in records
                                                            if not sent)
        assert any(c in traffic for c in alice_changes)
        assert leaks(traffic) == []
    finally:
        for node in (a, h):
            if node is not None:
                node.kill()


async def test_a_reader_node_restarts_from_its_sealed_snapshot(tmp_path: Path) -> None:
    a = NodeProcess(tmp_path / "a", args=["--no-default-room"],
                    config=SNAPSHOT_EVERY_CHANGE).start()
    try:
        created = json.loads(await cli(a, "room", "create", NAME))
        room = created["id"]
        assert created["private"] and created["this_node"] == "reader"
        # A viewer admitted, then removed (the removal rotates): later snapshots are not
        # sealed to them.
        gone = Identity.generate()
        await cli(a, "room", "role", room, gone.public_id, "viewer")
        await cli(a, "room", "remove", room, gone.public_id)
        assert a.terminate() == 0  # saves the room's snapshot, sealed
        row = stored_snapshot(a, room)
        snap = decode_snapshot(row, DEFAULT_LIMITS, None)
        assert row[:40].find(b"meshnode-snapshot") >= 0
        assert snap.sealed is not None and leaks(row) == []  # the name only sealed
        assert gone.public_key not in snap.sealed.wraps and len(snap.sealed.wraps) == 1
        assert len(snap.content.private.epochs) >= 2  # type: ignore[union-attr]
        assert decode_snapshot(row, DEFAULT_LIMITS, None).content.private is not None
        a.start()
        assert any(f"room {room[:16]}" in line and "from a snapshot" in line
                   for line in a.lines), "the reader replayed its log instead"
        assert not any("stored snapshot not used" in line for line in a.lines)
        listed = room_of(a, room)
        assert listed["name"] == NAME and listed["private"]
    finally:
        a.kill()
