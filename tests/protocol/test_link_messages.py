"""Link messages (``protocol.link``): round trips, every rejection, and fuzzing.

Whatever the bytes, ``decode_link`` returns a link message or raises a ``DecodeError``
subclass; each schema rule has a test that breaks exactly that rule.
"""

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meshnode.identity import Identity, verify_signature
from protocol.compact import COMPACT_VERSION
from protocol.errors import (
    DecodeError,
    FrameTooLarge,
    LimitExceeded,
    MalformedMsgpack,
    SchemaError,
    UnknownMessageType,
    UnknownVersion,
)
from protocol.frames import PROTOCOL_VERSION, Changes, encode_frame
from protocol.limits import Limits
from protocol.link import (
    MAX_ACK_IDS,
    MAX_FINGERPRINT_CHARS,
    MAX_INVITE_BYTES,
    MAX_INVITES,
    MAX_ROOMS_PER_LINK,
    MAX_SDP_CHARS,
    MAX_URL_CHARS,
    Ack,
    Bundle,
    Hello,
    LinkMessage,
    Nack,
    Ping,
    Refused,
    Rooms,
    Signal,
    decode_link,
    encode_link,
    hello_payload,
    make_hello,
    peek_type,
)
from protocol.msgpack_io import pack

ID = Identity.from_private_bytes(bytes(range(32)))
OTHER = Identity.from_private_bytes(bytes(range(1, 33)))
FP_A = "sha-256 " + ":".join(["AB"] * 32)
FP_B = "sha-256 " + ":".join(["CD"] * 32)
ROOM = bytes(range(32))
ROOM2 = bytes(32)
HASH = b"\x11" * 32
NONCE = b"\x22" * 16


def hello(**kw: Any) -> Hello:
    args: dict[str, Any] = {
        "public_key": ID.public_key, "kind": "node", "fingerprint": FP_A,
        "peer_fingerprint": FP_B, "rooms": [ROOM, ROOM2], "url": "https://node.example/sig",
        "time_ms": 1_700_000_000_000, "sign": ID.sign, "invites": [b"invite-token"],
    }
    args.update(kw)
    return make_hello(**args)


def signal(**kw: Any) -> Signal:
    args: dict[str, Any] = {
        "src": ID.public_id, "dst": OTHER.public_id, "ttl": 4, "nonce": NONCE,
        "kind": "offer", "sdp": "v=0\r\n",
    }
    args.update(kw)
    return Signal(**args)


VALID = [
    encode_link(hello()),
    encode_link(hello(rooms=[], invites=None, url="")),
    encode_link(signal()),
    encode_link(signal(kind="answer", ttl=0)),
    encode_link(Ack(ROOM, (HASH, b"\x12" * 32))),
    encode_link(Rooms((ROOM,))),
    encode_link(Rooms(())),
    encode_link(Ping()),
    encode_link(Bundle((b"\x93\x01\x04", b"\x93\x01\x08"))),
    encode_link(Refused(ROOM, "not_member", "ask the room's owner for an invite")),
    encode_link(Nack(ROOM, (HASH, b"\x12" * 32), "disk_full")),
]


def hello_with_body(fields: list[Any], sig: bytes | None = None) -> bytes:
    """A hello whose body is exactly ``fields`` (signed by ID unless ``sig`` is given)."""
    body = pack(fields)
    return pack([PROTOCOL_VERSION, Hello.TYPE, body, sig or ID.sign(hello_payload(body))])


def body_fields(**kw: Any) -> list[Any]:
    h = hello()
    f: dict[str, Any] = {
        "key": h.public_key, "kind": h.kind, "fp": h.fingerprint, "peer_fp": h.peer_fingerprint,
        "rooms": list(h.rooms), "url": h.url, "time_ms": h.time_ms,
        "invites": list(h.invites), "versions": list(h.versions),
    }
    f.update(kw)
    return list(f.values())


# ---------------------------------------------------------------- round trips


def test_hello_round_trips_and_is_signed() -> None:
    h = hello()
    back = decode_link(encode_link(h))
    assert back == h
    assert isinstance(back, Hello)
    assert back.rooms == (ROOM, ROOM2) and back.invites == (b"invite-token",)
    assert back.versions == (PROTOCOL_VERSION, COMPACT_VERSION)  # frames v1, compact changes
    assert verify_signature(ID.public_key, back.signature, hello_payload(back.body))
    assert not verify_signature(OTHER.public_key, back.signature, hello_payload(back.body))


@pytest.mark.parametrize("msg", [
    signal(), signal(kind="error", sdp=""), signal(kind="answer", ttl=16),
    Ack(ROOM, ()), Ack(ROOM, tuple(bytes([i]) * 32 for i in range(10))),
    Rooms(()), Rooms(tuple(bytes([i]) * 32 for i in range(MAX_ROOMS_PER_LINK))), Ping(),
    Refused(ROOM, "invite_expired", ""), Refused(ROOM, "x" * 64, "d" * 256),
])
def test_other_messages_round_trip(msg: Signal | Ack | Rooms | Ping | Refused) -> None:
    assert decode_link(encode_link(msg)) == msg


def test_hello_at_its_limits_round_trips() -> None:
    h = hello(
        rooms=[bytes([i]) * 32 for i in range(MAX_ROOMS_PER_LINK)], url="u" * MAX_URL_CHARS,
        invites=[b"i" * MAX_INVITE_BYTES] * MAX_INVITES,
        fingerprint="f" * MAX_FINGERPRINT_CHARS, kind="client",
    )
    assert decode_link(encode_link(h)) == h


def test_peek_type_tells_frames_from_link_messages() -> None:
    frame = encode_frame(Changes(ROOM, (b"change",)))
    assert peek_type(frame) == Changes.TYPE
    assert peek_type(encode_link(hello())) == Hello.TYPE
    assert peek_type(encode_link(signal())) == Signal.TYPE
    assert peek_type(encode_link(Ack(ROOM, ()))) == Ack.TYPE
    assert peek_type(encode_link(Rooms(()))) == Rooms.TYPE
    assert peek_type(encode_link(Ping())) == Ping.TYPE
    for junk in (b"", b"\x93", b"\x93\x01", b"\xc0\x01\x40", b"\x93\xcc\x01\x40",
                 b"\x91\x01\x40", b"\x93\x01\xcc"):
        assert peek_type(junk) is None


# ---------------------------------------------------------------- rejections

REJECTED: list[tuple[str, bytes, type[DecodeError]]] = [
    ("not msgpack", b"\xc1", MalformedMsgpack),
    ("trailing bytes", encode_link(Rooms(())) + b"\x00", MalformedMsgpack),
    ("empty", b"", MalformedMsgpack),
    ("not an array", pack({"v": 1}), SchemaError),
    ("too short", pack([1]), SchemaError),
    ("version not int", pack(["1", Rooms.TYPE, []]), SchemaError),
    ("unknown version", pack([2, Rooms.TYPE, []]), UnknownVersion),
    ("unknown type", pack([1, 99, []]), UnknownMessageType),
    ("frame type", encode_frame(Changes(ROOM, ())), UnknownMessageType),
    ("type not int", pack([1, "rooms", []]), SchemaError),
    ("type a float", pack([1, float(Rooms.TYPE), []]), SchemaError),
    # hello
    ("hello arity", pack([1, Hello.TYPE, b"x"]), SchemaError),
    ("hello signature size", hello_with_body(body_fields(), sig=b"s" * 63), SchemaError),
    ("hello body not bytes", pack([1, Hello.TYPE, "body", b"s" * 64]), SchemaError),
    ("hello body not msgpack", pack([1, Hello.TYPE, b"\xc1", b"s" * 64]), MalformedMsgpack),
    ("hello body arity", hello_with_body(body_fields()[:8]), SchemaError),
    ("hello key size", hello_with_body(body_fields(key=b"k" * 31)), SchemaError),
    ("hello kind", hello_with_body(body_fields(kind="relay")), SchemaError),
    ("hello kind type", hello_with_body(body_fields(kind=1)), SchemaError),
    ("hello kind unhashable", hello_with_body(body_fields(kind=[])), SchemaError),
    ("hello fingerprint type", hello_with_body(body_fields(fp=b"fp")), SchemaError),
    ("hello fingerprint size",
     hello_with_body(body_fields(fp="f" * (MAX_FINGERPRINT_CHARS + 1))), LimitExceeded),
    ("hello peer fingerprint size",
     hello_with_body(body_fields(peer_fp="f" * (MAX_FINGERPRINT_CHARS + 1))), LimitExceeded),
    ("hello room size", hello_with_body(body_fields(rooms=[b"r" * 31])), SchemaError),
    ("hello duplicate room", hello_with_body(body_fields(rooms=[ROOM, ROOM])), SchemaError),
    ("hello too many rooms", hello_with_body(body_fields(
        rooms=[bytes([i]) * 32 for i in range(MAX_ROOMS_PER_LINK + 1)])), LimitExceeded),
    ("hello rooms not array", hello_with_body(body_fields(rooms=ROOM)), SchemaError),
    ("hello url size", hello_with_body(body_fields(url="u" * (MAX_URL_CHARS + 1))),
     LimitExceeded),
    ("hello negative time", hello_with_body(body_fields(time_ms=-1)), SchemaError),
    ("hello time not int", hello_with_body(body_fields(time_ms=1.5)), SchemaError),
    ("hello too many invites", hello_with_body(body_fields(invites=[b"i"] * (MAX_INVITES + 1))),
     SchemaError),
    ("hello invite size", hello_with_body(body_fields(invites=[b"i" * (MAX_INVITE_BYTES + 1)])),
     SchemaError),
    ("hello no versions", hello_with_body(body_fields(versions=[])), SchemaError),
    ("hello too many versions", hello_with_body(body_fields(versions=list(range(17)))),
     SchemaError),
    ("hello version not int", hello_with_body(body_fields(versions=["1"])), SchemaError),
    # signal
    ("signal arity", pack([1, Signal.TYPE, "a", "b"]), SchemaError),
    ("signal ttl", encode_link(signal(ttl=17)), SchemaError),
    ("signal negative ttl", encode_link(signal(ttl=-1)), SchemaError),
    ("signal nonce size", encode_link(signal(nonce=b"n" * 15)), SchemaError),
    ("signal kind", encode_link(signal(kind="hello")), SchemaError),
    ("signal src", encode_link(signal(src="not a peer id!")), SchemaError),
    ("signal dst", encode_link(signal(dst="")), SchemaError),
    ("signal sdp size", encode_link(signal(sdp="s" * (MAX_SDP_CHARS + 1))), LimitExceeded),
    ("signal sdp type", encode_link(signal(sdp=b"v=0")), SchemaError),
    # ack
    ("ack arity", pack([1, Ack.TYPE, ROOM]), SchemaError),
    ("ack room size", encode_link(Ack(ROOM[:31], ())), SchemaError),
    ("ack id size", encode_link(Ack(ROOM, (b"h" * 31,))), SchemaError),
    ("ack duplicate id", encode_link(Ack(ROOM, (HASH, HASH))), SchemaError),
    ("ack too many ids",
     encode_link(Ack(ROOM, tuple(i.to_bytes(32, "big") for i in range(MAX_ACK_IDS + 1)))),
     LimitExceeded),
    # rooms
    ("rooms arity", pack([1, Rooms.TYPE, [], []]), SchemaError),
    ("rooms not array", pack([1, Rooms.TYPE, ROOM]), SchemaError),
    ("rooms too many",
     encode_link(Rooms(tuple(bytes([i]) * 32 for i in range(MAX_ROOMS_PER_LINK + 1)))),
     LimitExceeded),
    # refused
    ("refused arity", pack([1, Refused.TYPE, ROOM, "not_member"]), SchemaError),
    ("refused room size", encode_link(Refused(ROOM[:31], "not_member", "")), SchemaError),
    ("refused empty reason", encode_link(Refused(ROOM, "", "")), SchemaError),
    ("refused reason not a label", encode_link(Refused(ROOM, "Not Member!", "")), SchemaError),
    ("refused reason too long", encode_link(Refused(ROOM, "x" * 65, "")), LimitExceeded),
    ("refused detail too long", encode_link(Refused(ROOM, "a", "d" * 257)), LimitExceeded),
    ("refused detail type", pack([1, Refused.TYPE, ROOM, "a", b"d"]), SchemaError),
]


@pytest.mark.parametrize(("data", "error"), [(d, e) for _, d, e in REJECTED],
                         ids=[name for name, _, _ in REJECTED])
def test_each_rule_rejects(data: bytes, error: type[DecodeError]) -> None:
    with pytest.raises(error) as info:
        decode_link(data)
    assert info.value.reason == error.reason


def test_oversized_message_is_refused_before_parsing() -> None:
    small = Limits(max_frame_bytes=64)
    data = encode_link(hello())
    assert len(data) > 64
    with pytest.raises(FrameTooLarge):
        decode_link(data, small)


def test_a_hello_signed_by_another_key_decodes_but_does_not_verify() -> None:
    # decode_link checks the shape; the signature is the receiver's job (check_hello).
    data = hello_with_body(body_fields(), sig=OTHER.sign(b"something else"))
    h = decode_link(data)
    assert isinstance(h, Hello)
    assert not verify_signature(h.public_key, h.signature, hello_payload(h.body))


# ---------------------------------------------------------------- fuzz


def _decode_or_decode_error(data: bytes) -> None:
    try:
        msg = decode_link(data)
    except DecodeError as exc:
        assert exc.reason
        return
    assert isinstance(msg, LinkMessage)
    # whatever decodes re-encodes to a message that decodes to the same thing
    assert decode_link(encode_link(msg)) == msg


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=600))
def test_fuzz_random_bytes(data: bytes) -> None:
    _decode_or_decode_error(data)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(VALID)))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "set", "cut", "insert", "delete"]))
        pos = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "flip" and data:
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and data:
            data[pos] = draw(st.integers(0, 255))
        elif op == "cut":
            del data[pos:]
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif data:
            del data[pos]
    return bytes(data)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_fuzz_mutated_valid_messages(data: bytes) -> None:
    _decode_or_decode_error(data)


_scalars = (
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats()
    | st.text(max_size=40) | st.binary(max_size=40)
    | st.sampled_from([ROOM, HASH, NONCE, ID.public_key, b"s" * 64, "node", "client", "offer",
                       FP_A, ID.public_id, "not_member"])
)
_values = st.recursive(
    _scalars, lambda inner: st.lists(inner, max_size=5) | st.dictionaries(
        st.text(max_size=8), inner, max_size=4), max_leaves=20,
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from([1, 2]), st.integers(62, 72), st.lists(_values, max_size=7))
def test_fuzz_structured_link_messages(version: int, mtype: int, fields: list[Any]) -> None:
    _decode_or_decode_error(pack([version, mtype, *fields]))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_values, min_size=9, max_size=9), st.binary(min_size=64, max_size=64))
def test_fuzz_hello_bodies(fields: list[Any], sig: bytes) -> None:
    _decode_or_decode_error(hello_with_body(fields, sig))


def test_ping_takes_no_fields() -> None:
    assert encode_link(Ping()) == pack([PROTOCOL_VERSION, Ping.TYPE])
    with pytest.raises(SchemaError):
        decode_link(pack([PROTOCOL_VERSION, Ping.TYPE, 1]))


def test_bundle_round_trips_and_refuses_what_it_must_not_carry() -> None:
    frames = (b"\x93\x01\x04abc", b"\x93\x01\x08" + b"x" * 100)
    assert decode_link(encode_link(Bundle(frames))) == Bundle(frames)
    assert peek_type(encode_link(Bundle(frames))) == Bundle.TYPE
    for bad in ([], [encode_link(Ping())], ["text"], [b"\x93\x01\x04"] * 1_025):
        with pytest.raises(DecodeError):
            decode_link(pack([PROTOCOL_VERSION, Bundle.TYPE, bad]))
