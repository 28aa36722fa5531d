"""Property tests of private rooms: random joins, removals, rotations, shares and edits.

Two worlds run the same workload in lockstep, with the same identities and clock: a private
room and a plaintext room (the reference). Every action gets its own second, so clock stamps
agree between the worlds. At the end, changes are delivered in random chunks to fresh
replicas, readers and blind:

* every replica (reader, removed member, host, fresh blind) holds the same DAG, role book and
  epoch book;
* every reader's scene equals the plaintext world's (whatever order the keys arrived in);
* a removed member fed everything reads no canary written causally after its removal;
* no canary appears in any change's bytes.
"""

from __future__ import annotations

import os
import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meshnode.crdt import ROOT, PermissionDenied, SceneReplica
from protocol.change import change_id
from tests.crdt.harness import ident

T0 = 10_000.0
N = 7  # 0 owner, 1-2 editors, 3 viewer, 4 host, 5-6 outsiders who may join
ROLES = {1: "editor", 2: "editor", 3: "viewer", 4: "host"}

actions = st.lists(
    st.one_of(
        st.tuples(st.just("edit"), st.integers(0, 6)),
        st.tuples(st.just("sync"), st.integers(0, 6), st.integers(0, 6)),
        st.tuples(st.just("join"), st.integers(5, 6), st.sampled_from(["editor", "viewer"])),
        st.tuples(st.just("remove"), st.sampled_from([1, 2, 3, 5, 6])),
        st.tuples(st.just("rotate"), st.integers(0, 6)),
        st.tuples(st.just("share"), st.integers(0, 6)),
    ),
    min_size=1,
    max_size=22,
)


class World:
    def __init__(self, private: bool) -> None:
        ids = [ident("props", i) for i in range(N)]
        self.ids = ids
        owner = SceneReplica.create(ids[0], T0, nonce=b"w", name="canary-name", private=private)
        for i, role in ROLES.items():
            owner.grant(ids[i].public_id, role)
        owner.commit(T0 + 1)
        self.reps = [owner] + [SceneReplica.from_genesis(owner.genesis, ids[i])
                               for i in range(1, N)]
        for r in self.reps[1:]:
            r.apply_many(owner.changes_since([]), T0 + 1)

    def everything(self) -> list[bytes]:
        out: dict[bytes, bytes] = {}
        for r in self.reps:
            for d in r.changes_since([]):
                out[change_id(d)] = d
        return list(out.values())

    def full_sync(self, now: float) -> None:
        allc = self.everything()
        for r in self.reps:
            r.apply_many(allc, now)


def _edit(rep: SceneReplica, step: int, mine: dict[int, list[object]]) -> bool:
    """Create an entity, or set a field of one of our own; True if something was done."""
    own = [e for e in mine.get(step % 7, []) if rep.exists(e)]  # type: ignore[arg-type]
    canary = f"canary-{step}"
    try:
        if own and step % 2:
            rep.set_field(own[-1], "c", "v", canary)  # type: ignore[arg-type]
        else:
            mine.setdefault(step % 7, []).append(
                rep.create_entity(ROOT, {"c": {"v": canary}}))
    except PermissionDenied:
        rep.discard()
        return False
    return True


@settings(deadline=None, max_examples=int(os.environ.get("CRDT_MAX_EXAMPLES", "25")),
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(actions, st.randoms(use_true_random=False))
def test_private_room_matches_plaintext_reference(plan: list[tuple[object, ...]],
                                                  rnd: random.Random) -> None:
    priv, plain = World(True), World(False)
    removed: dict[int, bytes] = {}  # member -> ID of the change that removed it
    canaries: dict[bytes, str] = {}  # change ID -> canary written in it
    joined: set[int] = set()
    mine_p: dict[int, list[object]] = {}
    mine_q: dict[int, list[object]] = {}
    for step, act in enumerate(plan):
        now = T0 + 10 + step
        kind = act[0]
        if kind == "edit":
            i = int(act[1])  # type: ignore[arg-type]
            mine_p.setdefault(i, [])
            if _edit(priv.reps[i], step * 7 + i, mine_p):
                data = priv.reps[i].commit(now)
                assert _edit(plain.reps[i], step * 7 + i, mine_q)
                plain.reps[i].commit(now)
                assert data is not None
                canaries[change_id(data)] = f"canary-{step * 7 + i}"
        elif kind == "sync":
            a, b = int(act[1]), int(act[2])  # type: ignore[arg-type]
            for w in (priv, plain):
                w.reps[b].apply_many(w.reps[a].changes_since(w.reps[b].heads()), now)
        elif kind == "join":
            k = int(act[1])  # type: ignore[arg-type]
            if k in joined or k in removed:
                continue
            joined.add(k)
            for w in (priv, plain):
                w.reps[0].grant(w.ids[k].public_id, str(act[2]))
                w.reps[0].commit(now)
        elif kind == "remove":
            k = int(act[1])  # type: ignore[arg-type]
            if k in removed or (k >= 5 and k not in joined):
                continue
            if priv.reps[0].role_of(priv.ids[k].public_id) == "none":
                continue
            for w in (priv, plain):
                w.reps[0].revoke(w.ids[k].public_id)
                data = w.reps[0].commit(now)
                assert data is not None
                if w is priv:
                    removed[k] = change_id(data)
        elif kind == "rotate":
            i = int(act[1])  # type: ignore[arg-type]
            try:
                priv.reps[i].rotate()
            except PermissionDenied:
                continue
            priv.reps[i].commit(now)
        else:
            i = int(act[1])  # type: ignore[arg-type]
            rep = priv.reps[i]
            if rep.is_reader():
                for m in rep.keyless_readers():
                    rep.share(m)
                rep.commit(now)
    # Converge: anti-entropy, then readers share to whoever still lacks keys.
    now = T0 + 1000
    for w in (priv, plain):
        w.full_sync(now)
    for _ in range(3):
        for rep in priv.reps:
            if rep.is_reader() and rep.keyless_readers():
                for m in rep.keyless_readers():
                    rep.share(m)
                rep.commit(now)
        priv.full_sync(now)
    ref = plain.reps[0].state()
    heads = priv.reps[0].heads()
    book = priv.reps[0].epoch_book_view()
    members = priv.reps[0].members()
    assert plain.reps[0].members() == members
    for rep in priv.reps:
        assert rep.heads() == heads
        assert rep.epoch_book_view() == book
        assert rep.members() == members
        if rep.is_reader():
            assert rep.readable, rep.privacy_counters()
            assert rep.state() == ref
            assert rep.room_name == "canary-name"
            assert not rep.privacy_counters()["voided"]
    history = priv.everything()
    assert all(b"canary" not in d for d in history)
    # Fresh replicas, changes in random chunks: a blind host, a reader (late keys).
    shuffled = list(history)
    rnd.shuffle(shuffled)
    cut = sorted(rnd.sample(range(len(shuffled) + 1), 3))
    chunks = [shuffled[: cut[0]], shuffled[cut[0]: cut[1]], shuffled[cut[1]: cut[2]],
              shuffled[cut[2]:]]
    blind = SceneReplica.from_genesis(priv.reps[0].genesis, priv.ids[4])
    reader = SceneReplica.from_genesis(priv.reps[0].genesis, priv.ids[0])
    for chunk in [*chunks, history]:  # then anti-entropy offers again what was refused
        for r in (blind, reader):      # (transient ``unknown_author``)
            r.apply_many(chunk, now)
    for r in (blind, reader):
        assert r.heads() == heads and r.epoch_book_view() == book and r.members() == members
    assert reader.readable and reader.state() == ref
    assert "canary" not in str(blind.state()) and not blind.readable
    # Removed members, fed everything, read nothing written causally after their removal.
    graph_of = priv.reps[0]
    for k, rid in removed.items():
        seen = str(priv.reps[k].state())
        for cid, canary in canaries.items():
            if cid != rid and graph_of._graph.in_past(rid, [cid]):
                assert f"{canary}'" not in seen, (k, canary)
