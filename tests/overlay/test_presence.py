"""Presence: latest wins per participant, stale and repeated updates are ignored, each
participant is rate-limited, silence expires, updates cross several hops, forgeries and
strangers are penalised, and a short flush sends the most interesting participants first."""

from __future__ import annotations

import hashlib

import pytest

from meshnode.identity import Identity
from meshnode.overlay import OverlayConfig, PeerMisbehaved, PresenceExpired, PresenceUpdated
from protocol.frames import encode_frame, make_presence

from .harness import PRESENCE, Network, line_edges, star_edges

CONFIG = OverlayConfig(presence_ttl_s=2.0, presence_rate_per_s=10.0, presence_burst=10.0)


def pair(config: OverlayConfig = CONFIG) -> tuple[Network, int, int]:
    net = Network(seed=31, config=config)
    a, b = net.add_room(2).nodes
    net.link(a, b, latency=0.01)
    net.run_for(0.5)
    return net, a, b


def updates(net: Network, i: int, about: int) -> list[PresenceUpdated]:
    who = net.nodes[about].peer_id
    return [e for e in net.nodes[i].events_of(PresenceUpdated) if e.participant == who]


def forged(net: Network, ident: Identity, seq: int, fields: dict, *,
           bad_sig: bool = False) -> bytes:
    room_id = net.rooms[0].room_id
    sign = (lambda data: b"\x01" * 64) if bad_sig else ident.sign
    return encode_frame(make_presence(room_id, ident.public_key, seq, fields, sign))


def test_latest_wins() -> None:
    net, a, b = pair()
    for x in range(5):
        assert net.presence(a, {"position": [float(x), 0.0, 0.0]})
        net.run_for(0.01)
    net.run_for(0.5)
    got = updates(net, b, a)
    assert got and got[-1].fields == {"position": [4.0, 0.0, 0.0]}
    ov = net.nodes[b].overlay
    assert ov is not None
    seen = ov.presence.seen[net.nodes[a].identity.public_key]
    assert seen.msg.fields == {"position": [4.0, 0.0, 0.0]}
    # Queued updates are coalesced: fewer frames than updates may cross, never more.
    assert net.nodes[a].frames_sent.get("Presence", 0) <= 5


def test_stale_and_duplicate_updates_are_ignored() -> None:
    net, a, b = pair()
    ident = net.nodes[a].identity
    new = forged(net, ident, 2_000_000, {"v": 2})
    old = forged(net, ident, 1_000_000, {"v": 1})
    net.inject(a, b, PRESENCE, new)
    net.run_for(0.1)
    net.inject(a, b, PRESENCE, new)  # a copy over another path
    net.inject(a, b, PRESENCE, old)  # stale
    net.run_for(0.5)
    assert [e.fields for e in updates(net, b, a)] == [{"v": 2}]
    assert net.nodes[b].events_of(PeerMisbehaved) == []


def test_each_participant_is_rate_limited() -> None:
    net, a, b = pair()
    # Locally: a publisher that goes too fast is told so.
    results = []
    for _ in range(30):
        results.append(net.presence(a, {"p": 1}))
        net.run_for(0.001)
    assert results[:10] == [True] * 10 and results.count(False) >= 15
    # Remotely: a relay cannot push one participant's updates faster than the limit either.
    c_ident = net.nodes[a].identity
    t0 = net.now
    for k in range(100):
        net.schedule(t0 + k * 0.005, lambda n, k=k: n.inject(
            a, b, PRESENCE, forged(n, c_ident, 10_000_000 + k, {"k": k})))
    net.run_for(1.0)
    ov_b = net.nodes[b].overlay
    assert ov_b is not None and ov_b.presence.dropped_rate > 0
    accepted = [e for e in updates(net, b, a) if e.at >= t0]
    # A burst of 10 at most, then 10 per second: about 15 in the half second of sending.
    assert 5 <= len(accepted) <= 10 + 10 * 0.5 + 2
    assert net.nodes[b].events_of(PeerMisbehaved) == []  # rate limiting is not misbehaviour


def test_silent_participant_expires() -> None:
    net, a, b = pair()
    net.presence(a, {"position": [1.0, 2.0, 3.0]})
    net.run_for(0.2)
    (first,) = updates(net, b, a)
    net.run_for(3.0)
    gone = net.nodes[b].events_of(PresenceExpired)
    assert [g.participant for g in gone] == [net.nodes[a].peer_id]
    assert gone[0].at == pytest.approx(first.at + CONFIG.presence_ttl_s)
    ov = net.nodes[b].overlay
    assert ov is not None and net.nodes[a].identity.public_key not in ov.presence.seen
    # Speaking again brings it back.
    net.presence(a, {"position": [0.0, 0.0, 0.0]})
    net.run_for(0.2)
    assert len(updates(net, b, a)) == 2


def test_presence_crosses_a_line() -> None:
    net = Network(seed=32, config=CONFIG)
    room = net.add_room(6)
    for x, y in line_edges(room.nodes):
        net.link(x, y, latency=0.02)
    net.run_for(0.5)
    net.presence(room.nodes[0], {"position": [1.0, 1.0, 1.0], "speaking": True})
    net.run_for(1.0)
    for i in room.nodes[1:]:
        got = updates(net, i, room.nodes[0])
        assert [g.fields for g in got] == [{"position": [1.0, 1.0, 1.0], "speaking": True}]
    # Later hops hear it later.
    times = [updates(net, i, room.nodes[0])[0].at for i in room.nodes[1:]]
    assert times == sorted(times) and times[-1] > times[0]


def test_forged_presence_is_penalised_and_a_strangers_dropped() -> None:
    net, a, b = pair()
    stranger = Identity.from_private_bytes(hashlib.sha256(b"stranger").digest())
    net.inject(a, b, PRESENCE, forged(net, stranger, 5, {"v": 1}))
    net.inject(a, b, PRESENCE, forged(net, net.nodes[a].identity, 99_000_000, {"v": 1},
                                      bad_sig=True))
    net.run_for(0.5)
    # A non-member's presence is dropped without blaming the relay (the grant of someone
    # just admitted may still be in flight); a bad signature is the relay's fault.
    reasons = [e.reason for e in net.nodes[b].events_of(PeerMisbehaved)]
    assert reasons == ["bad_presence"]
    overlay = net.nodes[b].overlay
    assert overlay is not None and overlay.stats.presence_from_strangers == 1
    assert updates(net, b, a) == []
    assert all(e.participant != stranger.public_id
               for e in net.nodes[b].events_of(PresenceUpdated))


def test_short_flushes_send_speaking_then_nearest_first() -> None:
    config = OverlayConfig(presence_per_flush=2, presence_interval_s=0.05, active_view_size=8)
    net = Network(seed=33, config=config)
    room = net.add_room(8)
    hub, *leaves = room.nodes
    for x, y in star_edges(room.nodes):
        net.link(x, y, latency=0.01)
    net.run_for(0.5)
    assert net.neighbors(hub) == set(leaves)
    net.presence(hub, {"position": [0.0, 0.0, 0.0]})
    net.run_for(0.5)
    watcher, talkers = leaves[0], leaves[1:]
    # Distances from the hub: 50, 10, 40, 20, 30, 60; the farthest one is speaking.
    spots = [50.0, 10.0, 40.0, 20.0, 30.0, 60.0]
    for i, x in zip(talkers, spots, strict=True):
        fields = {"position": [x, 0.0, 0.0]}
        if x == 60.0:
            fields["speaking"] = True
        net.presence(i, fields)
    net.run_for(1.0)
    heard = [e for e in net.nodes[watcher].events_of(PresenceUpdated)
             if e.participant != net.nodes[hub].peer_id]
    order = [e.fields["position"][0] for e in heard]
    assert order == [60.0, 10.0, 20.0, 30.0, 40.0, 50.0]
    # Two per flush: the six arrive over three flushes.
    times = sorted({round(e.at, 6) for e in heard})
    assert len(times) == 3


def test_expiry_is_due_exactly_when_the_timer_says() -> None:
    """``next_deadline`` reports ``at + ttl``; expiring on ``now - at >= ttl`` instead can round
    the other way, leave the participant in place and the timer due forever (a spin)."""
    from meshnode.overlay.presence import PresenceTable

    ttl = CONFIG.presence_ttl_s
    at = next(x / 7.0 for x in range(1, 10_000) if (x / 7.0 + ttl) - x / 7.0 < ttl)
    net, a, _ = pair()
    msg = make_presence(net.rooms[0].room_id, net.nodes[a].identity.public_key, 1, {},
                        net.nodes[a].identity.sign)
    table = PresenceTable(CONFIG, b"me" * 16)
    assert table.accept(msg, at)
    due = table.next_deadline()
    assert due == at + ttl
    assert table.expire(due) == [msg.participant]
    assert table.next_deadline() is None


def test_no_timer_spins_in_presence_runs() -> None:
    net = Network(seed=34, config=CONFIG)
    room = net.add_room(5)
    for x, y in line_edges(room.nodes):
        net.link(x, y, latency=0.013)
    for k in range(40):
        net.presence(room.nodes[k % 5], {"position": [k / 7.0, 0.0, 0.0]})
        net.run_for(0.37)
    net.run_for(3 * CONFIG.presence_ttl_s)
    assert all(n.timer_stalls == 0 for n in net.nodes)
    assert all(n.events_of(PresenceExpired) for n in net.nodes)
