"""A late change is no one's fault: a replica started from a snapshot refuses a change stamped
below its frontier that the snapshot's writer lacked (``behind_frontier``), and the overlay must
not score the peer that relayed it: after a partition or an offline edit, honest nodes relay
such changes, and a client's own node sends them just before the client restarts from a fresh
snapshot. A forged change from the same peer is still scored."""

from __future__ import annotations

import random

from meshnode.overlay import OverlayConfig, PeerMisbehaved, RoomOverlay
from protocol.frames import Changes, encode_frame
from tests.crdt.harness import ident
from tests.crdt.test_head_snapshot import late_change
from tests.crdt.test_snapshot_join import NOW


def _misbehaved(overlay: RoomOverlay) -> list[PeerMisbehaved]:
    out = []
    while (event := overlay.next_event()) is not None:
        if isinstance(event, PeerMisbehaved):
            out.append(event)
    return out


def test_a_late_change_behind_the_frontier_is_not_scored_against_its_sender() -> None:
    node, offline, client = late_change()
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
