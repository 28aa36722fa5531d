"""A late change is no one's fault: a replica started from a snapshot refuses a change stamped
below its frontier that the snapshot's writer lacked (``behind_frontier``), and the overlay must
not score the peer that relayed it: after a partition or an offline edit, honest nodes relay
such changes, and a client's own node sends them just before the client restarts from a fresh
snapshot. A forged change from the same peer is still scored."""

from __future__ import annotations

import random

from meshnode.crdt import ROOT, SceneReplica
from meshnode.overlay import OverlayConfig, PeerMisbehaved, RoomOverlay
from protocol.change import decode_change
from protocol.frames import Changes, encode_frame
from protocol.limits import DEFAULT_LIMITS
from tests.crdt.harness import deliver, ident
from tests.crdt.test_snapshot_join import NOW, _history


def _misbehaved(overlay: RoomOverlay) -> list[PeerMisbehaved]:
    out = []
    while (event := overlay.next_event()) is not None:
        if isinstance(event, PeerMisbehaved):
            out.append(event)
    return out


def test_a_late_change_behind_the_frontier_is_not_scored_against_its_sender() -> None:
    genesis, first = _history(11, 20)
    node = SceneReplica.from_genesis(genesis, ident("node"))
    deliver(node, first, NOW + 100)
    writer = SceneReplica.from_genesis(genesis, ident("snapjoin-2", 1))
    deliver(writer, first, NOW + 100)
    writer.create_entity(ROOT, {"p": {"x": 3.0}})
    offline = writer.commit(NOW + 90)  # made while the writer was away
    assert offline is not None
    node.tick_clock(NOW + 110)
    hlc = decode_change(offline, DEFAULT_LIMITS).hlc
    client = SceneReplica.from_snapshot(node.snapshot(keep_after_hlc=hlc + 1), ident("client"),
                                        trusted_signers=[node.identity.public_key])
    overlay = RoomOverlay(client, ident("client"), OverlayConfig(), rng=random.Random(1),
                          wall_clock=lambda: NOW + 120)
    peer = node.identity.public_id
    overlay.connect(peer, 1.0)
    _misbehaved(overlay)
    overlay.receive(peer, "data", encode_frame(Changes(client.room_id, (offline,))), 2.0)
    assert client.rejections.get("behind_frontier") == 1
    assert _misbehaved(overlay) == []
    # A broken signature from the same peer is still its fault.
    forged = offline[:-1] + bytes([offline[-1] ^ 0x01])
    overlay.receive(peer, "data", encode_frame(Changes(client.room_id, (forged,))), 3.0)
    assert [e.reason for e in _misbehaved(overlay)] == ["invalid_change"]
