"""Small helpers for the scene-CRDT tests: rooms of N members, delivery, invariants, an oracle.

Everything here is deterministic given its inputs (identities can be derived from a seed), so a
failing hypothesis example replays exactly.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from meshnode.crdt import APPLIED, BUFFERED, DUPLICATE, REJECTED, ROOT, EntityId, SceneReplica
from meshnode.crdt.clock import hlc_from_seconds
from meshnode.crdt.ids import TRASH
from meshnode.crdt.results import TRANSIENT_REASONS
from meshnode.identity import Identity
from protocol.change import (
    OP_CREATE,
    OP_DELETE,
    OP_MOVE,
    OP_SET,
    change_id,
    decode_change,
    encode_change,
)

OK_STATUSES = frozenset({APPLIED, BUFFERED, DUPLICATE})


def ident(tag: str, i: int = 0) -> Identity:
    """A deterministic identity (so a failing example replays with the same key order)."""
    return Identity.from_private_bytes(hashlib.sha256(f"tests/crdt/{tag}/{i}".encode()).digest())


@dataclass
class Room:
    """A room: ``replicas[0]`` belongs to the owner, the others to members with ``roles``."""

    replicas: list[SceneReplica]
    identities: list[Identity]
    roles: list[str]
    genesis: bytes

    @property
    def owner(self) -> SceneReplica:
        return self.replicas[0]


def make_room(
    roles: Sequence[str],
    *,
    now: float = 1000.0,
    tag: str = "room",
    identities: Sequence[Identity] | None = None,
    **replica_kwargs: Any,
) -> Room:
    """Found a room and admit ``len(roles)`` further members with the given roles.

    The owner grants every role in one change that every replica applies, so all replicas
    start from the same heads.
    """
    n = len(roles) + 1
    ids = list(identities) if identities is not None else [ident(tag, i) for i in range(n)]
    owner = SceneReplica.create(ids[0], now=now, nonce=tag.encode()[:32], **replica_kwargs)
    replicas = [owner] + [
        SceneReplica.from_genesis(owner.genesis, ids[i], **replica_kwargs) for i in range(1, n)
    ]
    if roles:
        for i, role in enumerate(roles, start=1):
            owner.grant(ids[i].public_id, role)
        data = owner.commit(now=now)
        assert data is not None
        for r in replicas[1:]:
            res = r.apply(data, now=now)
            assert res.status == APPLIED, res
    return Room(replicas, ids, ["owner", *roles], owner.genesis)


def deliver(
    dst: SceneReplica,
    datas: Iterable[bytes],
    now: float,
    *,
    many: bool = True,
    allow_transient: bool = False,
) -> list:
    """Offer changes to ``dst``; every result must be applied, buffered or duplicate.

    With ``allow_transient``, a rejection for a transient reason (one that depends on what
    ``dst`` knows now, e.g. a change from a member it has seen revoked arriving before its
    deps) is tolerated too: anti-entropy offers the change again later.
    """
    datas = list(datas)
    results = dst.apply_many(datas, now) if many else [dst.apply(d, now) for d in datas]
    assert len(results) == len(datas)
    for res in results:
        if allow_transient and res.status == REJECTED:
            assert res.reason in TRANSIENT_REASONS, res
            continue
        assert res.status in OK_STATUSES, res
    return results


def sync_pair(src: SceneReplica, dst: SceneReplica, now: float) -> None:
    """Send ``dst`` what ``src`` has and ``dst`` lacks (anti-entropy by heads)."""
    deliver(dst, src.changes_since(dst.heads()), now)


def full_sync(replicas: Sequence[SceneReplica], now: float, max_rounds: int = 10) -> None:
    """Anti-entropy between every ordered pair until every replica has the same heads."""
    for _ in range(max_rounds):
        for a in replicas:
            for b in replicas:
                if a is not b:
                    sync_pair(a, b, now)
        if all(r.heads() == replicas[0].heads() for r in replicas):
            break
    assert_converged(replicas)


def assert_tree_invariants(replica: SceneReplica) -> None:
    """No cycles; every live entity's parent is live or the root; parent_of agrees."""
    st = replica.state()
    for eid, info in st.items():
        parent = info["parent"]
        assert parent == "root" or parent in st, (eid, parent)
        seen = {eid}
        node = parent
        while node != "root":
            assert node not in seen, f"cycle through {node}"
            seen.add(node)
            node = st[node]["parent"]
        ent = EntityId.parse(eid)
        assert replica.exists(ent)
        assert str(replica.parent_of(ent)) == parent


def assert_converged(replicas: Sequence[SceneReplica]) -> None:
    """Equal heads, equal state, no buffered leftovers, sound trees."""
    first = replicas[0]
    for r in replicas:
        assert r.buffered_count() == 0, r.missing_deps()
        assert r.pending_ops == 0
        assert_tree_invariants(r)
    for r in replicas[1:]:
        assert r.heads() == first.heads()
        assert r.change_count() == first.change_count()
        assert r.state() == first.state()


def assert_created_accounted(replica: SceneReplica, created: Iterable[EntityId]) -> None:
    """Every entity ever created is either in state() or deleted (parent_of is None)."""
    st = replica.state()
    for ent in created:
        if str(ent) in st:
            assert replica.parent_of(ent) is not None
            assert replica.exists(ent)
        else:
            assert replica.parent_of(ent) is None
            assert not replica.exists(ent)


# --------------------------------------------------------------------------- crafting changes


def heads_hlc(replica: SceneReplica) -> int:
    """The largest HLC among ``replica``'s heads (a crafted change must stamp above it)."""
    heads = set(replica.heads())
    return max(decode_change(d).hlc for d in replica.changes_since([]) if change_id(d) in heads)


def next_seq(replica: SceneReplica, author: Identity) -> int:
    """The seq ``author``'s next change must carry, given what ``replica`` has applied."""
    seqs = [
        decode_change(d).seq
        for d in replica.changes_since([])
        if decode_change(d).author == author.public_key
    ]
    return max(seqs, default=0) + 1


def craft(
    replica: SceneReplica,
    author: Identity,
    ops: list[list[Any]],
    *,
    seq: int | None = None,
    deps: Sequence[bytes] | None = None,
    hlc: int | None = None,
    actors: Sequence[bytes] = (),
    names: Sequence[str] = (),
    room_id: bytes | None = None,
    sign: Any = None,
    now: float | None = None,
) -> bytes:
    """Hand-build a signed change as ``SceneReplica.commit`` would, with every field overridable.

    By default: the author's next seq as ``replica`` sees it, deps are ``replica``'s heads,
    the clock is one tick past theirs (or ``now``), the room is ``replica``'s and ``author``
    signs.
    """
    if seq is None:
        seq = next_seq(replica, author)
    if deps is None:
        deps = replica.heads()
    if hlc is None:
        hlc = heads_hlc(replica) + 1
        if now is not None:
            hlc = max(hlc, hlc_from_seconds(now))
    return encode_change(
        author=author.public_key,
        seq=seq,
        deps=deps,
        hlc=hlc,
        actors=list(actors),
        names=list(names),
        ops=ops,
        room_id=replica.room_id if room_id is None else room_id,
        sign=author.sign if sign is None else sign,
    )


# --------------------------------------------------------------------------- oracle


def reference_state(
    changes: Iterable[bytes], retracted: Iterable[bytes] = ()
) -> dict[str, dict[str, Any]]:
    """The scene an honest history should produce, computed from scratch.

    Sort every tree op by (hlc, author, change id, op index) and apply it to an empty parent
    map, skipping a move that would make a cycle; every field is the set with the largest
    (hlc, author, change id, op index). Assumes every change is valid (no permission checks).
    Changes in ``retracted`` have no effect, and neither has any op on an entity they
    created (nor on a child created under such an entity, and so on).
    """
    tree_ops: list[tuple[tuple[Any, ...], tuple[bytes, int], tuple[bytes, int]]] = []
    regs: dict[tuple[tuple[bytes, int], str, str], tuple[tuple[Any, ...], Any]] = {}
    decoded = sorted((decode_change(data) for data in changes),
                     key=lambda c: (c.hlc, c.author, c.change_id))
    author_of = {ch.change_id: ch.author for ch in decoded}
    dead_changes = set(retracted)
    dead: set[Any] = set()
    for ch in decoded:
        author, names = ch.author, ch.names
        # An actor is a key, or the index of a dep whose author it is.
        actors = [a if type(a) is bytes else author_of[ch.deps[a]] for a in ch.actors]

        def res(ref: Any, author: bytes = author, actors: list[bytes] = actors) -> Any:
            if ref is None:
                return tuple(ROOT)
            if type(ref) is int:
                return (author, ref)
            return (actors[ref[0]], ref[1])

        if ch.change_id in dead_changes:
            dead.update((author, op[1]) for op in ch.ops if op[0] == OP_CREATE)
            continue
        for idx, op in enumerate(ch.ops):
            key = (ch.hlc, author, ch.change_id, idx)
            code = op[0]
            if code == OP_CREATE:
                if res(op[2]) in dead:
                    dead.add((author, op[1]))
                    continue
                tree_ops.append((key, (author, op[1]), res(op[2])))
            elif code == OP_MOVE:
                if res(op[1]) in dead or res(op[2]) in dead:
                    continue
                tree_ops.append((key, res(op[1]), res(op[2])))
            elif code == OP_DELETE:
                if res(op[1]) in dead:
                    continue
                tree_ops.append((key, res(op[1]), tuple(TRASH)))
            elif code == OP_SET:
                if res(op[1]) in dead:
                    continue
                rk = (res(op[1]), names[op[2]], names[op[3]])
                cur = regs.get(rk)
                if cur is None or cur[0] < key:
                    regs[rk] = (key, op[4])
    tree_ops.sort(key=lambda t: t[0])
    parent: dict[Any, Any] = {}
    for _key, child, new_parent in tree_ops:
        node = new_parent
        cycle = False
        while node is not None:
            if node == child:
                cycle = True
                break
            node = parent.get(node)
        if not cycle:
            parent[child] = new_parent
    root = tuple(ROOT)

    def live(node: Any) -> bool:
        while node != root:
            node = parent.get(node)
            if node is None:
                return False
        return True

    out: dict[str, dict[str, Any]] = {}
    for child, par in parent.items():
        if child == root or not live(child):
            continue
        out[str(EntityId(*child))] = {"parent": str(EntityId(*par)), "components": {}}
    for (ent, comp, fld), (_key, value) in regs.items():
        sid = str(EntityId(*ent))
        if sid in out:
            out[sid]["components"].setdefault(comp, {})[fld] = value
    return out


# --------------------------------------------------------------------------- random delivery


@dataclass
class Network:
    """Every committed change, with a per-replica skewed clock on a shared virtual time."""

    room: Room
    skews: list[float]
    t: float = 1000.0
    log: list[bytes] = field(default_factory=list)
    created: list[EntityId] = field(default_factory=list)
    allow_transient: bool = False  # see ``deliver``; set where members get revoked

    def now(self, i: int) -> float:
        return self.t + self.skews[i]

    def commit(self, i: int) -> bytes | None:
        data = self.room.replicas[i].commit(now=self.now(i))
        if data is not None:
            self.log.append(data)
        return data

    def deliver_random(
        self, src: int, dst: int, rng: random.Random, *, drop: float, dup: float, many: bool
    ) -> None:
        """Deliver a shuffled, partly dropped, partly duplicated batch of ``src``'s changes."""
        a, b = self.room.replicas[src], self.room.replicas[dst]
        # Half the time everything, genesis included: lots of duplicates.
        batch = a.changes_since(b.heads()) if rng.random() < 0.5 else a.changes_since([])
        batch = [d for d in batch if rng.random() >= drop]
        batch += [d for d in batch if rng.random() < dup]
        rng.shuffle(batch)
        now = self.now(dst)
        if many and batch:
            cut = rng.randrange(len(batch) + 1)
            deliver(b, batch[:cut], now, allow_transient=self.allow_transient)
            deliver(b, batch[cut:], now, allow_transient=self.allow_transient)
        else:
            deliver(b, batch, now, many=False, allow_transient=self.allow_transient)
