"""Per-member entity quotas (issue 9 item 6, CRDT part).

One editor of an open room once added 100,000 entities in 2.2 s (+117 MB on every replica).
Every replica now rejects a change that creates an entity numbered above the quota of its
author's role (in the change's causal past) as ``quota``, and the local API refuses such an
entity before it touches the batch (``QuotaExceeded``).
"""

from __future__ import annotations

import pytest

from meshnode.crdt import APPLIED, REJECTED, ROOT, PermissionDenied, QuotaExceeded
from meshnode.crdt.quota import ENTITY_QUOTA, entity_quota
from meshnode.crdt.roles import ROLE_ADMIN, ROLE_EDITOR, ROLE_OWNER, ROLE_VIEWER
from protocol.change import OP_CREATE

from .harness import craft, deliver, make_room

NOW = 1000.0
EDITOR_QUOTA = 10_000
ADMIN_QUOTA = 100_000


def test_documented_defaults():
    assert ENTITY_QUOTA == {ROLE_EDITOR: EDITOR_QUOTA, ROLE_ADMIN: ADMIN_QUOTA, ROLE_OWNER: None}
    assert entity_quota(ROLE_VIEWER) == 0 and entity_quota(ROLE_OWNER) is None


@pytest.mark.parametrize(
    ("member", "counter", "ok"),
    [
        (1, EDITOR_QUOTA, True),
        (1, EDITOR_QUOTA + 1, False),
        (1, 2**40, False),
        (2, ADMIN_QUOTA, True),
        (2, ADMIN_QUOTA + 1, False),
        (0, 2**40, True),  # the owner has no quota
    ],
)
def test_every_replica_rejects_an_entity_over_the_quota(member, counter, ok):
    """A crafted change may number its entities as it likes: the number is what is checked."""
    room = make_room(["editor", "admin"], tag="quota-remote")
    author = room.identities[member]
    data = craft(room.owner, author, [[OP_CREATE, counter, None]], now=NOW)
    for r in room.replicas:
        if r.identity is author:
            continue
        res = r.apply(data, NOW)
        if ok:
            assert res.status == APPLIED, res
        else:
            assert (res.status, res.reason) == (REJECTED, "quota")
            assert r.rejections == {"quota": 1}
            # Final: offered again, it is still refused, and nothing was created.
            assert r.apply(data, NOW).reason == "quota"
            assert r.state() == {}


def test_quota_follows_the_role_in_the_causal_past():
    """A member promoted to admin may go past the editor quota, in changes that saw the grant."""
    room = make_room(["editor"], tag="quota-promote")
    o, ed = room.replicas
    over = craft(o, room.identities[1], [[OP_CREATE, EDITOR_QUOTA + 1, None]], now=NOW)
    assert o.apply(over, NOW).reason == "quota"
    o.grant(room.identities[1].public_id, "admin")
    deliver(ed, [o.commit(NOW + 1)], NOW + 1)
    again = craft(o, room.identities[1], [[OP_CREATE, EDITOR_QUOTA + 1, None]], now=NOW + 2)
    assert o.apply(again, NOW + 2).status == APPLIED


def _fill(replica, peer, n: int, now: float) -> None:
    """Create ``n`` entities in as few changes as fit, delivering each to ``peer``."""
    for _ in range(n):
        if replica.pending_ops >= replica.limits.max_ops_per_change:
            deliver(peer, [replica.commit(now)], now)
        replica.create_entity(ROOT)
    deliver(peer, [replica.commit(now)], now)


def test_local_create_over_the_quota_is_refused_before_the_batch():
    room = make_room(["editor"], tag="quota-local")
    o, ed = room.replicas
    _fill(ed, o, EDITOR_QUOTA - 1, NOW)
    last = ed.create_entity(ROOT, {"name": {"text": "the last one"}})
    assert last.counter == EDITOR_QUOTA
    pending, state = ed.pending_ops, ed.state()
    with pytest.raises(QuotaExceeded) as err:
        ed.create_entity(ROOT, {"name": {"text": "one too many"}})
    assert err.value.reason == "quota"
    assert isinstance(err.value, PermissionDenied)
    assert f"{EDITOR_QUOTA}" in str(err.value)
    assert ed.pending_ops == pending and ed.state() == state
    deliver(o, [ed.commit(NOW)], NOW)
    assert o.state() == ed.state()
    # Deleting does not give entity numbers back: the quota bounds what was ever made.
    ed.delete(last)
    deliver(o, [ed.commit(NOW + 1)], NOW + 1)
    with pytest.raises(QuotaExceeded):
        ed.create_entity(ROOT)
    assert ed.pending_ops == 0 and ed.commit(NOW + 2) is None


def test_commit_rechecks_the_quota_after_a_demotion():
    """An admin past the editor quota is demoted before committing: the batch is rolled back
    instead of signing a change every replica would reject."""
    room = make_room(["admin"], tag="quota-demote")
    o, ad = room.replicas
    _fill(ad, o, EDITOR_QUOTA, NOW)
    extra = ad.create_entity(ROOT)
    assert extra.counter == EDITOR_QUOTA + 1
    o.grant(room.identities[1].public_id, "editor")
    deliver(ad, [o.commit(NOW + 1)], NOW + 1)
    with pytest.raises(QuotaExceeded):
        ad.commit(NOW + 2)
    assert ad.pending_ops == 0 and not ad.exists(extra)
    assert ad.state() == o.state()
