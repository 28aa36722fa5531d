"""Wire shape of the private-room ops (sealed content, epochs, key shares, host proofs).

Only shapes and sizes are checked here (``protocol.change.check_ops`` calls
:func:`check_private_op`); what the ops mean and who may write them is the CRDT's business
(``meshnode.crdt.epochs``, ``meshnode.crdt.privacy``). Layouts (docs/protocol.md, "Private
rooms"):

* ``SEALED``  ``[7, epoch: bin(0|32), nonce: bin(12), ct: bin]``: the change's scene ops,
  encrypted. ``epoch`` empty means "the epoch this very change creates" (its ``ROTATE``).
* ``ROTATE``  ``[8, commitment: bin(32), wraps: [[recipient, wrap: bin(80)]...],
  back_nonce: bin(12), back: bin]``: a new epoch; ``recipient`` is an actor index, or nil for
  the change's author.
* ``SHARE``   ``[9, recipient: actor index, epochs: [bin(32)...], wrap: bin]``.
* ``NAME``    ``[10, name: str]``: the room's name; only ever inside a sealed payload.
"""

from typing import Any

from protocol.errors import LimitExceeded, SchemaError

OP_SEALED = 7
OP_ROTATE = 8
OP_SHARE = 9
OP_NAME = 10  # sealed payloads only

PRIVATE_OPS = frozenset({OP_SEALED, OP_ROTATE, OP_SHARE, OP_NAME})

SECRET_BYTES = 32
COMMITMENT_BYTES = 32
AEAD_NONCE_BYTES = 12
AEAD_TAG_BYTES = 16
WRAP_BYTES = 32 + SECRET_BYTES + AEAD_TAG_BYTES  # HPKE enc || AEAD(secret): 80
MAX_WRAPS = 256
MAX_SHARED_EPOCHS = 256
MAX_BACK_BYTES = 64 * 1024
MAX_PROOF_BYTES = 4096
MAX_SEALED_NAME_CHARS = 200

GENESIS_FLAG_PRIVATE = 1
"""Bit 0 of the optional 4th genesis element: a private room (its name is sealed)."""


def _bad(msg: str) -> SchemaError:
    return SchemaError(f"change: {msg}")


def _is_bin(x: object, n: int | None = None) -> bool:
    return type(x) is bytes and (n is None or len(x) == n)


def check_private_op(op: list[Any], n_actors: int) -> None:
    """Check the shape of one op whose code is in ``PRIVATE_OPS``; raise ``SchemaError`` /
    ``LimitExceeded`` on a malformed one."""
    code, n = op[0], len(op)
    if code == OP_SEALED:
        if n != 4 or not (_is_bin(op[1], 0) or _is_bin(op[1], 32)):
            raise _bad("sealed op is [7, epoch: 0 or 32 bytes, nonce, ct]")
        if not _is_bin(op[2], AEAD_NONCE_BYTES) or not _is_bin(op[3]):
            raise _bad("sealed op needs a 12-byte nonce and a ciphertext")
        if len(op[3]) < AEAD_TAG_BYTES:
            raise _bad("sealed ciphertext is shorter than its tag")
    elif code == OP_ROTATE:
        if n != 5 or not _is_bin(op[1], COMMITMENT_BYTES) or type(op[2]) is not list:
            raise _bad("rotate op is [8, commitment: 32 bytes, wraps, back_nonce, back]")
        if not op[2] or len(op[2]) > MAX_WRAPS:
            raise LimitExceeded(f"a rotation wraps to 1..{MAX_WRAPS} readers")
        for w in op[2]:
            if type(w) is not list or len(w) != 2 or not _is_bin(w[1], WRAP_BYTES):
                raise _bad("a wrap is [recipient, 80 bytes]")
            r = w[0]
            if r is not None and (type(r) is not int or not 0 <= r < n_actors):
                raise _bad("wrap recipient is not an actor index or nil")
        if not _is_bin(op[3], AEAD_NONCE_BYTES) or not _is_bin(op[4]):
            raise _bad("rotate back-links need a 12-byte nonce and bytes")
        if not AEAD_TAG_BYTES <= len(op[4]) <= MAX_BACK_BYTES:
            raise LimitExceeded("rotate back-links too short or too long")
    elif code == OP_SHARE:
        if n != 4 or type(op[1]) is not int or not 0 <= op[1] < n_actors:
            raise _bad("share op is [9, recipient: actor index, epochs, wrap]")
        if type(op[2]) is not list or not 1 <= len(op[2]) <= MAX_SHARED_EPOCHS:
            raise LimitExceeded(f"a share names 1..{MAX_SHARED_EPOCHS} epochs")
        if not all(_is_bin(e, 32) for e in op[2]) or len(set(op[2])) != len(op[2]):
            raise _bad("shared epochs must be distinct 32-byte IDs")
        if not _is_bin(op[3], 32 + SECRET_BYTES * len(op[2]) + AEAD_TAG_BYTES):
            raise _bad("share wrap must be 32 + 32 per epoch + 16 bytes")
    elif code == OP_NAME:
        if n != 2 or type(op[1]) is not str:
            raise _bad("name op is [10, name]")
        if len(op[1]) > MAX_SEALED_NAME_CHARS:
            raise LimitExceeded("room name too long")
    else:  # pragma: no cover - the caller dispatches only PRIVATE_OPS
        raise _bad(f"unknown op code {code}")


__all__ = [
    "AEAD_NONCE_BYTES",
    "AEAD_TAG_BYTES",
    "COMMITMENT_BYTES",
    "GENESIS_FLAG_PRIVATE",
    "MAX_PROOF_BYTES",
    "OP_NAME",
    "OP_ROTATE",
    "OP_SEALED",
    "OP_SHARE",
    "PRIVATE_OPS",
    "SECRET_BYTES",
    "WRAP_BYTES",
    "check_private_op",
]
