"""Limits against cheap amplification and write floods (issue 9, item 6):

* replies to a peer are paid from a per-peer byte budget, so a flood of ``Heads``/``Want``
  can make a node send at most ``reply_factor`` times what the peer sent, plus an allowance
  and a slow refill (``overlay/budget.py``);
* a per-author ingress quota refuses an author's changes beyond its rate with reason
  ``quota``, without penalising the relay; anti-entropy brings them later, so nothing is
  lost.
"""

from __future__ import annotations

from meshnode.crdt import ROOT
from meshnode.overlay import OverlayConfig, PeerMisbehaved, RefusalReason, RequestRefused
from protocol.change import change_id
from protocol.frames import Heads, Want, encode_frame

from .harness import SYNC, Network

FACTOR = 4.0
ALLOWANCE = 64 * 1024
REFILL = 8 * 1024.0


def bytes_between(net: Network, src: int, dst: int, since: float) -> int:
    assert net.trace is not None
    return sum(len(f) for at, s, d, _c, f in net.trace if s == src and d == dst and at >= since)


def test_a_heads_and_want_flood_is_bounded_by_what_the_peer_sent() -> None:
    config = OverlayConfig(reply_factor=FACTOR, reply_allowance_bytes=ALLOWANCE,
                           reply_refill_bytes_per_s=REFILL, heads_min_interval_s=0.05,
                           anti_entropy_interval_s=1.0)
    net = Network(seed=5, config=config, trace=True)
    room = net.add_room(2)
    owner, asker = room.nodes
    # About 400 KB of history the asker (a member, behind) does not have.
    blob = "x" * 2_000
    for k in range(200):
        net.edit(owner, lambda r, k=k: r.create_entity(ROOT, {"n": {"k": k, "blob": blob}}))
    history = sum(len(d) for d in net.nodes[owner].replica.changes_since([], {}))
    assert history > 400_000

    start = net.now
    net.link(owner, asker)
    net.run_for(0.1)
    # The flood: "I have nothing" again and again, and Want for every change it knows of.
    room_id = room.room_id
    ask_all = encode_frame(Heads(room_id, (change_id(room.genesis),), (), b"", True))
    every_id = tuple(sorted(change_id(d)
                            for d in net.nodes[owner].replica.changes_since([], {})))
    wants = [encode_frame(Want(room_id, every_id[i:i + 256]))
             for i in range(0, len(every_id), 256)]
    for _ in range(40):
        net.inject(asker, owner, SYNC, ask_all)
        for w in wants:
            net.inject(asker, owner, SYNC, w)
        net.run_for(0.1)
    net.run_for(0.5)
    elapsed = net.now - start

    received = bytes_between(net, asker, owner, start)
    sent = bytes_between(net, owner, asker, start)
    asked_for = 40 * 2 * history  # what the requests named, answered in full
    bound = FACTOR * received + ALLOWANCE + REFILL * elapsed
    assert asked_for > 10 * bound  # the attack asks for much more than the bound
    replies = net.nodes[owner].stats()["reply_bytes_out"]
    assert replies <= bound
    # Everything else it got (its own Heads announcements) is a few hundred bytes.
    assert sent <= bound + 2_048
    refused = [e for e in net.nodes[owner].events_of(RequestRefused)
               if e.reason is RefusalReason.REPLY_BUDGET]
    assert refused
    # Slowed, not punished: the asker is still linked, and catches up in the end.
    assert net.is_linked(owner, asker)
    net.run_for(120.0)
    net.assert_converged([owner, asker])


def quota_net() -> tuple[Network, int, int, int]:
    config = OverlayConfig(author_changes_per_min=120.0, author_change_burst=5.0,
                           anti_entropy_interval_s=0.5)
    net = Network(seed=9, config=config)
    room = net.add_room(3)
    writer, relay, reader = room.nodes[1], room.nodes[0], room.nodes[2]
    net.link(writer, relay)
    net.link(relay, reader)
    net.run_for(0.5)
    return net, writer, relay, reader


def test_an_author_over_quota_is_slowed_not_lost_and_the_relay_is_not_blamed() -> None:
    net, writer, relay, reader = quota_net()
    made = [net.edit(writer, lambda r: r.create_entity(ROOT)) for _ in range(30)]
    net.run_for(1.0)
    # Beyond its burst, the writer's changes were refused for now with reason "quota"...
    relay_refused = [e for e in net.nodes[relay].events_of(RequestRefused)
                     if e.reason is RefusalReason.QUOTA]
    assert relay_refused and relay_refused[0].peer == net.nodes[writer].peer_id
    assert not all(net.nodes[relay].replica.has_change(c) for c in made if c)
    # ...and nobody was penalised for it: not the writer's link, not the relay.
    for i in (relay, reader):
        assert [e for e in net.nodes[i].events_of(PeerMisbehaved)] == []
    # Anti-entropy brings the rest at the quota's pace: nothing is lost.
    net.run_for(40.0)
    assert all(net.delivered(c, [relay, reader]) for c in made if c)
    net.assert_converged()
    reader_refused = [e for e in net.nodes[reader].events_of(RequestRefused)
                      if e.reason is RefusalReason.QUOTA]
    assert all(e.peer == net.nodes[relay].peer_id for e in reader_refused)
    assert net.nodes[reader].stats()["changes_applied"] >= 30
