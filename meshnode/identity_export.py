"""Portable identities: ``did:key`` names and passphrase-encrypted identity files.

A person's key moves between the browser and the Python client as an *encrypted identity
file* (JSON, UTF-8), the format the web page's ``exportIdentity(passphrase)`` writes and
``importIdentity(file, passphrase)`` reads::

    {"format": "meshnode-identity-encrypted-v1",
     "peer_id": "12D3KooW...", "did": "did:key:z6Mk...",
     "kdf": "PBKDF2-SHA256", "iterations": 600000, "salt": "<base64, 16 bytes>",
     "cipher": "AES-256-GCM", "iv": "<base64, 12 bytes>",
     "ciphertext": "<base64: the 32-byte Ed25519 seed encrypted, with its 16-byte tag>"}

The AES key is PBKDF2-HMAC-SHA256(passphrase as UTF-8, salt, iterations), 32 bytes; the
additional authenticated data is the ``peer_id`` (ASCII), so a file whose name was edited to
another person's does not decrypt. ``peer_id`` and ``did`` are there to be read without the
passphrase, and are checked against the decrypted key. The plain identity file
(``meshnode-identity-v1``, :mod:`meshnode.identity`) is accepted wherever an export is (the page
imports it too): the two are interchangeable.

``did:key``: ``did:key:z`` + base58btc(multicodec ``ed25519-pub`` (varint 0xed = ``ed 01``) +
the 32-byte raw public key), as the W3C did:key method specifies.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from pathlib import Path

import base58
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC

from meshnode.identity import (
    FILE_HEADER,
    PUBLIC_KEY_SIZE,
    SEED_SIZE,
    Identity,
    IdentityFileError,
    peer_id_from_public_key,
)

__all__ = [
    "ENCRYPTED_FORMAT",
    "EXPORT_ITERATIONS",
    "did_key",
    "export_identity",
    "import_identity",
    "is_encrypted_identity",
    "load_identity",
    "public_key_from_did",
]

ENCRYPTED_FORMAT = "meshnode-identity-encrypted-v1"
EXPORT_ITERATIONS = 600_000
"""PBKDF2 rounds for a new export (OWASP's 2023 figure for PBKDF2-HMAC-SHA256)."""
MIN_ITERATIONS = 100_000
MAX_ITERATIONS = 10_000_000
_ED25519_PUB = b"\xed\x01"
_DID_PREFIX = "did:key:z"


def did_key(public_key: bytes) -> str:
    """The ``did:key`` of a raw 32-byte Ed25519 public key (``did:key:z6Mk...``)."""
    if len(public_key) != PUBLIC_KEY_SIZE:
        raise ValueError(f"an Ed25519 public key is {PUBLIC_KEY_SIZE} raw bytes")
    return _DID_PREFIX + base58.b58encode(_ED25519_PUB + public_key).decode("ascii")


def public_key_from_did(did: str) -> bytes:
    """The raw public key of an Ed25519 ``did:key``; ``ValueError`` says what is wrong."""
    if not isinstance(did, str) or not did.startswith(_DID_PREFIX) or len(did) > 100:
        raise ValueError(f"not an Ed25519 did:key: {did!r:.60}")
    try:
        raw = base58.b58decode(did[len(_DID_PREFIX):])
    except ValueError:
        raise ValueError(f"{did!r}: not base58btc") from None
    if len(raw) != 2 + PUBLIC_KEY_SIZE or not raw.startswith(_ED25519_PUB):
        raise ValueError(f"{did!r}: not a multicodec ed25519-pub key")
    return raw[2:]


def _aes_key(passphrase: str, salt: bytes, iterations: int) -> bytes:
    kdf = PBKDF2HMAC(algorithm=hashes.SHA256(), length=32, salt=salt, iterations=iterations)
    return kdf.derive(passphrase.encode("utf-8"))


def export_identity(identity: Identity, passphrase: str, *,
                    iterations: int = EXPORT_ITERATIONS) -> str:
    """The identity as an encrypted identity file (see the module docstring)."""
    if not passphrase:
        raise ValueError("an export needs a passphrase")
    if not MIN_ITERATIONS <= iterations <= MAX_ITERATIONS:
        raise ValueError(f"iterations must be in {MIN_ITERATIONS}..{MAX_ITERATIONS}")
    salt, iv = os.urandom(16), os.urandom(12)
    peer_id = identity.public_id
    sealed = AESGCM(_aes_key(passphrase, salt, iterations)).encrypt(
        iv, identity.private_bytes(), peer_id.encode("ascii"))
    b64 = base64.b64encode
    doc = {
        "format": ENCRYPTED_FORMAT, "peer_id": peer_id, "did": did_key(identity.public_key),
        "kdf": "PBKDF2-SHA256", "iterations": iterations, "salt": b64(salt).decode(),
        "cipher": "AES-256-GCM", "iv": b64(iv).decode(), "ciphertext": b64(sealed).decode(),
    }
    return json.dumps(doc, indent=1) + "\n"


def is_encrypted_identity(text: str) -> bool:
    """True if ``text`` looks like an encrypted identity file (JSON), not a plain one."""
    return text.lstrip().startswith("{")


def _b64(doc: dict[str, object], key: str, size: int | None) -> bytes:
    value = doc.get(key)
    if not isinstance(value, str):
        raise IdentityFileError(f"encrypted identity file: {key!r} is missing")
    try:
        raw = base64.b64decode(value, validate=True)
    except binascii.Error:
        raise IdentityFileError(f"encrypted identity file: {key!r} is not base64") from None
    if size is not None and len(raw) != size:
        raise IdentityFileError(f"encrypted identity file: {key!r} is {len(raw)} bytes, "
                                f"expected {size}")
    return raw


def import_identity(text: str, passphrase: str | None) -> Identity:
    """Read an identity file of either kind: encrypted (needs ``passphrase``) or plain.

    Raises :class:`IdentityFileError` for a malformed file or a wrong passphrase."""
    if not is_encrypted_identity(text):
        lines = text.strip().splitlines()
        if len(lines) != 2 or lines[0].strip() != FILE_HEADER:
            raise IdentityFileError(f"not an identity file: expected '{FILE_HEADER}' and a "
                                    f"seed line, or an encrypted identity (JSON)")
        try:
            seed = base64.b64decode(lines[1].strip(), validate=True)
        except binascii.Error:
            raise IdentityFileError("identity file: the seed is not valid base64") from None
        if len(seed) != SEED_SIZE:
            raise IdentityFileError(f"identity file: the seed is {len(seed)} bytes")
        return Identity.from_private_bytes(seed)
    try:
        doc = json.loads(text)
    except ValueError:
        raise IdentityFileError("encrypted identity file: not valid JSON") from None
    if type(doc) is not dict or doc.get("format") != ENCRYPTED_FORMAT:
        raise IdentityFileError(f"encrypted identity file: format is not {ENCRYPTED_FORMAT!r}")
    if doc.get("kdf") != "PBKDF2-SHA256" or doc.get("cipher") != "AES-256-GCM":
        raise IdentityFileError("encrypted identity file: only PBKDF2-SHA256 and AES-256-GCM "
                                "are supported")
    iterations = doc.get("iterations")
    if type(iterations) is not int or not MIN_ITERATIONS <= iterations <= MAX_ITERATIONS:
        raise IdentityFileError(f"encrypted identity file: iterations must be an integer in "
                                f"{MIN_ITERATIONS}..{MAX_ITERATIONS}")
    peer_id = doc.get("peer_id")
    if not isinstance(peer_id, str) or not peer_id.isascii():
        raise IdentityFileError("encrypted identity file: 'peer_id' is missing")
    if not passphrase:
        raise IdentityFileError("this identity file is encrypted: give its passphrase")
    salt, iv = _b64(doc, "salt", None), _b64(doc, "iv", 12)
    sealed = _b64(doc, "ciphertext", SEED_SIZE + 16)
    if not 8 <= len(salt) <= 64:
        raise IdentityFileError("encrypted identity file: the salt is 8..64 bytes")
    try:
        seed = AESGCM(_aes_key(passphrase, salt, iterations)).decrypt(
            iv, sealed, peer_id.encode("ascii"))
    except InvalidTag:
        raise IdentityFileError("wrong passphrase (or a damaged identity file)") from None
    identity = Identity.from_private_bytes(seed)
    if identity.public_id != peer_id:
        raise IdentityFileError("encrypted identity file: the key is not the PeerID it names")
    did = doc.get("did")
    if did is not None and did != did_key(identity.public_key):
        raise IdentityFileError("encrypted identity file: the key is not the did it names")
    return identity


def load_identity(path: str | os.PathLike[str], passphrase: str | None = None) -> Identity:
    """Read an identity file of either kind: a key file (:meth:`Identity.load`, with its
    permission check) or an encrypted export (needs ``passphrase``).

    Raises :class:`FileNotFoundError` or :class:`IdentityFileError`."""
    path = Path(path)
    with path.open("rb") as f:
        head = f.read(64)
    if not head.lstrip().startswith(b"{"):
        return Identity.load(path)
    try:
        text = path.read_text("ascii")
    except UnicodeDecodeError:
        raise IdentityFileError(f"identity file {path} is not ASCII text") from None
    try:
        return import_identity(text, passphrase)
    except IdentityFileError as err:
        raise IdentityFileError(f"identity file {path}: {err}") from None


def peer_id_of_did(did: str) -> str:
    """The PeerID of an Ed25519 ``did:key``."""
    return peer_id_from_public_key(public_key_from_did(did))
