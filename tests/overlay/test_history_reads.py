"""The overlay's deferred history reads, sans-I/O (``meshnode.overlay.history_reads``).

A served peer that needs old changes gets them in causal order, a chunk read at a time
through ``HistoryWanted`` / ``history_loaded``; the overlay never calls the replica's
history source itself; a reply the budget stops is not read further; a second request that
needs the store meanwhile is refused as ``history_busy``; a read that comes back after the
peer left changes nothing; IDs the store lacks are skipped; a read never answered frees the
peer's slot after ``READ_TIMEOUT_S``.
"""

from __future__ import annotations

import random
from collections.abc import Mapping

from hypothesis import given, settings
from hypothesis import strategies as st

from meshnode.crdt import ROOT, SceneReplica
from meshnode.identity import Identity
from meshnode.overlay import OverlayConfig, RequestRefused, RoomOverlay
from meshnode.overlay.events import Event, HistoryWanted, RefusalReason
from meshnode.overlay.history_reads import READ_CHUNK, READ_TIMEOUT_S
from protocol.frames import Changes, Heads, Want, decode_frame, encode_frame

NODE, PEER = Identity.from_private_bytes(b"n" * 32), Identity.from_private_bytes(b"p" * 32)
T = 1_700_000_000.0
CHANGES = 700
KEEP = 16


def _served(config: OverlayConfig | None = None) -> tuple[RoomOverlay, dict[bytes, bytes],
                                                          list[int]]:
    """A node whose replica holds CHANGES changes, only the last KEEP bytes in memory; the
    'store' is a dict; the list counts calls of the synchronous history source."""
    node = SceneReplica.create(NODE, T, name="reads", nonce=b"r" * 16)
    node.grant(PEER.public_id, "viewer")
    store: dict[bytes, bytes] = {}
    ent = None
    for i in range(CHANGES):
        if ent is None:
            ent = node.create_entity(ROOT, {"p": {"x": 0}})
        else:
            node.set_field(ent, "p", "x", i)
        data = node.commit(T + i)
        assert data is not None
        store[node.recent_changes(1)[0]] = data
    sync_calls: list[int] = []

    def source(ids: list[bytes]) -> Mapping[bytes, bytes]:
        sync_calls.append(len(ids))
        return {c: store[c] for c in ids if c in store}

    node.use_history(source, keep_recent=KEEP)
    sync_calls.clear()
    overlay = RoomOverlay(node, NODE, config or OverlayConfig(), rng=random.Random(1),
                          wall_clock=lambda: T + CHANGES)
    overlay.defer_history_reads()
    overlay.connect(PEER.public_id, T, leaf=True)
    overlay.frames_to_send()
    _drain(overlay)
    return overlay, store, sync_calls


def _drain(overlay: RoomOverlay) -> list[Event]:
    out = []
    while (ev := overlay.next_event()) is not None:
        out.append(ev)
    return out


def _changes_sent(overlay: RoomOverlay) -> list[bytes]:
    sent: list[bytes] = []
    for peer, _, frame in overlay.frames_to_send():
        msg = decode_frame(frame)
        if peer == PEER.public_id and isinstance(msg, Changes):
            sent.extend(msg.changes)
    return sent


def _ask_all(overlay: RoomOverlay, now: float) -> None:
    genesis = overlay.replica.room_id
    heads = Heads(overlay.room_id, (genesis,), (), b"", False)
    overlay.receive(PEER.public_id, "sync", encode_frame(heads), now)


def test_catch_up_comes_in_chunks_in_causal_order() -> None:
    overlay, store, sync_calls = _served()
    _ask_all(overlay, T + 1)
    sent: list[bytes] = _changes_sent(overlay)
    reads = 0
    while True:
        wanted = [e for e in _drain(overlay) if isinstance(e, HistoryWanted)]
        if not wanted:
            break
        assert len(wanted) == 1 and 0 < len(wanted[0].change_ids) <= READ_CHUNK
        reads += 1
        ev = wanted[0]
        overlay.history_loaded(ev.read, {c: store[c] for c in ev.change_ids}, T + 2)
        sent += _changes_sent(overlay)
    assert sync_calls == []  # the overlay never read the store itself
    assert reads == -(-(CHANGES - KEEP) // READ_CHUNK)
    expected = overlay.replica.changes_since([overlay.replica.room_id])
    assert sent == expected
    late = SceneReplica.from_genesis(overlay.replica.genesis, PEER)
    assert all(r.status == "applied" for r in late.apply_many(sent, T + CHANGES))
    assert late.state() == overlay.replica.state()
    assert overlay.history_reads_pending() == 0


def test_second_request_is_busy_and_a_read_after_leaving_is_ignored() -> None:
    overlay, store, _ = _served()
    _ask_all(overlay, T + 1)
    first = next(e for e in _drain(overlay) if isinstance(e, HistoryWanted))
    old = list(store)[:3]
    overlay.receive(PEER.public_id, "sync", encode_frame(Want(overlay.room_id, tuple(old))),
                    T + 1)
    refused = [e for e in _drain(overlay) if isinstance(e, RequestRefused)]
    assert [r.reason for r in refused] == [RefusalReason.HISTORY_BUSY]
    # A Want for recent changes (bytes in memory) is answered at once, beside the reply.
    recent = overlay.replica.recent_changes(2)
    overlay.receive(PEER.public_id, "sync", encode_frame(Want(overlay.room_id, tuple(recent))),
                    T + 1)
    assert len(_changes_sent(overlay)) == 2
    overlay.disconnect(PEER.public_id, T + 2)
    overlay.history_loaded(first.read, {c: store[c] for c in first.change_ids}, T + 2)
    assert overlay.frames_to_send() == [] and overlay.history_reads_pending() == 0
    assert not [e for e in _drain(overlay) if isinstance(e, HistoryWanted)]


def test_a_reply_the_budget_stops_is_not_read_further() -> None:
    config = OverlayConfig(reply_allowance_bytes=4_000, reply_refill_bytes_per_s=1.0)
    overlay, store, _ = _served(config)
    _ask_all(overlay, T + 1)
    ev = next(e for e in _drain(overlay) if isinstance(e, HistoryWanted))
    overlay.history_loaded(ev.read, {c: store[c] for c in ev.change_ids}, T + 1)
    events = _drain(overlay)
    assert not [e for e in events if isinstance(e, HistoryWanted)]
    assert [e.reason for e in events if isinstance(e, RequestRefused)] == [
        RefusalReason.REPLY_BUDGET]
    assert 0 < len(_changes_sent(overlay)) < READ_CHUNK
    assert overlay.history_reads_pending() == 0


@settings(max_examples=10, deadline=None)
@given(st.lists(st.integers(0, CHANGES - 1), max_size=40))
def test_ids_the_store_lacks_are_skipped(lost: list[int]) -> None:
    overlay, store, _ = _served()
    gone = {list(store)[i] for i in lost}
    _ask_all(overlay, T + 1)
    sent = _changes_sent(overlay)
    while wanted := [e for e in _drain(overlay) if isinstance(e, HistoryWanted)]:
        ev = wanted[0]
        overlay.history_loaded(ev.read, {c: store[c] for c in ev.change_ids if c not in gone},
                               T + 2)
        sent += _changes_sent(overlay)
    expected = overlay.replica.changes_since([overlay.replica.room_id])
    in_memory = set(overlay.replica.recent_changes(KEEP))
    assert sent == [d for d, c in zip(expected, store, strict=True)
                    if c not in gone or c in in_memory]


def test_a_read_never_answered_frees_the_peer_after_a_while() -> None:
    """Its event lost (a full event queue), a read would hold the peer's slot for ever."""
    overlay, _, _ = _served()
    _ask_all(overlay, T + 1)
    assert [e for e in _drain(overlay) if isinstance(e, HistoryWanted)]
    _ask_all(overlay, T + 1 + READ_TIMEOUT_S / 2)
    assert [e.reason for e in _drain(overlay) if isinstance(e, RequestRefused)] == [
        RefusalReason.HISTORY_BUSY]
    overlay.receive(PEER.public_id, "sync", encode_frame(Want(overlay.room_id, (
        overlay.replica.recent_changes(CHANGES)[5],))), T + 2 + READ_TIMEOUT_S)
    events = _drain(overlay)
    assert not [e for e in events if isinstance(e, RequestRefused)]
    assert [e for e in events if isinstance(e, HistoryWanted)]
