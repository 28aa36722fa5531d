"""``PrivateRules``: a private room's public key rules, judged on every replica alike.

The first class of the private-room part of ``SceneReplica``'s chain (``PrivateRoom(
PrivateContentLayer(PrivateRules(LocalEdits)))``, one file each; ``meshnode.crdt.privacy``
states the rules R1-R5): the public verdict on a change's private ops (``_judge_private``,
into a ``PrivatePlan``), a host's proof-carrying grant, the readers and epochs as of a
change's causal past, and which epoch a writer may still use. It declares the replica state
the private-room classes work on.
"""

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from meshnode.crdt.clock import hlc_millis
from meshnode.crdt.content import SceneContent
from meshnode.crdt.editing import LocalEdits, PrivateBatch
from meshnode.crdt.epochs import Epoch, EpochBook
from meshnode.crdt.graph import ChangeGraph
from meshnode.crdt.redemption import check_proof
from meshnode.crdt.results import Rejected
from meshnode.crdt.revocation import RevocationBook
from meshnode.crdt.roles import READER_ROLES, ROLE_EDITOR, ROLE_OWNER, RoleBook, may_set_role
from meshnode.crdt.scene_rules import SceneMove, SceneSet
from meshnode.crdt.tree import Stamp
from meshnode.identity import Identity
from protocol.change import OP_CREATE, OP_DELETE, OP_MOVE, OP_SET, Change
from protocol.limits import Limits
from protocol.private_ops import OP_NAME, OP_ROTATE, OP_SEALED, OP_SHARE

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



class PrivateRules(LocalEdits):
    """The public rules of ``PrivateRoom`` (see the module docstring; the state lives in the
    replica)."""

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

    # ------------------------------------------------------------------ epochs in use

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
