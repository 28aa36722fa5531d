"""Test vectors of private rooms for ``docs/protocol.md`` ("Private rooms: test vectors").

Everything is derived from fixed inputs, except the HPKE wrap, which is randomised (its
ephemeral key comes from the OS inside ``cryptography``): ``WRAP_HEX`` is one fixed wrap made
once, and the vector gives the recipient's key and the plaintext it must open to.
``python -m meshnode.crdt.private_vectors`` prints the Markdown block that
``tests/crdt/test_private_vectors.py`` checks against the document.
"""

from typing import Any

from meshnode.crdt.member_keys import unwrap, x25519_private_bytes, x25519_public_bytes
from meshnode.crdt.redemption import REDEEM_DOMAIN, invite_keypair, redemption_signature
from meshnode.crdt.sealing import (
    commitment,
    derived_key,
    pad,
    seal,
    seal_aad,
    wrap_info,
)
from meshnode.crdt.snapshot_seal import seal_aad as snapshot_seal_aad
from meshnode.crdt.snapshot_seal import wrap_info as snapshot_wrap_info
from protocol.msgpack_io import pack
from protocol.private_ops import OP_NAME
from protocol.vectors import SEED_A, SEED_B, public_key

ROOM_ID = bytes(range(0x40, 0x60))
SECRET = bytes(range(0xC0, 0xE0))
NONCE = bytes(range(0xF0, 0xFC))
SEQ = 2
HLC = 1_700_000_001_000 << 16
INVITE_SEED = bytes(range(0x10, 0x30))
WRAP_HEX = (
    "bf7feaa42a6654729c3af5b2b3fe1ebe02181f68655b1be385edc4548dae294ff87334e20d63e0dd87f7c36f"
    "5f567521aa8c03f5f8ce7f7a77a9c150b4ca6f3afc8bae36ec41d980487ad70a0abb6570"
)
EPOCH_ID = bytes(range(0x60, 0x80))
SNAPSHOT_PUBLIC = pack([b"\x00" * 32, 7])
"""A stand-in for a snapshot's public sections 2..18 (only their SHA-256 enters the AAD)."""
BEGIN_MARKER = "<!-- BEGIN PRIVATE VECTORS (python -m meshnode.crdt.private_vectors) -->"
END_MARKER = "<!-- END PRIVATE VECTORS -->"


def build() -> dict[str, Any]:
    """Every vector as hex strings."""
    a, b = public_key(SEED_A), public_key(SEED_B)
    payload = pack([[], ["name"], [[1, 1, None], [2, 1, 0, 0, "canary"], [OP_NAME, "Vault"]]])
    key = derived_key(SECRET, ROOM_ID, "content")
    aad = seal_aad(ROOM_ID, a, SEQ, HLC, b"")
    inv_secret, inv_public = invite_keypair(INVITE_SEED)
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    b_x = X25519PrivateKey.from_private_bytes(x25519_private_bytes(SEED_B))
    opened = unwrap(bytes.fromhex(WRAP_HEX), b_x, wrap_info(ROOM_ID, a, SEQ, b))
    return {
        "room_id": ROOM_ID.hex(),
        "author_A_ed25519": a.hex(),
        "A_x25519_public": (x25519_public_bytes(a) or b"").hex(),
        "B_ed25519": b.hex(),
        "B_x25519_public": (x25519_public_bytes(b) or b"").hex(),
        "B_x25519_private": x25519_private_bytes(SEED_B).hex(),
        "epoch_secret": SECRET.hex(),
        "commitment": commitment(SECRET, ROOM_ID).hex(),
        "content_key": key.hex(),
        "presence_key": derived_key(SECRET, ROOM_ID, "presence").hex(),
        "sealed_payload_plaintext": payload.hex(),
        "padded_plaintext": pad(payload).hex(),
        "seal_aad (seq 2, epoch created by the same change)": aad.hex(),
        "seal_nonce": NONCE.hex(),
        "sealed_ciphertext": seal(key, NONCE, payload, aad).hex(),
        "wrap_info (A's seq 2 to B)": wrap_info(ROOM_ID, a, SEQ, b).hex(),
        "wrap (HPKE, fixed)": WRAP_HEX,
        "wrap opens to": (opened or b"").hex(),
        **snapshot_vectors(a, b),
        "invite_public_key": inv_public.hex(),
        "redemption_message (for B)": (REDEEM_DOMAIN + ROOM_ID + b).hex(),
        "redemption_signature": redemption_signature(inv_secret, ROOM_ID, b).hex(),
    }


def snapshot_plaintext(author: bytes) -> bytes:
    """A sealed snapshot section's plaintext: one entity of ``author`` made by change index
    1, with one field, the sealed name set by change 1, and the epoch's secret."""
    return pack([[author], [[0, 1, 1, [1]]], [[1, 0, 2, 0]], [[2, "c", "v", 1, "canary"]],
                 [], [1, "Vault"], [], [[EPOCH_ID, SECRET]]])


def snapshot_vectors(a: bytes, b: bytes) -> dict[str, str]:
    """The sealed snapshot section (docs/protocol.md, "Sealed snapshots")."""
    key = derived_key(SECRET, ROOM_ID, "snapshot")
    aad = snapshot_seal_aad(ROOM_ID, EPOCH_ID, SNAPSHOT_PUBLIC)
    plain = snapshot_plaintext(a)
    return {
        "snapshot_epoch_id": EPOCH_ID.hex(),
        "snapshot_key": key.hex(),
        "snapshot_public (stand-in for sections 2..18)": SNAPSHOT_PUBLIC.hex(),
        "snapshot_seal_aad": aad.hex(),
        "snapshot_sealed_plaintext": plain.hex(),
        "snapshot_sealed_ciphertext (seal_nonce)": seal(key, NONCE, plain, aad).hex(),
        "snapshot_wrap_info (A's snapshot to B)": snapshot_wrap_info(ROOM_ID, a, EPOCH_ID,
                                                                     b).hex(),
    }


def render_markdown() -> str:
    """The generated block of docs/protocol.md."""
    lines = [BEGIN_MARKER, "", "```text"]
    for k, v in build().items():
        lines.append(f"{k}:")
        lines.extend("  " + v[i:i + 96] for i in range(0, len(v), 96))
    lines += ["```", "", END_MARKER]
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover
    print(render_markdown())
