"""Composing a change for another author: what a node does for a person in a browser.

A browser is a thin client: its node keeps the replica. When the person edits, the node
composes the change *as the person* (author = the person's key, seq = the next of the person's
chain as this replica knows it, deps = the heads, a fresh clock stamp), checks that every
replica would accept it once signed (``SceneReplica.judge_unsigned``: roles,
``not_entity_owner``, quotas, unknown entities), and hands the page the body to check and sign
(``docs/protocol.md``, "Browser signing"). The node never signs it: a refused judgement is the
edit's refusal, with the reason the replicas would give.

Only what a page can check goes into the body: entity references are either the author's own
counters or ``[actor index, counter]`` with every actor a full 32-byte key (never the index of
a dep, whose author the page cannot know), so the page sees exactly which entities the change
touches.

``PersonDraft`` offers the four scene edits of the local editing API (``create_entity``,
``set_field``, ``move``, ``delete``), so the browser session's edit closures run on it as they
would on a replica. Sans-I/O: ``seal(now, mono)`` takes the clock readings (and, in a
private room, the AEAD nonce).

In a private room (docs/protocol.md, "Browser signing in private rooms") the node seals the
scene ops itself, under the epoch it would seal its own edits under, and the draft carries what
the page needs to check the ciphertext before signing: the epoch's secret and the raw change
that created the epoch (its ID is the ``SEALED`` op's epoch reference, and it holds the
public commitment the secret must match, so the page decrypts with exactly the key every
reader uses). Only a node that reads the room can seal, and only for a person who is a
reader and may edit: a draft is the only way a page gets a secret.
"""

from collections.abc import Mapping
from typing import Any

from meshnode.crdt.ids import ROOT, EntityId
from meshnode.crdt.replica import SceneReplica
from meshnode.crdt.results import PermissionDenied
from meshnode.crdt.sealing import derived_key, seal, seal_aad
from protocol.change import OP_CREATE, OP_DELETE, OP_MOVE, OP_SET, Op
from protocol.msgpack_io import pack
from protocol.private_ops import AEAD_NONCE_BYTES, OP_SEALED

__all__ = ["DraftRefused", "PersonDraft", "SealedDraft"]

Node = tuple[bytes, int]


class DraftRefused(PermissionDenied):
    """The change would not be accepted (``reason``: the replicas' stable label)."""

    def __init__(self, reason: str, text: str) -> None:
        super().__init__(text)
        self.reason = reason


class SealedDraft:
    """An unsigned change body, ready for its author to check and sign."""

    __slots__ = ("author", "body", "epoch_change", "epoch_secret", "result", "seq")

    def __init__(self, author: bytes, seq: int, body: bytes, result: object,
                 epoch_secret: bytes | None = None, epoch_change: bytes | None = None) -> None:
        self.author = author
        self.seq = seq
        self.body = body
        self.result = result
        """What the edit returned (the new entity's ID for a create)."""
        self.epoch_secret = epoch_secret
        """Private rooms: the secret of the epoch the body is sealed under (else None)."""
        self.epoch_change = epoch_change
        """Private rooms: the raw change that created that epoch (its ROTATE op holds the
        commitment the secret matches)."""


class PersonDraft:
    """One change being composed for ``author`` from ``replica``'s view (see the module
    docstring). Call the edit methods, then ``seal``."""

    def __init__(self, replica: SceneReplica, author: bytes) -> None:
        if len(author) != 32:
            raise ValueError("an author is a 32-byte public key")
        self._replica = replica
        self._author = author
        self._ops: list[Op] = []
        self._actors: list[bytes] = []
        self._names: list[str] = []
        self._counter = replica.entity_counter(author)
        self._created: set[Node] = set()

    # ------------------------------------------------------------------ references

    def _name(self, name: object) -> int:
        limit = self._replica.limits.max_name_chars
        if type(name) is not str or not name or len(name) > limit:
            raise ValueError(f"component and field names are 1..{limit} chars, not {name!r}")
        if name not in self._names:
            self._names.append(name)
        return self._names.index(name)

    def _ref(self, ent: Node) -> Any:
        if ent == ROOT:
            return None
        if ent[0] == self._author:
            return ent[1]
        if ent[0] not in self._actors:
            self._actors.append(ent[0])
        return [self._actors.index(ent[0]), ent[1]]

    def _live(self, entity: object, what: str) -> Node:
        if not isinstance(entity, tuple) or len(entity) != 2:
            raise TypeError(f"{what} must be an EntityId")
        ent: Node = (entity[0], entity[1])
        if ent == ROOT or ent in self._created or self._replica.exists(ent):
            return ent
        raise ValueError(f"{what} {EntityId(*ent)} is deleted or unknown")

    def _value(self, value: object) -> Any:
        out, _ = self._replica._prepared_value(value)
        return out

    # ------------------------------------------------------------------ edits

    def create_entity(self, parent: Node = ROOT,
                      components: Mapping[str, Mapping[str, object]] | None = None) -> EntityId:
        """Create an entity of the author's (the next counter) under ``parent``."""
        if components is not None and not isinstance(components, Mapping):
            raise TypeError("components must be a mapping of component -> {field: value}")
        par = self._live(parent, "parent")
        self._counter += 1
        ent = (self._author, self._counter)
        self._ops.append([OP_CREATE, self._counter, self._ref(par)])
        self._created.add(ent)
        for comp, fields in (components or {}).items():
            if not isinstance(fields, Mapping):
                raise TypeError(f"component {comp!r} must map field names to values")
            for field, value in fields.items():
                self._ops.append([OP_SET, self._counter, self._name(comp), self._name(field),
                                  self._value(value)])
        return EntityId(*ent)

    def set_field(self, entity: Node, component: str, field: str, value: object) -> None:
        """Set one field of a live entity."""
        ent = self._live(entity, "entity")
        if ent == ROOT:
            raise ValueError("the root has no fields")
        self._ops.append([OP_SET, self._ref(ent), self._name(component), self._name(field),
                          self._value(value)])

    def move(self, entity: Node, new_parent: Node) -> None:
        """Move an entity under ``new_parent``."""
        if entity == ROOT:
            raise ValueError("the root cannot be moved")
        ent = self._live(entity, "entity")
        par = self._live(new_parent, "new parent")
        if ent == par or self._replica.is_ancestor(ent, par):
            raise ValueError("moving an entity under itself or its descendant makes a cycle")
        self._ops.append([OP_MOVE, self._ref(ent), self._ref(par)])

    def delete(self, entity: Node) -> None:
        """Delete an entity (and its subtree)."""
        if entity == ROOT:
            raise ValueError("the root cannot be deleted")
        ent = self._live(entity, "entity")
        self._ops.append([OP_DELETE, self._ref(ent)])

    # ------------------------------------------------------------------ sealing

    def seal(self, now: float, mono: float | None, result: object = None, *,
             nonce: bytes | None = None) -> SealedDraft:
        """The unsigned body of the change, judged as every replica would judge it signed.
        A private room's draft needs a fresh random 12-byte ``nonce``.

        Raises ``DraftRefused`` with the replicas' reason (nothing may be signed), or
        ``ValueError`` if there is nothing to sign."""
        if not self._ops:
            raise ValueError("nothing to change")
        replica = self._replica
        if replica.is_private:
            return self._seal_private(now, mono, result, nonce)
        seq = replica.version_vector().get(self._author, 0) + 1
        deps = replica.heads()
        _check_heads(replica, deps)
        hlc = replica.tick_clock(now, mono)
        body = pack([self._author, seq, deps, hlc,
                     [list(self._actors), list(self._names), list(self._ops)]])
        _judge_body(replica, body)
        return SealedDraft(self._author, seq, body, result)

    def _seal_private(self, now: float, mono: float | None, result: object,
                      nonce: bytes | None) -> SealedDraft:
        replica = self._replica
        author = self._author
        if nonce is None or len(nonce) != AEAD_NONCE_BYTES:
            raise ValueError("sealing needs a fresh random 12-byte nonce")
        if not replica.is_reader():
            raise DraftRefused("node_not_reader", _EXPLAIN["node_not_reader"])
        role = replica.role_of(author)
        if role == "none":
            raise DraftRefused("not_a_member", _EXPLAIN["not_a_member"])
        if not replica.is_reader(author):
            raise DraftRefused("not_a_reader", _EXPLAIN["not_a_reader"])
        if role == "viewer":  # before any key material is touched: viewers get none
            raise DraftRefused("viewer_cannot_edit", _EXPLAIN["viewer_cannot_edit"])
        if replica.privacy_counters().get("waiting_for_key", 0):
            raise DraftRefused("waiting_for_key", _EXPLAIN["waiting_for_key"])
        epoch = replica.current_epoch()
        secret = None if epoch is None else replica.epoch_secret(epoch)
        created = None if epoch is None else replica.change_bytes(epoch)
        if epoch is None or secret is None or created is None:
            raise DraftRefused("no_usable_epoch", _EXPLAIN["no_usable_epoch"])
        seq = replica.version_vector().get(author, 0) + 1
        deps = replica.heads()
        _check_heads(replica, deps)
        plain = pack([list(self._actors), list(self._names), list(self._ops)])
        problem = replica.judge_sealable(plain, author, deps)
        if problem is not None:
            raise DraftRefused(problem, _EXPLAIN.get(problem, f"the room refuses this edit "
                                                              f"({problem})"))
        hlc = replica.tick_clock(now, mono)
        room = replica.room_id
        ct = seal(derived_key(secret, room, "content"), nonce, plain,
                  seal_aad(room, author, seq, hlc, epoch))
        body = pack([author, seq, deps, hlc, [[], [], [[OP_SEALED, epoch, nonce, ct]]]])
        _judge_body(replica, body)
        return SealedDraft(author, seq, body, result, secret, created)


def _check_heads(replica: SceneReplica, deps: list[bytes]) -> None:
    """Refuse a draft whose deps (the room's heads) are more than one change may name."""
    if len(deps) > replica.limits.max_deps:
        raise DraftRefused("too_many_heads", "the room has more heads than one change may "
                           "name: try again in a moment")


def _judge_body(replica: SceneReplica, body: bytes) -> None:
    """Refuse an unsigned body that is too large or that the room would refuse."""
    if len(body) + 64 > replica.limits.max_change_bytes:
        raise DraftRefused("too_large", "this edit is over the size of one change")
    problem = replica.judge_unsigned(body)
    if problem is not None:
        raise DraftRefused(problem, _EXPLAIN.get(problem, f"the room refuses this edit "
                                                          f"({problem})"))


_EXPLAIN = {
    "not_a_member": "you are not a member of this room (yet): ask an admin for an invite",
    "viewer_cannot_edit": "your role in this room is viewer: viewers do not edit",
    "not_entity_owner": "only the entity's creator or an admin may change it",
    "quota": "you created as many entities as your role allows in this room",
    "unknown_entity": "the entity is deleted or unknown",
    "entity_exists": "the entity exists already",
    "node_not_reader": "this node is a blind host of this private room: it cannot read or "
                       "seal it, so it cannot compose your edits; open the room from a node "
                       "that is a member (a reader)",
    "not_a_reader": "your role in this private room holds no keys: only readers edit it",
    "waiting_for_key": "this node waits for an epoch key (a reader's SHARE) before it can "
                       "seal edits: try again in a moment",
    "no_usable_epoch": "a member was removed and no new epoch key exists yet: an editor who "
                       "reads the room must rotate the keys first",
}
