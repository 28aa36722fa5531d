"""What the test vectors of ``docs/protocol.md`` are built from: the fixed seeds, nonce and
times; the Ed25519 keys, signatures and PeerIDs derived from the seeds (with ``cryptography``
directly, without importing ``meshnode``); signed changes with the JSON the document shows for
them, and the JSON view of frames. ``protocol.vectors`` builds the vectors from these.
"""

import dataclasses
from collections.abc import Callable
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from protocol.change import change_id, encode_change, signing_payload
from protocol.frames import Changes, Message
from protocol.msgpack_io import pack

SEED_A = bytes(range(32))
"""The room owner ("A")."""
SEED_B = bytes(range(32, 64))
"""A member that A makes an editor ("B")."""
SEED_C = bytes(range(64, 96))
"""A stranger who is not a member ("C")."""

ROOM_NAME = "Vector room"
NONCE = bytes(range(0xA0, 0xB0))  # 16 bytes
NOW_GENESIS = 1_700_000_000.0
NOW_CHANGE_1 = 1_700_000_001.0
NOW_CHANGE_2 = 1_700_000_002.0
NOW_APPLY = 1_700_000_010.0
"""The receiver's clock (seconds) when it applies the vectors."""

MAX_CLOCK_SKEW_S = 60.0
SNAPSHOT_PLACEHOLDER = b"\x00opaque snapshot bytes"
BLOOM_SALT = bytes.fromhex("5a17f00d")
UNKNOWN_HASH = b"\xaa" * 32

_B58_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_PEER_ID_PREFIX = bytes([0x00, 0x24, 0x08, 0x01, 0x12, 0x20])


# --------------------------------------------------------------------------- helpers


def hlc_at(now: float) -> int:
    """HLC value of wall-clock ``now`` (seconds): milliseconds << 16, logical part 0."""
    return max(0, int(now * 1000.0)) << 16


def public_key(seed: bytes) -> bytes:
    """The raw 32-byte Ed25519 public key of a 32-byte seed."""
    key = Ed25519PrivateKey.from_private_bytes(seed).public_key()
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def signer(seed: bytes) -> Callable[[bytes], bytes]:
    """A function that signs bytes with the Ed25519 key of ``seed``."""
    key = Ed25519PrivateKey.from_private_bytes(seed)
    return key.sign


def b58encode(data: bytes) -> str:
    """Bitcoin-alphabet base58 (base58btc), as used by libp2p PeerIDs."""
    n = int.from_bytes(data, "big")
    out = ""
    while n:
        n, r = divmod(n, 58)
        out = _B58_ALPHABET[r] + out
    pad = len(data) - len(data.lstrip(b"\x00"))
    return "1" * pad + out


def peer_id(pub: bytes) -> str:
    """libp2p PeerID of a raw Ed25519 public key (identity multihash of the protobuf key)."""
    return b58encode(_PEER_ID_PREFIX + pub)


def _signed(seed: bytes, room_id: bytes, body: list[Any]) -> bytes:
    """Sign an arbitrary (possibly invalid) body object: ``pack(body) || signature``."""
    raw = pack(body)
    return raw + signer(seed)(signing_payload(room_id, raw))


def to_json(obj: Any) -> Any:
    """Msgpack object -> JSON-able object; ``bytes`` become ``{"$bytes": "<hex>"}``."""
    if isinstance(obj, bytes):
        return {"$bytes": obj.hex()}
    if isinstance(obj, list | tuple):
        return [to_json(x) for x in obj]
    if isinstance(obj, dict):
        return {k: to_json(v) for k, v in obj.items()}
    return obj


def frame_json(msg: Message) -> dict[str, Any]:
    """The decoded view of a frame shown in the document (carried changes by their IDs)."""
    out: dict[str, Any] = {"version": 1, "type": msg.TYPE, "message": type(msg).__name__}
    for name in (f.name for f in dataclasses.fields(msg)):
        value = getattr(msg, name)
        if isinstance(msg, Changes) and name == "changes":
            out["change_ids"] = [change_id(c).hex() for c in value]
        elif isinstance(value, bytes):
            out[name] = value.hex()
        elif isinstance(value, tuple):
            out[name] = [to_json_plain(x) for x in value]
        else:
            out[name] = value
    return out


def to_json_plain(value: Any) -> Any:
    """Bytes as hex, tuples as lists (for frame fields such as a version vector)."""
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, tuple):
        return [to_json_plain(x) for x in value]
    return value


def _change_json(
    data: bytes, *, author: bytes, seq: int, deps: list[bytes], hlc: int,
    actors: list[bytes | int], names: list[str], ops: list[Any], room_id: bytes,
) -> dict[str, Any]:
    return {
        "author": author.hex(),
        "seq": seq,
        "deps": [d.hex() for d in sorted(deps)],
        "hlc": hlc,
        "hlc_millis": hlc >> 16,
        "hlc_logical": hlc & 0xFFFF,
        "actors": [a.hex() if isinstance(a, bytes) else a for a in actors],
        "names": names,
        "ops": to_json(ops),
        "signed_room_id": room_id.hex(),
        "body_len": len(data) - 64,
        "signature": data[-64:].hex(),
        "change_id": change_id(data).hex(),
    }


def _make_change(
    seed: bytes, *, seq: int, deps: list[bytes], hlc: int, actors: list[bytes | int],
    names: list[str], ops: list[Any], room_id: bytes,
) -> tuple[bytes, dict[str, Any]]:
    author = public_key(seed)
    data = encode_change(
        author=author, seq=seq, deps=deps, hlc=hlc, actors=actors, names=names, ops=ops,
        room_id=room_id, sign=signer(seed),
    )
    return data, _change_json(
        data, author=author, seq=seq, deps=deps, hlc=hlc, actors=actors, names=names, ops=ops,
        room_id=room_id,
    )
