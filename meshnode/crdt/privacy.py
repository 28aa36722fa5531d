"""Private rooms in the replica: the public key rules, the content layer, sealing on commit.

A mixin of ``SceneReplica`` (like ``LocalEdits``), active when the genesis carries the private
flag. Validation is split in two (docs/protocol.md, "Private rooms"):

* **public verdict**, on every replica with the same code: ``SceneReplica._integrate`` plus
  :meth:`PrivateRoom._judge_private` (rules R1-R5 below). It alone decides what enters the
  DAG, so blind hosts and readers hold the same DAG, role book and epoch book;
* **content effect**, for key holders: :meth:`PrivateRoom._process_content` decrypts a
  ``SEALED`` payload and judges its scene ops against the change's causal past. A bad payload
  is *voided* (no effect, counted with its reason) and nothing cascades. Content is processed
  in causal order, and waits (``blocked``) for its key or an ancestor's content.

Public rules:

* R1 ``rotation_recipients``: a ``ROTATE`` wraps to exactly the readers as of its change (its
  causal past plus its own role ops), author included, each once;
* R2 ``share_to_non_reader`` / ``unknown_epoch``: a ``SHARE`` goes to a reader other than
  its author, and names only epochs in its causal past;
* R3 ``unknown_epoch``: a ``SEALED`` op's epoch is in the change's causal past (or created by
  the change itself);
* R4 ``stale_epoch``: every recipient of that epoch is still a reader as of the change;
* R5: only editors and above write ``SEALED``/``ROTATE`` (``viewer_cannot_edit``); a host
  writes only proof-carrying ``ROLE`` ops (``host_needs_proof``); scene ops and ``NAME``
  never appear in clear (``unsealed_content``); one ``SEALED``/``ROTATE`` per change at most
  (``duplicate_private_op``).
"""

import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from meshnode.crdt.clock import hlc_millis
from meshnode.crdt.content import EpochRecord, PrivateContent, SceneContent
from meshnode.crdt.editing import LocalEdits, PrivateBatch
from meshnode.crdt.epochs import Epoch, EpochBook
from meshnode.crdt.graph import ChangeGraph
from meshnode.crdt.member_keys import unwrap, wrap, x25519_private
from meshnode.crdt.quota import entity_quota
from meshnode.crdt.redemption import check_proof
from meshnode.crdt.results import PermissionDenied, Rejected, WaitingForKey
from meshnode.crdt.revocation import RevocationBook
from meshnode.crdt.roles import (
    READER_ROLES,
    ROLE_ADMIN,
    ROLE_EDITOR,
    ROLE_HOST,
    ROLE_NONE,
    ROLE_OWNER,
    RoleBook,
    may_set_role,
)
from meshnode.crdt.scene_rules import SceneMove, SceneSet, judge_scene_ops
from meshnode.crdt.sealing import (
    back_aad,
    commitment,
    derived_key,
    pack_secrets,
    seal_aad,
    share_info,
    split_secrets,
    unpad,
    wrap_info,
)
from meshnode.crdt.snapshot_seal import SnapshotSeal
from meshnode.crdt.tree import Stamp
from meshnode.identity import Identity
from protocol.change import (
    OP_CREATE,
    OP_DELETE,
    OP_MOVE,
    OP_ROLE,
    OP_SET,
    Change,
    check_ops,
    decode_change,
)
from protocol.errors import DecodeError
from protocol.limits import Limits
from protocol.msgpack_io import pack, unpack
from protocol.private_ops import OP_NAME, OP_ROTATE, OP_SEALED, OP_SHARE, SECRET_BYTES

Node = tuple[bytes, int]
SCENE_CODES = frozenset({OP_CREATE, OP_SET, OP_MOVE, OP_DELETE})
SEALABLE_CODES = SCENE_CODES | {OP_NAME}
ROTATION_MARGIN_BYTES = 16 * 1024
"""What a private room's batch leaves free in a change for the ROTATE, SHARE and sealing
overhead (about 90 bytes per reader, 64-1,024 of padding)."""


@dataclass(slots=True)
class PrivatePlan:
    """The private ops of one change, as judged by the public rules."""

    sealed: list[Any] | None = None
    rotate: list[Any] | None = None
    recipients: frozenset[bytes] = frozenset()
    shares: list[tuple[bytes, list[Any]]] = field(default_factory=list)
    lowering: list[bytes] = field(default_factory=list)
    my_wrap: bytes | None = None


class PrivateRoom(LocalEdits):
    """The private-room part of ``SceneReplica`` (its base; the state lives in the replica)."""

    _me: bytes
    _identity: Identity
    _roles: RoleBook
    _graph: ChangeGraph
    _revocation: RevocationBook
    _equivocators: set[bytes]
    _creation: dict[Node, int]
    _created_by: dict[Node, list[bytes]]
    _epochs: EpochBook | None
    _x25519: X25519PrivateKey | None
    _random_bytes: Callable[[int], bytes]
    _private_batch: PrivateBatch | None
    _base: "SceneContent | None"
    room_id: bytes
    room_name: str
    limits: Limits

    def _scene_effect(self, stamp: Stamp, seq: int, created: dict[Node, Node],
                      sets: list[SceneSet], moves: list[SceneMove], dead: bool) -> None:
        raise NotImplementedError  # SceneReplica's

    # ------------------------------------------------------------------ reading

    @property
    def private(self) -> bool:
        """True for a private room (sealed scene; its genesis carries the private flag)."""
        return self._epochs is not None

    @property
    def readable(self) -> bool:
        """True if this replica can read the whole scene: a room that is not private, or a
        private room where the local identity is a reader and no content waits for a key."""
        ep = self._epochs
        if ep is None:
            return True
        return (self._roles.current_role(self._me) in READER_ROLES and not ep.blocked
                and all(e in ep.secrets for e in ep.epochs) and not self.scene_missing)

    @property
    def scene_missing(self) -> bool:
        """True if this replica started from a private room's snapshot without its scene (it
        was blind then: a host, an outsider, a member admitted later): the scene before that
        snapshot is not here even once it holds keys. A reader in that state loads the
        history (or a snapshot sealed to it) instead; it writes no sealed snapshot."""
        base = self._base
        return base is not None and base.private is not None and not base.private.opened

    def is_reader(self, member: bytes | None = None) -> bool:
        """True if ``member`` (default: the local identity) is a key recipient now (viewer,
        editor, admin or owner; not a host)."""
        return self._roles.current_role(self._me if member is None else member) in READER_ROLES

    def privacy_counters(self) -> dict[str, Any]:
        """Metrics of a private room: ``sealed_changes``, ``voided`` (reason -> count),
        ``waiting_for_key``, ``epochs``, ``epochs_held``. Empty for other rooms."""
        return {} if self._epochs is None else self._epochs.counters()

    def voided(self, change_id: bytes) -> str | None:
        """Why a change's sealed payload has no effect here (None: it has, or is not known,
        or is not processed yet). Only key holders void payloads."""
        return None if self._epochs is None else self._epochs.voided.get(change_id)

    def epoch_ids(self) -> list[bytes]:
        """Every epoch of the room (public)."""
        return [] if self._epochs is None else sorted(self._epochs.epochs)

    def epoch_book_view(self) -> dict[bytes, tuple[bytes, int, frozenset[bytes], bytes]]:
        """The public epoch book, ``epoch ID -> (author, seq, recipients, commitment)``: equal
        on every replica holding the same changes, blind or not."""
        if self._epochs is None:
            return {}
        return {e.epoch_id: (e.author, e.seq, e.recipients, e.commitment)
                for e in self._epochs.epochs.values()}

    def epoch_key(self, epoch_id: bytes, purpose: str) -> bytes | None:
        """A held epoch's derived key (``"presence"`` or ``"snapshot"``) for the node to seal
        presence or snapshots; None if the secret is not held."""
        ep = self._epochs
        secret = None if ep is None else ep.secrets.get(epoch_id)
        return None if secret is None else derived_key(secret, self.room_id, purpose)

    def epoch_secret(self, epoch_id: bytes) -> bytes | None:
        """A held epoch's secret (None if not held): what a person's page needs to check a
        change its node sealed for it (``meshnode.crdt.authoring``; docs/protocol.md,
        "Browser signing in private rooms")."""
        ep = self._epochs
        return None if ep is None else ep.secrets.get(epoch_id)

    def judge_sealable(self, plain: bytes, author: bytes, deps: list[bytes]) -> str | None:
        """Would the sealed payload ``plain`` (``[actors, names, ops]``) of a change by
        ``author`` on ``deps`` take effect (not be voided) at every key holder? None if so,
        else the reason it would be voided. Nothing is changed."""
        block = self._decode_payload(plain, author)
        if block is None:
            return "schema"
        actors, names, ops = block
        graph = self._graph
        vv = graph.past_vv(deps)
        book = self._roles

        def in_past(target: bytes) -> bool:
            return graph.in_past(target, deps)

        role = book.role_in_past(author, vv, in_past, self._equivocators,
                                 with_inert=bool(book.inert))

        def other(_idx: int, _o: list[Any]) -> None:
            raise Rejected("schema")  # a person's draft carries scene ops only

        try:
            judge_scene_ops(
                ops, author, actors, names, admin=ROLE_ADMIN <= role <= ROLE_OWNER,
                quota=entity_quota(role), creation=self._creation, created_by=self._created_by,
                equivocators=self._equivocators, graph=graph, deps=deps, vv=vv, other=other)
        except Rejected as rej:
            return rej.reason
        return None

    def current_epoch(self) -> bytes | None:
        """The epoch this replica would seal under now (None: it would rotate first)."""
        if self._epochs is None:
            return None
        return self._usable_epoch(dict(self._graph.vv_all), sorted(self._graph.heads), [])

    def keyless_readers(self) -> list[bytes]:
        """Readers that do not hold the latest epochs this replica holds (not recipients and
        not shared them): whom a reader should ``share`` to (after a random delay, so that
        not every online reader does)."""
        ep = self._epochs
        if ep is None or not self.is_reader():
            return []
        frontier = self._frontier(dict(self._graph.vv_all))
        out = []
        for member in self._reader_set(dict(self._graph.vv_all), sorted(self._graph.heads), []):
            if member == self._me:
                continue
            have = ep.shared.get(member, set())
            if any(member not in ep.epochs[e].recipients and e not in have for e in frontier):
                out.append(member)
        return sorted(out)

    def key_holders(self) -> dict[bytes, bool]:
        """Every current reader -> whether the room's newest epoch (by clock stamp) was
        wrapped or shared to it: public data, so a blind host can show it too ("keys ok" or
        "waiting for a reader to come online"). Empty for rooms that are not private."""
        ep = self._epochs
        if ep is None:
            return {}
        newest = max(ep.epochs.values(), key=lambda e: (e.hlc, e.epoch_id), default=None)
        return {m: newest is not None and (m in newest.recipients
                                           or newest.epoch_id in ep.shared.get(m, set()))
                for m, r in self._roles.members().items() if r in READER_ROLES}

    # ------------------------------------------------------------------ snapshots

    def _snapshot_seal(self) -> SnapshotSeal | None:
        """How this replica seals its snapshot (docs/protocol.md, "Sealed snapshots"): under
        the epoch it would seal a change under now, wrapped to every current reader. None if
        it cannot: not ``readable`` (not a reader, an epoch's secret or some content still
        waiting for a key), or no usable epoch (the next commit rotates first)."""
        ep = self._epochs
        if ep is None or not self.readable:
            return None
        vv = dict(self._graph.vv_all)
        heads = sorted(self._graph.heads)
        eid = self._usable_epoch(vv, heads, [])
        if eid is None:
            return None
        readers = self._reader_set(vv, heads, [])
        return SnapshotSeal(eid, ep.secrets[eid], tuple(sorted(readers)), self._random_bytes)

    def _export_private(self, listed: set[bytes], opened: bool) -> PrivateContent | None:
        """The epoch book as plain data; with ``opened``, the readers-only part too
        (``listed``: the changes the snapshot indexes; others are left out of ``sealed`` and
        ``voided``, which only count them)."""
        ep = self._epochs
        if ep is None:
            return None
        name = ep.name
        return PrivateContent(
            epochs=tuple(EpochRecord(e.epoch_id, e.author, e.seq, e.hlc,
                                     tuple(sorted(e.recipients)), e.commitment, e.back_nonce,
                                     e.back) for e in ep.epochs.values()),
            lowering=tuple(ep.lowering),
            shared=tuple((m, tuple(sorted(eids))) for m, eids in sorted(ep.shared.items())),
            sealed=tuple(sorted(c for c in ep.sealed if c in listed)),
            opened=opened,
            name=None if not opened or name is None else (name[0][2], name[1]),
            voided=tuple(sorted((c, r) for c, r in ep.voided.items() if c in listed))
            if opened else (),
            secrets=tuple(sorted(ep.secrets.items())) if opened else (),
        )

    def _import_private(self, pc: PrivateContent, stamps: Mapping[bytes, Stamp]) -> None:
        """Fill the (reset) epoch book from ``pc``; raises ``KeyError``/``ValueError`` if it
        is inconsistent with the imported history."""
        ep = self._epochs
        if ep is None:
            raise ValueError("an epoch book for a room that is not private")
        key = self._key
        meta = self._graph.meta
        for e in pc.epochs:
            if e.epoch_id not in meta:
                raise KeyError("an epoch names an unknown change")
            ep.add(Epoch(e.epoch_id, key(e.author), e.seq, e.hlc,
                         frozenset(key(r) for r in e.recipients), e.commitment, e.back_nonce,
                         e.back))
        ep.lowering = [(key(m), key(a), seq) for m, a, seq in pc.lowering]
        ep.shared = {key(m): set(eids) for m, eids in pc.shared}
        ep.sealed = set(pc.sealed)
        if pc.opened:
            ep.voided = dict(pc.voided)
            if pc.name is not None:
                ep.name = (stamps[pc.name[0]], pc.name[1])
                self.room_name = pc.name[1]
            for eid, secret in pc.secrets:
                ep.learn(eid, secret)

    # ------------------------------------------------------------------ local API

    def rotate(self) -> None:
        """Start a new epoch in the next commit (editors and above who are readers).
        Removing a reader rotates by itself, and so does sealing when the latest epoch is
        stale; this is for scheduled rotation."""
        self._check_writer(rotate=True)
        self._pending_private().rotate = True

    def share(self, member: str | bytes) -> None:
        """Give ``member`` (a reader without keys) the latest epochs' secrets in the next
        commit: one HPKE wrap with back-links to all history."""
        self._check_writer(rotate=False)
        key = self._member_key(member)
        if key == self._me or not self.is_reader(key):
            raise ValueError("share only to another member who is a reader")
        if not self._frontier(dict(self._graph.vv_all)):
            raise PermissionDenied("this replica holds no epoch secret to share")
        batch = self._pending_private()
        if key not in batch.shares:
            batch.shares.append(key)

    def _check_writer(self, *, rotate: bool) -> None:
        if self._epochs is None:
            raise ValueError("rotate() and share() are for private rooms")
        role = self._roles.current_role(self._me)
        if role not in READER_ROLES or (rotate and not ROLE_EDITOR <= role <= ROLE_OWNER):
            raise PermissionDenied("only readers share keys, and editors and above rotate")

    def _pending_private(self) -> PrivateBatch:
        self._touch_batch()
        if self._private_batch is None:
            self._private_batch = PrivateBatch()
        return self._private_batch

    def _check_sealable(self) -> None:
        """Called before a scene edit in a private room (``LocalEdits._require``)."""
        ep = self._epochs
        if ep is not None and self.scene_missing:
            raise WaitingForKey(
                "this replica started from a snapshot of the room without its scene: load "
                "the history (or a snapshot sealed to this member) before editing")
        if ep is not None and ep.blocked:
            raise WaitingForKey(
                f"{ep.waiting_for_key()} change(s) here wait for an epoch key: scene edits "
                "wait until a reader shares it (SHARE)")

    # ------------------------------------------------------------------ public rules

    def _reader_set(self, vv: Mapping[bytes, int], deps: list[bytes],
                    own: Iterable[tuple[bytes, int]]) -> set[bytes]:
        """The readers as of a change with causal past ``vv``/``deps`` whose own role ops are
        ``own`` ((member, new role), in order)."""
        book = self._roles
        graph = self._graph
        eq = self._equivocators

        def in_past(target: bytes) -> bool:
            return graph.in_past(target, deps)

        roles = {m: book.role_in_past(m, vv, in_past, eq, with_inert=True)
                 for m in {book.owner, *book.grants, *book.inert}}
        for member, role in own:
            roles[member] = role
        return {m for m, r in roles.items() if r in READER_ROLES}

    def _epoch_in_past(self, epoch: Epoch, vv: Mapping[bytes, int], deps: list[bytes]) -> bool:
        if vv.get(epoch.author, 0) < epoch.seq:
            return False
        if epoch.author in self._equivocators:
            return self._graph.in_past(epoch.epoch_id, deps)
        return True

    def _lowered(self, own: list[tuple[bytes, int]], vv: Mapping[bytes, int],
                 deps: list[bytes]) -> list[bytes]:
        """Members whom the change's own role ops take from reader to non-reader."""
        graph = self._graph
        return [m for m, r in own if r not in READER_ROLES and self._roles.role_in_past(
            m, vv, lambda t: graph.in_past(t, deps), self._equivocators, with_inert=True)
            in READER_ROLES]

    def _stale(self, epoch: Epoch, vv: Mapping[bytes, int], deps: list[bytes],
               lowered: list[bytes]) -> bool:
        """R4: is there a removal (a reader made non-reader) in this change's causal past, or
        in the change itself, that ``epoch`` was not created after? Then a removed member may
        hold the epoch's key (as a recipient, or through a ``SHARE``)."""
        if lowered:
            return True
        ep = self._epochs
        assert ep is not None
        if not ep.lowering:
            return False
        evv = self._graph.past_vv((epoch.epoch_id,))
        book = self._roles
        graph = self._graph
        for member, g_author, g_seq in ep.lowering:
            if vv.get(g_author, 0) >= g_seq and evv.get(g_author, 0) < g_seq:
                role = book.role_in_past(member, vv, lambda t: graph.in_past(t, deps),
                                         self._equivocators, with_inert=True)
                if role not in READER_ROLES:
                    return True
        return False

    def _check_host_grant(self, op: list[Any], member: bytes, target_role: int, hlc: int,
                          vv: Mapping[bytes, int], deps: list[bytes]) -> bytes:
        """A proof-carrying grant (``meshnode.crdt.redemption``): the issuer, or Rejected."""
        terms, reason = check_proof(op[6], self.room_id, op[4], op[2], op[5], member)
        if terms is None:
            raise Rejected(reason)
        if hlc_millis(hlc) > terms.expires_ms:
            raise Rejected("invite_expired")
        issuer = self._key(terms.issuer)
        graph = self._graph
        irole = self._roles.role_in_past(issuer, vv, lambda t: graph.in_past(t, deps),
                                         self._equivocators, with_inert=True)
        if not may_set_role(irole, target_role, op[2]):
            raise Rejected("issuer_may_not_grant")
        return issuer

    def _judge_private(self, ch: Change, author: bytes, role: int, vv: Mapping[bytes, int],
                       actors: list[bytes], roles: list[tuple[int, bytes, list[Any], int]],
                       private_ops: list[list[Any]]) -> PrivatePlan:
        """Rules R1-R5 for one change of a private room; raises ``Rejected``."""
        ep = self._epochs
        assert ep is not None
        plan = PrivatePlan()
        deps = ch.deps
        own = [(member, op[2]) for _, member, op, _ in roles]
        plan.lowering = self._lowered(own, vv, deps)
        readers: set[bytes] | None = None
        for op in private_ops:
            code = op[0]
            if code in (OP_SEALED, OP_ROTATE):
                if not ROLE_EDITOR <= role <= ROLE_OWNER:
                    raise Rejected("viewer_cannot_edit")
                if (plan.sealed if code == OP_SEALED else plan.rotate) is not None:
                    raise Rejected("duplicate_private_op")
                if code == OP_SEALED:
                    plan.sealed = op
                else:
                    plan.rotate = op
            elif code == OP_SHARE:
                recipient = actors[op[1]]
                if readers is None:
                    readers = self._reader_set(vv, deps, own)
                if recipient not in readers or recipient == author:
                    raise Rejected("share_to_non_reader")
                for eid in op[2]:
                    epoch = ep.epochs.get(eid)
                    if epoch is None or not self._epoch_in_past(epoch, vv, deps):
                        raise Rejected("unknown_epoch")
                plan.shares.append((recipient, op))
            else:
                raise Rejected("unsealed_content")  # NAME in clear
        if plan.rotate is not None:
            got: set[bytes] = set()
            for r, w in plan.rotate[2]:
                member = author if r is None else actors[r]
                if member in got:
                    raise Rejected("rotation_recipients")
                got.add(member)
                if member == self._me:
                    plan.my_wrap = w
            if readers is None:
                readers = self._reader_set(vv, deps, own)
            if got != readers:
                raise Rejected("rotation_recipients")
            plan.recipients = frozenset(got)
        if plan.sealed is not None:
            eid = plan.sealed[1]
            if not eid:
                if plan.rotate is None:
                    raise Rejected("unknown_epoch")
            else:
                epoch = ep.epochs.get(eid)
                if epoch is None or not self._epoch_in_past(epoch, vv, deps):
                    raise Rejected("unknown_epoch")
                if self._stale(epoch, vv, deps, plan.lowering):
                    raise Rejected("stale_epoch")
        return plan

    # ------------------------------------------------------------------ after acceptance

    def _record_private(self, ch: Change, cid: bytes, author: bytes, plan: PrivatePlan) -> None:
        """Book an accepted change of a private room, learn any key it gives this replica,
        and process (or block) its content."""
        ep = self._epochs
        assert ep is not None
        me = self._me
        learned: list[tuple[bytes, bytes]] = []
        rot = plan.rotate
        if rot is not None:
            ep.add(Epoch(cid, author, ch.seq, ch.hlc, plan.recipients, rot[1], rot[3], rot[4]))
            if plan.my_wrap is not None and cid not in ep.secrets:
                secret = unwrap(plan.my_wrap, self._private_key(),
                                wrap_info(self.room_id, author, ch.seq, me))
                if secret is not None and len(secret) == SECRET_BYTES:
                    learned.append((cid, secret))
                else:
                    ep.bad_keys.add(cid)
        for member in plan.lowering:
            ep.lowering.append((member, author, ch.seq))
        for recipient, op in plan.shares:
            ep.shared.setdefault(recipient, set()).update(op[2])
            if recipient == me:
                plain = unwrap(op[3], self._private_key(),
                               share_info(self.room_id, author, ch.seq, me))
                secrets = None if plain is None else split_secrets(plain, len(op[2]))
                if secrets is not None:
                    learned.extend(zip(op[2], secrets, strict=True))
        if plan.sealed is not None:
            ep.sealed.add(cid)
        new_key = False
        for eid, secret in learned:
            new_key = ep.learn(eid, secret) or new_key
        blocked = ep.blocked
        if (blocked and any(d in blocked for d in ch.deps)) or (
            plan.sealed is not None and not ep.held(plan.sealed[1] or cid)
        ):
            blocked[cid] = None
        elif plan.sealed is not None:
            self._process_content(ch, cid, author, plan.sealed)
        if new_key and blocked:
            self._drain()

    def _private_key(self) -> X25519PrivateKey:
        if self._x25519 is None:
            self._x25519 = x25519_private(self._identity)
        return self._x25519

    def _drain(self) -> None:
        """Process blocked content whose key and ancestors' content are now there, in causal
        order (one pass: ``blocked`` is in causal order)."""
        ep = self._epochs
        assert ep is not None
        blocked = ep.blocked
        graph = self._graph
        for cid in list(blocked):
            p = graph.index[cid]
            if any(d in blocked for d in graph.deps_at(p)):
                continue
            if cid in ep.sealed:
                ch = decode_change(graph.raw[cid], self.limits, known_id=cid)
                op = next(o for o in ch.ops if o[0] == OP_SEALED)
                if not ep.held(op[1] or cid):
                    continue
                del blocked[cid]
                self._process_content(ch, cid, graph.author_at(p), op)
            else:
                del blocked[cid]

    def _void(self, cid: bytes, reason: str) -> None:
        ep = self._epochs
        assert ep is not None
        ep.voided[cid] = reason

    def _process_content(self, ch: Change, cid: bytes, author: bytes, op: list[Any]) -> None:
        """Decrypt a sealed payload and apply it, or void it with a reason."""
        ep = self._epochs
        assert ep is not None
        aead = ep.content_aead(op[1] or cid)
        assert aead is not None
        try:
            padded = aead.decrypt(op[2], op[3], seal_aad(self.room_id, ch.author, ch.seq,
                                                          ch.hlc, op[1]))
        except (InvalidTag, ValueError):
            return self._void(cid, "undecryptable")
        plain = unpad(padded)
        if plain is None:
            return self._void(cid, "bad_padding")
        block = self._decode_payload(plain, author)
        if block is None:
            return self._void(cid, "schema")
        actors, names, ops = block
        graph = self._graph
        deps = ch.deps
        vv = graph.past_vv(deps)
        book = self._roles
        eq = self._equivocators

        def in_past(target: bytes) -> bool:
            return graph.in_past(target, deps)

        role = book.role_in_past(author, vv, in_past, eq, with_inert=bool(book.inert))
        admin = ROLE_ADMIN <= role <= ROLE_OWNER
        name: list[str] = []

        def other(_idx: int, o: list[Any]) -> None:
            if o[0] != OP_NAME:
                raise Rejected("schema")
            if not admin:
                raise Rejected("name_not_allowed")
            name.append(o[1])

        try:
            created, sets, moves, foreign = judge_scene_ops(
                ops, author, actors, names, admin=admin, quota=entity_quota(role),
                creation=self._creation, created_by=self._created_by, equivocators=eq,
                graph=graph, deps=deps, vv=vv, other=other)
        except Rejected as rej:
            return self._void(cid, rej.reason)
        stamp: Stamp = [ch.hlc, author, cid]
        dead = cid in self._revocation.dead
        if not dead and (book.inert or self._revocation.dead):
            live = book.role_in_past(author, vv, in_past, eq)
            if (not ROLE_EDITOR <= live <= ROLE_OWNER
                    or ((foreign or name) and not ROLE_ADMIN <= live <= ROLE_OWNER)):
                self._void(cid, "authority_revoked")
                dead = True
        self._scene_effect(stamp, ch.seq, created, sets, moves, dead)
        if name and not dead and (ep.name is None or ep.name[0] <= stamp):
            ep.name = (stamp, name[-1])
            self.room_name = name[-1]
        return None

    def _decode_payload(self, plain: bytes,
                        author: bytes) -> tuple[list[bytes], list[str], list[Any]] | None:
        """``[actors, names, ops]`` of a decrypted payload, shape-checked; None if bad."""
        limits = self.limits
        try:
            block = unpack(plain, limits, limits.max_change_bytes, "sealed payload")
            if type(block) is not list or len(block) != 3:
                return None
            actors, names, ops = block
            if type(actors) is not list or type(names) is not list or type(ops) is not list:
                return None
            if (not ops or len(ops) > limits.max_ops_per_change
                    or len(actors) > limits.max_actors_per_change
                    or len(names) > limits.max_names_per_change):
                return None
            for a in actors:
                if type(a) is not bytes or len(a) != 32 or a == author:
                    return None
            if len(set(actors)) != len(actors):
                return None
            for nm in names:
                if type(nm) is not str or not nm or len(nm) > limits.max_name_chars:
                    return None
            if len(set(names)) != len(names):
                return None
            for o in ops:
                if type(o) is not list or not o or o[0] not in SEALABLE_CODES:
                    return None
            check_ops(ops, len(actors), len(names), limits)
        except DecodeError:
            return None
        return [self._key(a) for a in actors], names, ops

    # ------------------------------------------------------------------ sealing on commit

    def _frontier(self, vv: Mapping[bytes, int]) -> list[bytes]:
        """Held epochs in the past ``vv`` that no other such epoch has in its past."""
        ep = self._epochs
        assert ep is not None
        held = [ep.epochs[e] for e in ep.secrets
                if e in ep.epochs and vv.get(ep.epochs[e].author, 0) >= ep.epochs[e].seq]
        graph = self._graph
        out = []
        for e in held:
            if not any(o is not e and graph.seq_in(o.epoch_id, e.author) >= e.seq
                       for o in held):
                out.append(e.epoch_id)
        return sorted(out)

    def _usable_epoch(self, vv: Mapping[bytes, int], deps: list[bytes],
                      lowered: list[bytes]) -> bytes | None:
        """The latest held epoch in the past that is not stale (None: none is)."""
        ep = self._epochs
        assert ep is not None
        best: Epoch | None = None
        for eid in ep.secrets:
            epoch = ep.epochs.get(eid)
            if (epoch is None or not self._epoch_in_past(epoch, vv, deps)
                    or (best is not None and (epoch.hlc, eid) <= (best.hlc, best.epoch_id))):
                continue
            if not self._stale(epoch, vv, deps, lowered):
                best = epoch
        return None if best is None else best.epoch_id

    def _seal_batch(
        self, ops: list[Any], batch_actors: list[bytes], names: list[str], vv: Mapping[bytes, int],
        deps: list[bytes], seq: int, hlc: int,
    ) -> tuple[list[bytes], list[Any], dict[str, Any]]:
        """Turn a batch into a private room's public ops: role ops in clear (members in a
        public actors table), then ROTATE, SHARE and SEALED as needed. Returns
        ``(public actors, ops, what _commit_private books)``."""
        ep = self._epochs
        assert ep is not None
        me = self._me
        room = self.room_id
        rnd = self._random_bytes
        extra = self._private_batch or PrivateBatch()
        public: list[Any] = []
        sealed_ops: list[Any] = []
        pub_actors: list[bytes] = []
        index: dict[bytes, int] = {}

        def pidx(k: bytes) -> int:
            i = index.get(k)
            if i is None:
                i = index[k] = len(pub_actors)
                pub_actors.append(k)
            return i

        own: list[tuple[bytes, int]] = []
        for op in ops:
            if op[0] in SEALABLE_CODES:
                sealed_ops.append(op)
            elif op[0] == OP_ROLE:
                member = batch_actors[op[1]]
                own.append((member, op[2]))
                public.append([op[0], pidx(member), *op[2:]])
            else:
                public.append(op)
        role = self._roles.role_in_past(me, vv)
        readers = self._reader_set(vv, deps, own)
        lowering = self._lowered(own, vv, deps)
        rotate = extra.rotate or (bool(lowering) and ROLE_EDITOR <= role <= ROLE_OWNER
                                  and me in readers)
        epoch_ref: bytes | None = None
        if sealed_ops and not rotate:
            epoch_ref = self._usable_epoch(vv, deps, lowering)
            rotate = epoch_ref is None
        booked: dict[str, Any] = {"sealed": bool(sealed_ops), "recipients": frozenset(),
                                  "secret": None, "lowering": lowering}
        key: AESGCM | None = None
        if rotate:
            secret = rnd(SECRET_BYTES)
            wraps = [[None if m == me else pidx(m),
                      wrap(secret, m, wrap_info(room, me, seq, m))] for m in sorted(readers)]
            content = AESGCM(derived_key(secret, room, "content"))
            back_pairs = [(e, ep.secrets[e]) for e in self._frontier(vv)]
            back_nonce = rnd(12)
            back = content.encrypt(back_nonce, pack_secrets(back_pairs), back_aad(room, me, seq))
            public.append([OP_ROTATE, commitment(secret, room), wraps, back_nonce, back])
            booked.update(secret=secret, recipients=frozenset(readers), commitment=public[-1][1],
                          back_nonce=back_nonce, back=back)
            key = content
            epoch_ref = b""
        shares = list(extra.shares)
        if me in readers and self._frontier(vv):
            # A reader who grants a reader role shares the keys in the same change.
            shares += [m for m, r in own if r in READER_ROLES and m not in shares
                       and self._roles.role_in_past(m, vv) not in READER_ROLES]
        for member in shares:
            eids = self._frontier(vv)
            plain = b"".join(ep.secrets[e] for e in eids)
            public.append([OP_SHARE, pidx(member), eids,
                           wrap(plain, member, share_info(room, me, seq, member))])
        if sealed_ops:
            assert epoch_ref is not None
            if key is None:
                key = ep.content_aead(epoch_ref)
                assert key is not None
            nonce = rnd(12)
            payload = pack([list(batch_actors), list(names), sealed_ops])
            padded = payload + b"\x80" + bytes(_bucket_fill(len(payload)))
            public.append([OP_SEALED, epoch_ref, nonce,
                           key.encrypt(nonce, padded, seal_aad(room, me, seq, hlc, epoch_ref))])
            names_used = [o[1] for o in sealed_ops if o[0] == OP_NAME]
            booked["name"] = names_used[-1] if names_used else None
        booked["shares"] = [(m, list(self._frontier(vv))) for m in shares]
        return pub_actors, public, booked

    def _commit_private(self, cid: bytes, seq: int, hlc: int, deps: list[bytes],
                        booked: dict[str, Any]) -> None:
        """Book a just-committed private change as a peer's would be booked (its content is
        already applied locally)."""
        ep = self._epochs
        assert ep is not None
        me = self._me
        self._private_batch = None
        if booked["secret"] is not None:
            ep.add(Epoch(cid, me, seq, hlc, booked["recipients"], booked["commitment"],
                         booked["back_nonce"], booked["back"]))
            ep.secrets[cid] = booked["secret"]
        for member in booked["lowering"]:
            ep.lowering.append((member, me, seq))
        for member, eids in booked["shares"]:
            ep.shared.setdefault(member, set()).update(eids)
        if booked["sealed"]:
            ep.sealed.add(cid)
            name = booked.get("name")
            if name is not None:
                stamp: Stamp = [hlc, me, cid]
                ep.name = (stamp, name)
                self.room_name = name
        if ep.blocked and any(d in ep.blocked for d in deps):
            ep.blocked[cid] = None  # no content (sealing waits for keys): keeps the order


def _bucket_fill(n: int) -> int:
    from meshnode.crdt.sealing import bucket

    return bucket(n) - n - 1


def default_random_bytes(n: int) -> bytes:
    """Epoch secrets and nonces must be unpredictable: the OS's randomness by default (a
    simulation may pass a seeded source to ``SceneReplica(random_bytes=...)``)."""
    return os.urandom(n)


__all__ = ["ROLE_HOST", "ROLE_NONE", "PrivateRoom", "WaitingForKey", "default_random_bytes"]
