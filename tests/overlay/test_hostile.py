"""Hostile peers: a flooder, a garbage sender, a liar (announces what it never delivers) and an
equivocator. In each case the hostile node's neighbours score it down and cut it off, and the
honest nodes still converge among themselves."""

from __future__ import annotations

import random
from dataclasses import dataclass

import pytest

from meshnode.crdt import ROOT, SceneReplica
from meshnode.overlay import EquivocationDetected, OverlayConfig, PeerMisbehaved
from protocol.frames import Changes, Heads, IHave, decode_frame, encode_frame

from .harness import PRESENCE, SYNC, Network, random_connected_edges

CONFIG = OverlayConfig(
    anti_entropy_interval_s=1.0,
    peer_frames_per_s=100.0,
    peer_frame_burst=200.0,
    promise_timeout_s=2.0,
)


@dataclass
class Setup:
    net: Network
    honest: list[int]
    bad: int
    neighbours: set[int]
    rng: random.Random


def build(seed: int, allow_new_links: bool = False) -> Setup:
    """10 honest nodes, connected among themselves; the hostile node has 3 honest
    neighbours (so cutting it off leaves the honest graph connected)."""
    rng = random.Random(seed)
    net = Network(seed=seed, config=CONFIG, allow_new_links=allow_new_links)
    room = net.add_room(11)
    honest, bad = room.nodes[:10], room.nodes[10]
    for a, b in random_connected_edges(honest, 3.0, rng, max_degree=5):
        net.link(a, b, latency=rng.uniform(0.005, 0.05))
    neighbours = set(rng.sample(honest, 3))
    for j in sorted(neighbours):
        net.link(bad, j, latency=rng.uniform(0.005, 0.05))
    net.run_for(1.0)
    return Setup(net, honest, bad, neighbours, rng)


def honest_edits(s: Setup, seconds: float, every: float = 0.1) -> None:
    """Honest nodes keep editing while the attack runs."""
    end = s.net.now + seconds
    s.net.every(every, lambda n: n.edit_random(s.rng.choice(s.honest), s.rng), until=end)


def check_outcome(s: Setup, reason: str) -> None:
    net = s.net
    # Every neighbour of the hostile node scored it down for ``reason`` and cut it off.
    for j in s.neighbours:
        reasons = {e.reason for e in net.nodes[j].events_of(PeerMisbehaved)
                   if net.index_of(e.peer) == s.bad}
        assert reason in reasons, (j, reasons)
        assert (j, s.bad, "misbehaving") in {(d[1], d[2], d[3]) for d in net.disconnects}
        assert not net.is_linked(j, s.bad)
        assert net.nodes[j].overlay is not None
        assert net.nodes[j].overlay.scores.is_banned(net.nodes[s.bad].peer_id, net.now)
    # No honest node was blamed, and the honest nodes agree.
    for i in s.honest:
        blamed = {net.index_of(e.peer) for e in net.nodes[i].events_of(PeerMisbehaved)}
        assert blamed <= {s.bad}, (i, blamed)
    assert net.is_connected(s.honest, active=True)
    net.assert_converged(s.honest)
    for cid, origin in net.changes.items():
        if origin.node in s.honest:
            assert net.delivered(cid, s.honest)


def test_flooder_is_cut_off() -> None:
    s = build(seed=21)
    net, bad = s.net, s.bad
    room_id = net.rooms[0].room_id
    replica = net.nodes[bad].replica
    # Valid-looking frames, 500 per second to each neighbour (the limit is 100/s).
    flood = encode_frame(Heads(room_id, tuple(replica.heads()), (), b"", False))
    net.every(0.002, lambda n: [n.inject(bad, j, SYNC, flood) for j in sorted(s.neighbours)],
              until=net.now + 5.0)
    honest_edits(s, 5.0)
    net.run_for(8.0)
    check_outcome(s, "flood")
    st = sum(net.nodes[j].stats()["frames_dropped_rate"] for j in s.neighbours)
    assert st >= 3 * 40  # each neighbour dropped dozens before cutting it off


def test_garbage_sender_is_cut_off() -> None:
    s = build(seed=22)
    net, bad = s.net, s.bad
    junk = random.Random(5)

    def send_garbage(n: Network) -> None:
        for j in sorted(s.neighbours):
            channel = junk.choice([SYNC, PRESENCE])
            n.inject(bad, j, channel, junk.randbytes(junk.randrange(1, 300)))

    net.every(0.2, send_garbage, until=net.now + 4.0)
    honest_edits(s, 4.0)
    net.run_for(6.0)
    check_outcome(s, "garbage")


def test_liar_announcing_what_it_never_delivers_is_cut_off() -> None:
    s = build(seed=23)
    net, bad = s.net, s.bad
    room_id = net.rooms[0].room_id
    fake = random.Random(6)

    # It never sends a change: pushes become announcements, answers to grafts vanish.
    def lie(src: int, dst: int, channel: str, frame: bytes) -> list[tuple[str, bytes]]:
        msg = decode_frame(frame)
        if isinstance(msg, Changes):
            from protocol.change import change_id

            if msg.push:
                return [(SYNC, encode_frame(IHave(room_id, tuple(change_id(c)
                                                                  for c in msg.changes))))]
            return []
        return [(channel, frame)]

    net.set_filter(bad, lie)

    # And it announces changes that do not exist.
    def announce(n: Network) -> None:
        for j in sorted(s.neighbours):
            n.inject(bad, j, SYNC, encode_frame(IHave(room_id, (fake.randbytes(32),))))

    net.every(0.3, announce, until=net.now + 8.0)
    honest_edits(s, 8.0)
    net.run_for(12.0)
    check_outcome(s, "broken_promise")


def test_equivocator_is_detected_and_cut_off() -> None:
    s = build(seed=24)
    net, bad = s.net, s.bad
    honest_edits(s, 3.0)
    net.run_for(1.0)
    # A second replica under the same identity, with the same history...
    node = net.nodes[bad]
    twin = SceneReplica.from_genesis(net.rooms[0].genesis, node.identity)
    for r in twin.apply_many(node.replica.changes_since([]), net.now):
        assert r.status in ("applied", "duplicate")
    assert twin.heads() == node.replica.heads()
    # ... signs a different change with the same seq as the real one.
    a = net.edit(bad, lambda r: r.create_entity(ROOT, {"fork": {"side": "a"}}))
    twin.create_entity(ROOT, {"fork": {"side": "b"}})
    b_bytes = twin.commit(net.now)
    assert a is not None and b_bytes is not None
    target = min(s.neighbours)
    net.inject(bad, target, SYNC, encode_frame(Changes(net.rooms[0].room_id, (b_bytes,), True)))
    net.run_for(5.0)
    check_outcome(s, "equivocation")
    for i in s.honest:
        ev = net.nodes[i].events_of(EquivocationDetected)
        assert ev and ev[0].author == node.peer_id
        assert net.nodes[i].replica.equivocations  # evidence kept
        # Both sides are applied, resolved the same way everywhere (they create one entity
        # ID, so one of the two wins).
        fork = [e for e in net.nodes[i].replica.state().values() if "fork" in e["components"]]
        assert len(fork) == 1


@pytest.mark.parametrize("allow_new_links", [True])
def test_banned_flooder_cannot_come_back(allow_new_links: bool) -> None:
    """With link repair on, the hostile node's own overlay asks its old neighbours for links
    again; they refuse while it is banned."""
    s = build(seed=25, allow_new_links=allow_new_links)
    net, bad = s.net, s.bad
    room_id = net.rooms[0].room_id
    flood = encode_frame(Heads(room_id, tuple(net.nodes[bad].replica.heads()), (), b"", False))

    def blast(n: Network) -> None:
        for j in sorted(n.neighbors(bad)):
            n.inject(bad, j, SYNC, flood)

    first = net.neighbors(bad)  # link repair may have reshaped the overlay since build()
    assert first
    net.every(0.002, blast, until=net.now + 20.0)
    honest_edits(s, 20.0)
    net.run_for(25.0)
    banned_by = {d[1] for d in net.disconnects if d[2] == bad and d[3] == "misbehaving"}
    assert first <= banned_by
    for j in banned_by:
        assert not net.is_linked(j, bad)
    refused = [d for d in net.disconnects if d[2] == bad and d[3] == "banned"]
    assert refused, "it never tried to come back"
    net.run_for(5.0)
    honest_blamed = {net.index_of(e.peer) for i in s.honest
                     for e in net.nodes[i].events_of(PeerMisbehaved)}
    assert honest_blamed <= {bad}
    net.assert_converged(s.honest)
