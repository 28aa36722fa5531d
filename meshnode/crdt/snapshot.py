"""Signed snapshots: a replica's materialised state, so a late joiner need not replay history.

Wire form: ``body || signature``; ``body`` is the msgpack array

``["meshnode-snapshot", 1, signer, genesis, hlc, keys, changes, entities, log, fields, grants,
equivocations]``

* ``keys``: public keys; other sections refer to them by index.
* ``changes``: ``[change_id, key, seq, hlc, [dep index...]]`` per applied change, in causal
  order (genesis first). Raw change bytes are not included: a replica started from a snapshot
  serves history only from the snapshot on.
* ``entities``: ``[key, counter, creation seq, [creating change index...]]``; entity index
  ``i`` here is ``i + 2`` in ``log`` and ``fields`` (0 is ROOT, 1 is TRASH). The creating
  changes (usually one; two if an equivocator made it twice) keep causal checks exact.
* ``log``: the tree's move log, ``[change index, op index, child, parent]`` in log order.
* ``fields``: ``[entity, component, field, change index, value]`` (each register's winner).
* ``grants``: ``[member key, change index, role]``.
* ``equivocations``: ``[change index, change index]``.

The signer signs ``SNAPSHOT_DOMAIN || room_id || body``. A snapshot is trusted content: its
state is not re-derived from signed changes, so load snapshots only from signers you trust
(by default: members of the room).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import msgpack

from meshnode.crdt.graph import ChangeMeta
from meshnode.crdt.ids import ROOT, TRASH
from meshnode.crdt.results import Equivocation
from meshnode.crdt.roles import ROLE_ADMIN, ROLE_NONE
from meshnode.crdt.tree import make_entry
from meshnode.identity import verify_signature
from protocol.change import OP_GENESIS, SIGNATURE_BYTES, decode_change, signing_payload
from protocol.errors import DecodeError, FrameTooLarge, MalformedMsgpack, SchemaError
from protocol.msgpack_io import pack
from protocol.values import check_value

if TYPE_CHECKING:
    from meshnode.crdt.replica import SceneReplica

MAGIC = "meshnode-snapshot"
VERSION = 1
SNAPSHOT_DOMAIN = b"meshnode/snapshot/v1\x00"

Node = tuple[bytes, int]


def make_snapshot(replica: SceneReplica) -> bytes:
    """Encode and sign ``replica``'s committed state."""
    graph = replica._graph
    key_index: dict[bytes, int] = {}

    def k(key: bytes) -> int:
        idx = key_index.get(key)
        if idx is None:
            idx = key_index[key] = len(key_index)
        return idx

    change_index = {cid: i for i, cid in enumerate(graph.order)}
    changes = []
    for cid in graph.order:
        m = graph.meta[cid]
        changes.append([cid, k(m.author), m.seq, m.hlc, [change_index[d] for d in m.deps]])

    entity_index: dict[Node, int] = {ROOT: 0, TRASH: 1}
    entities: list[list[Any]] = []
    for ent, seq in replica._creation.items():
        entity_index[ent] = len(entities) + 2
        makers = [change_index[c] for c in replica._created_by.get(ent, ()) if c in change_index]
        entities.append([k(ent[0]), ent[1], seq, makers])

    log = [
        [change_index[e[0][2]], e[1], entity_index[e[2]], entity_index[e[3]]]
        for e in replica._tree.log
    ]
    fields = []
    for ent, comps in replica._fields.items():
        eidx = entity_index[ent]
        for comp, fd in comps.items():
            for field, (stamp, value) in fd.items():
                fields.append([eidx, comp, field, change_index[stamp[2]], value])
    grants = [
        [k(member), change_index[g[0][2]], g[1]]
        for member, gl in replica._roles.grants.items()
        for g in gl
    ]
    equivocations = [
        [change_index[e.change_ids[0]], change_index[e.change_ids[1]]]
        for e in replica.equivocations
    ]
    signer = replica.identity.public_key
    body = pack(
        [
            MAGIC,
            VERSION,
            signer,
            replica.genesis,
            replica._clock.value,
            list(key_index),
            changes,
            entities,
            log,
            fields,
            grants,
            equivocations,
        ]
    )
    sig = replica.identity.sign(SNAPSHOT_DOMAIN + replica.room_id + body)
    return body + sig


def _fail(msg: str) -> SchemaError:
    return SchemaError(f"snapshot: {msg}")


def _list(obj: object, width: int | None, what: str) -> list[Any]:
    if type(obj) is not list:
        raise _fail(f"{what} is not an array")
    if width is not None:
        for row in obj:
            if type(row) is not list or len(row) != width:
                raise _fail(f"malformed row in {what}")
    return obj


def load_snapshot(
    replica: SceneReplica, data: bytes, trusted_signers: Iterable[bytes] | None
) -> None:
    """Fill an empty replica from snapshot bytes; raise ``DecodeError`` if they are invalid,
    badly signed or from an untrusted signer."""
    limits = replica.limits
    if type(data) is not bytes or len(data) <= SIGNATURE_BYTES:
        raise _fail("too short")
    if len(data) > limits.max_snapshot_bytes:
        raise FrameTooLarge("snapshot over the size limit")
    body, sig = data[:-SIGNATURE_BYTES], data[-SIGNATURE_BYTES:]
    try:
        obj = msgpack.unpackb(body, raw=False, strict_map_key=True, max_ext_len=0)
    except Exception as exc:  # any parser failure at this trust boundary
        raise MalformedMsgpack(f"snapshot is not valid msgpack: {exc}") from None
    if type(obj) is not list or len(obj) != 12 or obj[0] != MAGIC:
        raise _fail("not a meshnode snapshot")
    if obj[1] != VERSION:
        raise _fail(f"unsupported snapshot version {obj[1]!r}")
    signer, genesis, hlc = obj[2], obj[3], obj[4]
    if type(signer) is not bytes or type(genesis) is not bytes or type(hlc) is not int:
        raise _fail("bad header")
    gch = decode_change(genesis, limits)
    if gch.seq != 1 or gch.deps or len(gch.ops) != 1 or gch.ops[0][0] != OP_GENESIS:
        raise _fail("bad genesis")
    if not verify_signature(gch.author, gch.signature, signing_payload(b"", gch.body)):
        raise _fail("genesis signature does not verify")
    room_id = gch.change_id
    if not verify_signature(signer, sig, SNAPSHOT_DOMAIN + room_id + body):
        raise DecodeError("snapshot signature does not verify")
    if trusted_signers is not None and signer not in set(trusted_signers):
        raise DecodeError("snapshot signer is not trusted")
    try:
        _rebuild(replica, obj, gch, genesis)
    except DecodeError:
        raise
    except (IndexError, KeyError, TypeError, ValueError) as exc:
        # Indices and types are checked as they are used; a bad one lands here.
        raise _fail(f"inconsistent contents ({type(exc).__name__}: {exc})") from None
    if (
        trusted_signers is None
        and signer != replica.owner
        and replica._roles.current_role(signer) == ROLE_NONE
    ):
        raise DecodeError("snapshot signer is not a member of the room")


def _at(seq: list[Any], index: object, what: str) -> Any:
    """``seq[index]`` for a non-negative in-range int index, else a schema error."""
    if type(index) is not int or not 0 <= index < len(seq):
        raise _fail(f"{what} index out of range")
    return seq[index]


def _rebuild(replica: SceneReplica, obj: list[Any], gch: Any, genesis: bytes) -> None:
    keys_raw = _list(obj[5], None, "keys")
    for kb in keys_raw:
        if type(kb) is not bytes or len(kb) != 32:
            raise _fail("bad key")
    keys = [replica._key(kb) for kb in keys_raw]
    changes = _list(obj[6], 5, "changes")
    entities = _list(obj[7], 4, "entities")
    log = _list(obj[8], 4, "log")
    fields = _list(obj[9], 5, "fields")
    grants = _list(obj[10], 3, "grants")
    equivs = _list(obj[11], 2, "equivocations")
    if not changes or changes[0][0] != gch.change_id:
        raise _fail("first change is not the genesis")

    replica._adopt_genesis(gch, genesis)
    graph = replica._graph
    ids: list[bytes] = [gch.change_id]
    stamps: list[list[Any]] = [[gch.hlc, replica.owner, gch.change_id]]
    for cid, ki, seq, chlc, deps in changes[1:]:
        if type(cid) is not bytes or len(cid) != 32 or cid in graph.meta:
            raise _fail("bad or repeated change id")
        if type(seq) is not int or type(chlc) is not int or type(deps) is not list or not deps:
            raise _fail("bad change row")
        dep_ids = []
        for d in deps:
            if type(d) is not int or not 0 <= d < len(ids):
                raise _fail("dep is not an earlier change")
            dep_ids.append(ids[d])
        author = _at(keys, ki, "key")
        # An equivocating pair is recorded from the equivocations section below.
        graph.add(cid, ChangeMeta(author, seq, chlc, tuple(dep_ids), None), None)
        ids.append(cid)
        stamps.append([chlc, author, cid])

    nodes: list[Node] = [ROOT, TRASH]
    creation = replica._creation
    created_by = replica._created_by
    for ki, counter, seq, makers in entities:
        if type(counter) is not int or counter < 1 or type(seq) is not int:
            raise _fail("bad entity row")
        if type(makers) is not list:
            raise _fail("bad entity makers")
        node = (_at(keys, ki, "key"), counter)
        creation[node] = seq
        created_by[node] = [_at(ids, ci, "change") for ci in makers]
        nodes.append(node)

    entries = []
    for ci, oi, child, parent in log:
        if type(oi) is not int or type(child) is not int or child < 2:
            raise _fail("bad log row")
        entries.append(
            make_entry(
                _at(stamps, ci, "change"), oi, _at(nodes, child, "entity"),
                _at(nodes, parent, "entity"),
            )
        )
    tree = replica._tree
    entries.sort(key=lambda e: (e[0], e[1]))
    for e in entries:
        tree._do(e)
    tree.log = entries

    store = replica._fields
    for eidx, comp, field, ci, value in fields:
        if type(comp) is not str or type(field) is not str or type(eidx) is not int or eidx < 2:
            raise _fail("bad field row")
        check_value(value, replica.limits)
        node = _at(nodes, eidx, "entity")
        store.setdefault(node, {}).setdefault(comp, {})[field] = (_at(stamps, ci, "change"), value)

    roles = replica._roles
    metas = graph.meta
    for ki, ci, role in grants:
        if type(role) is not int or not ROLE_NONE <= role <= ROLE_ADMIN:
            raise _fail("bad grant row")
        m = metas[_at(ids, ci, "change")]
        roles.add(_at(keys, ki, "key"), (stamps[ci], role, m.author, m.seq))

    for a, b in equivs:
        ma = metas[_at(ids, a, "change")]
        replica.equivocations.append(
            Equivocation(ma.author, ma.seq, (ids[a], _at(ids, b, "change")))
        )

    replica._clock.observe(obj[4])
    me = replica.identity.public_key
    replica._counter = max((n[1] for n in creation if n[0] == me), default=0)
