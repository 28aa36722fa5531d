"""``RoomOverlay.hold_changes``: a driver holds the changes it spreads for one turn of its
loop, so the changes of many inputs leave in one ``Changes`` frame per neighbour."""

import random

from meshnode.crdt import ROOT, SceneReplica
from meshnode.identity import Identity
from meshnode.overlay import OverlayConfig, RoomOverlay
from protocol.frames import Changes, decode_frame

ME = Identity.from_private_bytes(bytes(range(32)))
PEER = Identity.from_private_bytes(bytes(range(1, 33)))
NOW = 1_700_000_000.0


def _overlay() -> RoomOverlay:
    replica = SceneReplica.create(ME, now=NOW, name="hold", nonce=b"\x03" * 16)
    replica.grant(PEER.public_id, "editor")
    assert replica.commit(NOW) is not None
    overlay = RoomOverlay(replica, ME, OverlayConfig(), rng=random.Random(1),
                          wall_clock=lambda: NOW)
    overlay.connect(PEER.public_id, 0.0, leaf=True)
    overlay.frames_to_send()
    return overlay


def _changes_frames(overlay: RoomOverlay) -> list[int]:
    out = []
    for _, _, frame in overlay.frames_to_send():
        msg = decode_frame(frame)
        if isinstance(msg, Changes):
            out.append(len(msg.changes))
    return out


def _edit(overlay: RoomOverlay, t: float) -> None:
    overlay.replica.create_entity(ROOT)
    data = overlay.replica.commit(NOW + t)
    assert data is not None
    overlay.submit_change(data, t)


def test_unheld_changes_leave_one_frame_each() -> None:
    overlay = _overlay()
    for i in range(3):
        _edit(overlay, i)
    assert _changes_frames(overlay) == [1, 1, 1]


def test_held_changes_leave_together_when_the_last_hold_ends() -> None:
    overlay = _overlay()
    overlay.hold_changes()
    overlay.hold_changes()  # holds nest
    for i in range(3):
        _edit(overlay, i)
    assert _changes_frames(overlay) == []
    overlay.release_changes()
    assert _changes_frames(overlay) == []
    overlay.release_changes()
    assert _changes_frames(overlay) == [3]
    _edit(overlay, 4)  # no hold left: framed at once again
    assert _changes_frames(overlay) == [1]
