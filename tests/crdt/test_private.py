"""Private rooms: host admission with redemption proofs, key rules, sealing, voiding.

Adversarial cases are hand-crafted changes offered to readers and to a blind host alike:
each is rejected (public rules) or voided (content) everywhere, with its stable reason.
"""

from __future__ import annotations

import contextlib
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meshnode.crdt import APPLIED, REJECTED, ROOT, PermissionDenied, SceneReplica
from meshnode.crdt.member_keys import wrap
from meshnode.crdt.privacy import WaitingForKey
from meshnode.crdt.redemption import (
    INVITE_DOMAIN,
    invite_keypair,
    make_proof,
    redemption_signature,
)
from meshnode.crdt.sealing import bucket, commitment, derived_key, pad, seal, seal_aad, unpad
from meshnode.crdt.sealing import wrap_info as rot_info
from meshnode.identity import Identity
from protocol.change import OP_ROLE, ROLE_EDITOR, ROLE_HOST, change_id, decode_change
from protocol.errors import DecodeError
from protocol.msgpack_io import pack
from protocol.private_ops import OP_ROTATE, OP_SEALED
from tests.crdt.harness import craft, ident

NOW = 1000.0


class PRoom:
    """A private room: owner, editor A, editor B, viewer V, host H (blind)."""

    def __init__(self, tag: str = "priv") -> None:
        self.ids = [ident(tag, i) for i in range(6)]
        o, a, b, v, h, _ = self.ids
        self.owner = SceneReplica.create(o, NOW, nonce=b"p", name="canary-room", private=True)
        self.owner.grant(a.public_id, "editor")
        self.owner.grant(b.public_id, "editor")
        self.owner.grant(v.public_id, "viewer")
        self.owner.grant(h.public_id, "host")
        self.owner.commit(NOW + 1)
        self.a, self.b, self.v, self.h = (
            SceneReplica.from_genesis(self.owner.genesis, x) for x in (a, b, v, h))
        self.sync()

    @property
    def all(self) -> list[SceneReplica]:
        return [self.owner, self.a, self.b, self.v, self.h]

    def sync(self, now: float = NOW + 2) -> None:
        everything: dict[bytes, bytes] = {}
        for r in self.all:
            for d in r.changes_since([]):
                everything[change_id(d)] = d
        for r in self.all:
            r.apply_many(list(everything.values()), now)

    def offer(self, data: bytes, now: float = NOW + 50) -> list[tuple[str, str | None]]:
        return [(res.status, res.reason)
                for res in (r.apply(data, now) for r in self.all if not r.has_change(
                    change_id(data)))]


def test_private_room_seals_everything_and_readers_read() -> None:
    room = PRoom()
    ent = room.a.create_entity(ROOT, {"name": {"text": "canary-value"}})
    room.a.commit(NOW + 3)
    room.sync(NOW + 4)
    for r in room.all:
        assert r.private
        assert r.heads() == room.owner.heads()
        assert r.epoch_book_view() == room.owner.epoch_book_view()
        assert r.members() == room.owner.members()
    for r in (room.owner, room.a, room.b, room.v):
        assert r.readable and r.room_name == "canary-room"
        assert r.get_field(ent, "name", "text") == "canary-value"
    assert not room.h.readable and room.h.room_name == "" and not room.h.entities()
    assert room.h.privacy_counters()["waiting_for_key"] == 2  # the name, the entity
    wire = b"".join(room.owner.changes_since([]))
    assert b"canary" not in wire
    assert room.owner.role_of(room.ids[4].public_id) == "host"
    assert not room.owner.is_reader(room.ids[4].public_key)


def test_removal_rotates_and_the_removed_member_reads_nothing_after() -> None:
    room = PRoom()
    room.owner.revoke(room.ids[1].public_id)
    data = room.owner.commit(NOW + 3)
    assert data is not None
    assert [op[0] for op in decode_change(data).ops] == [OP_ROLE, OP_ROTATE]
    room.sync(NOW + 4)
    room.b.create_entity(ROOT, {"x": {"y": "canary-after"}})
    room.b.commit(NOW + 5)
    room.sync(NOW + 6)
    assert "canary-after" in str(room.owner.state())
    assert "canary-after" not in str(room.a.state())
    assert room.a.privacy_counters()["waiting_for_key"] >= 1
    assert room.b.readable and room.v.readable


def test_rotate_and_share_api() -> None:
    room = PRoom()
    before = len(room.owner.epoch_ids())
    room.b.rotate()
    room.b.commit(NOW + 3)
    room.sync(NOW + 4)
    assert len(room.owner.epoch_ids()) == before + 1
    assert all(r.epoch_book_view() == room.owner.epoch_book_view() for r in room.all)
    with pytest.raises(PermissionDenied):
        room.v.rotate()  # viewers share but do not rotate
    with pytest.raises(ValueError):
        room.a.share(room.ids[4].public_id)  # never to a host


def _invite(room: PRoom, role: str, issuer: Identity, expires_ms: int,
            key_seed: bytes = b"\x07" * 32) -> tuple[bytes, bytes, bytes, bytes]:
    """(body, issuer signature, invite secret, invite ID) of a 9-field invite."""
    secret, public = invite_keypair(key_seed)
    body = pack([room.owner.room_id, room.owner.genesis, role, issuer.public_key, expires_ms,
                 [], b"n", 1, public])
    import hashlib

    return body, issuer.sign(INVITE_DOMAIN + body), secret, hashlib.sha256(body).digest()


def test_host_admits_with_a_proof_and_only_with_one() -> None:
    room = PRoom()
    newcomer = ident("priv", 5)
    body, sig, secret, iid = _invite(room, "editor", room.ids[0], int((NOW + 3600) * 1000))
    proof = make_proof(body, sig, redemption_signature(secret, room.owner.room_id,
                                                       newcomer.public_key))
    # Without a proof: the host has no authority of its own.
    with pytest.raises(PermissionDenied):
        room.h.grant(newcomer.public_id, "editor")
    bare = craft(room.h, room.ids[4], [[OP_ROLE, 0, ROLE_EDITOR, 0]],
                 actors=[newcomer.public_key], now=NOW + 10)
    assert set(room.offer(bare)) == {(REJECTED, "host_needs_proof")}
    # A token seen by the host, redeemed for a sockpuppet: the signature names the invitee.
    puppet = ident("puppet", 0)
    stolen = craft(room.h, room.ids[4], [[OP_ROLE, 0, ROLE_EDITOR, 0, iid, 1, proof]],
                   actors=[puppet.public_key], now=NOW + 10)
    assert set(room.offer(stolen)) == {(REJECTED, "bad_redemption")}
    # Expired by the grant's clock.
    late = craft(room.h, room.ids[4], [[OP_ROLE, 0, ROLE_EDITOR, 0, iid, 1, proof]],
                 actors=[newcomer.public_key], now=NOW + 7200)
    assert set(room.offer(late, NOW + 7200)) == {(REJECTED, "invite_expired")}
    # A viewer's invite cannot make anyone an editor.
    vbody, vsig, vsecret, viid = _invite(room, "editor", room.ids[3], int((NOW + 3600) * 1000),
                                         b"\x08" * 32)
    vproof = make_proof(vbody, vsig, redemption_signature(vsecret, room.owner.room_id,
                                                          newcomer.public_key))
    weak = craft(room.h, room.ids[4], [[OP_ROLE, 0, ROLE_EDITOR, 0, viid, 1, vproof]],
                 actors=[newcomer.public_key], now=NOW + 10)
    assert set(room.offer(weak)) == {(REJECTED, "issuer_may_not_grant")}
    # The real thing, through the API.
    room.h.admit(newcomer.public_id, "editor", invite_id=iid, max_uses=1, proof=proof,
                 now=NOW + 10)
    data = room.h.commit(NOW + 10)
    assert data is not None
    assert set(room.offer(data, NOW + 11)) == {(APPLIED, None)}
    assert all(r.role_of(newcomer.public_id) == "editor" for r in room.all)
    # Readers see a keyless reader and share; the newcomer then reads.
    assert room.owner.keyless_readers() == [newcomer.public_key]
    room.owner.share(newcomer.public_id)
    room.owner.commit(NOW + 12)
    room.sync(NOW + 13)
    late_joiner = SceneReplica.from_genesis(room.owner.genesis, newcomer)
    late_joiner.apply_many(room.owner.changes_since([]), NOW + 14)
    assert late_joiner.readable and late_joiner.room_name == "canary-room"
    assert room.owner.keyless_readers() == []


def test_host_cannot_carry_private_ops() -> None:
    room = PRoom()
    sealed = craft(room.h, room.ids[4], [[OP_SEALED, b"\x01" * 32, b"\x00" * 12, b"\x00" * 32]],
                   now=NOW + 10)
    assert set(room.offer(sealed)) == {(REJECTED, "host_needs_proof")}


def _readers_wraps(room: PRoom, author: Identity, seq: int, secret: bytes,
                   members: list[bytes]) -> tuple[list[bytes], list[list[object]]]:
    actors = [m for m in members if m != author.public_key]
    wraps: list[list[object]] = []
    for m in members:
        ref = None if m == author.public_key else actors.index(m)
        wraps.append([ref, wrap(secret, m, rot_info(room.owner.room_id, author.public_key,
                                                    seq, m))])
    return actors, wraps


def _rotate_op(room: PRoom, secret: bytes, wraps: list[list[object]]) -> list[object]:
    rid = room.owner.room_id
    back_key = derived_key(secret, rid, "content")
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    return [OP_ROTATE, commitment(secret, rid), wraps, b"\x00" * 12,
            AESGCM(back_key).encrypt(b"\x00" * 12, b"", b"x")]


def test_rotation_omitting_a_reader_is_rejected_everywhere() -> None:
    room = PRoom()
    a = room.ids[1]
    readers = [room.ids[i].public_key for i in (0, 1, 2, 3)]
    seq = 1
    secret = os.urandom(32)
    actors, wraps = _readers_wraps(room, a, seq, secret, readers[:-1])  # the viewer omitted
    bad = craft(room.a, a, [_rotate_op(room, secret, wraps)], actors=actors, now=NOW + 10)
    assert set(room.offer(bad)) == {(REJECTED, "rotation_recipients")}
    # Wrapping to the host too is as wrong.
    actors, wraps = _readers_wraps(room, a, seq, secret, [*readers, room.ids[4].public_key])
    bad = craft(room.a, a, [_rotate_op(room, secret, wraps)], actors=actors, now=NOW + 10)
    assert set(room.offer(bad)) == {(REJECTED, "rotation_recipients")}
    actors, wraps = _readers_wraps(room, a, seq, secret, readers)
    good = craft(room.a, a, [_rotate_op(room, secret, wraps)], actors=actors, now=NOW + 10)
    assert set(room.offer(good)) == {(APPLIED, None)}


def _sealed_op(room: PRoom, replica: SceneReplica, author: Identity, epoch: bytes, seq: int,
               hlc: int, plaintext: bytes) -> list[object]:
    ep = replica._epochs
    assert ep is not None
    key = derived_key(ep.secrets[epoch], room.owner.room_id, "content")
    nonce = b"\x05" * 12
    return [OP_SEALED, epoch, nonce,
            seal(key, nonce, plaintext, seal_aad(room.owner.room_id, author.public_key, seq,
                                                 hlc, epoch))]


def test_sealing_under_a_stale_epoch_is_rejected_everywhere() -> None:
    room = PRoom()
    old = room.owner.epoch_ids()[0]
    room.owner.revoke(room.ids[2].public_id)  # B removed; the owner rotates
    room.owner.commit(NOW + 3)
    room.sync(NOW + 4)
    b_ = room.ids[1]
    from tests.crdt.harness import heads_hlc

    hlc = heads_hlc(room.a) + 1
    payload = pack([[], ["c"], [[1, 1, None]]])
    op = _sealed_op(room, room.a, b_, old, 1, hlc, payload)
    stale = craft(room.a, b_, [op], hlc=hlc, now=NOW + 10)
    assert set(room.offer(stale)) == {(REJECTED, "stale_epoch")}
    # The honest path: the editor's commit picks the new epoch.
    room.a.create_entity(ROOT, {"c": {"v": 1}})
    data = room.a.commit(NOW + 11)
    assert data is not None
    assert decode_change(data).ops[-1][1] != old
    assert set(room.offer(data, NOW + 12)) == {(APPLIED, None)}


def test_garbage_ciphertext_is_voided_without_cascade() -> None:
    room = PRoom()
    a = room.ids[1]
    epoch = room.a.epoch_ids()[0]
    junk = craft(room.a, a, [[OP_SEALED, epoch, b"\x01" * 12, b"\xee" * 80]], now=NOW + 10)
    assert set(room.offer(junk)) == {(APPLIED, None)}  # public rules: fine
    jid = change_id(junk)
    for r in (room.owner, room.b, room.v):
        assert r.voided(jid) == "undecryptable"
        assert r.privacy_counters()["voided"] == {"undecryptable": 1}
    assert room.h.voided(jid) is None  # a blind host cannot tell
    # The next change by the same editor, built on it, applies normally everywhere.
    room.a.create_entity(ROOT, {"after": {"v": "ok"}})
    room.a.apply(junk, NOW + 10)
    data = room.a.commit(NOW + 11)
    assert data is not None and jid in decode_change(data).deps
    assert set(room.offer(data, NOW + 12)) == {(APPLIED, None)}
    assert "ok" in str(room.owner.state())


def test_bad_content_rules_void_with_reasons() -> None:
    room = PRoom()
    b_ = room.ids[2]
    epoch = room.b.epoch_ids()[0]
    from tests.crdt.harness import heads_hlc

    hlc = heads_hlc(room.b) + 1
    # An editor sets a field on an entity that does not exist.
    payload = pack([[], ["c", "f"], [[2, 9, 0, 1, 1.0]]])
    data = craft(room.b, b_, [_sealed_op(room, room.b, b_, epoch, 1, hlc, payload)], hlc=hlc,
                 now=NOW + 10)
    assert set(room.offer(data)) == {(APPLIED, None)}
    assert room.owner.voided(change_id(data)) == "unknown_entity"
    # A payload that is not [actors, names, ops].
    hlc += 1 << 16
    data2 = craft(room.b, b_, [_sealed_op(room, room.b, b_, epoch, 2, hlc, pack([1, 2]))],
                  hlc=hlc, seq=2, deps=[change_id(data)], now=NOW + 11)
    assert set(room.offer(data2)) == {(APPLIED, None)}
    assert room.owner.voided(change_id(data2)) == "schema"
    # Clear scene ops have no place in a private room.
    clear = craft(room.b, b_, [[1, 1, None]], seq=3, deps=[change_id(data2)],
                  hlc=hlc + (1 << 16), now=NOW + 12)
    assert set(room.offer(clear)) == {(REJECTED, "unsealed_content")}


def test_waiting_for_key_blocks_edits_and_late_key_releases_content() -> None:
    room = PRoom()
    newcomer = ident("priv", 5)
    fresh = SceneReplica.from_genesis(room.owner.genesis, newcomer)
    room.owner.grant(newcomer.public_id, "editor")
    grant = room.owner.commit(NOW + 3)
    assert grant is not None
    room.owner.create_entity(ROOT, {"k": {"v": "hello"}})
    content = room.owner.commit(NOW + 4)
    assert content is not None
    history = [d for d in room.owner.changes_since([]) if d not in (grant, content)]
    fresh.apply_many(history, NOW + 5)
    assert not fresh.readable
    with pytest.raises(PermissionDenied):
        fresh.create_entity(ROOT)  # not a member yet here
    fresh.apply(content, NOW + 5)  # buffered: its dep (the grant with the SHARE) is missing
    fresh.apply(grant, NOW + 5)
    assert fresh.readable and fresh.state() == room.owner.state()


def test_private_snapshot_sealed_and_genesis_flag_checked() -> None:
    room = PRoom()
    snap = room.owner.snapshot()  # sealed (tests/crdt/test_sealed_snapshots.py)
    assert room.owner.snapshot_sealed and room.owner.room_name.encode() not in snap
    g = decode_change(room.owner.genesis)
    assert g.ops[0][1] == "" and g.ops[0][3] == 1
    with pytest.raises(ValueError):
        SceneReplica.create(room.ids[0], NOW, nonce=b"q").set_room_name("x")


def test_padding_buckets() -> None:
    assert bucket(0) == 64 and bucket(63) == 64 and bucket(64) == 128
    assert bucket(4095) == 4096 and bucket(4096) == 5120
    for n in (0, 1, 63, 64, 4000, 5000):
        data = bytes(range(256)) * 20
        assert unpad(pad(data[:n])) == data[:n]
    assert unpad(b"\x00" * 64) is None and unpad(b"abc\x80" + bytes(60)) == b"abc"


@settings(deadline=None, max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=400))
def test_fuzz_private_decoders(data: bytes) -> None:
    """Random bytes as a change, a proof, a padded payload: typed errors or None, no crash."""
    from meshnode.crdt.redemption import check_proof, parse_terms

    with contextlib.suppress(DecodeError):
        decode_change(data)
    assert check_proof(data, b"r" * 32, b"i" * 32, ROLE_HOST, 0, b"g" * 32)[0] is None
    assert parse_terms(data) is None or len(data) > 0
    unpad(data)


@settings(deadline=None, max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(st.none(), st.integers(-3, 300), st.binary(max_size=90),
                          st.lists(st.one_of(st.none(), st.integers(0, 3),
                                             st.binary(max_size=90)), max_size=3)),
                max_size=6),
       st.integers(7, 10))
def test_fuzz_private_op_shapes(args: list[object], code: int) -> None:
    """Private ops of random shapes inside a signed change: decode or a typed error."""
    from protocol.change import check_ops
    from protocol.limits import DEFAULT_LIMITS

    with contextlib.suppress(DecodeError):
        check_ops([[code, *args]], 2, 2, DEFAULT_LIMITS)


@settings(deadline=None, max_examples=40, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(min_size=0, max_size=300))
def test_fuzz_sealed_payload_plaintext(plain: bytes) -> None:
    """Any decryptable plaintext (what a malicious editor can seal) is voided or applied,
    never a crash, and the verdict is the same on two readers."""
    room = _shared_room()
    a = room.ids[1]
    epoch = room.a.epoch_ids()[0]
    from tests.crdt.harness import heads_hlc

    hlc = heads_hlc(room.a) + 1
    op = _sealed_op(room, room.a, a, epoch, 1, hlc, plain)
    data = craft(room.a, a, [op], hlc=hlc, now=NOW + 10)
    r1 = SceneReplica.from_genesis(room.owner.genesis, room.ids[2])
    r2 = SceneReplica.from_genesis(room.owner.genesis, room.ids[3])
    history = room.owner.changes_since([])
    for r in (r1, r2):
        r.apply_many(history, NOW + 10)
        assert r.apply(data, NOW + 10).status == APPLIED
    assert r1.voided(change_id(data)) == r2.voided(change_id(data))
    assert r1.state() == r2.state()


_ROOM: list[PRoom] = []


def _shared_room() -> PRoom:
    if not _ROOM:
        _ROOM.append(PRoom("fuzz"))
    return _ROOM[0]


def test_concurrent_rotation_leaves_a_newcomer_waiting_until_a_share() -> None:
    room = PRoom()
    newcomer = ident("priv", 5)
    j = SceneReplica.from_genesis(room.owner.genesis, newcomer)
    room.owner.grant(newcomer.public_id, "editor")  # shares the first epoch with it
    room.owner.commit(NOW + 3)
    room.a.rotate()  # concurrently: A does not know the newcomer yet
    room.a.create_entity(ROOT, {"k": {"v": "concurrent"}})
    room.a.commit(NOW + 3)
    room.sync(NOW + 4)
    j.apply_many(room.owner.changes_since([]), NOW + 4)
    assert j.privacy_counters()["waiting_for_key"] == 1 and not j.readable
    with pytest.raises(WaitingForKey):
        j.create_entity(ROOT)
    assert room.b.keyless_readers() == [newcomer.public_key]
    room.b.share(newcomer.public_id)
    share = room.b.commit(NOW + 5)
    assert share is not None
    j.apply(share, NOW + 6)
    assert j.readable and j.state() == room.owner.state()
