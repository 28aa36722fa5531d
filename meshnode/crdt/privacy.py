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

``PrivateRoom`` is one chain of classes, a file each: ``PrivateRules`` (``private_rules``:
the public rules, the declared state), ``PrivateContentLayer`` (``private_content``: the
content layer, sealing on commit) and ``PrivateRoom`` (here: reading, snapshots' private
part, ``rotate`` and ``share``).
"""

import os
from collections.abc import Mapping
from typing import Any

from meshnode.crdt.content import EpochRecord, PrivateContent
from meshnode.crdt.editing import PrivateBatch
from meshnode.crdt.epochs import Epoch
from meshnode.crdt.private_content import PrivateContentLayer as PrivateContentLayer
from meshnode.crdt.private_content import _bucket_fill as _bucket_fill
from meshnode.crdt.private_rules import ROTATION_MARGIN_BYTES as ROTATION_MARGIN_BYTES
from meshnode.crdt.private_rules import SCENE_CODES as SCENE_CODES
from meshnode.crdt.private_rules import SEALABLE_CODES as SEALABLE_CODES
from meshnode.crdt.private_rules import Node as Node
from meshnode.crdt.private_rules import PrivatePlan as PrivatePlan
from meshnode.crdt.private_rules import PrivateRules as PrivateRules
from meshnode.crdt.quota import entity_quota
from meshnode.crdt.results import PermissionDenied, Rejected, WaitingForKey
from meshnode.crdt.roles import (
    READER_ROLES,
    ROLE_ADMIN,
    ROLE_EDITOR,
    ROLE_HOST,
    ROLE_NONE,
    ROLE_OWNER,
)
from meshnode.crdt.scene_rules import judge_scene_ops
from meshnode.crdt.sealing import derived_key
from meshnode.crdt.snapshot_seal import SnapshotSeal
from meshnode.crdt.tree import Stamp


class PrivateRoom(PrivateContentLayer):
    """The private-room part of ``SceneReplica`` (its base; the state lives in the replica)."""

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


def default_random_bytes(n: int) -> bytes:
    """Epoch secrets and nonces must be unpredictable: the OS's randomness by default (a
    simulation may pass a seeded source to ``SceneReplica(random_bytes=...)``)."""
    return os.urandom(n)


__all__ = ["ROLE_HOST", "ROLE_NONE", "PrivateRoom", "WaitingForKey", "default_random_bytes"]
