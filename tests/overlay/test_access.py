"""Read access in the overlay (issue 9, item 1): a room's changes, announcements, heads
answers and presence go only to linked peers that hold a role in it. A peer with role
``none`` (a stranger, or a member who was removed) gets nothing; asking costs it score; a
grant makes the overlay serve it at once, and a removal stops that at once."""

from __future__ import annotations

from meshnode.crdt import ROOT
from meshnode.overlay import (
    OverlayConfig,
    PeerMisbehaved,
    PresenceUpdated,
    RefusalReason,
    RequestRefused,
)
from protocol.change import change_id
from protocol.frames import Heads, Want, encode_frame

from .harness import SYNC, Network, frame_kind

CONFIG = OverlayConfig(anti_entropy_interval_s=0.5, heads_min_interval_s=0.1)
CONTENT = {"Changes.push", "Changes.pull", "IHave", "Presence", "Heads"}


def build() -> tuple[Network, int, int, int]:
    """Owner 0, editor 1, and 2 with role ``none``, all linked to each other."""
    net = Network(seed=3, config=CONFIG, trace=True)
    room = net.add_room(3, roles=["editor", "none"])
    owner, editor, stranger = room.nodes
    net.link(owner, editor)
    net.link(owner, stranger)
    net.link(editor, stranger)
    return net, owner, editor, stranger


def delivered_to(net: Network, dst: int, since: float = 0.0) -> dict[str, int]:
    """Frames delivered to ``dst`` (after ``since``) by kind."""
    assert net.trace is not None
    kinds: dict[str, int] = {}
    for at, _src, to, _channel, frame in net.trace:
        if to == dst and at >= since:
            k = frame_kind(frame)
            kinds[k] = kinds.get(k, 0) + 1
    return kinds


def content_to(net: Network, dst: int, since: float = 0.0) -> dict[str, int]:
    return {k: n for k, n in delivered_to(net, dst, since).items() if k in CONTENT}


def activity(net: Network, owner: int, editor: int, seconds: float) -> None:
    """Edits and presence from the two members for ``seconds``."""
    end = net.now + seconds
    net.every(0.1, lambda n: n.edit(owner, lambda r: r.create_entity(ROOT)), until=end)
    net.every(0.1, lambda n: n.edit(editor, lambda r: r.create_entity(ROOT)), until=end)
    net.every(0.05, lambda n: n.presence(editor, {"position": [1.0, 2.0, n.now]}), until=end)
    net.run_for(seconds + 1.0)


def test_a_peer_with_role_none_gets_nothing() -> None:
    net, owner, editor, stranger = build()
    before = net.nodes[stranger].replica.change_count()
    activity(net, owner, editor, 3.0)
    # The members sync each other; the stranger, linked to both, received no content at all.
    net.assert_converged([owner, editor])
    assert net.nodes[owner].replica.change_count() > before + 50
    assert content_to(net, stranger) == {}
    assert net.nodes[stranger].replica.change_count() == before
    assert net.nodes[stranger].events_of(PresenceUpdated) == []


def test_asking_without_a_role_is_refused_and_scored() -> None:
    net, owner, editor, stranger = build()
    activity(net, owner, editor, 1.0)
    room_id = net.rooms[0].room_id
    # It asks for everything from scratch, and for the changes it knows exist.
    genesis = net.rooms[0].genesis
    ask_all = encode_frame(Heads(room_id, (change_id(genesis),), (), b"", True))
    wanted = tuple(sorted(net.nodes[owner].replica.recent_changes(20)))
    since = net.now
    for _ in range(5):
        net.inject(stranger, owner, SYNC, ask_all)
        net.inject(stranger, owner, SYNC, encode_frame(Want(room_id, wanted)))
        net.run_for(0.2)
    assert content_to(net, stranger, since) == {}
    refused = net.nodes[owner].events_of(RequestRefused)
    stranger_id = net.nodes[stranger].peer_id
    assert refused and all(e.peer == stranger_id for e in refused)
    assert {e.reason for e in refused} == {RefusalReason.NOT_A_MEMBER}
    penalties = [e for e in net.nodes[owner].events_of(PeerMisbehaved)
                 if e.peer == stranger_id]
    assert penalties and all(e.reason == "not_a_member" for e in penalties)
    assert penalties[-1].score < penalties[0].score  # it costs the asker, more each time


def test_a_grant_starts_serving_at_once_and_a_removal_stops_it() -> None:
    net, owner, editor, stranger = build()
    activity(net, owner, editor, 1.0)
    assert content_to(net, stranger) == {}
    stranger_id = net.nodes[stranger].peer_id

    # Granted: served without any reconnection (the links stay as they are).
    links_before = set(net.edges())
    net.edit(owner, lambda r: r.grant(stranger_id, "viewer"))
    activity(net, owner, editor, 2.0)
    assert set(net.edges()) == links_before
    net.assert_converged([owner, editor, stranger])
    editor_id = net.nodes[editor].peer_id
    assert any(e.participant == editor_id
               for e in net.nodes[stranger].events_of(PresenceUpdated))

    # Removed: from then on it receives nothing new, though still linked.
    net.edit(owner, lambda r: r.revoke(stranger_id))
    net.run_for(1.0)  # the removal reaches the editor too
    assert net.nodes[editor].replica.role_of(stranger_id) == "none"
    since = net.now
    count = net.nodes[stranger].replica.change_count()
    activity(net, owner, editor, 3.0)
    assert set(net.edges()) >= {(min(owner, stranger), max(owner, stranger))}
    assert content_to(net, stranger, since) == {}
    assert net.nodes[stranger].replica.change_count() == count
    assert net.nodes[owner].replica.change_count() > count + 50


def test_a_joiner_asking_before_its_grant_is_not_scored_and_syncs_at_once() -> None:
    """Every joiner says its heads before its grant is applied (the node admits it on link
    up): that is counted, not scored, and once granted it is served at once, not after the
    next anti-entropy round (the early refusal does not count as an answer)."""
    config = OverlayConfig(anti_entropy_interval_s=60.0, heads_min_interval_s=5.0)
    net = Network(seed=4, config=config, trace=True)
    room = net.add_room(2, roles=["none"])
    owner, joiner = room.nodes
    net.link(owner, joiner)
    for _ in range(20):
        net.edit(owner, lambda r: r.create_entity(ROOT))
    net.run_for(1.0)
    joiner_id = net.nodes[joiner].peer_id
    ask = encode_frame(Heads(room.room_id, (change_id(room.genesis),), (), b"", True))
    net.inject(joiner, owner, SYNC, ask)
    net.run_for(0.2)
    refused = [e.reason for e in net.nodes[owner].events_of(RequestRefused)
               if e.peer == joiner_id]
    assert refused and set(refused) == {RefusalReason.NOT_A_MEMBER}
    assert not [e for e in net.nodes[owner].events_of(PeerMisbehaved) if e.peer == joiner_id]

    net.edit(owner, lambda r: r.grant(joiner_id, "editor"))
    net.run_for(1.0)  # far less than the anti-entropy interval and the heads interval
    net.assert_converged([owner, joiner])


def test_access_is_reviewed_after_a_role_change_not_after_a_scene_change() -> None:
    """The review of every linked peer's role runs after an applied batch only if the
    replica's roles moved (``roles_version``, issue 15): a plain scene change does not
    trigger it, a grant and a removal do, and still take effect at once."""
    net, owner, editor, stranger = build()
    activity(net, owner, editor, 1.0)
    overlay = net.nodes[editor].overlay
    assert overlay is not None
    reviews: list[float] = []
    review = overlay._review_access

    def counting(now: float) -> None:
        reviews.append(now)
        review(now)

    overlay._review_access = counting  # type: ignore[method-assign]
    stranger_id = net.nodes[stranger].peer_id

    # The owner's scene changes reach the editor: applied there, no review.
    applied = net.nodes[editor].stats()["changes_applied"]
    end = net.now + 1.0
    net.every(0.1, lambda n: n.edit(owner, lambda r: r.create_entity(ROOT)), until=end)
    net.run_for(1.5)
    assert net.nodes[editor].stats()["changes_applied"] >= applied + 5
    assert reviews == []

    # A grant: reviewed when it is applied, and the stranger is served at once.
    net.edit(owner, lambda r: r.grant(stranger_id, "viewer"))
    net.run_for(0.5)
    assert net.nodes[editor].replica.role_of(stranger_id) == "viewer"
    assert len(reviews) == 1
    assert stranger_id in overlay.serving()

    # A removal: reviewed again, and nothing more goes to it.
    net.edit(owner, lambda r: r.revoke(stranger_id))
    net.run_for(0.5)
    assert net.nodes[editor].replica.role_of(stranger_id) == "none"
    assert len(reviews) == 2
    assert stranger_id not in overlay.serving()
