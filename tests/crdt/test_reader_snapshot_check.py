"""A blind host's checks of a reader's sealed snapshot (``meshnode.crdt.snapshot_check``):
a genuine one is accepted (also when the host has moved on), each forgery or misfit is
refused with its reason, and no mutation of the bytes makes the checker raise."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meshnode.crdt import ROOT, SceneReplica
from meshnode.crdt.snapshot import SNAPSHOT_DOMAIN
from meshnode.crdt.snapshot_check import (
    ReaderSnapshotRefusal,
    SnapshotAccepted,
    SnapshotRefused,
    check_reader_snapshot,
)
from meshnode.identity import Identity
from tests.crdt.test_private_props import T0, World
from tests.crdt.test_sealed_snapshots import _room

R = ReaderSnapshotRefusal
BIG = 1 << 30
HOST = 4  # the World's blind host (role host)
EXAMPLES = int(os.environ.get("CRDT_MAX_EXAMPLES", "20"))


def _refused(verdict: object) -> str:
    assert isinstance(verdict, SnapshotRefused), verdict
    return verdict.reason.value


def _forge(w: World, snap: bytes, edit: Callable[[list[Any]], None],
           signer: Identity | None = None) -> bytes:
    """``snap`` with its msgpack body edited, re-signed by ``signer`` (default: its writer,
    so the signature verifies and only the content is wrong)."""
    obj = msgpack.unpackb(snap[:-64], raw=False)
    edit(obj)
    by = signer or next(i for i in w.ids if i.public_key == obj[2])
    body = msgpack.packb(obj, use_bin_type=True)
    return body + by.sign(SNAPSHOT_DOMAIN + w.reps[0].room_id + body)


def test_a_readers_snapshot_is_accepted_also_after_the_host_moved_on() -> None:
    w, snap = _room()
    host = w.reps[HOST]
    ok = check_reader_snapshot(host, snap, BIG)
    assert isinstance(ok, SnapshotAccepted) and ok.signer == w.ids[0].public_key
    # The host applies later changes: the snapshot still describes its DAG's past.
    w.reps[1].create_entity(ROOT, {"c": {"v": "later"}})
    w.reps[1].commit(T0 + 3000)
    host.apply_many(w.reps[1].changes_since(host.heads()), T0 + 3000)
    assert isinstance(check_reader_snapshot(host, snap, BIG), SnapshotAccepted)
    # Another reader's snapshot (its own wraps, same readers) is accepted too.
    assert isinstance(check_reader_snapshot(host, w.reps[2].snapshot(), BIG), SnapshotAccepted)


def test_size_decoding_room_and_sealing_refusals() -> None:
    w, snap = _room()
    host = w.reps[HOST]
    assert _refused(check_reader_snapshot(host, snap, len(snap) - 1)) == R.OVERSIZED
    assert _refused(check_reader_snapshot(host, b"\x93garbage" * 20, BIG)) == R.BAD_SNAPSHOT
    flipped = snap[:-1] + bytes([snap[-1] ^ 1])
    assert _refused(check_reader_snapshot(host, flipped, BIG)) == R.BAD_SNAPSHOT
    other = SceneReplica.create(w.ids[0], T0, nonce=b"other", name="x", private=True)
    assert _refused(check_reader_snapshot(host, other.snapshot(), BIG)) == R.OTHER_ROOM
    # A blind writer's snapshot (no scene at all) is no reader's snapshot.
    assert _refused(check_reader_snapshot(host, host.snapshot(), BIG)) == R.NOT_SEALED


def test_a_snapshot_ahead_of_the_host_is_refused_until_it_catches_up() -> None:
    w, _ = _room()
    host = w.reps[HOST]
    w.reps[1].create_entity(ROOT, {"c": {"v": "unseen"}})
    w.reps[1].commit(T0 + 3000)
    ahead = w.reps[1].snapshot()
    assert _refused(check_reader_snapshot(host, ahead, BIG)) == R.UNKNOWN_CHANGES
    host.apply_many(w.reps[1].changes_since(host.heads()), T0 + 3000)
    assert isinstance(check_reader_snapshot(host, ahead, BIG), SnapshotAccepted)


def test_a_wrong_public_part_is_refused() -> None:
    w, snap = _room()
    host = w.reps[HOST]

    def drop_grant(obj: list[Any]) -> None:
        obj[10] = obj[10][1:]  # a role book missing a grant (a member "never admitted")

    def raise_role(obj: list[Any]) -> None:
        obj[10] = [[k, c, 3 if r == 2 else r, i] for k, c, r, i in obj[10]]  # editor->admin

    def drop_epoch(obj: list[Any]) -> None:
        obj[18][0] = obj[18][0][:-1]

    for edit in (drop_grant, raise_role, drop_epoch):
        assert _refused(check_reader_snapshot(host, _forge(w, snap, edit), BIG)) \
            == R.PUBLIC_MISMATCH, edit.__name__


def test_a_signer_that_is_no_reader_is_refused() -> None:
    w, snap = _room()
    host_id = w.ids[HOST]

    def as_host(obj: list[Any]) -> None:
        obj[2] = host_id.public_key

    forged = _forge(w, snap, as_host, signer=host_id)
    assert _refused(check_reader_snapshot(w.reps[HOST], forged, BIG)) == R.SIGNER_NOT_READER
    removed = w.ids[3]  # removed before the snapshot: a member no more

    def as_removed(obj: list[Any]) -> None:
        obj[2] = removed.public_key

    forged = _forge(w, snap, as_removed, signer=removed)
    assert _refused(check_reader_snapshot(w.reps[HOST], forged, BIG)) == R.SIGNER_NOT_READER


def test_a_scene_sealed_under_a_stale_epoch_or_to_too_few_readers_is_refused() -> None:
    w, snap = _room()
    host = w.reps[HOST]
    epochs = [row[0] for row in msgpack.unpackb(snap[:-64], raw=False)[18][0]]

    def older_epoch(obj: list[Any]) -> None:
        obj[19][0] = next(e for e in epochs if e != obj[19][0])

    assert _refused(check_reader_snapshot(host, _forge(w, snap, older_epoch), BIG)) \
        == R.STALE_EPOCH

    def to_signer_only(obj: list[Any]) -> None:
        obj[19][1] = [row for row in obj[19][1] if row[0] == obj[2]]

    def to_nobody(obj: list[Any]) -> None:
        obj[19][1] = []

    def to_the_host_too(obj: list[Any]) -> None:
        obj[19][1] = [*obj[19][1], [w.ids[HOST].public_key, obj[19][1][0][1]]]

    for edit in (to_signer_only, to_nobody, to_the_host_too):
        assert _refused(check_reader_snapshot(host, _forge(w, snap, edit), BIG)) \
            == R.WRAPS_MISMATCH, edit.__name__


def test_a_refused_snapshot_leaves_the_host_replica_as_it_was() -> None:
    w, snap = _room()
    host = w.reps[HOST]
    before = (host.heads(), host.members(), host.epoch_book_view(), host.change_count())

    def drop_grant(obj: list[Any]) -> None:
        obj[10] = obj[10][1:]

    check_reader_snapshot(host, _forge(w, snap, drop_grant), BIG)
    check_reader_snapshot(host, snap, BIG)
    assert (host.heads(), host.members(), host.epoch_book_view(), host.change_count()) == before


_SHARED: dict[str, Any] = {}


def _shared_room() -> tuple[World, bytes]:
    if not _SHARED:
        _SHARED["room"] = _room()
    room: tuple[World, bytes] = _SHARED["room"]
    return room


@settings(deadline=None, max_examples=EXAMPLES * 5,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.data())
def test_mutated_reader_snapshots_get_a_verdict_never_an_exception(data: st.DataObject) -> None:
    w, snap = _shared_room()
    blob = bytearray(snap)
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(blob) - 1))
        blob[at] = data.draw(st.integers(0, 255))
    if data.draw(st.booleans()):
        blob = blob[: data.draw(st.integers(0, len(blob)))]
    verdict = check_reader_snapshot(w.reps[HOST], bytes(blob), BIG)
    if bytes(blob) != snap:
        # The signature covers every byte: any change is refused.
        assert isinstance(verdict, SnapshotRefused)


@settings(deadline=None, max_examples=EXAMPLES * 3,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(["grants", "cuts", "uses", "epochs", "lowering", "shared",
                                 "wraps", "epoch", "frontier"]), min_size=1, max_size=3),
       st.randoms(use_true_random=False))
def test_resigned_structural_edits_are_refused(
        edits: list[str], rnd: Any) -> None:
    """A reader re-signing an edited public part: every verdict is typed, and an accepted
    one has the public part the host computes itself."""
    w, snap = _shared_room()

    def edit(obj: list[Any]) -> None:
        for e in edits:
            section = {"grants": obj[10], "cuts": obj[14], "uses": obj[15],
                       "epochs": obj[18][0], "lowering": obj[18][1], "shared": obj[18][2],
                       "wraps": obj[19][1], "frontier": obj[17][2]}.get(e)
            if e == "epoch":
                obj[19][0] = bytes(32)
            elif section:
                section.pop(rnd.randrange(len(section)))
            elif section is not None:
                section.append(section[0] if section else [])

    forged = _forge(w, snap, edit)
    verdict = check_reader_snapshot(w.reps[HOST], forged, BIG)
    assert isinstance(verdict, (SnapshotAccepted, SnapshotRefused))
    if msgpack.unpackb(forged[:-64], raw=False) == msgpack.unpackb(snap[:-64], raw=False):
        return  # the edits undid each other (an append then a pop): nothing to refuse
    if isinstance(verdict, SnapshotAccepted):
        pytest.fail(f"an edited public part was accepted: {edits}")


def test_a_host_that_admits_by_proof_books_the_invite_use_like_every_replica() -> None:
    """The admitting host's own books equal its peers' (they did not: a local ``admit`` left
    the invite use out, so a reader's snapshot never matched the host's DAG)."""
    from meshnode.crdt.redemption import make_proof, redemption_signature
    from tests.crdt.test_private import NOW, PRoom, _invite, ident

    room = PRoom()
    newcomer = ident("priv", 5)
    body, sig, secret, iid = _invite(room, "editor", room.ids[0], int((NOW + 3600) * 1000))
    proof = make_proof(body, sig, redemption_signature(secret, room.owner.room_id,
                                                       newcomer.public_key))
    room.h.admit(newcomer.public_id, "editor", invite_id=iid, max_uses=1, proof=proof,
                 now=NOW + 10)
    data = room.h.commit(NOW + 10)
    assert data is not None
    room.offer(data, NOW + 11)
    assert room.h.invite_uses(iid) == room.owner.invite_uses(iid) == 1
    assert room.h.export_content().invite_uses == room.owner.export_content(
        opened=False).invite_uses
    check = check_reader_snapshot(room.h, room.owner.snapshot(), BIG)
    assert isinstance(check, SnapshotAccepted), check


def test_forged_frontier_entries_are_refused_when_the_host_holds_the_same_changes() -> None:
    w, snap = _room()

    def lie_about_the_genesis(obj: list[Any]) -> None:
        obj[17][3][0][4] = 1 if obj[17][3][0][4] != 1 else 2  # the genesis entry's kind

    def prune_count(obj: list[Any]) -> None:
        obj[17][1] += 5

    for edit in (lie_about_the_genesis, prune_count):
        assert _refused(check_reader_snapshot(w.reps[HOST], _forge(w, snap, edit), BIG)) \
            == R.PUBLIC_MISMATCH, edit.__name__
