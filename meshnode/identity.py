"""Ed25519 identities for nodes and users, rendered as libp2p PeerIDs.

An :class:`Identity` holds an Ed25519 private key. Its public name is the libp2p PeerID of the
public key (``12D3KooW...``): base58btc of the *identity* multihash of the protobuf-encoded public
key::

    00 24                 multihash: code 0x00 (identity), length 36
    08 01                 protobuf field 1 (KeyType), varint 1 = Ed25519
    12 20 <32 bytes>      protobuf field 2 (Data), length 32, the raw public key

Identity file format (UTF-8 text, mode 0600)::

    meshnode-identity-v1
    <base64 of the 32-byte raw Ed25519 seed>

:meth:`Identity.load` refuses a file that group or others may read or write: a leaked key lets
anyone act as this node or user, and there is no way to take a PeerID back.
"""

from __future__ import annotations

import base64
import binascii
import functools
import os
import stat
from collections import OrderedDict
from contextlib import AbstractContextManager
from pathlib import Path
from typing import NoReturn

import base58
import nacl.bindings
import nacl.exceptions
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

from protocol.scoped import ScopedHook

__all__ = [
    "FILE_HEADER",
    "PUBLIC_KEY_SIZE",
    "SEED_SIZE",
    "SIGNATURE_SIZE",
    "Identity",
    "IdentityFileError",
    "peer_id_from_public_key",
    "public_key_from_peer_id",
    "verify_signature",
]

FILE_HEADER = "meshnode-identity-v1"
SEED_SIZE = 32
PUBLIC_KEY_SIZE = 32
SIGNATURE_SIZE = 64

# identity multihash (0x00, length 0x24 = 36) + protobuf PublicKey{Type: Ed25519, Data: <32 bytes>}
_PEER_ID_PREFIX = bytes([0x00, 0x24, 0x08, 0x01, 0x12, 0x20])
_PEER_ID_BYTES = len(_PEER_ID_PREFIX) + PUBLIC_KEY_SIZE  # 38


class IdentityFileError(Exception):
    """An identity file is unsafe (group/world accessible) or malformed."""


# --------------------------------------------------------------------------- PeerIDs


def peer_id_from_public_key(public_key: bytes) -> str:
    """Render a raw 32-byte Ed25519 public key as a libp2p PeerID (``12D3KooW...``)."""
    if not isinstance(public_key, bytes | bytearray) or len(public_key) != PUBLIC_KEY_SIZE:
        raise ValueError(f"an Ed25519 public key is {PUBLIC_KEY_SIZE} raw bytes")
    return _render_peer_id(bytes(public_key))


@functools.lru_cache(maxsize=4_096)
def _render_peer_id(public_key: bytes) -> str:
    # base58 costs ~8 us a key, and the same few keys are rendered on every change and
    # presence update of a room (members, participants): remember the recent ones.
    return base58.b58encode(_PEER_ID_PREFIX + public_key).decode("ascii")


def public_key_from_peer_id(peer_id: str) -> bytes:
    """Return the raw 32-byte Ed25519 public key inside a PeerID string.

    Strict: only the canonical base58btc rendering of an identity-multihash Ed25519 key is
    accepted. Raises :class:`ValueError` saying what is wrong otherwise.
    """
    if not isinstance(peer_id, str):
        raise ValueError(f"a PeerID is a str, got {type(peer_id).__name__}")
    if not peer_id:
        raise ValueError("empty PeerID")
    if len(peer_id) > 64:
        raise ValueError(f"PeerID too long ({len(peer_id)} characters)")
    try:
        raw = base58.b58decode(peer_id)
    except ValueError:
        raise ValueError(f"PeerID {peer_id!r} is not valid base58btc") from None
    if len(raw) != _PEER_ID_BYTES or not raw.startswith(_PEER_ID_PREFIX):
        raise ValueError(
            f"PeerID {peer_id!r} is not an identity-multihash Ed25519 key "
            f"(expected {_PEER_ID_BYTES} bytes starting {_PEER_ID_PREFIX.hex()}, "
            f"got {len(raw)} bytes starting {raw[:6].hex()})"
        )
    public_key = raw[len(_PEER_ID_PREFIX) :]
    if base58.b58encode(raw).decode("ascii") != peer_id:
        raise ValueError(f"PeerID {peer_id!r} is not in canonical base58btc form")
    return public_key


# --------------------------------------------------------------------------- verification

class VerifyCache:
    """Successful signature checks, remembered (at most ``max_entries``, oldest forgotten).

    A simulator runs thousands of replicas in one process, each checking the same signed
    bytes; with a cache installed (``using_verify_cache``) each signature is checked once.
    Only successes are kept, keyed by the exact key, signature and data, so the answer is
    always the one a check would give. The entries are immutable (tuples of bytes)."""

    __slots__ = ("entries", "max_entries")

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self.entries: OrderedDict[tuple[bytes, bytes, bytes], None] = OrderedDict()


_verify_cache: ScopedHook[VerifyCache] = ScopedHook()


def using_verify_cache(cache: VerifyCache | None) -> AbstractContextManager[None]:
    """Let ``verify_signature`` use ``cache`` (None: no cache) inside the block; whatever was
    installed before is back when the block ends, even on error. The owner of the cache
    (a simulation) decides its scope: nothing stays switched on for the rest of the process."""
    return _verify_cache.using(cache)


def verify_signature(public_key: bytes, signature: bytes, data: bytes) -> bool:
    """Check an Ed25519 signature. Never raises: any bad input gives ``False``.

    ``public_key`` is the raw 32-byte key (as ``bytes``). The check is libsodium's
    (``crypto_sign_open``), which is RFC 8032's plus refusals of small-order and non-canonical
    keys and ``R`` values: OpenSSL's check accepts, for the identity point as the public key,
    a signature of ``R`` = that point and ``S`` = 0 on any message (a key no one owns, whose
    signatures anyone makes). Every replica must accept exactly the same signatures, so this
    is the one check the protocol uses (docs/protocol.md, Signatures). It is also about twice
    as fast as OpenSSL's here.
    """
    cache = _verify_cache.value
    if cache is not None and cache.max_entries:
        try:
            memo = (public_key, signature, data)
            if memo in cache.entries:
                return True
        except TypeError:
            return False
        if not _verify(public_key, signature, data):
            return False
        cache.entries[memo] = None
        if len(cache.entries) > cache.max_entries:
            cache.entries.popitem(last=False)
        return True
    return _verify(public_key, signature, data)


def _verify(public_key: bytes, signature: bytes, data: bytes) -> bool:
    blobs = (public_key, signature, data)
    if not all(isinstance(b, bytes | bytearray | memoryview) for b in blobs):
        return False
    if len(signature) != SIGNATURE_SIZE or len(public_key) != PUBLIC_KEY_SIZE:
        return False
    try:
        nacl.bindings.crypto_sign_open(bytes(signature) + bytes(data), bytes(public_key))
    except (nacl.exceptions.CryptoError, ValueError, TypeError):
        return False
    return True


# --------------------------------------------------------------------------- Identity


class Identity:
    """An Ed25519 key pair: signs on behalf of a node or a user."""

    __slots__ = ("_private", "_public_id", "_public_key", "_sodium_secret")

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._private = private_key
        self._public_key: bytes = private_key.public_key().public_bytes(
            Encoding.Raw, PublicFormat.Raw
        )
        self._public_id: str | None = None
        # libsodium's form of the same key (seed || public key): it signs in about 60% of
        # OpenSSL's time, and Ed25519 signatures are deterministic, so the bytes are the same.
        self._sodium_secret: bytes = self.private_bytes() + self._public_key

    @classmethod
    def generate(cls) -> Identity:
        """A new random identity (OS randomness)."""
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_private_bytes(cls, seed: bytes) -> Identity:
        """The identity of a raw 32-byte Ed25519 seed."""
        if not isinstance(seed, bytes | bytearray) or len(seed) != SEED_SIZE:
            raise ValueError(f"an Ed25519 private key is a {SEED_SIZE}-byte raw seed")
        return cls(Ed25519PrivateKey.from_private_bytes(bytes(seed)))

    def private_bytes(self) -> bytes:
        """The raw 32-byte seed. Secret: never log it."""
        return self._private.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())

    @property
    def public_key(self) -> bytes:
        """The raw 32-byte Ed25519 public key."""
        return self._public_key

    @property
    def public_id(self) -> str:
        """The libp2p PeerID of the public key (``12D3KooW...``)."""
        if self._public_id is None:
            self._public_id = peer_id_from_public_key(self._public_key)
        return self._public_id

    def sign(self, data: bytes) -> bytes:
        """A 64-byte Ed25519 signature of ``data``."""
        signed: bytes = nacl.bindings.crypto_sign(bytes(data), self._sodium_secret)
        return signed[:SIGNATURE_SIZE]

    def __repr__(self) -> str:
        return f"Identity(public_id={self.public_id!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Identity):
            return NotImplemented
        return self._public_key == other._public_key

    def __hash__(self) -> int:
        return hash(self._public_key)

    def __reduce__(self) -> NoReturn:
        raise TypeError("Identity objects hold a private key and are not picklable")

    # ----------------------------------------------------------------------- files

    def save(self, path: str | os.PathLike[str], *, overwrite: bool = True) -> None:
        """Write the identity file atomically, mode 0600, creating parent folders (mode 0700).

        With ``overwrite=False`` an existing file is left alone and :class:`FileExistsError`
        is raised.
        """
        path = Path(path)
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        seed = base64.b64encode(self.private_bytes()).decode("ascii")
        content = f"{FILE_HEADER}\n{seed}\n".encode("ascii")
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_NOFOLLOW, 0o600)
        try:
            try:
                if hasattr(os, "fchmod"):
                    os.fchmod(fd, 0o600)  # in case the umask removed the owner's bits
                os.write(fd, content)
                os.fsync(fd)
            finally:
                os.close(fd)
            if overwrite:
                os.replace(tmp, path)
            else:
                os.link(tmp, path)  # atomic create-if-absent; FileExistsError otherwise
        finally:
            tmp.unlink(missing_ok=True)
        _fsync_dir(path.parent)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Identity:
        """Read an identity file written by :meth:`save`. (An encrypted export, the web
        page's ``exportIdentity``, is read by :func:`meshnode.identity_export.load_identity`,
        which takes either kind.)

        Raises :class:`FileNotFoundError` if it does not exist and :class:`IdentityFileError`
        if group or others may access it, it is malformed, or the passphrase is wrong.
        """
        path = Path(path)
        fd = os.open(path, os.O_RDONLY)
        try:
            mode = os.fstat(fd).st_mode
            if os.name == "posix" and mode & 0o077:
                raise IdentityFileError(
                    f"identity file {path} is accessible by group or others "
                    f"(mode {stat.S_IMODE(mode):04o}); its private key may have leaked. "
                    f"If it has not, restrict it with: chmod 600 {path}"
                )
            raw = os.read(fd, 4096)
        finally:
            os.close(fd)
        try:
            lines = raw.decode("ascii").splitlines()
        except UnicodeDecodeError:
            raise IdentityFileError(f"identity file {path} is not ASCII text") from None
        if raw.lstrip().startswith(b"{"):
            raise IdentityFileError(
                f"identity file {path} is an encrypted export: read it with "
                f"meshnode.identity_export.load_identity(path, passphrase), or turn it into "
                f"a key file with: meshnode identity import {path}")
        if len(lines) != 2 or lines[0].strip() != FILE_HEADER:
            raise IdentityFileError(
                f"identity file {path} is malformed: expected a '{FILE_HEADER}' line "
                f"and a base64 seed line"
            )
        try:
            seed = base64.b64decode(lines[1].strip(), validate=True)
        except binascii.Error:
            raise IdentityFileError(f"identity file {path}: the seed is not valid base64") from None
        if len(seed) != SEED_SIZE:
            raise IdentityFileError(
                f"identity file {path}: the seed is {len(seed)} bytes, expected {SEED_SIZE}"
            )
        return cls.from_private_bytes(seed)

    @classmethod
    def load_or_generate(cls, path: str | os.PathLike[str]) -> Identity:
        """Load the identity at ``path``, or create and save a new one if there is none."""
        try:
            return cls.load(path)
        except FileNotFoundError:
            pass
        identity = cls.generate()
        try:
            identity.save(path, overwrite=False)
        except FileExistsError:  # another process created it meanwhile: use theirs
            return cls.load(path)
        return identity


_O_NOFOLLOW: int = getattr(os, "O_NOFOLLOW", 0)


def _fsync_dir(directory: Path) -> None:
    """Make a rename in ``directory`` durable (no-op where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
