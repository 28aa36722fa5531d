"""Invite tokens: round trip, ``verify`` reasons, and decoding that only ever raises
``DecodeError`` subclasses."""

import time
from typing import Any

import base58
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meshnode.crdt import SceneReplica
from meshnode.identity import Identity
from meshnode.rooms.invite import (
    GRANTABLE,
    INVITE_DOMAIN,
    MAX_URLS,
    PREFIX,
    Invite,
    decode_invite_bytes,
    make_invite,
    parse_invite,
)
from protocol.errors import DecodeError, FrameTooLarge, MalformedMsgpack, SchemaError
from protocol.link import MAX_INVITE_BYTES
from protocol.msgpack_io import pack

OWNER = Identity.generate()
OTHER = Identity.generate()
NOW_MS = 1_700_000_000_000
ROOM = SceneReplica.create(OWNER, NOW_MS / 1000, name="design review", nonce=b"invite-1")
OTHER_ROOM = SceneReplica.create(OWNER, NOW_MS / 1000, name="lab", nonce=b"invite-2")
URLS = ["http://127.0.0.1:8470", "https://mesh.example.org"]
EXPIRES = NOW_MS + 3_600_000


def _invite(role: str = "editor", *, expires_ms: int = EXPIRES, urls: list[str] | None = None,
            signer: Identity = OWNER, room: SceneReplica = ROOM,
            genesis: bytes | None = None, max_uses: int = 0) -> Invite:
    return make_invite(room.room_id, room.genesis if genesis is None else genesis, role,
                       OWNER.public_key, signer.sign, expires_ms,
                       URLS if urls is None else urls, max_uses)


VALID = _invite()
VALID_TOKEN = VALID.token()


def _fields(inv: Invite) -> list[Any]:
    return [inv.room_id, inv.genesis, inv.role, inv.issuer, inv.expires_ms, list(inv.urls),
            inv.nonce, inv.max_uses]


def _raw(fields: list[Any], signature: bytes = b"\x00" * 64) -> bytes:
    return pack([pack(fields), signature])


def _with(index: int, value: Any) -> bytes:
    fields = _fields(VALID)
    fields[index] = value
    return _raw(fields, VALID.signature)


# ------------------------------------------------------------------ round trip


@pytest.mark.parametrize("role", GRANTABLE)
def test_round_trip_through_token_text(role: str) -> None:
    inv = _invite(role)
    token = inv.token()
    assert token.startswith(PREFIX) and token.isascii()
    assert base58.b58decode(token[len(PREFIX):]) == inv.raw()
    back = parse_invite(token)
    assert back == inv
    assert back.room_id == ROOM.room_id and back.genesis == ROOM.genesis
    assert back.role == role and back.issuer == OWNER.public_key
    assert back.expires_ms == EXPIRES and back.urls == tuple(URLS)
    assert len(back.nonce) == 8 and len(back.signature) == 64
    assert back.verify(NOW_MS) is None
    assert decode_invite_bytes(inv.raw()) == inv


def test_token_fits_in_a_hello() -> None:
    assert len(VALID.raw()) <= MAX_INVITE_BYTES


def test_surrounding_whitespace_is_ignored() -> None:
    assert parse_invite(f"  \n{VALID_TOKEN}\t\n") == VALID


def test_no_urls() -> None:
    inv = _invite(urls=[])
    assert parse_invite(inv.token()).urls == ()
    assert parse_invite(inv.token()).verify(NOW_MS) is None


def test_urls_are_capped() -> None:
    urls = [f"http://10.0.0.{i}:8470" for i in range(MAX_URLS + 5)]
    inv = _invite(urls=urls)
    assert inv.urls == tuple(urls[:MAX_URLS])
    back = parse_invite(inv.token())
    assert back.urls == tuple(urls[:MAX_URLS]) and back.verify(NOW_MS) is None


def test_each_invite_has_its_own_nonce() -> None:
    a, b = _invite(), _invite()
    assert a.nonce != b.nonce and a.token() != b.token()


def test_signature_covers_the_domain_and_the_body() -> None:
    from meshnode.identity import verify_signature

    assert verify_signature(OWNER.public_key, VALID.signature, INVITE_DOMAIN + VALID.body)
    assert not verify_signature(OWNER.public_key, VALID.signature, VALID.body)


def test_room_built_from_the_invite_genesis() -> None:
    replica = SceneReplica.from_genesis(parse_invite(VALID_TOKEN).genesis, OTHER)
    assert replica.room_id == ROOM.room_id
    assert replica.room_name == "design review"


# ------------------------------------------------------------------ ID and use limit


def test_max_uses_round_trips_and_is_signed() -> None:
    inv = _invite(max_uses=3)
    back = parse_invite(inv.token())
    assert back.max_uses == 3 and back == inv and back.verify(NOW_MS) is None
    assert parse_invite(PREFIX + base58.b58encode(_with(7, 30)).decode()).verify(
        NOW_MS) == "bad_signature"  # raising the limit breaks the signature


def test_the_id_is_the_hash_of_the_signed_body() -> None:
    import hashlib

    assert VALID.id == hashlib.sha256(VALID.body).digest()
    assert parse_invite(VALID_TOKEN).id == VALID.id
    assert _invite().id != VALID.id  # a fresh nonce, a fresh ID


def test_a_token_from_before_use_limits_still_parses() -> None:
    old = _fields(VALID)[:7]
    body = pack(old)
    token = PREFIX + base58.b58encode(pack([body, OWNER.sign(INVITE_DOMAIN + body)])).decode()
    inv = parse_invite(token)
    assert inv.max_uses == 0 and inv.verify(NOW_MS) is None and inv.role == VALID.role


@pytest.mark.parametrize("max_uses", [-1, 2**32, 1.5])
def test_make_refuses_bad_max_uses(max_uses: Any) -> None:
    with pytest.raises(ValueError, match="max_uses"):
        _invite(max_uses=max_uses)


# ------------------------------------------------------------------ make_invite refuses


@pytest.mark.parametrize("role", ["owner", "", "Editor", "root"])
def test_make_refuses_ungrantable_role(role: str) -> None:
    with pytest.raises(ValueError, match="role"):
        _invite(role)


@pytest.mark.parametrize(("kwargs", "what"), [
    ({"urls": ["http://x/" + "a" * 300]}, "url"),
    ({"expires_ms": -1}, "expir"),
])
def test_make_refuses_what_parse_would_refuse(kwargs: dict[str, Any], what: str) -> None:
    with pytest.raises(ValueError, match=what):
        _invite(**kwargs)


def test_make_refuses_bad_room_id_and_issuer() -> None:
    with pytest.raises(ValueError):
        make_invite(b"short", ROOM.genesis, "editor", OWNER.public_key, OWNER.sign, EXPIRES, [])
    with pytest.raises(ValueError):
        make_invite(ROOM.room_id, ROOM.genesis, "editor", b"k" * 31, OWNER.sign, EXPIRES, [])


# ------------------------------------------------------------------ verify


def test_verify_valid_until_expiry_inclusive() -> None:
    assert VALID.verify(0) is None
    assert VALID.verify(EXPIRES) is None
    assert VALID.verify(EXPIRES + 1) == "expired"
    assert _invite(expires_ms=0).verify(1) == "expired"


def test_verify_in_real_time() -> None:
    inv = _invite(expires_ms=int((time.time() + 60) * 1000))
    assert parse_invite(inv.token()).verify(int(time.time() * 1000)) is None


@pytest.mark.parametrize(("index", "value"), [
    (2, "admin"),                       # a viewer invite promoted to admin
    (4, EXPIRES + 10**9),               # expiry pushed back
    (5, ["http://evil.example"]),       # urls redirected
    (6, b"\x01" * 8),                   # nonce replaced
    (3, OTHER.public_key),              # claims another issuer
    (0, OTHER_ROOM.room_id),            # another room ...
], ids=["role", "expiry", "urls", "nonce", "issuer", "room"])
def test_tampered_body_is_bad_signature(index: int, value: Any) -> None:
    inv = parse_invite(PREFIX + base58.b58encode(_with(index, value)).decode())
    assert inv.verify(NOW_MS) == "bad_signature"


def test_tampered_room_and_genesis_together_is_bad_signature() -> None:
    fields = _fields(VALID)
    fields[0], fields[1] = OTHER_ROOM.room_id, OTHER_ROOM.genesis
    inv = decode_invite_bytes(_raw(fields, VALID.signature))
    assert inv.verify(NOW_MS) == "bad_signature"


def test_flipped_signature_bit_is_bad_signature() -> None:
    sig = bytearray(VALID.signature)
    sig[10] ^= 0x01
    inv = decode_invite_bytes(pack([VALID.body, bytes(sig)]))
    assert inv.verify(NOW_MS) == "bad_signature"


def test_signed_by_someone_else_is_bad_signature() -> None:
    assert _invite(signer=OTHER).verify(NOW_MS) == "bad_signature"


def test_bad_signature_wins_over_expired() -> None:
    assert _invite(signer=OTHER, expires_ms=0).verify(NOW_MS) == "bad_signature"


def test_mismatched_genesis_is_wrong_room() -> None:
    inv = _invite(genesis=OTHER_ROOM.genesis)
    assert inv.verify(NOW_MS) == "wrong_room"
    assert parse_invite(inv.token()).verify(NOW_MS) == "wrong_room"


def test_garbage_genesis_is_wrong_room() -> None:
    assert _invite(genesis=b"not a change").verify(NOW_MS) == "wrong_room"
    assert _invite(genesis=b"").verify(NOW_MS) == "wrong_room"


def test_expired_is_reported_before_wrong_room() -> None:
    inv = _invite(genesis=OTHER_ROOM.genesis, expires_ms=NOW_MS - 1)
    assert inv.verify(NOW_MS) == "expired"


# ------------------------------------------------------------------ decoding rejects


@pytest.mark.parametrize("token", [
    "", "mninv", "mninv2" + VALID_TOKEN[6:], "MNINV1" + VALID_TOKEN[6:], VALID_TOKEN[6:],
    "x" + VALID_TOKEN,
])
def test_wrong_prefix(token: str) -> None:
    with pytest.raises(DecodeError, match="mninv1"):
        parse_invite(token)


@pytest.mark.parametrize("body", ["0", "O", "I", "l", "+", "/", "é", "\x00", "abc def"])
def test_not_base58(body: str) -> None:
    with pytest.raises(DecodeError, match="base58"):
        parse_invite(PREFIX + body)


def test_empty_body_is_malformed() -> None:
    with pytest.raises(MalformedMsgpack):
        parse_invite(PREFIX)


def test_truncated_token() -> None:
    with pytest.raises(DecodeError):
        parse_invite(VALID_TOKEN[:-5])


def test_largest_invite_still_parses() -> None:
    size = len(_invite(genesis=b"").raw())
    genesis = b"g" * 10
    while len(_invite(genesis=genesis).raw()) < MAX_INVITE_BYTES:
        genesis += b"g"
    inv = _invite(genesis=genesis)
    assert len(inv.raw()) == MAX_INVITE_BYTES > size
    assert parse_invite(inv.token()) == inv
    with pytest.raises(ValueError, match="cannot make this invite"):
        _invite(genesis=genesis + b"g")


def test_oversized_token_is_refused() -> None:
    with pytest.raises(FrameTooLarge):
        parse_invite(PREFIX + "2" * 100_000)
    with pytest.raises(FrameTooLarge):
        decode_invite_bytes(b"\x00" * 5_000)


@pytest.mark.parametrize("outer", [
    [], [b"x"], [b"x", b"y", b"z"], {"body": b"x"}, b"x", 5, None,
    [b"body", b"short-signature"], ["body", b"\x00" * 64], [b"body", "s" * 64],
    [b"body", b"\x00" * 65],
])
def test_outer_shape(outer: Any) -> None:
    with pytest.raises(SchemaError):
        decode_invite_bytes(pack(outer))


def test_body_not_msgpack() -> None:
    with pytest.raises(MalformedMsgpack):
        decode_invite_bytes(pack([b"\xc1", b"\x00" * 64]))
    with pytest.raises(MalformedMsgpack):
        decode_invite_bytes(pack([b"body", b"\x00" * 64]) + b"\x00")


@pytest.mark.parametrize("fields", [
    [], {"room": 1}, "body", [1, 2, 3, 4, 5, 6], [1, 2, 3, 4, 5, 6, 7, 8],
])
def test_body_shape(fields: Any) -> None:
    with pytest.raises(SchemaError):
        decode_invite_bytes(pack([pack(fields), b"\x00" * 64]))


@pytest.mark.parametrize(("index", "value"), [
    (0, b"\x00" * 31), (0, b"\x00" * 33), (0, "r" * 32), (0, None),
    (1, "genesis"), (1, None), (1, [b"g"]),
    (2, "owner"), (2, "Viewer"), (2, b"viewer"), (2, 1), (2, None), (2, ["viewer"]),
    (3, b"\x00" * 31), (3, b"\x00" * 33), (3, "k" * 32),
    (4, -1), (4, 1.5), (4, "1"), (4, True), (4, None),
    (5, "http://a"), (5, [b"http://a"]), (5, [1]), (5, ["u"] * (MAX_URLS + 1)),
    (5, ["u" * 257]), (5, None),
    (6, "nonce"), (6, None), (6, 8),
    (7, -1), (7, 2**32), (7, "1"), (7, None), (7, 1.0), (7, True),
])
def test_each_body_field_is_checked(index: int, value: Any) -> None:
    with pytest.raises(SchemaError):
        decode_invite_bytes(_with(index, value))


def test_field_limits_are_inclusive() -> None:
    inv = decode_invite_bytes(_with(5, ["u" * 256] * MAX_URLS))
    assert inv.urls == ("u" * 256,) * MAX_URLS
    assert decode_invite_bytes(_with(4, 0)).expires_ms == 0
    assert decode_invite_bytes(_with(6, b"")).nonce == b""


def test_decode_accepts_bytearray_and_memoryview() -> None:
    raw = VALID.raw()
    assert decode_invite_bytes(bytearray(raw)) == VALID  # type: ignore[arg-type]
    assert decode_invite_bytes(memoryview(raw)) == VALID  # type: ignore[arg-type]


@pytest.mark.parametrize("raw", [None, "text", 5, [b"x"]])
def test_decode_rejects_non_bytes(raw: Any) -> None:
    with pytest.raises(DecodeError):
        decode_invite_bytes(raw)


# ------------------------------------------------------------------ fuzz


def _only_decode_errors_bytes(raw: bytes) -> None:
    try:
        inv = decode_invite_bytes(raw)
    except DecodeError:
        return
    assert inv.verify(NOW_MS) in (None, "bad_signature", "expired", "wrong_room")


def _only_decode_errors_text(token: str) -> None:
    try:
        inv = parse_invite(token)
    except DecodeError:
        return
    assert inv.verify(NOW_MS) in (None, "bad_signature", "expired", "wrong_room")


FUZZ = settings(max_examples=300, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(st.binary(max_size=600))
def test_fuzz_random_bytes(raw: bytes) -> None:
    _only_decode_errors_bytes(raw)


@FUZZ
@given(st.text(max_size=200))
def test_fuzz_random_text(token: str) -> None:
    _only_decode_errors_text(token)
    _only_decode_errors_text(PREFIX + token)


@FUZZ
@given(st.binary(max_size=600))
def test_fuzz_base58_of_random_bytes(raw: bytes) -> None:
    _only_decode_errors_text(PREFIX + base58.b58encode(raw).decode())


_ANY = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1),
              st.floats(allow_nan=False), st.text(max_size=40), st.binary(max_size=80)),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner,
                                                                 max_size=3),
    max_leaves=10,
)


@FUZZ
@given(st.integers(0, 7), _ANY)
def test_fuzz_mutated_body_field(index: int, value: Any) -> None:
    _only_decode_errors_bytes(_with(index, value))


@FUZZ
@given(st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1,
                max_size=6))
def test_fuzz_flipped_raw_bytes(edits: list[tuple[int, int]]) -> None:
    raw = bytearray(VALID.raw())
    for pos, value in edits:
        raw[pos % len(raw)] = value
    _only_decode_errors_bytes(bytes(raw))
    _only_decode_errors_text(PREFIX + base58.b58encode(bytes(raw)).decode())


@FUZZ
@given(st.data())
def test_fuzz_mutated_token_text(data: st.DataObject) -> None:
    token = list(VALID_TOKEN)
    for _ in range(data.draw(st.integers(1, 5))):
        op = data.draw(st.sampled_from(["replace", "insert", "delete", "truncate", "dup"]))
        pos = data.draw(st.integers(0, len(token) - 1))
        ch = data.draw(st.characters(codec="utf-8") | st.sampled_from(
            "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"))
        if op == "replace":
            token[pos] = ch
        elif op == "insert":
            token.insert(pos, ch)
        elif op == "delete" and len(token) > 1:
            del token[pos]
        elif op == "truncate":
            token = token[:pos]
        elif op == "dup":
            token = token[:pos] + token[pos:pos + 40] + token[pos:]
        if not token:
            token = ["1"]
    _only_decode_errors_text("".join(token))


@FUZZ
@given(st.integers(1, len(VALID.raw()) - 1))
def test_fuzz_truncated_raw(cut: int) -> None:
    with pytest.raises(DecodeError):
        decode_invite_bytes(VALID.raw()[:cut])
