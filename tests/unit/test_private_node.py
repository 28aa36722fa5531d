"""The node side of private rooms, in memory: invite forms with redemption (token carries
the secret, the hello carries only the redemption), sealed presence, and the key upkeep
decider (jittered auto-SHARE, scheduled rotation)."""

import contextlib
import os
import random
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshnode.crdt import SceneReplica
from meshnode.crdt.redemption import check_proof
from meshnode.crdt.roles import ROLE_BY_NAME
from meshnode.identity import Identity
from meshnode.overlay.sealed_presence import SEALED_FIELD, open_presence, seal_presence
from meshnode.rooms.invite import (
    decode_invite_bytes,
    make_invite,
    parse_invite,
)
from meshnode.rooms.key_upkeep import KeyUpkeep
from protocol.errors import DecodeError
from protocol.msgpack_io import pack

NOW = time.time()


def private_room(*readers: Identity) -> tuple[Identity, SceneReplica]:
    owner = Identity.generate()
    r = SceneReplica.create(owner, NOW, nonce=b"n", name="secret name", private=True)
    for who in readers:
        r.grant(who.public_id, "editor")
    r.commit(NOW + 1)
    return owner, r


def copy_for(r: SceneReplica, who: Identity) -> SceneReplica:
    out = SceneReplica.from_genesis(r.genesis, who)
    out.apply_many(r.changes_since([]), NOW + 2)
    return out


# ---------------------------------------------------------------------- invites


def test_the_token_keeps_the_secret_and_the_hello_carries_only_a_redemption() -> None:
    owner, r = private_room()
    secret = os.urandom(32)
    inv = make_invite(r.room_id, r.genesis, "viewer", owner.public_key, owner.sign,
                      int(NOW * 1000) + 60_000, ["http://x"], 1, invite_secret=secret)
    token = parse_invite(inv.token())
    assert token.invite_secret == secret and token.invite_key is not None
    alice = Identity.generate()
    shown = decode_invite_bytes(token.presented(alice.public_key))
    assert shown.invite_secret is None and shown.redemption is not None
    assert secret not in token.presented(alice.public_key)
    proof = shown.proof()
    assert proof is not None
    role = ROLE_BY_NAME["viewer"]
    assert check_proof(proof, r.room_id, inv.id, role, 1, alice.public_key)[1] == ""
    # The redemption names Alice: a host cannot reuse it for a sockpuppet of its own.
    sock = Identity.generate()
    assert check_proof(proof, r.room_id, inv.id, role, 1, sock.public_key)[1] == \
        "bad_redemption"


def test_a_token_whose_secret_is_not_its_key_is_refused() -> None:
    owner, r = private_room()
    inv = make_invite(r.room_id, r.genesis, "host", owner.public_key, owner.sign,
                      int(NOW * 1000) + 60_000, [], invite_secret=os.urandom(32))
    with pytest.raises(DecodeError):
        decode_invite_bytes(pack([inv.body, inv.signature, os.urandom(32)]))
    with pytest.raises(DecodeError):
        decode_invite_bytes(pack([inv.body, inv.signature, os.urandom(40)]))
    plain = make_invite(r.room_id, r.genesis, "viewer", owner.public_key, owner.sign,
                        int(NOW * 1000) + 60_000, [])
    with pytest.raises(DecodeError):  # no key pair: nothing to redeem with
        decode_invite_bytes(pack([plain.body, plain.signature, os.urandom(64)]))
    assert plain.presented(owner.public_key) == plain.raw()


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300), st.binary(max_size=80))
def test_invite_bytes_with_any_third_element_never_crash(body: bytes, extra: bytes) -> None:
    with contextlib.suppress(DecodeError):
        decode_invite_bytes(pack([body, bytes(64), extra]))


# ---------------------------------------------------------------------- sealed presence


def test_presence_is_sealed_for_readers_and_opaque_to_others() -> None:
    bob = Identity.generate()
    owner, r = private_room(bob)
    fields = {"status": "presence canary", "position": [1.0, 2.0, 3.0]}
    sealed = seal_presence(r, owner.public_key, 7, fields, os.urandom)
    assert sealed is not None and list(sealed) == [SEALED_FIELD]
    assert "canary" not in repr(sealed)
    reader = copy_for(r, bob)
    assert open_presence(reader, owner.public_key, 7, sealed, reader.limits) == fields
    # Bound to the participant and the seq: a replay under another fails.
    assert open_presence(reader, bob.public_key, 7, sealed, reader.limits) is None
    assert open_presence(reader, owner.public_key, 8, sealed, reader.limits) is None
    blind = copy_for(r, Identity.generate())
    assert open_presence(blind, owner.public_key, 7, sealed, blind.limits) is None
    # Without a key there is nothing to publish (never presence in clear).
    assert seal_presence(blind, blind.identity.public_key, 1, fields, os.urandom) is None


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.text(max_size=8), st.one_of(st.text(max_size=200), st.integers()),
                       max_size=3))
def test_opening_garbage_presence_never_crashes(fields: dict[str, object]) -> None:
    _owner, r = private_room()
    assert open_presence(r, bytes(32), 1, fields, r.limits) is None


# ---------------------------------------------------------------------- key upkeep


def test_one_reader_shares_after_its_jitter_and_stops_once_someone_shares() -> None:
    alice, bob, host = Identity.generate(), Identity.generate(), Identity.generate()
    owner, r = private_room(alice)
    r.grant(host.public_id, "host")
    r.commit(NOW + 2)
    # A blind host admits Bob with his invite's redemption proof (no SHARE: it has no key).
    inv = make_invite(r.room_id, r.genesis, "viewer", owner.public_key, owner.sign,
                      int(NOW * 1000) + 600_000, [], invite_secret=os.urandom(32))
    shown = decode_invite_bytes(parse_invite(inv.token()).presented(bob.public_key))
    h = copy_for(r, host)
    proof = shown.proof()
    assert proof is not None
    h.admit(bob.public_id, "viewer", invite_id=inv.id, max_uses=0, proof=proof, now=NOW + 3)
    h.commit(NOW + 3)
    r.apply_many(h.changes_since([]), NOW + 3)
    a = copy_for(r, alice)
    assert a.keyless_readers() == [bob.public_key]
    upkeep = KeyUpkeep(share_jitter_s=2.0)
    rng = random.Random(1)
    first = upkeep.plan(a, alice.public_key, 100.0, rng, NOW + 5)
    assert first.empty and first.next_at is not None and 100.0 <= first.next_at <= 102.0
    due = upkeep.plan(a, alice.public_key, 102.0, rng, NOW + 5)
    assert due.shares == (bob.public_key,) and not due.rotate
    # Had the owner shared first, Alice would not.
    r.share(bob.public_id)
    r.commit(NOW + 6)
    late = KeyUpkeep()
    late.plan(a, alice.public_key, 100.0, rng, NOW + 5)
    a.apply_many(r.changes_since([]), NOW + 7)
    assert a.keyless_readers() == []
    assert late.plan(a, alice.public_key, 200.0, rng, NOW + 8).empty


def test_rotation_is_scheduled_by_the_newest_epochs_age_for_editors_only() -> None:
    viewer = Identity.generate()
    owner, r = private_room()
    r.grant(viewer.public_id, "viewer")
    r.commit(NOW + 1)
    upkeep = KeyUpkeep(share_jitter_s=0.0, rotate_every_s=3600)
    rng = random.Random(2)
    assert not upkeep.plan(r, owner.public_key, 0.0, rng, NOW + 10).rotate
    assert upkeep.plan(r, owner.public_key, 0.0, rng, NOW + 3700).rotate
    v = copy_for(r, viewer)
    assert not KeyUpkeep(rotate_every_s=1).plan(v, viewer.public_key, 0.0, rng,
                                                NOW + 9999).rotate
    r.rotate()
    r.commit(NOW + 3700)
    assert not upkeep.plan(r, owner.public_key, 1.0, rng, NOW + 3701).rotate
