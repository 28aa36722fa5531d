"""Invite key pairs and redemption proofs: how a ``host`` admits a member without authority
of its own.

An invite (``meshnode.rooms.invite``) names, in its signed body, the public half ``K_inv`` of
a fresh Ed25519 key pair; the invitee keeps the secret half and never sends it. To redeem, the
invitee signs ``REDEEM_DOMAIN || room_id || grantee key`` with it. A host's grant (a 7-element
``ROLE`` op) carries ``proof = msgpack([invite body, issuer signature, redemption
signature])``, and every replica checks, against the grant's causal past:

1. the proof decodes, its body hashes to the op's invite ID, names this room, the op's role
   and use limit, and carries ``K_inv``; the issuer's signature verifies (``bad_invite_proof``);
2. the redemption signature by ``K_inv`` names exactly the grantee (``bad_redemption``);
3. the invite had not expired by the grant's clock stamp (``invite_expired``);
4. the issuer may grant that role to that member in the grant's causal past
   (``issuer_may_not_grant``).

So a host can admit only the holder of a real invite, and cannot reuse a token it has seen for
a sockpuppet of its own (it lacks ``k_inv``). Use limits and revocation of the invite ID apply
as to any invite grant (``meshnode.crdt.revocation``).
"""

import hashlib
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from meshnode.identity import verify_signature
from protocol.change import ROLE_ADMIN, ROLE_EDITOR, ROLE_HOST, ROLE_VIEWER
from protocol.errors import DecodeError
from protocol.limits import DEFAULT_LIMITS
from protocol.msgpack_io import pack, unpack
from protocol.private_ops import MAX_PROOF_BYTES

INVITE_DOMAIN = b"meshnode/invite/v1\x00"
REDEEM_DOMAIN = b"meshnode/redeem/v1\x00"
INVITE_ROLES = {"viewer": ROLE_VIEWER, "editor": ROLE_EDITOR, "admin": ROLE_ADMIN,
                "host": ROLE_HOST}


@dataclass(frozen=True, slots=True)
class InviteTerms:
    """What a grant needs from a signed invite body."""

    invite_id: bytes
    room_id: bytes
    role: int
    issuer: bytes
    expires_ms: int
    max_uses: int
    invite_key: bytes


def invite_keypair(seed: bytes) -> tuple[bytes, bytes]:
    """``(secret seed, public key)`` of an invite key pair from 32 random bytes (the caller
    passes ``os.urandom(32)``: the core has no randomness of its own)."""
    key = Ed25519PrivateKey.from_private_bytes(seed)
    return seed, key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def redemption_signature(invite_secret: bytes, room_id: bytes, grantee: bytes) -> bytes:
    """The invitee's signature that redeems the invite for ``grantee`` (its own key)."""
    return Ed25519PrivateKey.from_private_bytes(invite_secret).sign(
        REDEEM_DOMAIN + room_id + grantee)


def make_proof(invite_body: bytes, issuer_signature: bytes, redemption: bytes) -> bytes:
    """The ``proof`` element of a host's grant."""
    return pack([invite_body, issuer_signature, redemption])


def parse_terms(body: bytes) -> InviteTerms | None:
    """The terms of a signed invite body (9 fields, with ``K_inv``); None if malformed."""
    try:
        f = unpack(body, DEFAULT_LIMITS, MAX_PROOF_BYTES, "invite body")
    except DecodeError:
        return None
    if type(f) is not list or len(f) != 9:
        return None
    room_id, _genesis, role, issuer, expires, _urls, _nonce, max_uses, key = f
    if (
        type(room_id) is not bytes or len(room_id) != 32 or type(role) is not str
        or role not in INVITE_ROLES or type(issuer) is not bytes or len(issuer) != 32
        or type(expires) is not int or expires < 0 or type(max_uses) is not int
        or max_uses < 0 or type(key) is not bytes or len(key) != 32
    ):
        return None
    return InviteTerms(hashlib.sha256(body).digest(), room_id, INVITE_ROLES[role], issuer,
                       expires, max_uses, key)


def check_proof(
    proof: bytes, room_id: bytes, invite_id: bytes, role: int, max_uses: int, grantee: bytes,
) -> tuple[InviteTerms | None, str]:
    """Checks 1 and 2 of the module docstring (the causal ones are the replica's):
    ``(terms, "")`` or ``(None, reason)``."""
    try:
        outer = unpack(proof, DEFAULT_LIMITS, MAX_PROOF_BYTES, "invite proof")
    except DecodeError:
        return None, "bad_invite_proof"
    if (type(outer) is not list or len(outer) != 3
            or not all(type(x) is bytes for x in outer)):
        return None, "bad_invite_proof"
    body, issuer_sig, redeem_sig = outer
    terms = parse_terms(body)
    if (
        terms is None or terms.invite_id != invite_id or terms.room_id != room_id
        or terms.role != role or terms.max_uses != max_uses
        or not verify_signature(terms.issuer, issuer_sig, INVITE_DOMAIN + body)
    ):
        return None, "bad_invite_proof"
    if not verify_signature(terms.invite_key, redeem_sig, REDEEM_DOMAIN + room_id + grantee):
        return None, "bad_redemption"
    return terms, ""


__all__ = [
    "INVITE_DOMAIN",
    "INVITE_ROLES",
    "REDEEM_DOMAIN",
    "InviteTerms",
    "check_proof",
    "invite_keypair",
    "make_proof",
    "parse_terms",
    "redemption_signature",
]
