"""Room cards: round trip, every refusal reason, and a fuzzed decoder that only ever raises
``CardRejected``."""

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshnode.discovery.card import (
    MAX_CARD_BYTES,
    CardReason,
    CardRejected,
    CardValidator,
    RoomCard,
    check_card,
    decode_card,
    make_card,
)
from meshnode.discovery.keys import card_key, rendezvous
from meshnode.identity import Identity
from protocol.msgpack_io import pack

NOW = 1_800_000_000_000
HOST = Identity.from_private_bytes(bytes(range(32)))
OTHER = Identity.from_private_bytes(bytes(range(1, 33)))
ROOM = bytes(32)


def card(identity: Identity = HOST, now: int = NOW, ttl: int = 600_000,
         urls: tuple[str, ...] = ("http://127.0.0.1:8470",)) -> RoomCard:
    return make_card(rendezvous(ROOM), identity.public_key, identity.sign, urls,
                     ["/ip4/127.0.0.1/tcp/4001"], now, ttl)


def reason(data: bytes, key: str | None = None, now: int = NOW) -> str:
    with pytest.raises(CardRejected) as info:
        check_card(decode_card(data), key, now)
    return info.value.reason


def test_a_signed_card_round_trips_and_names_no_room() -> None:
    c = card()
    back = decode_card(c.encode())
    check_card(back, c.key, NOW)
    assert back == c and back.peer_id == HOST.public_id
    assert ROOM not in c.encode() and b"lobby" not in c.encode()
    assert c.key == card_key(rendezvous(ROOM), HOST.public_key)


def test_forged_unsigned_expired_future_and_misfiled_cards_are_refused() -> None:
    good = card()
    forged = RoomCard(*[getattr(good, f) for f in RoomCard.__slots__][:-1],
                      OTHER.sign(good.body()))
    assert reason(forged.encode()) == CardReason.FORGED
    moved = RoomCard(good.rendezvous, good.public_key, ("http://evil:1",), good.addrs,
                     good.issued_ms, good.expires_ms, good.signature)
    assert reason(moved.encode()) == CardReason.FORGED  # edited after signing
    unsigned = RoomCard(*[getattr(good, f) for f in RoomCard.__slots__][:-1], b"")
    assert reason(unsigned.encode()) == CardReason.UNSIGNED
    assert reason(good.encode(), now=good.expires_ms) == CardReason.EXPIRED
    assert reason(card(now=NOW + 3_600_000).encode()) == CardReason.FROM_FUTURE
    # A valid card of another host, stored under HOST's key: refused (no overwriting).
    assert reason(card(OTHER).encode(), key=good.key) == CardReason.WRONG_KEY
    with pytest.raises(CardRejected) as info:
        decode_card(b"\x00" * (MAX_CARD_BYTES + 1))
    assert info.value.reason == CardReason.OVERSIZED


def test_make_card_trims_to_fit() -> None:
    urls = [f"http://{'h' * 220}{i}.example:1" for i in range(6)]
    addrs = [f"/dns4/{'a' * 180}{i}/tcp/4001" for i in range(10)]
    c = make_card(rendezvous(ROOM), HOST.public_key, HOST.sign, urls, addrs, NOW, 600_000)
    assert len(c.encode()) <= MAX_CARD_BYTES and len(c.urls) == 4 and len(c.addrs) < 8
    assert c.urls == tuple(urls[:4])  # the first ones are kept
    check_card(decode_card(c.encode()), c.key, NOW)


def test_validator_selects_the_latest_valid_card_and_reports_rejections() -> None:
    seen: list[str] = []
    v = CardValidator(lambda: NOW + 10, lambda r, _d: seen.append(r))
    old, new = card(now=NOW - 1000), card(now=NOW)
    assert v.select(old.key, [old.encode(), b"junk", new.encode()]) == 2
    assert seen == [CardReason.MALFORMED]
    with pytest.raises(CardRejected):
        v.validate(old.key, card(OTHER).encode())
    with pytest.raises(CardRejected):
        v.select(old.key, [b"junk"])


GOOD = card().encode()


@settings(max_examples=300, deadline=None)
@given(st.one_of(
    st.binary(max_size=3000),
    st.builds(lambda i, b: GOOD[:i] + bytes([b]) + GOOD[i + 1:],
              st.integers(0, len(GOOD) - 1), st.integers(0, 255)),
    st.lists(st.one_of(st.integers(-2**63, 2**64 - 1), st.binary(max_size=40), st.text(max_size=20),
                       st.lists(st.text(max_size=300), max_size=20), st.none()),
             max_size=10).map(pack),
))
def test_decoder_only_ever_raises_card_rejected(data: bytes) -> None:
    try:
        c = decode_card(data)
        check_card(c, None, NOW)
    except CardRejected as err:
        assert err.reason in {r.value for r in CardReason}
        return
    assert c.peer_id == HOST.public_id  # only a genuine card gets through


def test_random_keys_are_not_meshroom_keys_of_this_card() -> None:
    assert card().key != card_key(os.urandom(32), HOST.public_key)
