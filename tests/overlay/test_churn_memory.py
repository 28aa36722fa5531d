"""Churn: a node serves one short session after another, each a new identity that is
granted a role, joins from a snapshot, edits, sends presence and leaves. What the node keeps
per session must stay bounded and must not grow with the history (issue 18: it used to cost
about 34 bytes x the room's changes per new identity, through one whole version vector per
change). Measured in-process with tracemalloc; virtual time, no wall-clock assertion.
"""

from __future__ import annotations

import gc
import hashlib
import random
import tracemalloc

from meshnode.crdt import ROOT, SceneReplica
from meshnode.identity import Identity
from meshnode.overlay import RoomOverlay
from meshnode.overlay.config import OverlayConfig

EDITS = 12  # changes per session
SESSIONS = 30  # per measured window
CONFIG = OverlayConfig(presence_ttl_s=5.0)


def _ident(i: int) -> Identity:
    return Identity.from_private_bytes(hashlib.sha256(f"churn/{i}".encode()).digest())


class _Clock:
    def __init__(self) -> None:
        self.t = 10_000.0

    def __call__(self) -> float:
        return self.t


def _pump(clock: _Clock, a: RoomOverlay, b: RoomOverlay) -> None:
    """Carry frames both ways until both are quiet; run due timers."""
    for _ in range(50):
        moved = False
        for src, dst in ((a, b), (b, a)):
            for peer, channel, frame in src.frames_to_send():
                if peer == dst.me:
                    dst.receive(src.me, channel, frame, clock.t)
                    moved = True
            while src.next_event() is not None:
                pass
        for o in (a, b):
            timer = o.get_timer()
            if timer is not None and timer <= clock.t:
                o.handle_timer(clock.t)
                moved = True
        if not moved:
            return


def _session(clock: _Clock, node: RoomOverlay, k: int) -> int:
    """One client session; returns how many changes the node gained."""
    before = node.replica.change_count()
    me = _ident(k)
    node.replica.grant(me.public_id, "editor")
    node.submit_change(node.replica.commit(clock.t) or b"", clock.t)
    replica = SceneReplica.from_snapshot(node.replica.snapshot(), me,
                                         trusted_signers=[node.replica.identity.public_key])
    client = RoomOverlay(replica, me, CONFIG, rng=random.Random(k), wall_clock=clock)
    node.connect(client.me, clock.t, leaf=True)
    client.connect(node.me, clock.t)
    _pump(clock, node, client)
    ent = replica.create_entity(ROOT, {"p": {"x": 0.0}})
    for i in range(EDITS):
        replica.set_field(ent, "p", "x", float(i))
        client.submit_change(replica.commit(clock.t) or b"", clock.t)
        client.submit_presence({"position": [float(i), 0.0, 0.0]}, clock.t)
        clock.t += 0.5
        _pump(clock, node, client)
    node.disconnect(client.me, clock.t)
    clock.t += 4.0  # the next identity comes ~10 s later
    _pump(clock, node, client)
    return node.replica.change_count() - before


def _window(clock: _Clock, node: RoomOverlay, start: int) -> tuple[int, int]:
    """Run SESSIONS sessions; return (bytes the node's heap grew, changes it gained)."""
    gc.collect()
    mem0 = tracemalloc.get_traced_memory()[0]
    changes = sum(_session(clock, node, start + s) for s in range(SESSIONS))
    clock.t += 2 * CONFIG.presence_ttl_s
    _pump(clock, node, node)
    node.handle_timer(clock.t)
    gc.collect()
    return tracemalloc.get_traced_memory()[0] - mem0, changes


def test_per_session_memory_is_bounded_and_flat_in_history() -> None:
    clock = _Clock()
    owner = _ident(0)
    replica = SceneReplica.create(owner, clock.t, nonce=b"churn")
    node = RoomOverlay(replica, owner, CONFIG, rng=random.Random(1), wall_clock=clock)
    # A history to start with: later identities would each pay for it under the old layout.
    ents = [replica.create_entity(ROOT, {"p": {"x": 0.0}}) for _ in range(10)]
    for i in range(1_500):
        replica.set_field(ents[i % 10], "p", "x", float(i))
        clock.t += 0.001
        replica.commit(clock.t)
    _window(clock, node, 1)  # warm-up: caches, interned names, first-time allocations
    tracemalloc.start()
    try:
        early, early_changes = _window(clock, node, 1_000)
        late, late_changes = _window(clock, node, 2_000)
    finally:
        tracemalloc.stop()
    per_change_early = early / early_changes
    per_change_late = late / late_changes
    per_session_late = late / SESSIONS
    print(f"per change {per_change_early:.0f} -> {per_change_late:.0f} B, per session "
          f"{early / SESSIONS:.0f} -> {per_session_late:.0f} B")
    # What a session leaves behind is its changes (history the node must keep) and a
    # little per-member CRDT state; nothing that grows with the room's history.
    assert per_change_late < 1_500, (per_change_early, per_change_late)
    assert per_session_late < (EDITS + 2) * 1_500, per_session_late
    assert per_change_late < per_change_early * 1.25 + 50, (per_change_early, per_change_late)
    # Nothing of a departed session stays in the overlay's per-peer or per-author tables.
    assert not node.connected and not node.leaves
    assert len(node.quota.authors) <= 1
    assert not node.tree.lazy and not node.presence.queues
    assert len(node.presence.seen) <= 1
    assert len(node.scores.peers) == 0
