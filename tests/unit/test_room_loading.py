"""Start-up from the node's own store (meshnode.rooms.loading): the latest snapshot plus the
changes after it gives the very replica a full replay gives, and an unusable snapshot falls
back to the full replay."""

import random
from collections.abc import Callable, Iterable

from hypothesis import given, settings
from hypothesis import strategies as st

from meshnode.crdt import ROOT, SceneReplica
from meshnode.identity import Identity
from meshnode.rooms.loading import load_replica

NOW = 1_700_000_000.0
NODE, EDITOR, STRANGER = Identity.generate(), Identity.generate(), Identity.generate()


def _build() -> tuple[SceneReplica, list[bytes], bytes, int]:
    """A room hosted by NODE: its replica, its change log (in applied order, genesis not
    included, as the store keeps it), a snapshot taken midway and how many log changes it
    covers. Two authors create, set, move and delete; the editor equivocates once."""
    rng = random.Random(7)
    node = SceneReplica.create(NODE, NOW, name="load", nonce=b"n" * 16)
    node.grant(EDITOR.public_id, "editor")
    log = [node.commit(NOW)]
    editor = SceneReplica.from_genesis(node.genesis, EDITOR)
    editor.apply_many(log, NOW)  # type: ignore[arg-type]
    ents = []
    t = NOW
    snapshot, covered = b"", 0
    for i in range(240):
        t += 0.01
        writer, reader = (node, editor) if i % 2 else (editor, node)
        kind = rng.random()
        if len(ents) < 5 or kind < 0.2:
            ents.append(writer.create_entity(ROOT, {"name": {"value": f"e{i}"}}))
        else:
            e = rng.choice(ents)
            if not writer.exists(e):
                continue
            try:
                if kind < 0.3 and len(ents) > 2:
                    writer.move(e, rng.choice(ents))
                elif kind < 0.35:
                    writer.delete(e)
                else:
                    writer.set_field(e, "transform", "position", [rng.random(), 0.0, 0.0])
            except Exception:  # not the writer's entity, or a cycle: skip this edit
                writer.discard()
                continue
        data = writer.commit(t)
        if data is None:
            continue
        reader.apply(data, t)
        log.append(data)  # type: ignore[arg-type]
        if not snapshot and i >= 120:
            snapshot, covered = node.snapshot(), len(log)
    # An equivocation: the editor signs two different changes with one seq.
    twin = SceneReplica.from_genesis(node.genesis, EDITOR)
    twin.apply_many(editor.changes_since([]), t)
    for r, name in ((editor, "a"), (twin, "b")):
        r.create_entity(ROOT, {"name": {"value": name}})
        data = r.commit(t + 1)
        assert data is not None
        node.apply(data, t + 1)
        log.append(data)
    assert node.equivocations
    return node, log, snapshot, covered


HOST, LOG, SNAPSHOT, COVERED = _build()


def _stream(log: list[bytes]) -> Callable[[], Iterable[bytes]]:
    return lambda: iter(log)


def _same(a: SceneReplica, b: SceneReplica) -> None:
    assert a.state() == b.state()
    assert a.version_vector() == b.version_vector()
    assert set(a.heads()) == set(b.heads())
    assert a.members() == b.members()
    assert a.change_count() == b.change_count()
    assert sorted(a.changes_since([])) == sorted(b.changes_since([]))
    assert a.unserved_count() == b.unserved_count() == 0
    assert [e.seq for e in a.equivocations] == [e.seq for e in b.equivocations]
    # Same clock, seq and entity counter: the next local change is the same, byte for byte.
    for r in (a, b):
        r.create_entity(ROOT, {"name": {"value": "next"}})
    assert a.commit(NOW + 100) == b.commit(NOW + 100)


def test_snapshot_then_tail_equals_a_full_replay() -> None:
    fast = load_replica(HOST.genesis, NODE, _stream(LOG), SNAPSHOT)
    full = load_replica(HOST.genesis, NODE, _stream(LOG), None)
    assert fast.from_snapshot and fast.snapshot_problem is None
    assert not full.from_snapshot and full.snapshot_problem is None
    assert fast.report.ok and full.report.ok and full.report.applied == len(LOG)
    assert full.replica.state() == HOST.state()
    _same(fast.replica, full.replica)


def test_a_snapshot_of_the_whole_log_leaves_no_tail() -> None:
    whole = load_replica(HOST.genesis, NODE, _stream(LOG), HOST.snapshot())
    assert whole.from_snapshot
    _same(whole.replica, load_replica(HOST.genesis, NODE, _stream(LOG), None).replica)


def test_unusable_snapshots_fall_back_to_a_full_replay() -> None:
    other_room = SceneReplica.create(NODE, NOW, name="other", nonce=b"o" * 16)
    stranger_view = SceneReplica.from_genesis(HOST.genesis, STRANGER)
    stranger_view.apply_many(LOG, NOW + 50)
    cases = {
        "bad_snapshot": SNAPSHOT[:-1] + bytes([SNAPSHOT[-1] ^ 1]),  # signature broken
        "other_room": other_room.snapshot(),
    }
    for problem, snap in cases.items():
        got = load_replica(HOST.genesis, NODE, _stream(LOG), snap)
        assert (got.from_snapshot, got.snapshot_problem) == (False, problem)
        assert got.replica.state() == HOST.state()
    # Signed by someone else, even a replica of this very room: the node trusts only itself.
    got = load_replica(HOST.genesis, NODE, _stream(LOG), stranger_view.snapshot())
    assert got.snapshot_problem == "bad_snapshot" and got.replica.state() == HOST.state()


def test_a_snapshot_ahead_of_the_log_is_not_used() -> None:
    # A crash after the snapshot was saved and before the changes it covers were committed.
    behind = LOG[: COVERED - 3]
    got = load_replica(HOST.genesis, NODE, _stream(behind), SNAPSHOT)
    assert (got.from_snapshot, got.snapshot_problem) == (False, "log_behind")
    assert got.replica.change_count() == len(behind) + 1  # the genesis is not in the log
    assert got.replica.unserved_count() == 0


@settings(max_examples=60, deadline=None)
@given(st.integers(0, len(SNAPSHOT) - 1), st.integers(1, 255))
def test_a_damaged_snapshot_never_breaks_start_up(at: int, flip: int) -> None:
    damaged = bytearray(SNAPSHOT)
    damaged[at] ^= flip
    got = load_replica(HOST.genesis, NODE, _stream(LOG), bytes(damaged))
    assert not got.from_snapshot and got.snapshot_problem == "bad_snapshot"
    assert got.replica.state() == HOST.state()


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=300))
def test_garbage_instead_of_a_snapshot_falls_back(data: bytes) -> None:
    got = load_replica(HOST.genesis, NODE, _stream(LOG[:20]), data)
    assert got.snapshot_problem == "bad_snapshot"
    assert got.replica.change_count() == 21


def test_private_room_loads_from_its_sealed_snapshot_or_replays() -> None:
    """A reader node starts from its sealed snapshot; a blind host's public snapshot is used
    by a blind node but not by one that became a reader since (it replays the log)."""
    host = Identity.generate()
    node = SceneReplica.create(NODE, NOW, name="sealed-load", nonce=b"s" * 16, private=True)
    node.grant(EDITOR.public_id, "editor")
    node.grant(host.public_id, "host")
    node.create_entity(ROOT, {"name": {"value": "inside"}})
    node.commit(NOW + 1)
    log = node.changes_since([])[1:]
    sealed = node.snapshot()
    loaded = load_replica(node.genesis, NODE, lambda: iter(log), sealed)
    assert loaded.from_snapshot and loaded.snapshot_problem is None
    assert loaded.replica.state() == node.state() and loaded.replica.readable
    assert loaded.replica.room_name == "sealed-load"
    blind = SceneReplica.from_genesis(node.genesis, host)
    blind.apply_many(log, NOW + 1)
    public = blind.snapshot()
    assert b"inside" not in public and b"sealed-load" not in public
    as_blind = load_replica(node.genesis, host, lambda: iter(log), public)
    assert as_blind.from_snapshot and not as_blind.replica.readable
    # The same bytes, for a node that reads the room: not usable, the log is replayed.
    again = load_replica(node.genesis, NODE, lambda: iter(log), _resigned(public, node))
    assert not again.from_snapshot and again.snapshot_problem == "snapshot_key_missing"
    assert again.replica.state() == node.state()


def _resigned(public: bytes, node: SceneReplica) -> bytes:
    """A blind snapshot as if NODE had written it (a node trusts only its own signature)."""
    import msgpack

    from meshnode.crdt.snapshot import SNAPSHOT_DOMAIN

    obj = msgpack.unpackb(public[:-64], raw=False)
    obj[2] = NODE.public_key
    body = msgpack.packb(obj, use_bin_type=True)
    return body + NODE.sign(SNAPSHOT_DOMAIN + node.room_id + body)
