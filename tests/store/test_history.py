"""Replay reports: stored changes whose history is missing, or that are refused, are counted
and described (the node logs the line and counts them), not hidden."""

from __future__ import annotations

from meshnode.crdt import ROOT, SceneReplica
from meshnode.identity import Identity

NOW = 1_700_000_000.0


def _changes(owner: Identity, n: int) -> tuple[SceneReplica, list[bytes]]:
    source = SceneReplica.create(owner, NOW, name="lab", nonce=b"history")
    changes = []
    for i in range(n):
        source.create_entity(ROOT, {"name": {"value": f"e{i}"}})
        data = source.commit(NOW + i)
        assert data is not None
        changes.append(data)
    return source, changes


def test_a_log_with_a_hole_reports_the_changes_after_it() -> None:
    owner = Identity.generate()
    source, changes = _changes(owner, 5)

    whole = SceneReplica.from_genesis(source.genesis, owner)
    report = whole.replay(changes)
    assert report.ok and report.applied == 5
    assert "every stored change is visible" in report.describe(whole.room_id)

    holed = SceneReplica.from_genesis(source.genesis, owner)
    report = holed.replay(changes[:1] + changes[2:])  # the second change's commit was lost
    assert not report.ok
    assert (report.applied, len(report.missing_history), len(report.missing_deps)) == (1, 3, 1)
    line = report.describe(holed.room_id)
    assert "3 stored change(s) lack their history" in line
    assert holed.room_id.hex()[:16] in line


def test_refused_changes_are_counted_by_reason_and_a_far_clock_refuses_nothing() -> None:
    owner = Identity.generate()
    source, changes = _changes(owner, 1)
    replica = SceneReplica.from_genesis(source.genesis, owner)
    report = replica.replay([*changes, b"garbage"])
    assert not report.ok
    assert report.applied == 1  # no clock bound on our own store
    assert sum(report.refused_by_reason().values()) == 1
    assert "1 stored change(s) refused" in report.describe(replica.room_id)
