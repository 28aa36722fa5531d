"""Sealed presence in private rooms: readers seal their fields, relays forward them blind.

A private room's presence update carries one field, ``{"sealed": base64(epoch || nonce ||
ct)}`` (standard base64 text: presence values carry no bytes):

* ``epoch``: the 32-byte ID of the epoch whose ``presence`` key sealed it (the sender's
  ``current_epoch()``);
* ``nonce``: 12 random bytes;
* ``ct = AES-256-GCM(presence_key, nonce, pad(msgpack(fields)), aad)`` with
  ``aad = "meshnode/presence-seal/v1\\0" || room || participant || seq (u64 BE) || epoch``,
  padded like sealed payloads (64-byte buckets), so a copied ciphertext fails under another
  participant, room or seq.

The update is still signed by the participant (``protocol.frames.Presence``), so a relay
checks signature, membership, seq, rate and TTL as for any presence; it cannot read the
fields, so its interest order (distance, speaking) falls back to arrival order. A receiver
that holds the epoch's key opens the fields; one that does not (a blind host, a reader
waiting for its key) sees no fields at all. A participant that holds no usable key (a blind
host, a reader before its ``SHARE``) publishes nothing in a private room: presence in clear
would leak exactly what sealing hides.
"""

import base64
import struct
from collections.abc import Callable
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from meshnode.crdt import SceneReplica
from meshnode.crdt.sealing import pad, unpad
from protocol.errors import DecodeError
from protocol.limits import Limits
from protocol.msgpack_io import pack, unpack

__all__ = ["SEALED_FIELD", "open_presence", "presence_aad", "seal_presence"]

SEALED_FIELD = "sealed"
PRESENCE_SEAL_DOMAIN = b"meshnode/presence-seal/v1\x00"
NONCE_BYTES = 12
EPOCH_BYTES = 32


def presence_aad(room_id: bytes, participant: bytes, seq: int, epoch: bytes) -> bytes:
    """The associated data of a sealed presence update."""
    return PRESENCE_SEAL_DOMAIN + room_id + participant + struct.pack(">Q", seq) + epoch


def seal_presence(replica: SceneReplica, participant: bytes, seq: int, fields: dict[str, Any],
                  random_bytes: Callable[[int], bytes]) -> dict[str, Any] | None:
    """The sealed fields of an update (None: this replica holds no usable presence key, so
    it must not publish presence in this private room)."""
    epoch = replica.current_epoch()
    key = None if epoch is None else replica.epoch_key(epoch, "presence")
    if epoch is None or key is None:
        return None
    nonce = random_bytes(NONCE_BYTES)
    ct = AESGCM(key).encrypt(nonce, pad(pack(fields)),
                             presence_aad(replica.room_id, participant, seq, epoch))
    return {SEALED_FIELD: base64.b64encode(epoch + nonce + ct).decode("ascii")}


def open_presence(replica: SceneReplica, participant: bytes, seq: int, fields: dict[str, Any],
                  limits: Limits) -> dict[str, Any] | None:
    """The fields of a sealed update, or None if this replica cannot open it (no key for its
    epoch, or not a well-formed sealed update: either way it shows nothing)."""
    text = fields.get(SEALED_FIELD)
    if len(fields) != 1 or type(text) is not str:
        return None
    try:
        sealed = base64.b64decode(text, validate=True)
    except ValueError:
        return None
    head = EPOCH_BYTES + NONCE_BYTES
    if len(sealed) < head + 16:
        return None
    epoch, nonce, ct = sealed[:EPOCH_BYTES], sealed[EPOCH_BYTES:head], sealed[head:]
    key = replica.epoch_key(epoch, "presence")
    if key is None:
        return None
    try:
        plain = AESGCM(key).decrypt(nonce, ct, presence_aad(replica.room_id, participant,
                                                             seq, epoch))
    except (InvalidTag, ValueError):
        return None
    body = unpad(plain)
    if body is None:
        return None
    try:
        value = unpack(body, limits, len(body), "sealed presence")
    except DecodeError:
        return None
    return value if type(value) is dict and all(type(k) is str for k in value) else None
