"""replay_report: stored changes whose history is missing are counted, not hidden."""

from __future__ import annotations

from meshnode.crdt import ROOT, SceneReplica
from meshnode.identity import Identity
from meshnode.store import replay_report

NOW = 1_700_000_000.0


def test_a_log_with_a_hole_reports_the_changes_after_it() -> None:
    owner = Identity.generate()
    source = SceneReplica.create(owner, NOW, name="lab")
    changes = []
    for i in range(5):
        source.create_entity(ROOT, {"name": {"value": f"e{i}"}})
        data = source.commit(NOW + i)
        assert data is not None
        changes.append(data)

    whole = SceneReplica.from_genesis(source.genesis, owner)
    results = whole.apply_many(changes, NOW + 10)
    report = replay_report(whole, results)
    assert report.complete
    assert (report.stored, report.missing_history) == (5, 0)

    holed = SceneReplica.from_genesis(source.genesis, owner)
    stored = changes[:1] + changes[2:]  # the second change's commit was lost
    results = holed.apply_many(stored, NOW + 10)
    report = replay_report(holed, results)
    assert not report.complete
    assert (report.stored, report.missing_history, report.missing_deps) == (4, 3, 1)
    line = report.describe()
    assert "3 stored change(s) lack their history" in line
    assert holed.room_id.hex()[:16] in line


def test_refused_changes_are_counted_by_reason() -> None:
    owner = Identity.generate()
    source = SceneReplica.create(owner, NOW, name="lab")
    source.create_entity(ROOT, {"name": {"value": "far future"}})
    data = source.commit(NOW + 3600)
    assert data is not None
    replica = SceneReplica.from_genesis(source.genesis, owner)
    results = replica.apply_many([data, b"garbage"], NOW)
    report = replay_report(replica, results)
    assert not report.complete
    assert report.refused.get("future_timestamp") == 1
    assert sum(report.refused.values()) == 2
    assert "2 stored change(s) refused" in report.describe()
