"""``check_hello``: the verified PeerID, or one typed reason for each way a hello is wrong."""

from dataclasses import replace
from typing import Any

import pytest

from meshnode.identity import Identity
from meshnode.transport.hello import REASONS, HelloRejected, check_hello, local_fingerprint_of
from protocol.frames import PROTOCOL_VERSION
from protocol.link import Hello, decode_link, encode_link, hello_payload, make_hello
from protocol.msgpack_io import pack

PEER = Identity.from_private_bytes(b"\x01" * 32)
OTHER = Identity.from_private_bytes(b"\x02" * 32)
PEER_FP = "sha-256 " + ":".join(["AA"] * 32)  # the peer's certificate (in the remote SDP)
OUR_FP = "sha-256 " + ":".join(["BB"] * 32)  # ours (in our local SDP)
REMOTE_FPS = sorted([PEER_FP, "sha-384 " + ":".join(["CC"] * 48)])
NOW = 1_750_000_000_000


def make(identity: Identity = PEER, **kw: Any) -> Hello:
    args: dict[str, Any] = {
        "public_key": identity.public_key, "kind": "node", "fingerprint": PEER_FP,
        "peer_fingerprint": OUR_FP, "rooms": [b"r" * 32], "url": "", "time_ms": NOW,
        "sign": identity.sign,
    }
    args.update(kw)
    return make_hello(**args)


def check(hello: Hello, **kw: Any) -> str:
    args: dict[str, Any] = {
        "local_fingerprint": OUR_FP, "remote_fingerprints": REMOTE_FPS,
        "expected_peer": PEER.public_id, "now_ms": NOW,
    }
    args.update(kw)
    return check_hello(hello, **args)


def rejected(hello: Hello, **kw: Any) -> str:
    with pytest.raises(HelloRejected) as info:
        check(hello, **kw)
    assert info.value.reason in REASONS
    assert info.value.reason in str(info.value)
    return info.value.reason


def test_a_good_hello_gives_the_signer_s_peer_id() -> None:
    hello = decode_link(encode_link(make()))
    assert isinstance(hello, Hello)
    assert check(hello) == PEER.public_id
    assert check(hello, expected_peer=None) == PEER.public_id  # anyone may answer


def test_bad_signature() -> None:
    hello = make()
    assert rejected(replace(hello, signature=bytes(64))) == "bad_signature"
    # a valid signature, by someone else than the key the hello names
    assert rejected(replace(hello, signature=OTHER.sign(hello_payload(hello.body)))) == (
        "bad_signature")
    # the fields are only what the signed body says: changing the body breaks the signature
    forged = make(OTHER, fingerprint=PEER_FP)
    assert rejected(replace(hello, body=forged.body)) == "bad_signature"


def test_no_common_version() -> None:
    body = pack([PEER.public_key, "node", PEER_FP, OUR_FP, [], "", NOW, [],
                 [PROTOCOL_VERSION + 1, PROTOCOL_VERSION + 2]])
    data = pack([PROTOCOL_VERSION, Hello.TYPE, body, PEER.sign(hello_payload(body))])
    hello = decode_link(data)
    assert isinstance(hello, Hello)
    assert rejected(hello) == "no_common_version"


def test_fingerprint_mismatch_the_certificate_is_not_the_signer_s() -> None:
    # A relay terminating DTLS shows its own certificate in the SDP; the honest peer's hello
    # names the peer's real certificate.
    relay_fps = ["sha-256 " + ":".join(["EE"] * 32)]
    assert rejected(make(), remote_fingerprints=relay_fps) == "fingerprint_mismatch"
    assert rejected(make(), remote_fingerprints=[]) == "fingerprint_mismatch"


def test_not_for_us_a_hello_made_for_another_connection() -> None:
    # Replayed (or relayed) from a link where the signer saw another certificate than ours.
    elsewhere = "sha-256 " + ":".join(["DD"] * 32)
    assert rejected(make(peer_fingerprint=elsewhere)) == "not_for_us"


def test_wrong_peer() -> None:
    # A correctly signed hello, from someone else than the peer we dialled.
    assert rejected(make(OTHER)) == "wrong_peer"
    assert check(make(OTHER), expected_peer=None) == OTHER.public_id


def test_stale_either_way() -> None:
    skew = 300_000
    assert check(make(time_ms=NOW - skew)) == PEER.public_id
    assert check(make(time_ms=NOW + skew)) == PEER.public_id
    assert rejected(make(time_ms=NOW - skew - 1)) == "stale"
    assert rejected(make(time_ms=NOW + skew + 1)) == "stale"
    assert rejected(make(time_ms=NOW - 1_001), max_skew_ms=1_000) == "stale"


def test_every_reason_is_covered() -> None:
    reasons = {
        rejected(replace(make(), signature=bytes(64))),
        rejected(make(), remote_fingerprints=[]),
        rejected(make(peer_fingerprint=PEER_FP)),
        rejected(make(OTHER)),
        rejected(make(time_ms=0)),
    }
    body = pack([PEER.public_key, "node", PEER_FP, OUR_FP, [], "", NOW, [], [99]])
    hello = decode_link(pack([PROTOCOL_VERSION, Hello.TYPE, body,
                              PEER.sign(hello_payload(body))]))
    assert isinstance(hello, Hello)
    reasons.add(rejected(hello))
    assert reasons == REASONS


SDP = (
    "v=0\r\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n"
    "a=fingerprint:sha-512 " + ":".join(["0a"] * 64) + "\r\n"
    "a=fingerprint:sha-256 " + ":".join(["ab"] * 32) + "\r\n"
    "a=setup:actpass\r\n"
)


def test_local_fingerprint_of() -> None:
    assert local_fingerprint_of(SDP) == "sha-256 " + ":".join(["AB"] * 32)
    # the same certificate in two sections is one fingerprint
    assert local_fingerprint_of(SDP + SDP) == "sha-256 " + ":".join(["AB"] * 32)
    with pytest.raises(ValueError, match="0 distinct"):
        local_fingerprint_of("v=0\r\na=fingerprint:sha-1 AB:CD\r\n")
    other = SDP.replace(":".join(["ab"] * 32), ":".join(["cd"] * 32))
    with pytest.raises(ValueError, match="2 distinct"):
        local_fingerprint_of(SDP + other)
