"""Readers' sealed snapshots on a blind host (issue 13), real processes: an owner's node
``a`` (a reader, writing a sealed snapshot after every stored change), a blind host ``h``
joined with a ``host`` invite, and two clients joining through ``h``.

The reader node hands each sealed snapshot to ``h`` (``SnapshotPart`` link messages); ``h``
checks it against its own DAG, stores it and serves it. A member then joining through ``h``
starts from that snapshot (not by replaying the history) and reads the scene and the room's
name at once, while ``h`` itself still reads nothing: the snapshot it stores and serves holds
no canary in clear. After a restart ``h`` starts from the reader's snapshot too.
"""

import asyncio
import hashlib
import json
from pathlib import Path
from typing import Any

import msgpack

from meshnode.client import connect
from meshnode.crdt import ROOT
from meshnode.crdt.snapshot import SNAPSHOT_DOMAIN, decode_snapshot
from meshnode.identity import Identity, public_key_from_peer_id
from protocol.limits import DEFAULT_LIMITS
from protocol.snapshot_offer import snapshot_parts
from tests.integration.nodeproc import LOOPBACK_CONFIG, NodeProcess
from tests.integration.test_line import ICE, until
from tests.integration.test_private_rooms import SNAPSHOT_EVERY_CHANGE, cli, raw_get, room_of

NAME = "Osprey-name-canary"
VALUE = "Osprey-value-canary"


async def test_a_client_joins_through_a_blind_host_from_a_readers_sealed_snapshot(
        tmp_path: Path) -> None:
    a = NodeProcess(tmp_path / "a", args=["--no-default-room"],
                    config=SNAPSHOT_EVERY_CHANGE).start()
    h: NodeProcess | None = None
    try:
        created = json.loads(await cli(a, "room", "create", NAME))
        room = created["id"]
        host_token = a.post(f"/api/rooms/{room}/invites", {"role": "host"})["token"]
        h = NodeProcess(tmp_path / "h", args=["--no-default-room", "--bootstrap", a.url,
                                              "--join", host_token],
                        config=LOOPBACK_CONFIG).start()
        h.wait_for(lambda: room_of(h, room)["role"] == "host", "the host to be admitted")

        alice, bob = Identity.generate(), Identity.generate()
        tokens = [json.loads(await cli(a, "room", "invite", room, "--role", "editor",
                                       "--json"))["token"] for _ in range(2)]
        async with connect(h.url, room, alice, ice=ICE, invite=tokens[0]) as al, \
                connect(h.url, room, bob, ice=ICE, invite=tokens[1]) as bo:
            await al.wait_readable(60)
            await bo.wait_readable(60)
            entity = al.create_entity(ROOT, {"c": {"v": VALUE}})
            await al.flush()
            # Every stored change makes ``a`` write (and hand over) a sealed snapshot; wait
            # for one that covers Alice's entity and is wrapped to Bob, stored on ``h``.
            wanted = set(al.replica.heads())
            bob_key = bob.public_key
            a_key = public_key_from_peer_id(a.peer_id)
            served = b""
            for step in range(60):
                served = raw_get(h, f"/api/rooms/{room}/snapshot")
                try:
                    snap = decode_snapshot(served, DEFAULT_LIMITS, None)
                except Exception:
                    snap = None
                if (snap is not None and snap.signer == a_key and snap.sealed is not None
                        and bob_key in snap.sealed.wraps and wanted <= set(snap.change_ids)):
                    break
                if step % 10 == 9:  # a snapshot save may have been under way: one more change
                    al.set_field(entity, "c", "n", step)
                    await al.flush()
                await asyncio.sleep(0.5)
            else:
                raise AssertionError(f"no reader snapshot on the blind host:\n{h.log()[-3000:]}")

            # Alice, a reader, turns hostile: she re-signs the snapshot sealed to herself
            # alone and pushes it over her own link. The blind host refuses it
            # (wraps_mismatch), logs and counts it, and keeps serving the honest one.
            await _push_forged(al, h, room, served, alice)

        assert VALUE.encode() not in served and NAME.encode() not in served
        stored = h.metrics("/api/metrics")
        assert stored.get('meshnode_reader_snapshots_total{outcome="stored"}', 0) >= 1
        assert a.metrics("/api/metrics").get(
            'meshnode_reader_snapshots_total{outcome="sent"}', 0) >= 1
        assert h.metrics().get(
            'meshnode_rejections_total{reason="reader_snapshot_wraps_mismatch"}', 0) >= 1
        assert "refused (wraps_mismatch)" in h.log()
        assert raw_get(h, f"/api/rooms/{room}/snapshot") == served

        # Bob comes back with nothing: through the blind host, from the reader's snapshot.
        async with connect(h.url, room, bob, ice=ICE) as back:
            assert back.joined_from_snapshot
            assert back.replica.unserved_count() > 0  # the snapshot's changes: not replayed
            assert back.replica.exists(entity)
            assert back.replica.get_field(entity, "c", "v") == VALUE
            assert back.replica.room_name == NAME

        # Restarted, the blind host starts from the reader's snapshot and still serves it.
        assert h.terminate() == 0
        h.start()
        h.wait_for(lambda: "loaded from a snapshot" in h.log(), "a start from the snapshot")
        assert "stored snapshot not used" not in h.log()
        again = decode_snapshot(raw_get(h, f"/api/rooms/{room}/snapshot"), DEFAULT_LIMITS, None)
        assert again.signer == a_key and again.sealed is not None
    finally:
        if h is not None:
            h.kill()
        a.kill()


async def _push_forged(client: Any, h: NodeProcess, room: str, honest: bytes,
                       signer: Identity) -> None:
    """Send ``honest`` re-signed by ``signer`` with its wraps cut to the signer's own, as
    ``SnapshotPart`` messages on the client's link to ``h``; wait for the refusal."""
    obj = msgpack.unpackb(honest[:-64], raw=False)
    obj[2] = signer.public_key
    obj[19][1] = [row for row in obj[19][1] if row[0] == signer.public_key]
    body = msgpack.packb(obj, use_bin_type=True)
    forged = body + signer.sign(SNAPSHOT_DOMAIN + bytes.fromhex(room) + body)
    links = client._links
    for part in snapshot_parts(bytes.fromhex(room), forged, hashlib.sha256(forged).digest()):
        assert links.send_link(client.node_peer_id, part)
    await until(lambda: "refused (wraps_mismatch)" in h.log(), "the forged snapshot's refusal")
