"""Two overlay cores exchanging compact changes (``protocol.compact``): what crosses the link
is compact only toward a peer that speaks it, a change whose dep the receiver lacks is held
and completed through ``WantPrefix``, and hostile compact bytes are refused, counted and
bounded."""

import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meshnode.crdt import ROOT, SceneReplica
from meshnode.identity import Identity
from meshnode.overlay import OverlayConfig, RoomOverlay
from meshnode.overlay.events import (
    EquivocationDetected,
    PeerMisbehaved,
    RefusalReason,
    RequestRefused,
)
from protocol.change import change_id, decode_change, encode_change
from protocol.compact import MARKER, PREFIX_BYTES, compact_change, is_compact
from protocol.frames import Changes, Prune, WantPrefix, decode_frame, encode_frame

A = Identity.from_private_bytes(bytes(range(32)))
B = Identity.from_private_bytes(bytes(range(1, 33)))
C = Identity.from_private_bytes(bytes(range(2, 34)))
NOW = 1_700_000_000.0


class Pair:
    """A (room owner) linked to B (compact both ways) and to C (canonical only)."""

    def __init__(self, config: OverlayConfig | None = None) -> None:
        room = SceneReplica.create(A, now=NOW, name="compact", nonce=b"\x05" * 16)
        room.grant(B.public_id, "editor")
        room.grant(C.public_id, "editor")
        grants = room.commit(NOW)
        assert grants is not None
        self.o: dict[str, RoomOverlay] = {}
        for ident, seed in ((A, 1), (B, 2), (C, 3)):
            rep = room if ident is A else SceneReplica.from_genesis(room.genesis, ident)
            if ident is not A:
                assert rep.apply(grants, NOW).status == "applied"
            self.o[ident.public_id] = RoomOverlay(rep, ident, config or OverlayConfig(),
                                                  rng=random.Random(seed),
                                                  wall_clock=lambda: NOW)
        a, b, c = A.public_id, B.public_id, C.public_id
        self.o[a].connect(b, 0.0, leaf=True, compact=True)
        self.o[b].connect(a, 0.0, leaf=True, compact=True)
        self.o[a].connect(c, 0.0, leaf=True)
        self.o[c].connect(a, 0.0, leaf=True)
        self.seen: list[tuple[str, str, object]] = []  # (from, to, decoded frame)
        self.pump()

    def pump(self, t: float = 0.0, drop: set[str] | None = None) -> None:
        """Deliver frames until nobody has any (those to ``drop``'s peers are lost)."""
        for _ in range(50):
            moved = False
            for src, ov in self.o.items():
                for dst, channel, frame in ov.frames_to_send():
                    moved = True
                    self.seen.append((src, dst, decode_frame(frame)))
                    if drop is None or dst not in drop:
                        self.o[dst].receive(src, channel, frame, t)
            if not moved:
                return
        raise AssertionError("frames kept flowing")

    def edit(self, who: Identity, n: int, t: float) -> bytes:
        rep = self.o[who.public_id].replica
        for _ in range(n):
            e = rep.create_entity(ROOT)
            rep.set_field(e, "transform", "position", [1.0, 2.0, 3.0])
        data = rep.commit(NOW + t)
        assert data is not None
        return data

    def events(self, who: Identity) -> list[object]:
        out = []
        while (ev := self.o[who.public_id].next_event()) is not None:
            out.append(ev)
        return out


def changes_sent(pair: Pair, src: Identity, dst: Identity) -> list[bytes]:
    return [d for s, t, m in pair.seen if s == src.public_id and t == dst.public_id
            and isinstance(m, Changes) for d in m.changes]


def test_compact_toward_a_capable_peer_and_canonical_toward_the_others() -> None:
    p = Pair()
    for t in range(1, 4):
        # B and C edit concurrently, so A's next change names several heads.
        for who in (B, C):
            p.o[who.public_id].submit_change(p.edit(who, 3, t), float(t))
        p.pump(float(t))
        p.o[A.public_id].submit_change(p.edit(A, 2, t), float(t))
        p.pump(float(t))
    heads = {tuple(o.replica.heads()) for o in p.o.values()}
    assert len(heads) == 1
    to_b, to_c = changes_sent(p, A, B), changes_sent(p, A, C)
    assert to_b and all(is_compact(d) for d in to_b)
    assert to_c and not any(is_compact(d) for d in to_c)
    assert not any(is_compact(d) for d in changes_sent(p, C, A))
    sa, sb = p.o[A.public_id].stats.compact, p.o[B.public_id].stats.compact
    assert sa["sent"] == len(to_b) and sb["received"] == len(to_b)
    assert sum(map(len, to_b)) < sum(map(len, to_c))
    # B's replica holds the canonical bytes: same IDs, same bytes as A's.
    rep_a, rep_b = p.o[A.public_id].replica, p.o[B.public_id].replica
    for cid in rep_a.recent_changes(5):
        assert rep_b.change_bytes(cid) == rep_a.change_bytes(cid)


def test_a_change_whose_dep_is_missing_is_held_and_completed_by_prefix() -> None:
    p = Pair()
    oa, ob = p.o[A.public_id], p.o[B.public_id]
    first = p.edit(A, 1, 1)  # committed at A, never sent: as if the link had lost it
    second = p.edit(A, 1, 2)
    assert change_id(first) in oa.replica._graph.deps_of(change_id(second))
    frame = encode_frame(Changes(oa.room_id, (compact_change(second),), True))
    ob.receive(A.public_id, "sync", frame, 3.0)
    assert ob.stats.compact["held"] == 1 and len(ob.compact_hold) == 1
    assert not ob.replica.has_change(change_id(second))
    ob.receive(A.public_id, "sync", frame, 3.1)  # the same again: held once
    assert len(ob.compact_hold) == 1
    p.pump(3.2)
    want = [m for s, t, m in p.seen if s == B.public_id and isinstance(m, WantPrefix)]
    assert want and change_id(first)[:PREFIX_BYTES] in want[0].prefixes
    assert ob.replica.has_change(change_id(first)) and ob.replica.has_change(change_id(second))
    assert ob.stats.compact["completed"] == 1 and len(ob.compact_hold) == 0
    assert oa.stats.compact["prefixes_answered"] >= 1
    assert ob.replica.change_bytes(change_id(second)) == second


def test_hostile_compact_changes_are_refused_counted_and_bounded() -> None:
    p = Pair(OverlayConfig(compact_hold_changes=4))
    oa, ob = p.o[A.public_id], p.o[B.public_id]
    p.events(B)
    # Malformed: typed refusal, scored as an invalid change.
    bad = bytes((MARKER,)) + b"\x01\x02\x03" + bytes(64)
    ob.receive(A.public_id, "sync", encode_frame(Changes(oa.room_id, (bad,), True)), 1.0)
    evs = p.events(B)
    assert any(isinstance(e, RequestRefused) and e.reason is RefusalReason.COMPACT_MALFORMED
               for e in evs)
    assert any(isinstance(e, PeerMisbehaved) and e.reason == "invalid_change" for e in evs)
    # A flood of changes naming deps nobody has: held up to the bound, the rest evicted.
    bogus = []
    for i in range(10):
        data = compact_change(p.edit(A, 1, 10 + i))  # one dep: A's previous change
        # Point the dep's prefix at nothing (after the marker, the author and a small seq,
        # the prefixes are one bin8 of 8 bytes).
        at = data.index(b"\xc4\x08", 1 + 34)
        bogus.append(data[:at + 2] + b"\xee" * 8 + data[at + 10:])
    frame = encode_frame(Changes(oa.room_id, tuple(bogus), True))
    ob.receive(A.public_id, "sync", frame, 2.0)
    assert len(ob.compact_hold) == 4 and ob.compact_hold.evicted == 6
    assert ob.stats.compact["evicted"] == 6
    evs = p.events(B)
    assert sum(e.count for e in evs if isinstance(e, RequestRefused)
               and e.reason is RefusalReason.COMPACT_HOLD_FULL) == 6
    # Its link going drops what it sent.
    ob.disconnect(A.public_id, 3.0)
    assert len(ob.compact_hold) == 0 and ob.compact_hold.bytes == 0


def test_a_frame_s_own_changes_resolve_the_deps_of_those_after_them() -> None:
    """A pulled batch (a sync) names its own earlier changes as deps: nothing is held and
    nothing is asked for by prefix."""
    p = Pair()
    oa, ob = p.o[A.public_id], p.o[B.public_id]
    chain = [p.edit(A, 1, t) for t in (1, 2, 3)]  # each depends on the one before
    frame = encode_frame(Changes(oa.room_id, tuple(compact_change(c) for c in chain), False))
    ob.receive(A.public_id, "sync", frame, 4.0)
    assert all(ob.replica.has_change(change_id(c)) for c in chain)
    assert "held" not in ob.stats.compact and ob.stats.compact["received"] == 3
    assert not any(isinstance(decode_frame(f), WantPrefix) for _, _, f in ob.frames_to_send())


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(st.binary(max_size=300), min_size=1, max_size=8), st.data())
def test_random_compact_entries_never_raise_and_stay_bounded(tails: list[bytes],
                                                             data: st.DataObject) -> None:
    p = Pair(OverlayConfig(compact_hold_changes=3, compact_hold_bytes=2_000))
    oa, ob = p.o[A.public_id], p.o[B.public_id]
    real = compact_change(p.edit(A, 1, 1))
    entries = []
    for tail in tails:
        if data.draw(st.booleans()):  # a real compact change, mutated
            raw = bytearray(real)
            i = data.draw(st.integers(0, len(raw) - 1))
            raw[i] = data.draw(st.integers(0, 255))
            entries.append(bytes(raw))
        else:
            entries.append(bytes((MARKER,)) + tail)
    ob.receive(A.public_id, "sync", encode_frame(Changes(oa.room_id, tuple(entries), True)),
               2.0)
    assert len(ob.compact_hold) <= 3 and ob.compact_hold.bytes <= 2_000
    assert sum(map(len, ob.compact_hold.changes)) == ob.compact_hold.bytes


def test_a_prefix_matching_two_known_changes_is_decided_by_the_signature() -> None:
    """As if B held a second change whose ID shares the dep's prefix (a ground collision):
    both rebuilds are tried, the author's signature picks the right one, nothing is scored."""
    p = Pair()
    oa, ob = p.o[A.public_id], p.o[B.public_id]
    first = p.edit(A, 1, 1)
    oa.submit_change(first, 1.0)
    p.pump(1.0)
    second = p.edit(A, 1, 2)
    dep = change_id(first)
    twin = dep[:PREFIX_BYTES] + bytes(32 - PREFIX_BYTES)
    real = ob.replica.changes_by_prefix

    def with_twin(prefix: bytes) -> list[bytes]:
        return real(prefix) + ([twin] if prefix == dep[:PREFIX_BYTES] else [])

    ob.replica.changes_by_prefix = with_twin  # type: ignore[method-assign]
    p.events(B)
    frame = encode_frame(Changes(oa.room_id, (compact_change(second),), True))
    ob.receive(A.public_id, "sync", frame, 3.0)
    assert ob.replica.has_change(change_id(second))
    assert ob.stats.compact["ambiguous"] == 1
    assert not any(isinstance(e, PeerMisbehaved) for e in p.events(B))


def _no_prefix_lookups(prefix: bytes) -> list[bytes]:
    raise AssertionError("a copy of a held change was resolved by prefix")


def test_a_compact_copy_pushed_again_is_a_duplicate_and_prunes_the_pusher() -> None:
    """Gossip delivers changes several times: a compact copy of a change B holds is known as
    its held bytes (no prefix resolved), and the replica calls it a duplicate, so B prunes
    the link it came over for that author, as with canonical changes."""
    p = Pair()
    oa, ob = p.o[A.public_id], p.o[B.public_id]
    data = p.edit(A, 1, 1)
    oa.submit_change(data, 1.0)
    p.pump(1.0)
    assert ob.replica.has_change(change_id(data))
    dups = ob.stats.duplicates_in
    ob.replica.changes_by_prefix = _no_prefix_lookups  # type: ignore[method-assign]
    p.seen.clear()
    frame = encode_frame(Changes(oa.room_id, (compact_change(data),), True))
    ob.receive(A.public_id, "sync", frame, 2.0)
    assert ob.stats.duplicates_in == dups + 1
    p.pump(2.0)
    prunes = [m for s, t, m in p.seen if s == B.public_id and isinstance(m, Prune)]
    assert prunes and A.public_key in prunes[0].origins


def test_an_equivocating_compact_change_is_detected() -> None:
    """A second change by A with the seq of one B holds, sent compact: B rebuilds it from
    its prefixes (it is no copy of the held one), applies it and reports the equivocation."""
    p = Pair()
    oa, ob = p.o[A.public_id], p.o[B.public_id]
    data = p.edit(A, 1, 1)
    oa.submit_change(data, 1.0)
    p.pump(1.0)
    p.events(B)
    ch = decode_change(data)
    twin = encode_change(author=ch.author, seq=ch.seq, deps=ch.deps, hlc=ch.hlc + 1,
                         actors=ch.actors, names=ch.names, ops=ch.ops, room_id=oa.room_id,
                         sign=A.sign)
    small = compact_change(twin)
    assert is_compact(small) and small[:40] == compact_change(data)[:40]  # same author, seq
    ob.receive(A.public_id, "sync", encode_frame(Changes(oa.room_id, (small,), True)), 2.0)
    assert ob.replica.has_change(change_id(twin))
    found = [e for e in p.events(B) if isinstance(e, EquivocationDetected)]
    assert found and found[0].seq == ch.seq
    assert set(found[0].change_ids) == {change_id(data), change_id(twin)}
