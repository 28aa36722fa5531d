"""Private-room crypto against fixed vectors: docs/protocol.md, RFC 9180, libsodium."""

from __future__ import annotations

import struct
from pathlib import Path

import nacl.bindings
from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from meshnode.crdt import private_vectors
from meshnode.crdt.member_keys import (
    _SUITE,
    x25519_private,
    x25519_private_bytes,
    x25519_public_bytes,
)
from meshnode.crdt.sealing import derived_key, open_sealed
from meshnode.identity import Identity
from tests.crdt.harness import ident

DOC = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"


def test_doc_block_matches_the_generator() -> None:
    text = DOC.read_text()
    start = text.index(private_vectors.BEGIN_MARKER)
    end = text.index(private_vectors.END_MARKER) + len(private_vectors.END_MARKER)
    assert text[start:end] == private_vectors.render_markdown()


def test_vectors_open() -> None:
    v = private_vectors.build()
    assert v["wrap opens to"] == v["epoch_secret"]
    key = bytes.fromhex(v["content_key"])
    aad = bytes.fromhex(v["seal_aad (seq 2, epoch created by the same change)"])
    plain, why = open_sealed(key, bytes.fromhex(v["seal_nonce"]),
                             bytes.fromhex(v["sealed_ciphertext"]), aad)
    assert why == "" and plain == bytes.fromhex(v["sealed_payload_plaintext"])
    assert open_sealed(key, bytes.fromhex(v["seal_nonce"]),
                       bytes.fromhex(v["sealed_ciphertext"]), aad + b"x")[1] == "undecryptable"
    assert derived_key(bytes.fromhex(v["epoch_secret"]), bytes.fromhex(v["room_id"]),
                       "content") == key


def test_x25519_derivation_matches_libsodium() -> None:
    for i in range(64):
        idn = ident("x25519", i)
        assert x25519_public_bytes(idn.public_key) == \
            nacl.bindings.crypto_sign_ed25519_pk_to_curve25519(idn.public_key)
        sodium = nacl.bindings.crypto_sign_ed25519_sk_to_curve25519(
            idn.private_bytes() + idn.public_key)
        ours = bytearray(x25519_private_bytes(idn.private_bytes()))
        ours[0] &= 248
        ours[31] = (ours[31] & 127) | 64
        assert bytes(ours) == sodium
        pub = x25519_private(idn).public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        assert pub == x25519_public_bytes(idn.public_key)
    assert x25519_public_bytes(b"\xff" * 32) is None  # y >= p: not a point
    assert isinstance(Identity.generate(), Identity)


def _labeled(sid: bytes, salt: bytes, label: bytes, ikm: bytes) -> bytes:
    h = hmac.HMAC(salt or bytes(32), hashes.SHA256())
    h.update(b"HPKE-v1" + sid + label + ikm)
    return h.finalize()


def _expand(sid: bytes, prk: bytes, label: bytes, info: bytes, n: int) -> bytes:
    return HKDFExpand(hashes.SHA256(), n,
                      struct.pack(">H", n) + b"HPKE-v1" + sid + label + info).derive(prk)


def test_hpke_suite_against_rfc9180_a11() -> None:
    """RFC 9180 A.1.1 (DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-128-GCM, base): our key
    schedule gives the RFC's key and nonce, its first ciphertext, and cryptography's HPKE opens
    a message sealed with them (its single-shot API uses the first nonce and empty AAD)."""
    sk_r = bytes.fromhex("4612c550263fc8ad58375df3f557aac531d26850903e55a9f23f21d8534e8ac8")
    enc = bytes.fromhex("37fda3567bdbd628e88668c3c8d7e97d1d1253b6d4ea6d44c150f741f1bf4431")
    info = bytes.fromhex("4f6465206f6e2061204772656369616e2055726e")
    priv = X25519PrivateKey.from_private_bytes(sk_r)
    pk_r = priv.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

    dh = priv.exchange(X25519PublicKey.from_public_bytes(enc))
    kem = b"KEM" + struct.pack(">H", 0x20)
    shared = _expand(kem, _labeled(kem, b"", b"eae_prk", dh), b"shared_secret", enc + pk_r, 32)
    sid = b"HPKE" + struct.pack(">HHH", 0x20, 1, 1)
    ctx = b"\x00" + _labeled(sid, b"", b"psk_id_hash", b"") + _labeled(sid, b"", b"info_hash",
                                                                         info)
    secret = _labeled(sid, shared, b"secret", b"")
    key = _expand(sid, secret, b"key", ctx, 16)
    nonce = _expand(sid, secret, b"base_nonce", ctx, 12)
    assert key.hex() == "4531685d41d65f03dc48f6b8302c05b0"
    assert nonce.hex() == "56d890e5accaaf011cff4b7d"
    pt = bytes.fromhex("4265617574792069732074727574682c20747275746820626561757479")
    ct0 = AESGCM(key).encrypt(nonce, pt, bytes.fromhex("436f756e742d30"))
    assert ct0.hex() == ("f938558b5d72f1a23810b4be2ab4f84331acc02fc97babc53a52ae8218a355a9"
                         "6d8770ac83d07bea87e13c512a")
    assert _SUITE.decrypt(enc + AESGCM(key).encrypt(nonce, pt, b""), priv, info=info) == pt
