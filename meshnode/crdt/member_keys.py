"""Members' X25519 keys, derived from their Ed25519 identities, and HPKE wraps to them.

Derivation (the same as libsodium's ``crypto_sign_ed25519_{pk,sk}_to_curve25519``):

* public: the Ed25519 public key is the compressed Edwards point ``y`` (sign bit in the top
  bit); its Montgomery ``u = (1 + y) / (1 - y) mod 2^255 - 19``, 32 bytes little-endian.
* private: the first 32 bytes of ``SHA-512(seed)`` (the Ed25519 scalar before clamping;
  X25519 clamps it again on use).

So anyone holding a PeerID can wrap a secret to it at once, with no key announcement. One key
pair used for both Ed25519 and an X25519 KEM is analysed by Thormarker (eprint 2021/509).
The cost: the encryption key cannot rotate apart from the identity (identity compromise is
total anyway: it can sign).

Wraps are HPKE base mode (RFC 9180), suite DHKEM(X25519, HKDF-SHA256), HKDF-SHA256,
AES-128-GCM, single shot, as ``cryptography`` implements it: ``enc (32) || ct``. The
ephemeral key comes from the OS inside ``cryptography`` (it cannot be injected), the one
randomness of the CRDT core it does not pass in itself.
"""

import hashlib
from collections import OrderedDict

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric.x25519 import (
    X25519PrivateKey,
    X25519PublicKey,
)

from meshnode.identity import Identity

_P = 2**255 - 19
_SUITE = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_128_GCM)
_CACHE_SIZE = 4096
_public_cache: OrderedDict[bytes, X25519PublicKey | None] = OrderedDict()


def x25519_public_bytes(ed25519_public: bytes) -> bytes | None:
    """The X25519 public key (32 bytes) of an Ed25519 public key; None if it is not a valid
    encoding (``y >= p``, or ``y = 1``, which maps to no point)."""
    if len(ed25519_public) != 32:
        return None
    y = int.from_bytes(ed25519_public, "little") & ((1 << 255) - 1)
    if y >= _P or y == 1:
        return None
    u = (1 + y) * pow(1 - y, _P - 2, _P) % _P
    return u.to_bytes(32, "little")


def x25519_public(ed25519_public: bytes) -> X25519PublicKey | None:
    """The X25519 public key object of an Ed25519 public key (cached: the field inversion
    costs about 100 us in Python, and one rotation wraps to every reader)."""
    key = _public_cache.get(ed25519_public)
    if key is not None or ed25519_public in _public_cache:
        return key
    raw = x25519_public_bytes(ed25519_public)
    key = None if raw is None else X25519PublicKey.from_public_bytes(raw)
    _public_cache[ed25519_public] = key
    if len(_public_cache) > _CACHE_SIZE:
        _public_cache.popitem(last=False)
    return key


def x25519_private_bytes(seed: bytes) -> bytes:
    """The X25519 private key of an Ed25519 seed: ``SHA-512(seed)[:32]`` (clamped on use)."""
    return hashlib.sha512(seed).digest()[:32]


def x25519_private(identity: Identity) -> X25519PrivateKey:
    """The X25519 private key of a local identity."""
    return X25519PrivateKey.from_private_bytes(x25519_private_bytes(identity.private_bytes()))


def wrap(plaintext: bytes, recipient: bytes, info: bytes) -> bytes:
    """HPKE-encrypt ``plaintext`` to the member whose Ed25519 key is ``recipient``.
    Raises ``ValueError`` if that key has no X25519 counterpart."""
    key = x25519_public(recipient)
    if key is None:
        raise ValueError("this member key has no X25519 counterpart")
    return _SUITE.encrypt(plaintext, key, info=info)


def unwrap(data: bytes, private: X25519PrivateKey, info: bytes) -> bytes | None:
    """Open an HPKE wrap with the local private key; None if it does not open."""
    try:
        return _SUITE.decrypt(data, private, info=info)
    except (InvalidTag, ValueError):
        return None


__all__ = [
    "unwrap",
    "wrap",
    "x25519_private",
    "x25519_private_bytes",
    "x25519_public",
    "x25519_public_bytes",
]
