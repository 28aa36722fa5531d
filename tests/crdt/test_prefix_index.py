"""Applied changes by ID prefix (``ChangeGraph.by_prefix``), for compact changes: built on
first use, kept up to date after, collisions kept, base entries of a frontier included."""

import tracemalloc

from meshnode.crdt import ROOT, SceneReplica
from meshnode.crdt.prefix_index import PrefixIndex
from protocol.compact import PREFIX_BYTES
from tests.crdt.harness import deliver, ident, make_room

NOW = 1000.0


def test_every_applied_change_is_found_by_its_prefix_and_the_index_follows() -> None:
    room = make_room(["editor"], tag="prefix")
    owner, editor = room.replicas
    for i in range(5):
        editor.create_entity(ROOT, {"p": {"x": i}})
        editor.commit(NOW + i)
    graph = editor._graph
    assert graph.prefixes is None  # nobody asked: nothing built
    for cid in graph.order:
        assert editor.changes_by_prefix(cid[:PREFIX_BYTES]) == [cid]
    assert graph.prefixes is not None
    editor.create_entity(ROOT)
    new = editor.commit(NOW + 10)
    assert new is not None
    cid = editor.heads()[0]
    assert editor.changes_by_prefix(cid[:PREFIX_BYTES]) == [cid]  # added as applied
    assert editor.changes_by_prefix(b"\xff" * PREFIX_BYTES) == []
    assert editor.changes_by_prefix(cid[:4]) == []  # only whole prefixes
    deliver(owner, editor.changes_since(owner.heads()), NOW + 11)
    assert owner.changes_by_prefix(cid[:PREFIX_BYTES]) == [cid]


def test_changes_sharing_a_prefix_are_all_kept() -> None:
    index = PrefixIndex()
    a, b, c = b"\x01" * 8 + b"a" * 24, b"\x01" * 8 + b"b" * 24, b"\x02" * 32
    for pos, cid in enumerate((a, b, c)):
        index.add(cid, pos)
    assert list(index.positions(b"\x01" * 8)) == [0, 1]
    assert list(index.positions(b"\x02" * 8)) == [2]
    assert list(index.positions(b"\x03" * 8)) == []


def test_a_frontier_snapshot_s_base_entries_are_found() -> None:
    room = make_room(["editor"], tag="prefix-frontier")
    owner, editor = room.replicas
    for i in range(4):
        editor.create_entity(ROOT, {"p": {"x": i}})
        editor.commit(NOW + i)
    deliver(owner, editor.changes_since(owner.heads()), NOW + 5)
    heads = owner.heads()
    late = SceneReplica.from_snapshot(owner.snapshot(keep_after_hlc=owner._clock.value),
                                      ident("prefix-late"))
    assert late.held_count() == 0  # nothing after the frontier: the heads are base entries
    for h in heads:
        assert late.changes_by_prefix(h[:PREFIX_BYTES]) == [h]


def test_bytes_per_change_of_the_index() -> None:
    """What docs/performance.md reports (2026-12-06 session 7): columns, not a dict of every
    prefix (which cost 65-88 bytes a change); bounded loosely."""
    import hashlib

    ids = [hashlib.sha256(i.to_bytes(4, "big")).digest() for i in range(50_000)]
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    index = PrefixIndex()
    for pos, cid in enumerate(ids):
        index.add(cid, pos)
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    per = sum(s.size_diff for s in after.compare_to(before, "filename")) / len(ids)
    assert 12 <= per < 40, per
    assert len(index) == len(ids)
    for pos, cid in enumerate(ids[::97]):
        assert pos * 97 in index.positions(cid[:PREFIX_BYTES])


def test_positions_survive_merges_and_negative_positions() -> None:
    import hashlib

    index = PrefixIndex()
    ids = [hashlib.sha256(b"n" + i.to_bytes(4, "big")).digest() for i in range(5_000)]
    for k, cid in enumerate(ids):
        index.add(cid, ~k if k % 3 == 0 else k)  # base entries have negative positions
    for k, cid in enumerate(ids):
        assert index.positions(cid[:PREFIX_BYTES]) == [~k if k % 3 == 0 else k]
    rebuilt = PrefixIndex.of({cid: k for k, cid in enumerate(ids)})
    assert all(rebuilt.positions(c[:PREFIX_BYTES]) == [k] for k, c in enumerate(ids))


def test_a_small_index_costs_little_and_a_large_one_is_split() -> None:
    """netsim holds one index per replica (10,000 of them): an empty or small index is a
    handful of containers, not 256 buckets'; past ``SPLIT_AT`` entries it is split by the
    prefix's first byte (a merge then sorts one bucket) and answers the same."""
    import hashlib

    from meshnode.crdt import prefix_index

    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    small = [PrefixIndex() for _ in range(100)]
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    per = sum(s.size_diff for s in after.compare_to(before, "filename")) / len(small)
    assert per < 1_500, per
    ids = [hashlib.sha256(b"s" + i.to_bytes(4, "big")).digest()
           for i in range(prefix_index.SPLIT_AT * 5 // 4 + 10)]
    index = PrefixIndex()
    for pos, cid in enumerate(ids):
        index.add(cid, pos)
        if pos == 1_000:
            assert len(index.keys) == 1
    assert len(index.keys) == prefix_index.BUCKETS and len(index) == len(ids)
    assert all(index.positions(c[:PREFIX_BYTES]) == [k * 50] for k, c in enumerate(ids[::50]))
    built = PrefixIndex.of({cid: k for k, cid in enumerate(ids)})
    assert len(built.keys) == prefix_index.BUCKETS
    assert all(built.positions(c[:PREFIX_BYTES]) == [k * 50] for k, c in enumerate(ids[::50]))


def test_shared_prefixes_are_counted_and_hold_alone_follows_them() -> None:
    index = PrefixIndex()
    a, b = b"\x01" * 8 + b"a" * 24, b"\x01" * 8 + b"b" * 24
    index.add(a, 0)
    assert index.shared == 0
    for k in range(20):  # merged into the sorted column: the next twin is found there
        index.add(bytes([9, k]) + bytes(30), k + 1)
    index.add(b, 21)
    assert index.shared == 1 and sorted(index.positions(a[:PREFIX_BYTES])) == [0, 21]
    assert PrefixIndex.of({a: 0, b: 1, b"\x02" * 32: 2}).shared == 1
    room = make_room(["editor"], tag="prefix-alone")
    _owner, editor = room.replicas
    editor.create_entity(ROOT)
    editor.commit(NOW)
    cid = editor.heads()[0]
    assert editor.hold_alone([cid]) and not editor.hold_alone([cid, b"\x07" * 32])
    graph = editor._graph
    assert graph.prefixes is not None and graph.prefixes.shared == 0
    twin = cid[:PREFIX_BYTES] + bytes(24)  # as if a second change shared its prefix
    graph.prefixes.add(twin, 0)
    assert graph.prefixes.shared == 1 and not editor.hold_alone([cid])
    assert editor.hold_alone(editor._graph.order[:1])  # its prefix is still its own
