"""Identity: key files, PeerIDs, signatures."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshnode.identity import (
    Identity,
    IdentityFileError,
    peer_id_from_public_key,
    public_key_from_peer_id,
    verify_signature,
)

_B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


def reference_b58encode(raw: bytes) -> str:
    """Textbook base58btc, independent of the `base58` package used by the code."""
    n = int.from_bytes(raw, "big")
    out = ""
    while n:
        n, r = divmod(n, 58)
        out = _B58[r] + out
    return "1" * (len(raw) - len(raw.lstrip(b"\0"))) + out


# --------------------------------------------------------------------------- known vectors


def test_known_vector_seed_0_to_31() -> None:
    # seed 00 01 02 .. 1f -> Ed25519 (RFC 8032) public key 03a107bf..31b8.
    # PeerID bytes (38): 00 24 | 08 01 12 20 | 03a107bff3ce10be1d70dd18e74bc099
    #                                          67e4d6309ba50d5f1ddc8664125531b8
    #   00 = identity multihash, 24 = 36 bytes follow;
    #   08 01 = protobuf field 1 (Type) varint 1 (Ed25519); 12 20 = field 2 (Data), 32 bytes.
    # base58btc of those bytes, via reference_b58encode above, gives the string below.
    identity = Identity.from_private_bytes(bytes(range(32)))
    pk = bytes.fromhex("03a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b8")
    expected = "12D3KooWA4Xop1JaT3MHxwYMkCepYsv4iPVopMXwCz5iHYdBfeSB"
    assert identity.public_key == pk
    assert reference_b58encode(bytes.fromhex("00240801122003a107bf") + pk[4:]) == expected
    assert identity.public_id == expected
    assert public_key_from_peer_id(expected) == pk


def test_libp2p_spec_vector() -> None:
    # libp2p specs, peer-ids.md test vectors: the Ed25519 private key protobuf
    # 08 01 12 40 <7e08..ee7d seed><1ed1..e27e public key>.
    seed = bytes.fromhex("7e0830617c4a7de83925dfb2694556b12936c477a0e1feb2e148ec9da60fee7d")
    identity = Identity.from_private_bytes(seed)
    assert identity.public_key.hex() == (
        "1ed1e8fae2c4a144b8be8fd4b47bf3d3b34b871c3cacf6010f0e42d474fce27e"
    )
    assert identity.public_id == "12D3KooWBtg3aaRMjxwedh83aGiUkwSxDwUZkzuJcfaqUmo7R3pq"


# --------------------------------------------------------------------------- PeerIDs


@given(st.binary(min_size=32, max_size=32))
def test_peer_id_roundtrip(seed: bytes) -> None:
    identity = Identity.from_private_bytes(seed)
    peer_id = identity.public_id
    assert peer_id.startswith("12D3KooW")
    assert peer_id == reference_b58encode(bytes.fromhex("002408011220") + identity.public_key)
    assert public_key_from_peer_id(peer_id) == identity.public_key
    assert peer_id_from_public_key(identity.public_key) == peer_id
    assert Identity.from_private_bytes(identity.private_bytes()) == identity


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "12D3KooW",
        "not a peer id",
        "12D3KooWA4Xop1JaT3MHxwYMkCepYsv4iPVopMXwCz5iHYdBfeS0",  # '0' is not base58
        "12D3KooWA4Xop1JaT3MHxwYMkCepYsv4iPVopMXwCz5iHYdBfeSBB",  # one char too many
        "12D3KooWA4Xop1JaT3MHxwYMkCepYsv4iPVopMXwCz5iHYdBfeS",  # one char short
        " 12D3KooWA4Xop1JaT3MHxwYMkCepYsv4iPVopMXwCz5iHYdBfeSB",
        "12D3KooWA4Xop1JaT3MHxwYMkCepYsv4iPVopMXwCz5iHYdBfeSB\n",
        "QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N",  # sha256 multihash (RSA-style)
        "1" * 52,
        "x" * 10_000,
    ],
)
def test_public_key_from_peer_id_rejects(bad: str) -> None:
    with pytest.raises(ValueError):
        public_key_from_peer_id(bad)


def test_public_key_from_peer_id_rejects_non_str() -> None:
    with pytest.raises(ValueError, match="str"):
        public_key_from_peer_id(b"12D3KooW")  # type: ignore[arg-type]


@given(st.text(max_size=80))
def test_public_key_from_peer_id_only_valueerror(text: str) -> None:
    try:
        pk = public_key_from_peer_id(text)
    except ValueError:
        return
    assert peer_id_from_public_key(pk) == text


def test_peer_id_from_public_key_rejects_wrong_length() -> None:
    with pytest.raises(ValueError):
        peer_id_from_public_key(b"\x01" * 31)


def test_from_private_bytes_rejects_wrong_length() -> None:
    with pytest.raises(ValueError):
        Identity.from_private_bytes(b"\x00" * 31)


# --------------------------------------------------------------------------- signatures


def test_sign_and_verify() -> None:
    identity = Identity.generate()
    sig = identity.sign(b"hello")
    assert len(sig) == 64
    assert verify_signature(identity.public_key, sig, b"hello")
    assert verify_signature(bytearray(identity.public_key), memoryview(sig), b"hello")
    assert not verify_signature(identity.public_key, sig, b"hellO")
    assert not verify_signature(Identity.generate().public_key, sig, b"hello")
    tampered = bytes([sig[0] ^ 1]) + sig[1:]
    assert not verify_signature(identity.public_key, tampered, b"hello")


@given(st.binary(min_size=32, max_size=32), st.binary(max_size=300))
def test_signatures_are_the_rfc8032_ones(seed: bytes, data: bytes) -> None:
    # Signed by libsodium, byte for byte what OpenSSL (and WebCrypto) make for the same key:
    # Ed25519 is deterministic, so changes signed before and after the switch are alike.
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    identity = Identity.from_private_bytes(seed)
    assert identity.sign(data) == Ed25519PrivateKey.from_private_bytes(seed).sign(data)
    assert verify_signature(identity.public_key, identity.sign(data), data)


def test_rfc8032_test_vector_2() -> None:
    # RFC 8032, section 7.1, TEST 2 (one-byte message).
    seed = bytes.fromhex("4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb")
    pk = bytes.fromhex("3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c")
    sig = bytes.fromhex("92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da"
                        "085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00")
    assert Identity.from_private_bytes(seed).public_key == pk
    assert Identity.from_private_bytes(seed).sign(b"\x72") == sig
    assert verify_signature(pk, sig, b"\x72")
    assert not verify_signature(pk, sig, b"\x73")


# The eight points of small order on edwards25519, in their canonical encodings (the
# identity, the point of order 2, two of order 4, four of order 8).
SMALL_ORDER = [bytes.fromhex(h) for h in (
    "0100000000000000000000000000000000000000000000000000000000000000",
    "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    "0000000000000000000000000000000000000000000000000000000000000000",
    "0000000000000000000000000000000000000000000000000000000000000080",
    "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",
    "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85",
    "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",
    "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa",
)]


@pytest.mark.parametrize("point", SMALL_ORDER)
def test_no_key_of_small_order_verifies_anything(point: bytes) -> None:
    # With A of small order, R = A and S = 0 satisfies the cofactorless equation for many
    # messages, and OpenSSL's check accepted it for the identity point (a key whose signatures
    # anyone makes: a stranger could author as it, or share one PeerID among many sockets).
    for data in (b"", b"hello", b"grant admin"):
        for r in (point, SMALL_ORDER[0]):
            assert not verify_signature(point, r + bytes(32), data)


def test_a_non_canonical_s_is_refused() -> None:
    # S + L (the group order) verifies under a lax check; it is a second encoding of the
    # same signature, i.e. a malleable change ID.
    order = 2**252 + 27742317777372353535851937790883648493
    identity = Identity.generate()
    sig = identity.sign(b"x")
    s = int.from_bytes(sig[32:], "little") + order
    assert s < 2**256
    assert not verify_signature(identity.public_key, sig[:32] + s.to_bytes(32, "little"), b"x")


@given(st.binary(max_size=70), st.binary(max_size=70), st.binary(max_size=64))
def test_verify_signature_never_raises_on_garbage(pk: bytes, sig: bytes, data: bytes) -> None:
    assert verify_signature(pk, sig, data) in (False, True)
    # 32 bytes that may not be a curve point, a 64-byte signature: still just a bool
    assert verify_signature((pk + b"\0" * 32)[:32], (sig + b"\0" * 64)[:64], data) in (
        False,
        True,
    )


@pytest.mark.parametrize(
    ("pk", "sig", "data"),
    [
        (None, b"", b""),
        (bytearray(32), b"\0" * 64, b""),
        (b"\xff" * 32, b"\xff" * 64, b"x"),
        (b"\0" * 32, b"\0" * 64, "not bytes"),
        (b"\0" * 32, 12, b""),
    ],
)
def test_verify_signature_odd_types(pk: object, sig: object, data: object) -> None:
    assert verify_signature(pk, sig, data) is False  # type: ignore[arg-type]


# --------------------------------------------------------------------------- files


def test_save_load_roundtrip(tmp_path: Path) -> None:
    identity = Identity.generate()
    path = tmp_path / "deep" / "er" / "identity.key"
    identity.save(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    loaded = Identity.load(path)
    assert loaded == identity
    assert loaded.private_bytes() == identity.private_bytes()
    assert path.read_text().splitlines()[0] == "meshnode-identity-v1"
    assert [p.name for p in path.parent.iterdir()] == ["identity.key"]  # no temp file left


def test_save_mode_ignores_permissive_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        Identity.generate().save(tmp_path / "id.key")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "id.key").stat().st_mode) == 0o600


def test_load_refuses_group_readable(tmp_path: Path) -> None:
    path = tmp_path / "id.key"
    Identity.generate().save(path)
    path.chmod(0o644)
    with pytest.raises(IdentityFileError, match="chmod 600"):
        Identity.load(path)


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"meshnode-identity-v1\n",
        b"meshnode-identity-v2\nAAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n",
        b"meshnode-identity-v1\nnot base64!\n",
        b"meshnode-identity-v1\nAAECAw==\n",
        b"\xff\xfe",
    ],
)
def test_load_rejects_malformed(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "id.key"
    path.write_bytes(content)
    path.chmod(0o600)
    with pytest.raises(IdentityFileError):
        Identity.load(path)


def test_load_accepts_documented_format(tmp_path: Path) -> None:
    path = tmp_path / "id.key"
    path.write_bytes(b"meshnode-identity-v1\nAAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n")
    path.chmod(0o600)
    assert Identity.load(path).public_id == "12D3KooWA4Xop1JaT3MHxwYMkCepYsv4iPVopMXwCz5iHYdBfeSB"


def test_load_or_generate(tmp_path: Path) -> None:
    path = tmp_path / "data" / "id.key"
    first = Identity.load_or_generate(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert Identity.load_or_generate(path) == first


def test_save_without_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "id.key"
    first = Identity.generate()
    first.save(path)
    with pytest.raises(FileExistsError):
        Identity.generate().save(path, overwrite=False)
    assert Identity.load(path) == first
    assert [p.name for p in tmp_path.iterdir()] == ["id.key"]


# --------------------------------------------------------------------------- no leaks


def test_repr_has_no_secret() -> None:
    identity = Identity.from_private_bytes(bytes(range(32)))
    text = repr(identity) + str(identity)
    seed = identity.private_bytes()
    assert identity.public_id in text
    assert seed.hex() not in text
    assert "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8" not in text
    assert str(list(seed)) not in text


def test_not_picklable() -> None:
    import pickle

    with pytest.raises(TypeError):
        pickle.dumps(Identity.generate())
