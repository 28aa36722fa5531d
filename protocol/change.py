"""The signed ``Change``: one author's batch of scene operations.

Wire form: ``body || signature`` where ``body`` is the msgpack array
``[author, seq, deps, hlc, [actors, names, ops]]`` and ``signature`` is the 64-byte Ed25519
signature of ``SIGNING_DOMAIN || room_id || body`` (``room_id`` is empty for the genesis
change, whose hash *is* the room ID). The change ID is SHA-256 of the whole wire form.

Binding the room ID into the signature, without sending it, stops a member from replaying
a change made in one room into another room. Ops are plain lists validated here for shape
and types; what they *mean* (and whether their author may do them) is the CRDT's business.
"""

import hashlib
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

from protocol.errors import FrameTooLarge, LimitExceeded, SchemaError
from protocol.limits import DEFAULT_LIMITS, Limits
from protocol.msgpack_io import pack, unpack
from protocol.private_ops import (
    GENESIS_FLAG_PRIVATE,
    MAX_PROOF_BYTES,
    PRIVATE_OPS,
    check_private_op,
)
from protocol.scoped import ScopedHook
from protocol.values import check_value

SIGNATURE_BYTES = 64
KEY_BYTES = 32
HASH_BYTES = 32
SIGNING_DOMAIN = b"meshnode/change/v1\x00"

# Op codes. The layout of each op is documented in docs/protocol.md.
OP_GENESIS = 0  # [0, room_name: str, nonce: bin, (flags: uint)]
OP_CREATE = 1  # [1, counter: uint>=1, parent: ref]
OP_SET = 2  # [2, entity: ref, component: name index, field: name index, value]
OP_MOVE = 3  # [3, entity: ref, parent: ref]
OP_DELETE = 4  # [4, entity: ref]
OP_ROLE = 5  # [5, member, role: 0..3|5, cutoff, (invite: bin32, max_uses, (proof: bin))]
OP_REVOKE_INVITE = 6  # [6, invite: bin32]

# Roles as carried on the wire; 0 removes a member (revoke / ban).
ROLE_NONE = 0
ROLE_VIEWER = 1
ROLE_EDITOR = 2
ROLE_ADMIN = 3
ROLE_OWNER = 4  # never on the wire: the genesis author is the owner
ROLE_HOST = 5  # stores, relays and admits (with invite proofs); never receives keys

INVITE_ID_BYTES = 32
MAX_INVITE_USES = 1 << 32  # an invite's use limit (0: unlimited) is below this
MAX_CUTOFF = (1 << 63) - 1

MAX_ROOM_NAME_CHARS = 200
MAX_NONCE_BYTES = 32

Op = list[Any]


@dataclass(slots=True)
class Change:
    """A decoded (not yet verified) change. ``ops`` refer to ``actors`` and ``names``."""

    author: bytes
    seq: int
    deps: list[bytes]
    hlc: int
    actors: list[bytes | int]  # a key, or the index of a dep whose author it is
    names: list[str]
    ops: list[Op]
    body: bytes
    signature: bytes
    change_id: bytes


def signing_payload(room_id: bytes, body: bytes) -> bytes:
    """The bytes an author signs: domain tag, room ID (empty for genesis), body."""
    return SIGNING_DOMAIN + room_id + body


def encode_change(
    *,
    author: bytes,
    seq: int,
    deps: Sequence[bytes],
    hlc: int,
    actors: Sequence[bytes | int],
    names: Sequence[str],
    ops: Sequence[Op],
    room_id: bytes,
    sign: Callable[[bytes], bytes],
) -> bytes:
    """Encode and sign a change. Deps are sorted, so one logical change has one encoding."""
    body = pack([author, seq, sorted(deps), hlc, [list(actors), list(names), list(ops)]])
    return body + sign(signing_payload(room_id, body))


def change_id(data: bytes) -> bytes:
    """SHA-256 of a change's wire bytes."""
    return hashlib.sha256(data).digest()


def header_problem(author: object, seq: object, hlc: object) -> str | None:
    """What is wrong with a change's author, seq and hlc (``None``: nothing); shared by the
    canonical decoder and the compact form's (``protocol.compact``)."""
    if type(author) is not bytes or len(author) != KEY_BYTES:
        return "author is not a 32-byte public key"
    if type(seq) is not int or seq < 1:
        return "seq must be an integer >= 1"
    if type(hlc) is not int or not 0 <= hlc < 2**63:
        return "hlc must be an integer in [0, 2^63)"
    return None


def _bad(msg: str) -> SchemaError:
    return SchemaError(f"change: {msg}")


def _check_ref(ref: object, n_actors: int) -> None:
    t = type(ref)
    if t is int:
        if ref < 1:  # type: ignore[operator]
            raise _bad("entity counter must be >= 1")
    elif ref is None:
        return
    elif t is list:
        if (
            len(ref) != 2  # type: ignore[arg-type]
            or type(ref[0]) is not int  # type: ignore[index]
            or type(ref[1]) is not int  # type: ignore[index]
            or not 0 <= ref[0] < n_actors  # type: ignore[index]
            or ref[1] < 1  # type: ignore[index]
        ):
            raise _bad("malformed entity reference")
    else:
        raise _bad("malformed entity reference")


def check_ops(ops: list[Any], n_actors: int, n_names: int, limits: Limits) -> None:
    """Validate the shape and types of every op; raise ``SchemaError`` on the first bad one."""
    for op in ops:
        if type(op) is not list or not op:
            raise _bad("op is not a non-empty array")
        code = op[0]
        if type(code) is not int:
            raise _bad("op code is not an integer")
        n = len(op)
        if code == OP_SET:
            if n != 5:
                raise _bad("set op needs 5 elements")
            _check_ref(op[1], n_actors)
            c, f = op[2], op[3]
            if type(c) is not int or type(f) is not int or not (
                0 <= c < n_names and 0 <= f < n_names
            ):
                raise _bad("set op name index out of range")
            v = op[4]
            tv = type(v)
            if tv is list and len(v) <= 16:  # the common case: a vector of floats
                for x in v:
                    if type(x) is not float or x - x != 0.0:
                        check_value(x, limits, 1)
            else:
                check_value(v, limits, 0)
        elif code == OP_MOVE:
            if n != 3:
                raise _bad("move op needs 3 elements")
            _check_ref(op[1], n_actors)
            _check_ref(op[2], n_actors)
            if op[1] is None:
                raise _bad("the root cannot be moved")
        elif code == OP_CREATE:
            if n != 3:
                raise _bad("create op needs 3 elements")
            if type(op[1]) is not int or op[1] < 1:
                raise _bad("create op counter must be an integer >= 1")
            _check_ref(op[2], n_actors)
        elif code == OP_DELETE:
            if n != 2:
                raise _bad("delete op needs 2 elements")
            _check_ref(op[1], n_actors)
            if op[1] is None:
                raise _bad("the root cannot be deleted")
        elif code == OP_ROLE:
            # 3 elements: a grant from before cut-offs (still read); 4: with the member's
            # last permitted seq; 6: a grant made by redeeming an invite; 7: the same with
            # the invite and its redemption proof (a host's grant, meshnode.crdt.redemption).
            if n not in (3, 4, 6, 7):
                raise _bad("role op needs 3, 4, 6 or 7 elements")
            m, r = op[1], op[2]
            if type(m) is not int or not 0 <= m < n_actors:
                raise _bad("role op member index out of range")
            if type(r) is not int or not (ROLE_NONE <= r <= ROLE_ADMIN or r == ROLE_HOST):
                raise _bad("role op role must be 0..3 or 5")
            if n >= 4 and (type(op[3]) is not int or not 0 <= op[3] <= MAX_CUTOFF):
                raise _bad("role op cut-off must be an integer >= 0")
            if n == 7 and (type(op[6]) is not bytes or len(op[6]) > MAX_PROOF_BYTES):
                raise _bad("role op proof must be bytes of bounded length")
            if n >= 6:
                if type(op[4]) is not bytes or len(op[4]) != INVITE_ID_BYTES:
                    raise _bad("role op invite must be a 32-byte invite ID")
                if type(op[5]) is not int or not 0 <= op[5] < MAX_INVITE_USES:
                    raise _bad("role op max_uses must be an integer in [0, 2^32)")
                if r == ROLE_NONE:
                    raise _bad("an invite cannot grant role none")
        elif code == OP_REVOKE_INVITE:
            if n != 2 or type(op[1]) is not bytes or len(op[1]) != INVITE_ID_BYTES:
                raise _bad("revoke-invite op is [6, invite: 32 bytes]")
        elif code == OP_GENESIS:
            if n not in (3, 4) or type(op[1]) is not str or type(op[2]) is not bytes:
                raise _bad("genesis op is [0, name, nonce, (flags)]")
            if len(op[1]) > MAX_ROOM_NAME_CHARS or len(op[2]) > MAX_NONCE_BYTES:
                raise LimitExceeded("genesis name or nonce too long")
            if n == 4 and (op[3] != GENESIS_FLAG_PRIVATE or type(op[3]) is not int
                           or op[1] != ""):
                raise _bad("genesis flags must be 1 (private), with an empty name")
        elif code in PRIVATE_OPS:
            check_private_op(op, n_actors)
        else:
            raise _bad(f"unknown op code {code}")


class ChangeCache:
    """Which change bytes passed ``decode_change``'s checks (at most ``max_entries``, oldest
    forgotten). For simulators, where every replica decodes the same bytes.

    By default what is shared is only that fact (and the change ID): every hit builds a
    fresh ``Change`` from the bytes (msgpack's C parser only, not the Python schema checks),
    so no two consumers ever hold the same mutable object.

    ``share=True`` (netsim's, ``netsim/caches.py``): every hit returns the one ``Change``
    decoded first, so that a simulation's thousand replicas rebuild nothing. Only for
    consumers that never change a decoded ``Change`` or anything in it (the replica does
    not: it reads the change, and keeps ``SET`` values, which it never changes in place
    and copies on every read); ``tests/netsim/test_caches.py`` checks after a run that
    every shared change still equals its bytes' fresh decoding."""

    __slots__ = ("decoded", "ids", "max_entries")

    def __init__(self, max_entries: int, *, share: bool = False) -> None:
        self.max_entries = max_entries
        self.ids: dict[bytes, bytes] = {}  # change bytes -> change ID
        # change bytes -> the decoded change every consumer gets (share=True only)
        self.decoded: dict[bytes, Change] | None = {} if share else None


_change_cache: ScopedHook[ChangeCache] = ScopedHook()


def using_change_cache(cache: ChangeCache | None) -> AbstractContextManager[None]:
    """Let ``decode_change`` use ``cache`` (None: no cache) inside the block; the cache
    installed before is back when the block ends, even on error."""
    return _change_cache.using(cache)


def decode_change(
    data: bytes, limits: Limits = DEFAULT_LIMITS, *, known_id: bytes | None = None
) -> Change:
    """Decode and schema-check a change (the checks are memoised while a ``ChangeCache`` is
    installed; the ``Change`` returned is the caller's own, unless the cache shares decoded
    changes: see ``ChangeCache``).

    ``known_id``: ``change_id(data)`` if the caller has already computed it (not hashed twice).
    """
    cache = _change_cache.value
    if cache is not None and cache.max_entries and limits is DEFAULT_LIMITS \
            and type(data) is bytes:
        decoded = cache.decoded
        if decoded is not None:
            got = decoded.get(data)
            if got is None:
                got = _decode_change(data, limits, known_id)
                if len(decoded) >= cache.max_entries:
                    del decoded[next(iter(decoded))]
                decoded[data] = got
            return got
        ids = cache.ids  # only default-limit decodes are cached: the bytes alone are the key
        cid = ids.get(data)
        if cid is not None:
            return _rebuild_checked(data, cid)
        ch = _decode_change(data, limits, known_id)
        if len(ids) >= cache.max_entries:
            del ids[next(iter(ids))]
        ids[data] = ch.change_id
        return ch
    return _decode_change(data, limits, known_id)


def _rebuild_checked(data: bytes, cid: bytes) -> Change:
    """A fresh ``Change`` from bytes that already passed ``_decode_change``'s checks."""
    body = data[:-SIGNATURE_BYTES]
    author, seq, deps, hlc, (actors, names, ops) = unpack(
        body, DEFAULT_LIMITS, DEFAULT_LIMITS.max_change_bytes, "change")
    return Change(author=author, seq=seq, deps=deps, hlc=hlc, actors=actors, names=names,
                  ops=ops, body=body, signature=data[-SIGNATURE_BYTES:], change_id=cid)


def _decode_change(data: bytes, limits: Limits, known_id: bytes | None) -> Change:
    """Decode and schema-check a change. Does not verify the signature (see ``signing_payload``).

    Raises a ``protocol.errors.DecodeError`` subclass on any malformed input.
    """
    if type(data) is not bytes:
        if not isinstance(data, (bytearray, memoryview)):
            raise _bad(f"expected bytes, got {type(data).__name__}")
        data = bytes(data)
    if len(data) > limits.max_change_bytes:
        raise FrameTooLarge(f"change of {len(data)} bytes is over {limits.max_change_bytes}")
    if len(data) <= SIGNATURE_BYTES:
        raise _bad("too short to hold a signature")
    body = data[:-SIGNATURE_BYTES]
    obj = unpack(body, limits, limits.max_change_bytes - SIGNATURE_BYTES, "change")
    if type(obj) is not list or len(obj) != 5:
        raise _bad("envelope is not [author, seq, deps, hlc, ops]")
    author, seq, deps, hlc, block = obj
    problem = header_problem(author, seq, hlc)
    if problem is not None:
        raise _bad(problem)
    if type(deps) is not list:
        raise _bad("deps is not an array")
    if len(deps) > limits.max_deps:
        raise LimitExceeded("too many deps")
    prev = b""
    for d in deps:
        if type(d) is not bytes or len(d) != HASH_BYTES:
            raise _bad("dep is not a 32-byte hash")
        if d <= prev:
            raise _bad("deps must be sorted and unique")
        prev = d
    if type(block) is not list or len(block) != 3:
        raise _bad("ops block is not [actors, names, ops]")
    actors, names, ops = block
    if type(actors) is not list or type(names) is not list or type(ops) is not list:
        raise _bad("ops block members must be arrays")
    if len(actors) > limits.max_actors_per_change or len(names) > limits.max_names_per_change:
        raise LimitExceeded("too many actors or names in one change")
    if len(ops) > limits.max_ops_per_change:
        raise LimitExceeded("too many ops in one change")
    if not ops:
        raise _bad("a change must hold at least one op")
    seen_actors: set[bytes | int] = set()
    for a in actors:
        # An actor is a 32-byte key, or (shorter) the index of a dep whose author it is.
        if type(a) is int:
            if not 0 <= a < len(deps):
                raise _bad("actor dep index out of range")
        elif type(a) is not bytes or len(a) != KEY_BYTES or a == author:
            raise _bad("actors must be 32-byte keys other than the author, or dep indices")
        if a in seen_actors:
            raise _bad("actors must be distinct")
        seen_actors.add(a)
    for nm in names:
        if type(nm) is not str or not nm or len(nm) > limits.max_name_chars:
            raise _bad("names must be non-empty strings of bounded length")
    if len(set(names)) != len(names):
        raise _bad("names must be distinct")
    check_ops(ops, len(actors), len(names), limits)
    return Change(
        author=author,
        seq=seq,
        deps=deps,
        hlc=hlc,
        actors=actors,
        names=names,
        ops=ops,
        body=body,
        signature=data[-SIGNATURE_BYTES:],
        change_id=known_id if known_id is not None else hashlib.sha256(data).digest(),
    )
