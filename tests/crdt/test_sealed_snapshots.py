"""Sealed snapshots of private rooms (version 4): the scene sealed, the key rules in clear.

Random private-room histories (joins, removals, rotations, shares, edits), cut anywhere; the
replica holding the prefix writes a snapshot at a random frontier that obeys the pruning
rule. Then, for every identity of the room:

* a reader started from the snapshot, fed the rest in any order, ends where a replica that
  replayed everything ends (scene, sealed name, heads, roles, epoch book);
* a blind host or a removed member starts from its public part: the same DAG, role book and
  epoch book, and no scene;
* a reader the snapshot was not wrapped to is told so (``snapshot_key_missing``) and
  replays the history instead;
* no canary (values, the room's name) appears in the snapshot's bytes.
"""

from __future__ import annotations

import contextlib
import os
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meshnode.crdt import PermissionDenied, SceneReplica
from meshnode.crdt.snapshot import (
    PRIVATE_VERSION,
    SnapshotKeyMissing,
    SnapshotSealError,
    decode_snapshot,
    open_snapshot,
)
from protocol.change import change_id
from protocol.errors import DecodeError
from protocol.limits import DEFAULT_LIMITS
from tests.crdt.harness import ident
from tests.crdt.test_frontier_snapshot import _frontier_for
from tests.crdt.test_private_props import T0, World, _edit, actions

EXAMPLES = int(os.environ.get("CRDT_MAX_EXAMPLES", "20"))


def _run(plan: list[tuple[object, ...]]) -> World:
    """Play ``plan`` on a private room, then converge (everyone synced, keys shared)."""
    w = World(True)
    joined: set[int] = set()
    removed: set[int] = set()
    mine: dict[int, list[object]] = {}
    for step, act in enumerate(plan):
        now = T0 + 10 + step
        kind = act[0]
        if kind == "edit":
            i = int(act[1])  # type: ignore[arg-type]
            if _edit(w.reps[i], step * 7 + i, mine):
                w.reps[i].commit(now)
        elif kind == "sync":
            a, b = int(act[1]), int(act[2])  # type: ignore[arg-type]
            w.reps[b].apply_many(w.reps[a].changes_since(w.reps[b].heads()), now)
        elif kind == "join":
            k = int(act[1])  # type: ignore[arg-type]
            if k not in joined and k not in removed:
                joined.add(k)
                w.reps[0].grant(w.ids[k].public_id, str(act[2]))
                w.reps[0].commit(now)
        elif kind == "remove":
            k = int(act[1])  # type: ignore[arg-type]
            if k in removed or w.reps[0].role_of(w.ids[k].public_id) == "none":
                continue
            removed.add(k)
            w.reps[0].revoke(w.ids[k].public_id)
            w.reps[0].commit(now)
        else:
            i = int(act[1])  # type: ignore[arg-type]
            rep = w.reps[i]
            try:
                if kind == "rotate":
                    rep.rotate()
                elif rep.is_reader():
                    for m in rep.keyless_readers():
                        rep.share(m)
            except PermissionDenied:
                continue
            rep.commit(now)
    now = T0 + 1000
    w.full_sync(now)
    for _ in range(3):
        for rep in w.reps:
            if rep.is_reader() and rep.keyless_readers():
                for m in rep.keyless_readers():
                    rep.share(m)
                rep.commit(now)
        w.full_sync(now)
    return w


def _feed(rep: SceneReplica, chunks: list[list[bytes]], everything: list[bytes]) -> None:
    for chunk in [*chunks, everything]:  # then anti-entropy offers again what waited
        rep.apply_many(chunk, T0 + 2000)


@settings(deadline=None, max_examples=EXAMPLES,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(actions, st.randoms(use_true_random=False), st.floats(0.0, 1.0), st.integers(0, 6))
def test_sealed_snapshot_plus_later_changes_equals_replay(
        plan: list[tuple[object, ...]], rnd: random.Random, fraction: float,
        writer_index: int) -> None:
    w = _run(plan)
    history = w.reps[0].changes_since([])
    assert all(b"canary" not in d for d in history)
    cut = rnd.randint(1, len(history))
    writer = SceneReplica.from_genesis(w.reps[0].genesis, w.ids[writer_index])
    writer.apply_many(history[:cut], T0 + 2000)
    frontier = _frontier_for(writer, history, fraction)
    snap = writer.snapshot(frontier)
    assert b"canary" not in snap
    sealed = writer.snapshot_sealed
    rest = history[cut:]
    rnd.shuffle(rest)
    marks = sorted(rnd.randint(0, len(rest)) for _ in range(2))
    chunks = [rest[: marks[0]], rest[marks[0]: marks[1]], rest[marks[1]:]]
    for i, identity in enumerate(w.ids):
        ref = SceneReplica.from_genesis(w.reps[0].genesis, identity)
        ref.apply_many(history, T0 + 2000)
        try:
            rep = SceneReplica.from_snapshot(snap, identity)
        except SnapshotKeyMissing:
            # Only a reader the snapshot was not sealed to (or any reader, if the writer
            # could not seal): it replays the history instead.
            assert not sealed or identity.public_key not in _wrapped(snap, identity)
            continue
        except DecodeError as exc:
            assert "not a member" in str(exc)  # an outsider at the cut may not load it
            continue
        opened = sealed and identity.public_key in _wrapped(snap, identity)
        if not opened:
            # A blind start: no scene from the snapshot, and it never claims to read it all.
            assert "canary" not in str(rep.state()) and rep.room_name == ""
        _feed(rep, chunks, rest)
        assert rep.heads() == ref.heads(), i
        assert rep.members() == ref.members()
        assert rep.epoch_book_view() == ref.epoch_book_view()
        assert rep.scene_missing is not opened
        if opened and rep.is_reader():
            assert rep.readable == ref.readable
            assert rep.state() == ref.state()
            assert rep.room_name == ref.room_name == "canary-name"
        else:
            assert not rep.readable


def _wrapped(snap: bytes, identity: object) -> set[bytes]:
    dec = decode_snapshot(snap, DEFAULT_LIMITS, None)
    return set() if dec.sealed is None else set(dec.sealed.wraps)


def _room() -> tuple[World, bytes]:
    w = _run([("edit", 0), ("edit", 1), ("remove", 3), ("edit", 2), ("rotate", 1)])
    return w, w.reps[0].snapshot()


def test_blind_host_stores_the_sealed_snapshot_without_its_scene() -> None:
    w, snap = _room()
    dec = decode_snapshot(snap, DEFAULT_LIMITS, None)
    assert snap[: 40].find(b"meshnode-snapshot") >= 0 and dec.sealed is not None
    assert dec.content.entities == () and dec.content.fields == ()
    host = SceneReplica.from_snapshot(snap, w.ids[4])  # role host: no wrap, public part
    assert not host.readable and host.state() == {} and host.room_name == ""
    assert host.epoch_book_view() == w.reps[0].epoch_book_view()
    assert host.members() == w.reps[0].members()
    # Its own snapshot has no sealed section at all, and a reader refuses to start from it.
    blind = host.snapshot()
    assert b"canary" not in blind and not host.snapshot_sealed
    assert decode_snapshot(blind, DEFAULT_LIMITS, None).sealed is None
    with pytest.raises(SnapshotKeyMissing):
        SceneReplica.from_snapshot(blind, w.ids[1])


def test_removed_member_gets_no_key_for_later_snapshots() -> None:
    w, snap = _room()  # member 3 (a viewer) was removed before the snapshot
    dec = decode_snapshot(snap, DEFAULT_LIMITS, None)
    assert dec.sealed is not None and w.ids[3].public_key not in dec.sealed.wraps
    assert w.ids[0].public_key in dec.sealed.wraps
    removed = SceneReplica.from_snapshot(snap, w.ids[3])
    assert "canary" not in str(removed.state()) and not removed.is_reader()


def test_sealed_section_is_bound_to_room_epoch_and_public_part() -> None:
    w, snap = _room()
    dec = decode_snapshot(snap, DEFAULT_LIMITS, None)
    assert dec.sealed is not None
    owner = w.reps[0]
    secret = owner._epochs.secrets[dec.sealed.epoch_id]  # type: ignore[union-attr]
    assert open_snapshot(dec, secret, DEFAULT_LIMITS).private.opened  # type: ignore[union-attr]
    # Another epoch's secret, or the same ciphertext under another public part, fails.
    other = next(s for e, s in owner._epochs.secrets.items()  # type: ignore[union-attr]
                 if e != dec.sealed.epoch_id)
    with pytest.raises(SnapshotSealError):
        open_snapshot(dec, other, DEFAULT_LIMITS)
    # (The last byte flipped, never set: a fixed value would equal it 1 run in 256.)
    moved = type(dec.sealed)(dec.sealed.epoch_id, dec.sealed.wraps, dec.sealed.nonce,
                             dec.sealed.ciphertext,
                             dec.sealed.aad[:-1] + bytes([dec.sealed.aad[-1] ^ 0x01]))
    with pytest.raises(SnapshotSealError):
        open_snapshot(type(dec)(dec.content, dec.signer, dec.room_id, dec.genesis, moved,
                                dec.change_ids), secret, DEFAULT_LIMITS)


def test_version_4_refuses_a_scene_in_clear() -> None:
    import msgpack

    w, snap = _room()
    obj = msgpack.unpackb(snap[:-64], raw=False)
    assert obj[1] == PRIVATE_VERSION
    obj[9] = [[2, "c", "v", 0, "canary"]]
    ident_ = w.ids[0]
    body = msgpack.packb(obj, use_bin_type=True)
    from meshnode.crdt.snapshot import SNAPSHOT_DOMAIN

    forged = body + ident_.sign(SNAPSHOT_DOMAIN + w.reps[0].room_id + body)
    with pytest.raises(DecodeError, match="in clear"):
        SceneReplica.from_snapshot(forged, ident("outsider"))


def test_pruned_private_room_keeps_reading() -> None:
    """A reader prunes a private room below a frontier (``compact``) and carries on: the
    same scene, keys and name; a fresh reader starts from the pruned snapshot."""
    w = _run([("edit", 0), ("edit", 1), ("rotate", 2), ("edit", 2), ("remove", 3),
              ("edit", 0), ("edit", 1)])
    owner = w.reps[0]
    before = owner.state()
    history = owner.changes_since([])
    frontier = _frontier_for(owner, history, 1.0)
    snap, dropped = owner.compact(frontier)
    assert dropped and b"canary" not in snap
    assert owner.state() == before and owner.readable and owner.room_name == "canary-name"
    fresh = SceneReplica.from_snapshot(snap, w.ids[1])
    assert fresh.state() == before and fresh.readable
    owner.create_entity(fresh.entities()[0], {"c": {"v": "after"}})
    data = owner.commit(T0 + 3000)
    assert data is not None and b"after" not in data
    fresh.apply(data, T0 + 3000)
    assert fresh.state() == owner.state()
    assert change_id(data) in fresh.heads()


def test_snapshot_vectors_open() -> None:
    """The sealed-section vector of docs/protocol.md opens with the epoch's snapshot key and
    gives the plaintext, which decodes as a scene (``open_snapshot``'s parser)."""
    from meshnode.crdt import private_vectors as pv
    from meshnode.crdt.snapshot_seal import SealedSection, open_section

    v = pv.build()
    section = SealedSection(pv.EPOCH_ID, {}, pv.NONCE,
                            bytes.fromhex(v["snapshot_sealed_ciphertext (seal_nonce)"]),
                            bytes.fromhex(v["snapshot_seal_aad"]))
    plain = open_section(section, pv.ROOM_ID, pv.SECRET)
    assert plain is not None and plain.hex() == v["snapshot_sealed_plaintext"]
    assert open_section(section, pv.ROOM_ID, bytes(32)) is None
    assert open_section(section, bytes(32), pv.SECRET) is None


_FUZZ_ROOM = _room()


@settings(deadline=None, max_examples=150)
@given(st.data())
def test_mutated_sealed_snapshots_are_typed_errors_or_load(data: st.DataObject) -> None:
    w, snap = _FUZZ_ROOM
    raw = bytearray(snap)
    if data.draw(st.booleans()):
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i] ^= 1 << data.draw(st.integers(0, 7))
    else:
        raw = raw[: data.draw(st.integers(0, len(raw) - 1))]
    with contextlib.suppress(DecodeError):
        SceneReplica.from_snapshot(bytes(raw), w.ids[1])


@settings(deadline=None, max_examples=150)
@given(st.one_of(
    st.binary(max_size=300),
    st.lists(st.one_of(st.none(), st.integers(-3, 300), st.binary(max_size=40),
                       st.text(max_size=8), st.lists(st.integers(-1, 5), max_size=4)),
             max_size=9),
))
def test_sealed_plaintext_parser_gives_typed_errors(plain: object) -> None:
    """Whatever a (malicious) reader seals, a loader gets ``SnapshotSealError`` or content."""
    import dataclasses

    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    from meshnode.crdt.sealing import derived_key, pad
    from protocol.msgpack_io import pack

    w, snap = _FUZZ_ROOM
    dec = decode_snapshot(snap, DEFAULT_LIMITS, None)
    assert dec.sealed is not None
    secret = w.reps[0]._epochs.secrets[dec.sealed.epoch_id]  # type: ignore[union-attr]
    body = plain if isinstance(plain, bytes) else pack(plain)
    ct = AESGCM(derived_key(secret, dec.room_id, "snapshot")).encrypt(
        dec.sealed.nonce, pad(body), dec.sealed.aad)
    forged = dataclasses.replace(dec, sealed=dataclasses.replace(dec.sealed, ciphertext=ct))
    with contextlib.suppress(SnapshotSealError):
        open_snapshot(forged, secret, DEFAULT_LIMITS)


def test_a_blind_host_cannot_resign_or_alter_a_readers_snapshot() -> None:
    import msgpack

    from meshnode.crdt.snapshot import SNAPSHOT_DOMAIN

    w, snap = _room()
    host = w.ids[4]
    room_id = w.reps[0].room_id

    def signed(obj: list[object], by: object) -> bytes:
        body = msgpack.packb(obj, use_bin_type=True)
        return body + by.sign(SNAPSHOT_DOMAIN + room_id + body)  # type: ignore[attr-defined]

    obj = msgpack.unpackb(snap[:-64], raw=False)
    obj[2] = host.public_key  # re-signed as the host's own: the wraps name the real signer
    with pytest.raises(DecodeError) as err:
        SceneReplica.from_snapshot(signed(obj, host), w.ids[1])
    assert err.value.reason in ("snapshot_key_missing", "bad_sealed_snapshot")
    obj = msgpack.unpackb(snap[:-64], raw=False)
    obj[4] += 1  # any public change (here the clock), signed by the real signer's key
    with pytest.raises(SnapshotSealError):
        SceneReplica.from_snapshot(signed(obj, w.ids[0]), w.ids[1])
