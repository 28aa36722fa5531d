"""The sealed section of a private room's snapshot: key wraps, associated data, AEAD.

A private room's snapshot (``meshnode.crdt.snapshot``, version 4) keeps in clear only what
every replica needs to check later changes (the DAG summary, role book, epoch book, cut-offs,
invite uses). The scene (entities, tree, fields, the sealed room name, voided payloads) and
the epoch secrets the writer held are one msgpack plaintext, padded like a sealed change
(``meshnode.crdt.sealing.bucket``), sealed here:

* ``snapshot_key = HKDF(epoch secret, "meshnode/snapshot/v1" || room)`` of the epoch the
  writer would seal a change under now (``SceneReplica.current_epoch``);
* ``ciphertext = AES-256-GCM(snapshot_key, nonce, pad(plaintext), aad)`` with
  ``aad = "meshnode/snapshot-seal/v1\\0" || room || epoch_id || SHA-256(public)``, where
  ``public`` is the msgpack of the snapshot's sections 2..18 (signer through the public epoch
  book): moving the ciphertext to another room, epoch, frontier or set of heads makes it fail
  to open;
* one HPKE wrap of the epoch secret per reader of the room at the snapshot (the signer
  included), ``info = "meshnode/snapshot-wrap/v1\\0" || room || signer || epoch_id ||
  recipient``: a member whose key the snapshot was not wrapped to (a removed member, a blind
  host, a reader admitted later) cannot open it, and the removal rules (R4) ensure no removed
  member holds a later epoch's secret by any other way.

Pure functions; the randomness (nonce) comes from the caller (HPKE draws its own ephemeral
key from the OS, as for ``ROTATE``).
"""

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from meshnode.crdt.member_keys import unwrap, wrap
from meshnode.crdt.sealing import commitment, derived_key, pad, unpad
from protocol.private_ops import AEAD_NONCE_BYTES, SECRET_BYTES

SNAPSHOT_SEAL_DOMAIN = b"meshnode/snapshot-seal/v1\x00"
SNAPSHOT_WRAP_DOMAIN = b"meshnode/snapshot-wrap/v1\x00"


@dataclass(frozen=True, slots=True)
class SnapshotSeal:
    """What a reader needs to seal its snapshot: the epoch, its secret, the readers to wrap
    it to (public keys, the signer among them) and a randomness source for the nonce."""

    epoch_id: bytes
    secret: bytes
    readers: tuple[bytes, ...]
    random_bytes: Callable[[int], bytes]


@dataclass(frozen=True, slots=True)
class SealedSection:
    """A decoded, still sealed section: opaque to whoever holds no wrap."""

    epoch_id: bytes
    wraps: dict[bytes, bytes]
    nonce: bytes
    ciphertext: bytes
    aad: bytes


def seal_aad(room_id: bytes, epoch_id: bytes, public: bytes) -> bytes:
    """The associated data binding the sealed section to its snapshot's public part."""
    return SNAPSHOT_SEAL_DOMAIN + room_id + epoch_id + hashlib.sha256(public).digest()


def wrap_info(room_id: bytes, signer: bytes, epoch_id: bytes, recipient: bytes) -> bytes:
    """HPKE ``info`` of a snapshot wrap."""
    return SNAPSHOT_WRAP_DOMAIN + room_id + signer + epoch_id + recipient


def seal_section(seal: SnapshotSeal, room_id: bytes, signer: bytes, plaintext: bytes,
                 aad: bytes) -> tuple[list[list[bytes]], bytes, bytes]:
    """``(wraps as [recipient, wrap] rows, nonce, ciphertext)`` for ``plaintext``."""
    nonce = seal.random_bytes(AEAD_NONCE_BYTES)
    key = derived_key(seal.secret, room_id, "snapshot")
    ct = AESGCM(key).encrypt(nonce, pad(plaintext), aad)
    wraps = [[r, wrap(seal.secret, r, wrap_info(room_id, signer, seal.epoch_id, r))]
             for r in sorted(set(seal.readers))]
    return wraps, nonce, ct


def unwrap_secret(section: SealedSection, room_id: bytes, signer: bytes, me: bytes,
                  private: X25519PrivateKey, epoch_commitment: bytes | None) -> bytes | None:
    """The epoch secret from the wrap to ``me``, checked against the epoch's public
    commitment (None: no wrap to ``me``, it does not open, or it is not that epoch's)."""
    w = section.wraps.get(me)
    if w is None:
        return None
    secret = unwrap(w, private, wrap_info(room_id, signer, section.epoch_id, me))
    if secret is None or len(secret) != SECRET_BYTES:
        return None
    if epoch_commitment is None or commitment(secret, room_id) != epoch_commitment:
        return None
    return secret


def open_section(section: SealedSection, room_id: bytes, secret: bytes) -> bytes | None:
    """The plaintext of a sealed section; None if it does not open or is badly padded."""
    key = derived_key(secret, room_id, "snapshot")
    try:
        padded = AESGCM(key).decrypt(section.nonce, section.ciphertext, section.aad)
    except (InvalidTag, ValueError):
        return None
    return unpad(padded)


__all__ = ["SNAPSHOT_SEAL_DOMAIN", "SNAPSHOT_WRAP_DOMAIN", "SealedSection", "SnapshotSeal",
           "open_section", "seal_aad", "seal_section", "unwrap_secret", "wrap_info"]
