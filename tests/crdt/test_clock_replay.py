"""A replica restarted from its store with a wrong clock loses nothing and never equivocates.

Issue 16 item 1 (core part). The node used to replay its change log through
``apply_many(batch, time.time())``: with the wall clock 10 minutes behind every stored change
was refused as ``future_timestamp`` and the room came up empty, and the replica's seq restarted
low, so its next change reused a seq it had signed (equivocation). These tests drive
``SceneReplica.replay``, the own-seq floor, the HLC across a simulated restart, and a wall
clock that jumps forward and back between two replicas (``docs/protocol.md``, "Hybrid logical
clock").
"""

from __future__ import annotations

import pytest

from meshnode.crdt import (
    APPLIED,
    REJECTED,
    ROOT,
    OwnHistoryMissing,
    SceneReplica,
)
from meshnode.crdt.clock import hlc_millis
from protocol.change import decode_change

from .harness import assert_converged, craft, deliver, full_sync, make_room

T = 1_700_000_000.0  # the honest wall clock when the room is made
SKEW = 60.0  # SceneReplica's default max_clock_skew_s


def _history(tag: str) -> tuple[list[SceneReplica], list[bytes]]:
    """Owner and editor edit in turns at ``T``..``T + 5``; returns the replicas and the
    owner's store (every change it holds, in the order it got them)."""
    room = make_room(["editor"], tag=tag, now=T)
    o, ed = room.replicas
    a = o.create_entity(ROOT, {"name": {"text": "a"}})
    deliver(ed, [o.commit(T + 1)], T + 1)
    b = ed.create_entity(a, {"name": {"text": "b"}})
    deliver(o, [ed.commit(T + 2)], T + 2)
    o.set_field(a, "name", "text", "a2")
    o.create_entity(b)
    deliver(ed, [o.commit(T + 3)], T + 3)
    ed.move(b, ROOT)
    deliver(o, [ed.commit(T + 4)], T + 4)
    o.create_entity(ROOT)
    deliver(ed, [o.commit(T + 5)], T + 5)
    return [o, ed], o.changes_since([])


def _restart(owner: SceneReplica) -> SceneReplica:
    return SceneReplica.from_genesis(owner.genesis, owner.identity)


def _first_by(store: list[bytes], replica: SceneReplica) -> bytes:
    """The first change in ``store`` authored by ``replica``'s identity."""
    key = replica.identity.public_key
    return next(d for d in store if decode_change(d).author == key)


@pytest.mark.parametrize("offset", [-600.0, -86_400.0 * 365, 600.0, 86_400.0 * 365])
def test_replay_keeps_every_change_whatever_the_clock(offset):
    (o, ed), store = _history(f"replay-clock-{offset}")
    now = T + 10 + offset
    # What the node used to do: with the clock behind, every change is refused.
    naive = _restart(o)
    results = naive.apply_many(store, now)
    if offset < 0:
        assert {r.reason for r in results if r.status == REJECTED} == {"future_timestamp"}
        assert naive.state() == {}
    # Replay has no clock bound: the room comes back whole.
    fresh = _restart(o)
    report = fresh.replay(store)
    assert report.ok, report
    assert report.applied == len(store) - 1 and report.duplicates == 1  # the genesis
    assert fresh.state() == o.state() and fresh.heads() == o.heads()
    assert report.own_seq == o.version_vector()[o.identity.public_key]
    # Its next change follows its last one, and the honest peer applies it at once when the
    # restarted clock is behind; ahead, the peer applies it once its clock catches up.
    fresh.create_entity(ROOT)
    data = fresh.commit(now)
    assert data is not None
    ch = decode_change(data)
    assert ch.seq == report.own_seq + 1
    res = ed.apply(data, max(T + 10, now - SKEW))
    assert res.status == APPLIED, res
    assert ed.equivocations == []


def test_replay_reports_what_it_cannot_apply():
    (o, ed), store = _history("replay-report")
    corrupt = bytearray(store[-1])
    corrupt[-1] ^= 1  # a flipped bit in the signature
    truncated = store[-2][:20]
    lost = _first_by(store, ed)  # everything after it depends on it
    stored = [d for d in store if d != lost] + [bytes(corrupt), truncated]
    fresh = _restart(o)
    report = fresh.replay(stored)
    assert not report.ok
    assert sorted(f.reason for f in report.rejected) == ["bad_signature", "schema"], report
    # Changes after the lost one are kept, buffered, and reported with what they wait for.
    assert report.missing_history and all(
        f.reason == "missing_deps" for f in report.missing_history
    )
    assert decode_change(lost).change_id in report.missing_deps
    counted = report.applied + report.duplicates + len(report.failures)
    assert counted == len(stored)
    # The peer sends the lost change: the buffered ones apply, nothing is lost.
    res = fresh.apply(lost, T + 10)
    assert res.status == APPLIED and len(res.applied) > 1
    full_sync([fresh, ed], T + 10)
    assert fresh.state() == o.state()


def test_replay_buffers_changes_of_authors_it_does_not_know_yet():
    """In the store, a member's change may come before the grant that admits them."""
    (o, _ed), store = _history("replay-unknown-author")
    grant, rest = store[1], [store[0], *store[2:]]
    fresh = _restart(o)
    report = fresh.replay(rest)  # the grant is missing: the editor is unknown here
    assert not report.ok and not report.rejected
    assert decode_change(grant).change_id in report.missing_deps
    fresh.apply(grant, T + 10)
    assert fresh.state() == o.state()


def test_seq_floor_prevents_equivocation_after_a_lossy_replay():
    (o, ed), store = _history("replay-floor")
    lost = _first_by(store, ed)  # the owner's later changes build on it
    fresh = _restart(o)
    report = fresh.replay([d for d in store if d != lost])
    own_top = o.version_vector()[o.identity.public_key]
    assert report.own_seq == own_top
    assert fresh.version_vector()[o.identity.public_key] < own_top  # some are buffered
    # The buffered changes made entities whose numbers a new one must not reuse: creating
    # waits; other edits are kept, but not signed, until the history is back.
    with pytest.raises(OwnHistoryMissing):
        fresh.create_entity(ROOT)
    a = fresh.entities()[0]
    fresh.set_field(a, "name", "text", "edited after the restart")
    with pytest.raises(OwnHistoryMissing) as err:
        fresh.commit(T + 10)
    assert err.value.reason == "own_history_missing"
    assert fresh.pending_ops == 1  # the edit is kept for later
    # A peer brings the history back; the commit then takes the next seq, and the peer sees
    # no equivocation.
    deliver(fresh, ed.changes_since(fresh.heads()), T + 10)
    data = fresh.commit(T + 10)
    assert data is not None and decode_change(data).seq == own_top + 1
    assert ed.apply(data, T + 10).status == APPLIED
    assert ed.equivocations == [] and fresh.equivocations == []


def test_ensure_seq_above_guards_seqs_known_only_from_outside():
    """The store may know a seq was signed whose bytes it lost (e.g. from its own record)."""
    (o, ed), store = _history("replay-floor-outside")
    fresh = _restart(o)
    fresh.replay(store[:-1])  # the last own change is gone from the store
    fresh.ensure_seq_above(o.own_seq)
    assert fresh.own_seq == o.own_seq
    with pytest.raises(OwnHistoryMissing):
        fresh.create_entity(ROOT)
    fresh.delete(fresh.entities()[0])
    with pytest.raises(OwnHistoryMissing):
        fresh.commit(T + 10)
    deliver(fresh, ed.changes_since(fresh.heads()), T + 10)  # the editor has it
    fresh.create_entity(ROOT)
    data = fresh.commit(T + 10)
    assert data is not None and ed.apply(data, T + 10).status == APPLIED
    assert ed.equivocations == []


def test_hlc_is_monotonic_across_a_restart_with_the_clock_behind():
    (o, ed), store = _history("replay-hlc")
    newest = max(decode_change(d).hlc for d in store)
    fresh = _restart(o)
    fresh.replay(store)
    fresh.create_entity(ROOT)
    behind = T - 600.0  # 10 minutes behind, as a Raspberry Pi without an RTC boots
    data = fresh.commit(behind)
    assert data is not None
    assert decode_change(data).hlc > newest
    # The honest peer (right clock) applies it: not before its deps, not a reused seq.
    assert ed.apply(data, T + 10).status == APPLIED
    # The peer's new changes are ahead of the restarted clock: refused as transient until
    # the clocks agree again (e.g. NTP has synced), then applied.
    ed.create_entity(ROOT)
    newer = ed.commit(T + 11)
    assert fresh.apply(newer, behind).reason == "future_timestamp"
    assert fresh.apply(newer, T + 11).status == APPLIED
    assert_converged([fresh, ed])


def test_a_clock_jump_forward_and_back_does_not_lock_out_the_node():
    """A's wall clock jumps an hour ahead, A edits, the clock comes back, A edits again.

    A hears from B before the jump, so its stamps stay within half the skew of its estimate
    of B's time (B's last stamp plus the monotonic time since): B accepts every change of A
    at once, during the jump and after it (the documented bound is the skew, 60 s).
    """
    room = make_room(["editor"], tag="clock-jump", now=T)
    a, b = room.replicas
    mono = 100.0  # A's monotonic clock: unaffected by the wall-clock jump
    b.create_entity(ROOT)
    assert a.apply(b.commit(T + 1), T + 1, mono=mono + 1).status == APPLIED
    jump = 3600.0
    for k in range(5):  # during the jump
        t = T + 2 + k
        a.create_entity(ROOT)
        data = a.commit(t + jump, mono=mono + 2 + k)
        assert data is not None
        assert hlc_millis(decode_change(data).hlc) / 1000 <= t + SKEW / 2 + 1
        assert b.apply(data, t).status == APPLIED
    for k in range(5):  # the clock is back
        t = T + 10 + k
        a.create_entity(ROOT)
        data = a.commit(t, mono=mono + 10 + k)
        assert data is not None
        assert b.apply(data, t).status == APPLIED
    assert_converged([a, b])
    assert b.rejections == {}


def test_a_clock_jump_without_a_monotonic_reading_is_what_the_bound_prevents():
    """The same jump with one clock only (``mono`` omitted): A follows its wall clock, B
    refuses its changes as ``future_timestamp``, and A's later changes (stamped after them)
    stay unacceptable for the whole jump. This is why drivers pass ``mono``."""
    room = make_room(["editor"], tag="clock-jump-control", now=T)
    a, b = room.replicas
    b.create_entity(ROOT)
    assert a.apply(b.commit(T + 1), T + 1).status == APPLIED
    a.create_entity(ROOT)
    ahead = a.commit(T + 3602)
    assert b.apply(ahead, T + 2).reason == "future_timestamp"
    a.create_entity(ROOT)
    back = a.commit(T + 10)
    assert b.apply(back, T + 10).reason == "future_timestamp"


def test_the_lead_bound_follows_the_monotonic_clock_not_a_stale_stamp():
    """Long after the last peer change, the estimate has moved on with the monotonic clock,
    so a correct wall clock is not held back."""
    room = make_room(["editor"], tag="clock-stale", now=T)
    a, b = room.replicas
    b.create_entity(ROOT)
    a.apply(b.commit(T + 1), T + 1, mono=1.0)
    a.create_entity(ROOT)
    later = T + 7200
    data = a.commit(later, mono=7200.0)
    assert data is not None
    assert hlc_millis(decode_change(data).hlc) == int(later * 1000)


def test_replay_of_a_peer_change_is_not_a_time_reference():
    """Replayed stamps move the HLC forward but do not anchor the peer-time estimate (there
    is no monotonic reading for them), so a replica restarted with its clock far ahead has
    no bound until it hears from a peer; once it does, the bound applies."""
    (o, ed), store = _history("replay-no-anchor")
    fresh = _restart(o)
    fresh.replay(store)
    ed.create_entity(ROOT)
    assert fresh.apply(ed.commit(T + 20), T + 3600, mono=50.0).status == APPLIED
    fresh.create_entity(ROOT)
    data = fresh.commit(T + 3600, mono=51.0)
    assert data is not None
    assert ed.apply(data, T + 21).status == APPLIED


def test_crafted_seq_gap_is_refused_by_peers():
    """Why a lossy replica must not skip seqs: peers reject a gap for good (``bad_seq``)."""
    room = make_room(["editor"], tag="seq-gap", now=T)
    o, _ed = room.replicas
    gap = craft(o, room.identities[1], [[1, 1, None]], seq=3, now=T + 1)
    assert o.apply(gap, T + 1).reason == "bad_seq"
