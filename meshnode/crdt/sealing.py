"""Sealing a change's scene ops under an epoch key: key schedule, padding, AEAD, AAD.

Key schedule (HKDF-SHA256, empty salt, 32-byte outputs; ``room`` is the room ID):

* ``commitment = HKDF(secret, "meshnode/commit/v1" || room)``: public, in the ``ROTATE`` op;
  a recipient accepts a secret only if it matches, so every key holder decrypts a sealed
  payload with the same key and gets the same plaintext (AES-GCM alone is not committing).
* ``content_key = HKDF(secret, "meshnode/content/v1" || room)``: seals scene ops and the
  rotation's back-links.
* ``presence_key`` / ``snapshot_key``: the same with ``presence`` / ``snapshot`` (for the node).

A sealed payload is ``AES-256-GCM(content_key, nonce, pad(msgpack([actors, names, ops])),
aad)`` with ``aad = "meshnode/seal/v1\\0" || room || author || seq (u64 BE) || hlc (u64 BE)
|| epoch_id`` (``epoch_id`` empty when the change seals under the epoch it creates itself).
Moving a ciphertext to another change, author, room or epoch makes it fail to open.

Padding (ISO/IEC 7816-4): append ``0x80`` then zeros up to the bucket: a multiple of 64 bytes
up to 4 KiB, then of 1 KiB. Only the bucket leaks, not the exact size.
"""

import struct
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from protocol.private_ops import AEAD_NONCE_BYTES, SECRET_BYTES

SEAL_DOMAIN = b"meshnode/seal/v1\x00"
BACK_DOMAIN = b"meshnode/back/v1\x00"
WRAP_DOMAIN = b"meshnode/wrap/v1\x00"
SHARE_DOMAIN = b"meshnode/share/v1\x00"
SMALL_BUCKET = 64
LARGE_BUCKET = 1024
SMALL_LIMIT = 4096


def _hkdf(secret: bytes, info: bytes) -> bytes:
    return HKDF(hashes.SHA256(), 32, None, info).derive(secret)


def commitment(secret: bytes, room_id: bytes) -> bytes:
    """The public commitment to an epoch secret."""
    return _hkdf(secret, b"meshnode/commit/v1" + room_id)


def derived_key(secret: bytes, room_id: bytes, purpose: str) -> bytes:
    """An epoch's key for ``purpose``: ``content``, ``presence`` or ``snapshot``."""
    return _hkdf(secret, b"meshnode/" + purpose.encode() + b"/v1" + room_id)


def bucket(n: int) -> int:
    """The padded length of an ``n``-byte plaintext (at least one byte of padding)."""
    step = SMALL_BUCKET if n < SMALL_LIMIT else LARGE_BUCKET
    return (n // step + 1) * step


def pad(data: bytes) -> bytes:
    """ISO/IEC 7816-4 padding up to :func:`bucket`."""
    return data + b"\x80" + bytes(bucket(len(data)) - len(data) - 1)


def unpad(data: bytes) -> bytes | None:
    """Remove the padding; None if it is malformed."""
    end = len(data.rstrip(b"\x00"))
    if end == 0 or data[end - 1] != 0x80 or len(data) != bucket(end - 1):
        return None
    return data[: end - 1]


def seal_aad(room_id: bytes, author: bytes, seq: int, hlc: int, epoch_ref: bytes) -> bytes:
    """The associated data of a sealed payload (see the module docstring)."""
    return SEAL_DOMAIN + room_id + author + struct.pack(">QQ", seq, hlc) + epoch_ref


def seal(key: bytes, nonce: bytes, plaintext: bytes, aad: bytes) -> bytes:
    """AES-256-GCM of the padded plaintext."""
    return AESGCM(key).encrypt(nonce, pad(plaintext), aad)


def open_sealed(key: bytes, nonce: bytes, ct: bytes, aad: bytes) -> tuple[bytes | None, str]:
    """Decrypt and unpad: ``(plaintext, "")`` or ``(None, reason)`` with reason
    ``undecryptable`` or ``bad_padding``."""
    try:
        padded = AESGCM(key).decrypt(nonce, ct, aad)
    except (InvalidTag, ValueError):
        return None, "undecryptable"
    out = unpad(padded)
    if out is None:
        return None, "bad_padding"
    return out, ""


def wrap_info(room_id: bytes, author: bytes, seq: int, recipient: bytes) -> bytes:
    """HPKE ``info`` of a ROTATE wrap: binds room, rotating change and recipient."""
    return WRAP_DOMAIN + room_id + author + struct.pack(">Q", seq) + recipient


def share_info(room_id: bytes, author: bytes, seq: int, recipient: bytes) -> bytes:
    """HPKE ``info`` of a SHARE wrap."""
    return SHARE_DOMAIN + room_id + author + struct.pack(">Q", seq) + recipient


def back_aad(room_id: bytes, author: bytes, seq: int) -> bytes:
    """Associated data of a rotation's back-links."""
    return BACK_DOMAIN + room_id + author + struct.pack(">Q", seq)


def pack_secrets(pairs: list[tuple[bytes, bytes]]) -> bytes:
    """Back-links plaintext: ``epoch_id || secret`` per earlier epoch (64 bytes each)."""
    return b"".join(e + s for e, s in pairs)


def unpack_secrets(data: bytes) -> list[tuple[bytes, bytes]] | None:
    """Inverse of :func:`pack_secrets`; None if the length is wrong."""
    if len(data) % 64:
        return None
    return [(data[i : i + 32], data[i + 32 : i + 64]) for i in range(0, len(data), 64)]


def split_secrets(data: bytes, n: int) -> list[bytes] | None:
    """A SHARE wrap's plaintext: ``n`` secrets of 32 bytes; None if the length is wrong."""
    if len(data) != SECRET_BYTES * n:
        return None
    return [data[i : i + SECRET_BYTES] for i in range(0, len(data), SECRET_BYTES)]


def new_nonce(random_bytes: Any) -> bytes:
    """A random 12-byte AEAD nonce from the replica's randomness source."""
    nonce: bytes = random_bytes(AEAD_NONCE_BYTES)
    return nonce


__all__ = [
    "back_aad",
    "bucket",
    "commitment",
    "derived_key",
    "open_sealed",
    "pack_secrets",
    "pad",
    "seal",
    "seal_aad",
    "share_info",
    "split_secrets",
    "unpack_secrets",
    "unpad",
    "wrap_info",
]
