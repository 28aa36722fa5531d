"""The snapshot encoder: ``SceneContent`` to signed snapshot bytes (version 2, 3 or 4).

Separate from the decoder (``snapshot_decode``): writing needs none of the checks that make
reading hostile bytes safe, and reading needs none of the sealing. The layout is in
``meshnode.crdt.snapshot`` (the module docstring).
"""

from collections.abc import Callable
from typing import Any

from meshnode.crdt.content import PrivateContent, SceneContent
from meshnode.crdt.ids import ROOT, TRASH
from meshnode.crdt.snapshot_format import MAGIC, PRIVATE_VERSION, SNAPSHOT_DOMAIN, VERSION, Node
from meshnode.crdt.snapshot_seal import SnapshotSeal, seal_aad, seal_section
from protocol.msgpack_io import pack


def _indexer() -> tuple[dict[bytes, int], Callable[[bytes], int]]:
    key_index: dict[bytes, int] = {}

    def k(key: bytes) -> int:
        idx = key_index.get(key)
        if idx is None:
            idx = key_index[key] = len(key_index)
        return idx

    return key_index, k


def _scene_rows(content: SceneContent, k: Callable[[bytes], int],
                change_index: dict[bytes, int]) -> list[Any]:
    """``[entities, log, fields, dead_entities]`` rows of ``content``."""
    entity_index: dict[Node, int] = {ROOT: 0, TRASH: 1}
    entities: list[list[Any]] = []
    for e in content.entities:
        entity_index[(e.creator, e.counter)] = len(entities) + 2
        makers = [change_index[c] for c in e.makers if c in change_index]
        entities.append([k(e.creator), e.counter, e.creation_seq, makers])
    log = [
        [change_index[m.change_id], m.op_index, entity_index[m.child], entity_index[m.parent]]
        for m in content.moves
    ]
    fields = [
        [entity_index[f.entity], f.component, f.field, change_index[f.change_id], f.value]
        for f in content.fields
    ]
    dead = [entity_index[e] for e in content.dead_entities]
    return [entities, log, fields, dead]


def encode_snapshot(
    content: SceneContent, signer: bytes, room_id: bytes, sign: Callable[[bytes], bytes],
    seal: SnapshotSeal | None = None,
) -> bytes:
    """Encode ``content`` and sign it (``sign``: bytes -> signature, e.g. ``Identity.sign``).

    A private room's content (``content.private``) is written as version 4: its scene is
    sealed with ``seal`` (required when the content is ``opened``, i.e. a reader's), never
    written in clear; a blind replica's (not opened) has no scene and no sealed section."""
    key_index, k = _indexer()

    frontier = content.frontier
    base_ids = [] if frontier is None else [e.change_id for e in frontier.entries]
    change_index = {c: i for i, c in enumerate(base_ids)}
    for c in content.changes:
        change_index[c.change_id] = len(change_index)
    extra: list[Any] = []
    if frontier is not None:
        extra = [[
            frontier.hlc, frontier.pruned,
            [[k(a), seq, head] for a, seq, head in frontier.authors],
            [[e.change_id, k(e.author), e.seq, e.hlc, e.kind, [[k(a), s] for a, s in e.lag],
              [change_index[p] for p in e.past]] for e in frontier.entries],
        ]]
    changes = [
        [c.change_id, k(c.author), c.seq, c.hlc, [change_index[d] for d in c.deps]]
        for c in content.changes
    ]
    priv = content.private
    if priv is None:
        entities, log, fields, dead = _scene_rows(content, k, change_index)
    else:
        if frontier is None:
            raise ValueError("a private room's snapshot needs a frontier (export_content)")
        if priv.opened and seal is None:
            raise ValueError("a reader's snapshot of a private room must be sealed (seal=)")
        entities, log, fields, dead = [], [], [], []  # the scene is only ever sealed
    grants = [[k(g.member), change_index[g.change_id], g.role, g.inert] for g in content.grants]
    equivocations = [[change_index[a], change_index[b]] for a, b in content.equivocations]
    retracted = [[change_index[c], reason] for c, reason in content.retracted]
    cuts = [[k(c.member), change_index[c.change_id], c.cutoff] for c in content.cuts]
    uses = [
        [u.invite_id, change_index[u.change_id], u.op_index, k(u.member), u.max_uses]
        for u in content.invite_uses
    ]
    revs = [[r.invite_id, change_index[r.change_id]] for r in content.invite_revocations]
    if priv is not None:
        extra.append([
            [[e.epoch_id, k(e.author), e.seq, e.hlc, [k(r) for r in e.recipients],
              e.commitment, e.back_nonce, e.back] for e in priv.epochs],
            [[k(m), k(a), seq] for m, a, seq in priv.lowering],
            [[k(m), list(eids)] for m, eids in priv.shared],
            [change_index[c] for c in priv.sealed if c in change_index],
        ])
    sections = [
        MAGIC, VERSION if frontier is not None else 2, signer, content.genesis,
        content.clock, list(key_index), changes, entities, log, fields, grants,
        equivocations, retracted, dead, cuts, uses, revs, *extra,
    ]
    if priv is not None:
        sections[1] = PRIVATE_VERSION
        sealed: list[Any] | None = None
        if priv.opened:
            assert seal is not None
            sealed = _seal_scene(content, priv, seal, room_id, signer, change_index,
                                 pack(sections[2:]))
        sections.append(sealed)
    body = pack(sections)
    return body + sign(SNAPSHOT_DOMAIN + room_id + body)


def _seal_scene(content: SceneContent, priv: PrivateContent, seal: SnapshotSeal,
                room_id: bytes, signer: bytes, change_index: dict[bytes, int],
                public: bytes) -> list[Any]:
    """The sealed section of a reader's snapshot (see ``meshnode.crdt.snapshot``)."""
    inner_keys, k = _indexer()
    rows = _scene_rows(content, k, change_index)
    name = None if priv.name is None else [change_index[priv.name[0]], priv.name[1]]
    voided = [[change_index[c], r] for c, r in priv.voided if c in change_index]
    plain = pack([list(inner_keys), *rows, name, voided, [list(p) for p in priv.secrets]])
    wraps, nonce, ct = seal_section(seal, room_id, signer, plain,
                                    seal_aad(room_id, seal.epoch_id, public))
    return [seal.epoch_id, wraps, nonce, ct]

