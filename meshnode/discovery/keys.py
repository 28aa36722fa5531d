"""Where a room is found in the DHT: rendezvous keys derived from the room ID, never the ID.

- ``rendezvous(room_id)`` = SHA-256 of a domain tag and the room ID. A DHT node that stores
  provider records or cards sees only this: it cannot tell which room (room IDs are hashes
  of signed geneses, not guessable), and the tag keeps it from colliding with any other use of
  the room ID's hash.
- ``rendezvous_cid(room_id)``: the key hosts *provide*: the CIDv1 (codec raw, sha2-256) of
  the rendezvous bytes, so js/go libp2p tools can read it (``bafkrei...``).
- ``card_key(rendezvous, public_key)``: where one host publishes its signed room card,
  ``/meshroom/<CIDv1 of a hash of the rendezvous and the host's key>``. One key per (room,
  host): a host can only ever write its own card (the validator recomputes the key from the
  card and checks the host's signature), never overwrite another host's.

Pure functions; no libp2p import (the CID encoding is three varints and base32).
"""

import base64
import hashlib

__all__ = ["CARD_NAMESPACE", "card_key", "cid_digest", "cid_v1_raw", "rendezvous",
           "rendezvous_cid"]

RENDEZVOUS_TAG = b"meshnode/room-rendezvous/v1\x00"
CARD_KEY_TAG = b"meshnode/room-card-key/v1\x00"
CARD_NAMESPACE = "meshroom"

# CIDv1 = <version 1><codec raw 0x55><multihash: sha2-256 0x12, length 0x20, digest>
_CID_PREFIX = bytes((0x01, 0x55, 0x12, 0x20))


def rendezvous(room_id: bytes) -> bytes:
    """The room's 32-byte rendezvous value (see the module docstring)."""
    if len(room_id) != 32:
        raise ValueError(f"a room ID is 32 bytes, got {len(room_id)}")
    return hashlib.sha256(RENDEZVOUS_TAG + room_id).digest()


def cid_v1_raw(data: bytes) -> str:
    """The CIDv1 (raw, sha2-256) of ``data``, base32 multibase (``b...``)."""
    digest = hashlib.sha256(data).digest()
    return "b" + base64.b32encode(_CID_PREFIX + digest).decode("ascii").lower().rstrip("=")


def cid_digest(cid: str) -> bytes | None:
    """The sha2-256 digest inside a CIDv1 raw string made by ``cid_v1_raw`` (None if it is
    not one)."""
    if not cid.startswith("b") or len(cid) != 59:
        return None
    try:
        body = cid[1:].upper()
        raw = base64.b32decode(body + "=" * (-len(body) % 8))
    except ValueError:
        return None
    if len(raw) != 36 or raw[:4] != _CID_PREFIX:
        return None
    return raw[4:]


def rendezvous_cid(room_id: bytes) -> str:
    """The CID hosts of ``room_id`` provide in the DHT."""
    return cid_v1_raw(rendezvous(room_id))


def card_key(rendezvous_value: bytes, public_key: bytes) -> str:
    """The DHT value key of the room card of the host with ``public_key``."""
    if len(rendezvous_value) != 32 or len(public_key) != 32:
        raise ValueError("rendezvous and public key are 32 bytes each")
    return f"/{CARD_NAMESPACE}/{cid_v1_raw(CARD_KEY_TAG + rendezvous_value + public_key)}"
