"""The snapshot decoder: untrusted bytes to a checked ``DecodedSnapshot``, and the opening
of a private room's sealed scene (``open_snapshot``).

Separate from the encoder (``snapshot_encode``): this is the trust boundary, where every
index, type and signature is checked and a bad one becomes a typed ``DecodeError``. The
layout is in ``meshnode.crdt.snapshot`` (the module docstring).
"""

from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

import msgpack

from meshnode.crdt.content import (
    ChangeRecord,
    EntityRecord,
    EpochRecord,
    FieldRecord,
    FrontierContent,
    GrantRecord,
    MoveRecord,
    PrivateContent,
    SceneContent,
)
from meshnode.crdt.graph import BASE_HEAD, BASE_NAMED, BaseEntry
from meshnode.crdt.ids import ROOT, TRASH
from meshnode.crdt.revocation import Cut, InviteRevocation, InviteUse
from meshnode.crdt.snapshot_format import (
    _SECTIONS,
    MAGIC,
    PRIVATE_VERSION,
    READABLE_VERSIONS,
    SNAPSHOT_DOMAIN,
    Node,
)
from meshnode.crdt.snapshot_seal import SealedSection, open_section, seal_aad
from meshnode.identity import verify_signature
from protocol.change import (
    INVITE_ID_BYTES,
    MAX_INVITE_USES,
    OP_GENESIS,
    ROLE_ADMIN,
    ROLE_HOST,
    ROLE_NONE,
    SIGNATURE_BYTES,
    Change,
    decode_change,
    signing_payload,
)
from protocol.errors import DecodeError, FrameTooLarge, MalformedMsgpack, SchemaError
from protocol.limits import Limits
from protocol.msgpack_io import pack, unpack
from protocol.private_ops import AEAD_NONCE_BYTES, SECRET_BYTES
from protocol.values import check_value


class SnapshotSealError(DecodeError):
    """A private room's sealed snapshot section that does not open with the key its wrap
    gave, or whose plaintext is malformed: load from the history instead."""

    reason = "bad_sealed_snapshot"


class SnapshotKeyMissing(DecodeError):
    """A reader of a private room was given a snapshot whose sealed scene is not wrapped to
    it (or a blind writer's, with no scene): it loads the history instead, or waits."""

    reason = "snapshot_key_missing"


@dataclass(frozen=True, slots=True)
class DecodedSnapshot:
    """A snapshot whose signature verified: its content, signer and room. For a private
    room (version 4) ``content`` holds the public part only; ``sealed`` is the sealed section
    (None if the writer was blind) and ``change_ids`` the change index it refers to (for
    :func:`open_snapshot`)."""

    content: SceneContent
    signer: bytes
    room_id: bytes
    genesis: Change
    sealed: SealedSection | None = None
    change_ids: tuple[bytes, ...] = ()



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


def _at(seq: list[Any], index: object, what: str) -> Any:
    """``seq[index]`` for a non-negative in-range int index, else a schema error."""
    if type(index) is not int or not 0 <= index < len(seq):
        raise _fail(f"{what} index out of range")
    return seq[index]


def decode_snapshot(
    data: bytes, limits: Limits, trusted_signers: Iterable[bytes] | None
) -> DecodedSnapshot:
    """Check and decode snapshot bytes; raise ``DecodeError`` if they are invalid, badly
    signed or from a signer outside ``trusted_signers`` (None: any signer; the caller then
    checks that the signer is a member of the room)."""
    if type(data) is not bytes or len(data) <= SIGNATURE_BYTES:
        raise _fail("too short")
    if len(data) > limits.max_snapshot_bytes:
        raise FrameTooLarge("snapshot over the size limit")
    body, sig = data[:-SIGNATURE_BYTES], data[-SIGNATURE_BYTES:]
    try:
        obj = msgpack.unpackb(body, raw=False, strict_map_key=True, max_ext_len=0)
    except Exception as exc:  # any parser failure at this trust boundary
        raise MalformedMsgpack(f"snapshot is not valid msgpack: {exc}") from None
    if type(obj) is not list or len(obj) < 2 or obj[0] != MAGIC:
        raise _fail("not a meshnode snapshot")
    version = obj[1]
    if version not in READABLE_VERSIONS:
        raise _fail(f"unsupported snapshot version {version!r} (this node reads "
                    f"{', '.join(map(str, READABLE_VERSIONS))})")
    if len(obj) != _SECTIONS[version]:
        raise _fail(f"a version {version} snapshot has {_SECTIONS[version]} sections")
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
    if version == PRIVATE_VERSION and any(obj[i] for i in (7, 8, 9, 13)):
        raise _fail("a private room's snapshot holds its scene in clear")
    try:
        content, ids = _content(obj, gch, genesis, limits)
        sealed = None if version != PRIVATE_VERSION else _sealed_section(obj, room_id)
    except DecodeError:
        raise
    except (IndexError, KeyError, TypeError, ValueError) as exc:
        # Indices and types are checked as they are used; a bad one lands here.
        raise _fail(f"inconsistent contents ({type(exc).__name__}: {exc})") from None
    return DecodedSnapshot(content, signer, room_id, gch, sealed, tuple(ids))


def _content(obj: list[Any], gch: Change, genesis: bytes, limits: Limits,
             ) -> tuple[SceneContent, list[bytes]]:
    keys = _list(obj[5], None, "keys")
    for kb in keys:
        if type(kb) is not bytes or len(kb) != 32:
            raise _fail("bad key")
    changes_raw = _list(obj[6], 5, "changes")
    frontier: FrontierContent | None = None
    changes: list[ChangeRecord] = []
    ids: list[bytes] = []
    base_meta: dict[bytes, tuple[bytes, int, int]] = {}
    if len(obj) >= _SECTIONS[3]:
        frontier = _frontier(obj[17], keys, gch)
        ids = [e.change_id for e in frontier.entries]
        base_meta = {e.change_id: (e.author, e.seq, e.hlc) for e in frontier.entries}
    else:
        if not changes_raw or changes_raw[0][0] != gch.change_id:
            raise _fail("first change is not the genesis")
        changes = [ChangeRecord(gch.change_id, gch.author, 1, gch.hlc, ())]
        ids = [gch.change_id]
        changes_raw = changes_raw[1:]
    seen = set(ids)
    for cid, ki, seq, chlc, deps in changes_raw:
        if type(cid) is not bytes or len(cid) != 32 or cid in seen:
            raise _fail("bad or repeated change id")
        if type(seq) is not int or seq < 1 or type(chlc) is not int or type(deps) is not list \
                or not deps:
            raise _fail("bad change row")
        dep_ids = []
        for d in deps:
            if type(d) is not int or not 0 <= d < len(ids):
                raise _fail("dep is not an earlier change")
            dep_ids.append(ids[d])
        changes.append(ChangeRecord(cid, _at(keys, ki, "key"), seq, chlc, tuple(dep_ids)))
        ids.append(cid)
        seen.add(cid)

    entities, moves, fields, dead = _scene([*obj[7:10], obj[13]], keys, ids, limits)
    grants = []
    for ki, ci, role, inert in _list(obj[10], 4, "grants"):
        if type(role) is not int or not (ROLE_NONE <= role <= ROLE_ADMIN or role == ROLE_HOST) \
                or type(inert) is not bool:
            raise _fail("bad grant row")
        grants.append(GrantRecord(_at(keys, ki, "key"), _at(ids, ci, "change"), role, inert))

    equivs = tuple((_at(ids, a, "change"), _at(ids, b, "change"))
                   for a, b in _list(obj[11], 2, "equivocations"))
    retracted = []
    for ci, reason in _list(obj[12], 2, "retracted"):
        if type(reason) is not str or not 0 < len(reason) <= 64:
            raise _fail("bad retracted row")
        retracted.append((_at(ids, ci, "change"), reason))
    by_id = {c.change_id: c for c in changes}
    for cid, (author, seq, chlc) in base_meta.items():
        by_id[cid] = ChangeRecord(cid, author, seq, chlc, ())
    cuts = []
    for ki, ci, cutoff in _list(obj[14], 3, "cuts"):
        if type(cutoff) is not int or cutoff < 0:
            raise _fail("bad cut row")
        ch = by_id[_at(ids, ci, "change")]
        cuts.append(Cut(_at(keys, ki, "key"), ch.change_id, ch.author, ch.seq, cutoff))
    uses = []
    for inv, ci, oi, ki, max_uses in _list(obj[15], 5, "invite_uses"):
        if type(inv) is not bytes or len(inv) != INVITE_ID_BYTES or type(oi) is not int \
                or type(max_uses) is not int or not 0 <= max_uses < MAX_INVITE_USES:
            raise _fail("bad invite use row")
        ch = by_id[_at(ids, ci, "change")]
        uses.append(InviteUse(inv, ch.hlc, ch.author, ch.change_id, oi, _at(keys, ki, "key"),
                              max_uses))
    revs = []
    for inv, ci in _list(obj[16], 2, "invite_revocations"):
        if type(inv) is not bytes or len(inv) != INVITE_ID_BYTES:
            raise _fail("bad invite revocation row")
        revs.append(InviteRevocation(inv, _at(ids, ci, "change")))
    private = None if len(obj) != _SECTIONS[4] else _privacy(obj[18], keys, ids)
    content = SceneContent(
        genesis=genesis,
        clock=obj[4],
        changes=tuple(changes),
        entities=tuple(entities),
        moves=tuple(moves),
        fields=tuple(fields),
        grants=tuple(grants),
        equivocations=equivs,
        retracted=tuple(retracted),
        dead_entities=dead,
        cuts=tuple(cuts),
        invite_uses=tuple(uses),
        invite_revocations=tuple(revs),
        frontier=frontier,
        private=private,
    )
    return content, ids


def _scene(rows: list[Any], keys: list[Any], ids: list[bytes], limits: Limits,
           ) -> tuple[list[EntityRecord], list[MoveRecord], list[FieldRecord], tuple[Node, ...]]:
    """Decode ``[entities, log, fields, dead_entities]`` rows."""
    nodes: list[Node] = [ROOT, TRASH]
    entities = []
    for ki, counter, seq, makers in _list(rows[0], 4, "entities"):
        if type(counter) is not int or counter < 1 or type(seq) is not int:
            raise _fail("bad entity row")
        if type(makers) is not list:
            raise _fail("bad entity makers")
        node = (_at(keys, ki, "key"), counter)
        entities.append(EntityRecord(node[0], counter, seq,
                                     tuple(_at(ids, ci, "change") for ci in makers)))
        nodes.append(node)

    moves = []
    for ci, oi, child, parent in _list(rows[1], 4, "log"):
        if type(oi) is not int or type(child) is not int or child < 2:
            raise _fail("bad log row")
        moves.append(MoveRecord(_at(ids, ci, "change"), oi, _at(nodes, child, "entity"),
                                _at(nodes, parent, "entity")))

    fields = []
    for eidx, comp, field, ci, value in _list(rows[2], 5, "fields"):
        if type(comp) is not str or type(field) is not str or type(eidx) is not int or eidx < 2:
            raise _fail("bad field row")
        check_value(value, limits)
        fields.append(FieldRecord(_at(nodes, eidx, "entity"), comp, field,
                                  _at(ids, ci, "change"), value))
    dead = tuple(_at(nodes, e, "entity") for e in _list(rows[3], None, "dead_entities"))
    return entities, moves, fields, dead


def _id32(obj: object, what: str) -> bytes:
    if type(obj) is not bytes or len(obj) != 32:
        raise _fail(f"bad {what}")
    return obj


def _privacy(obj: object, keys: list[Any], ids: list[bytes]) -> PrivateContent:
    """Decode a version 4 snapshot's public epoch book (see ``meshnode.crdt.snapshot``)."""
    if type(obj) is not list or len(obj) != 4:
        raise _fail("malformed privacy section")
    epochs = []
    for eid, ki, seq, hlc, recips, com, bn, back in _list(obj[0], 8, "epochs"):
        if type(seq) is not int or seq < 1 or type(hlc) is not int or type(bn) is not bytes \
                or len(bn) != AEAD_NONCE_BYTES or type(back) is not bytes:
            raise _fail("bad epoch row")
        epochs.append(EpochRecord(_id32(eid, "epoch id"), _at(keys, ki, "key"), seq, hlc,
                                  tuple(_at(keys, r, "key") for r in _list(recips, None,
                                                                           "recipients")),
                                  _id32(com, "commitment"), bn, back))
    lowering = []
    for mi, ai, seq in _list(obj[1], 3, "lowering"):
        if type(seq) is not int or seq < 1:
            raise _fail("bad lowering row")
        lowering.append((_at(keys, mi, "key"), _at(keys, ai, "key"), seq))
    shared = []
    for mi, eids in _list(obj[2], 2, "shared"):
        shared.append((_at(keys, mi, "key"),
                       tuple(_id32(e, "epoch id") for e in _list(eids, None, "shared epochs"))))
    sealed = tuple(_at(ids, ci, "change") for ci in _list(obj[3], None, "sealed"))
    return PrivateContent(tuple(epochs), tuple(lowering), tuple(shared), sealed)


def _sealed_section(obj: list[Any], room_id: bytes) -> SealedSection | None:
    raw = obj[19]
    if raw is None:
        return None
    if type(raw) is not list or len(raw) != 4:
        raise _fail("malformed sealed section")
    eid, wraps_raw, nonce, ct = raw
    if type(nonce) is not bytes or len(nonce) != AEAD_NONCE_BYTES or type(ct) is not bytes:
        raise _fail("bad sealed section")
    wraps: dict[bytes, bytes] = {}
    for member, w in _list(wraps_raw, 2, "wraps"):
        if type(w) is not bytes or _id32(member, "wrap recipient") in wraps:
            raise _fail("bad wrap row")
        wraps[member] = w
    epoch_id = _id32(eid, "epoch id")
    return SealedSection(epoch_id, wraps, nonce, ct,
                         seal_aad(room_id, epoch_id, pack(obj[2:19])))


def open_snapshot(snap: DecodedSnapshot, secret: bytes, limits: Limits) -> SceneContent:
    """The whole content of a private room's snapshot: its public part plus the sealed
    section opened with the epoch ``secret`` (``snapshot_seal.unwrap_secret``). Raises
    ``SnapshotSealError`` if it does not open or its plaintext is malformed."""
    section, priv = snap.sealed, snap.content.private
    if section is None or priv is None:
        raise SnapshotSealError("this snapshot has no sealed section (a blind writer's)")
    plain = open_section(section, snap.room_id, secret)
    if plain is None:
        raise SnapshotSealError("the sealed section does not open with this epoch's key")
    try:
        obj = unpack(plain, limits, limits.max_snapshot_bytes, "sealed snapshot")
        if type(obj) is not list or len(obj) != 8:
            raise _fail("malformed sealed plaintext")
        keys = _list(obj[0], None, "sealed keys")
        for kb in keys:
            _id32(kb, "key")
        ids = list(snap.change_ids)
        entities, moves, fields, dead = _scene(obj[1:5], keys, ids, limits)
        name = None
        if obj[5] is not None:
            ci, nm = _list(obj[5], None, "name")
            if type(nm) is not str:
                raise _fail("bad name")
            name = (_at(ids, ci, "change"), nm)
        voided = []
        for ci, reason in _list(obj[6], 2, "voided"):
            if type(reason) is not str or not 0 < len(reason) <= 64:
                raise _fail("bad voided row")
            voided.append((_at(ids, ci, "change"), reason))
        secrets = []
        for eid, sec in _list(obj[7], 2, "secrets"):
            if type(sec) is not bytes or len(sec) != SECRET_BYTES:
                raise _fail("bad secret row")
            secrets.append((_id32(eid, "epoch id"), sec))
    except DecodeError as exc:
        raise SnapshotSealError(f"sealed snapshot: {exc}") from None
    except (IndexError, KeyError, TypeError, ValueError) as exc:
        raise SnapshotSealError(f"sealed snapshot: inconsistent ({type(exc).__name__})") \
            from None
    return replace(snap.content, entities=tuple(entities), moves=tuple(moves),
                   fields=tuple(fields), dead_entities=dead,
                   private=replace(priv, opened=True, name=name, voided=tuple(voided),
                                   secrets=tuple(secrets)))


def _frontier(obj: object, keys: list[Any], gch: Change) -> FrontierContent:
    """Decode a version 3 snapshot's frontier section (see ``meshnode.crdt.snapshot``)."""
    if type(obj) is not list or len(obj) != 4:
        raise _fail("malformed frontier")
    hlc, pruned, authors_raw, entries_raw = obj
    if type(hlc) is not int or type(pruned) is not int or pruned < 0:
        raise _fail("bad frontier header")
    authors = []
    seen_authors: set[bytes] = set()
    for ki, seq, head in _list(authors_raw, 3, "frontier authors"):
        key = _at(keys, ki, "key")
        if type(seq) is not int or seq < 1 or type(head) is not bytes or len(head) != 32 \
                or key in seen_authors:
            raise _fail("bad frontier author row")
        seen_authors.add(key)
        authors.append((key, seq, head))
    entries: list[BaseEntry] = []
    seen: set[bytes] = set()
    for cid, ki, seq, chlc, kind, lag, past in _list(entries_raw, 7, "frontier entries"):
        if type(cid) is not bytes or len(cid) != 32 or cid in seen:
            raise _fail("bad or repeated frontier entry")
        if type(seq) is not int or seq < 1 or type(chlc) is not int or chlc > hlc \
                or type(kind) is not int or not BASE_NAMED <= kind <= BASE_HEAD:
            raise _fail("bad frontier entry")
        lags = []
        for lk, ls in _list(lag, 2, "frontier lag"):
            if type(ls) is not int or ls < 0:
                raise _fail("bad frontier lag")
            lags.append((_at(keys, lk, "key"), ls))
        past_ids = [_at(entries, p, "frontier entry").change_id
                    for p in _list(past, None, "frontier past")]
        entries.append(BaseEntry(cid, _at(keys, ki, "key"), seq, chlc, kind, tuple(lags),
                                 tuple(past_ids)))
        seen.add(cid)
    if not entries or entries[0].change_id != gch.change_id:
        raise _fail("first frontier entry is not the genesis")
    return FrontierContent(hlc, tuple(authors), pruned, tuple(entries))

