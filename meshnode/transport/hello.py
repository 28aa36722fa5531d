"""Checking the signed hello that opens a link (sans-I/O: no clock, no socket).

A hello (``protocol.link.Hello``) binds the DTLS certificates of a WebRTC connection to the
sender's Ed25519 identity. The receiver accepts it only if all of these hold, checked in
this order (the first failure is the reason reported):

=====================  ===================================================================
reason                 the hello is refused because
=====================  ===================================================================
``bad_signature``      its signature is not by the key it names
``no_common_version``  none of its protocol versions is one we speak
``fingerprint_mismatch``  its ``fingerprint`` is not one the remote SDP declares (the
                       certificate we negotiated DTLS with is not the signer's)
``not_for_us``         its ``peer_fingerprint`` is not our own certificate's: it was made
                       for another connection (a relay or a replay)
``wrong_peer``         we dialled a given PeerID and the signer is someone else
``stale``              its clock is further from ours than the allowed skew
=====================  ===================================================================

aiortc completes DTLS only if the remote certificate matches *every* fingerprint of a
supported algorithm in the remote SDP, so a fingerprint listed there is the fingerprint of
the certificate actually in use.
"""

from meshnode.identity import peer_id_from_public_key, verify_signature
from meshnode.transport.ice import sdp_fingerprints
from protocol.frames import SUPPORTED_VERSIONS
from protocol.link import Hello, hello_payload

__all__ = [
    "HELLO_FINGERPRINT_ALGORITHM",
    "REASONS",
    "HelloRejected",
    "check_hello",
    "local_fingerprint_of",
]

HELLO_FINGERPRINT_ALGORITHM = "sha-256"
REASONS = frozenset({
    "bad_signature", "no_common_version", "fingerprint_mismatch", "not_for_us", "wrong_peer",
    "stale",
})


class HelloRejected(Exception):
    """A peer's hello was refused; ``reason`` is one of :data:`REASONS` (a stable label, for
    logs and metrics), the message says why in words."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason


def local_fingerprint_of(sdp: str) -> str:
    """The ``sha-256 AB:CD:…`` fingerprint an SDP declares (the one a hello names).

    Raises :class:`ValueError` if the SDP has none (no usable DTLS certificate) or several
    different ones (which no certificate can match).
    """
    prefix = HELLO_FINGERPRINT_ALGORITHM + " "
    found = {f for f in sdp_fingerprints(sdp) if f.startswith(prefix)}
    if len(found) != 1:
        raise ValueError(
            f"the SDP declares {len(found)} distinct {HELLO_FINGERPRINT_ALGORITHM} "
            f"fingerprints; a link needs exactly one"
        )
    return found.pop()


def check_hello(
    hello: Hello,
    *,
    local_fingerprint: str,
    remote_fingerprints: list[str],
    expected_peer: str | None,
    now_ms: int,
    max_skew_ms: int = 300_000,
) -> str:
    """Verify a peer's hello and return its PeerID, or raise :class:`HelloRejected`.

    ``local_fingerprint`` is our certificate's fingerprint (:func:`local_fingerprint_of` our
    local SDP), ``remote_fingerprints`` those of the remote SDP (``sdp_fingerprints``),
    ``expected_peer`` the PeerID we meant to reach (None: anyone), ``now_ms`` our wall clock.
    """
    if not verify_signature(hello.public_key, hello.signature, hello_payload(hello.body)):
        raise HelloRejected("bad_signature", "the hello's signature is not by the key it names")
    if not SUPPORTED_VERSIONS.intersection(hello.versions):
        raise HelloRejected(
            "no_common_version",
            f"the peer speaks versions {list(hello.versions)}, "
            f"we speak {sorted(SUPPORTED_VERSIONS)}",
        )
    if hello.fingerprint not in remote_fingerprints:
        raise HelloRejected(
            "fingerprint_mismatch",
            "the hello names a certificate that the remote SDP does not declare",
        )
    if hello.peer_fingerprint != local_fingerprint:
        raise HelloRejected(
            "not_for_us", "the hello was made for another connection (relayed or replayed)"
        )
    peer_id = peer_id_from_public_key(hello.public_key)
    if expected_peer is not None and peer_id != expected_peer:
        raise HelloRejected("wrong_peer", f"expected {expected_peer}, the hello is from {peer_id}")
    skew = hello.time_ms - now_ms
    if abs(skew) > max_skew_ms:
        raise HelloRejected(
            "stale",
            f"the peer's clock is {skew / 1000:+.1f} s from ours "
            f"(at most ±{max_skew_ms / 1000:.0f} s allowed)",
        )
    return peer_id
