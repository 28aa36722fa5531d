"""Membership (HyParView): bounded views, refusals with alternatives, JOIN, shuffles, repair
after a lost neighbour, healing after a crash, and a stable overlay once it has settled."""

from __future__ import annotations

import random

import pytest

from meshnode.overlay import ConnectRequest, OverlayConfig, PresenceUpdated

from .harness import Network, line_edges, random_connected_edges, ring_edges


def active(net: Network, i: int) -> set[int]:
    ov = net.nodes[i].overlay
    assert ov is not None
    return {net.index_of(p) for p in ov.view.active}


def passive(net: Network, i: int) -> set[int]:
    ov = net.nodes[i].overlay
    assert ov is not None
    return {net.index_of(p) for p in ov.view.passive}


def test_excess_link_is_refused_with_alternatives() -> None:
    config = OverlayConfig(active_view_size=3)
    net = Network(seed=41, config=config)
    room = net.add_room(8)
    hub, a, b, c, x, y, *_ = room.nodes
    for j in (a, b, c):
        net.link(hub, j)
    net.link(x, y)  # x has a neighbour already: its link to a full hub is low priority
    net.run_for(0.5)
    assert active(net, hub) == {a, b, c}
    net.link(x, hub)
    net.run_for(0.5)
    assert active(net, hub) == {a, b, c}
    assert not net.is_linked(x, hub)
    assert [d[3] for d in net.disconnects if d[1] == hub] == ["view_full"]
    assert net.nodes[x].frames_received.get("Disconnect", 0) == 1
    # The refusal named alternatives, which x now keeps as candidates.
    assert {a, b, c} & passive(net, x)
    assert hub in passive(net, x)


def test_lonely_node_is_taken_even_by_a_full_node() -> None:
    """HyParView's JOIN: a node with no neighbour is accepted (a random neighbour makes room)
    and walked into the overlay with ForwardJoin."""
    config = OverlayConfig(active_view_size=3)
    net = Network(seed=42, config=config)
    room = net.add_room(8)
    hub, *others = room.nodes
    for x, y in ring_edges(others[:6]):
        net.link(x, y)
    for j in others[:3]:
        net.link(hub, j)
    net.run_for(2.0)
    assert active(net, hub) == set(others[:3])
    net.allow_new_links = True
    newcomer = others[6]
    t0 = net.now
    walks = net.nodes[hub].frames_sent.get("ForwardJoin", 0)
    net.link(newcomer, hub)
    net.run_for(0.03)  # its JOIN has arrived (latency 0.02)
    assert newcomer in active(net, hub) and len(active(net, hub)) == 3
    assert [d[3] for d in net.disconnects if d[0] >= t0 and d[1] == hub] == ["make_room"]
    assert net.nodes[hub].frames_sent.get("ForwardJoin", 0) >= walks + 2
    net.run_for(3.0)
    assert len(active(net, hub)) <= 3
    # The ForwardJoin walks gave it more neighbours than the one it came in through.
    assert len(active(net, newcomer)) >= 2
    assert net.is_connected(active=True)


def test_active_and_passive_views_stay_bounded() -> None:
    config = OverlayConfig(active_view_size=4, passive_view_size=6, shuffle_interval_s=0.5,
                           repair_interval_s=0.5)
    net = Network(seed=43, config=config, allow_new_links=True)
    room = net.add_room(30)
    rng = random.Random(43)
    for a, b in random_connected_edges(room.nodes, 4.0, rng):
        net.link(a, b)
    for _ in range(40):
        net.run_for(0.5)
        for i in room.nodes:
            assert len(active(net, i)) <= 4
            assert len(passive(net, i)) <= 6
            assert not active(net, i) & passive(net, i)
    assert net.is_connected(active=True)


def test_shuffles_populate_passive_views() -> None:
    config = OverlayConfig(shuffle_interval_s=0.5, passive_view_size=30)
    net = Network(seed=44, config=config)
    room = net.add_room(12)
    for a, b in line_edges(room.nodes):
        net.link(a, b)
    net.run_for(0.1)
    shuffles0 = net.frames_sent_totals().get("Shuffle", 0)
    net.run_for(20.0)
    assert net.frames_sent_totals()["Shuffle"] > shuffles0 + 12 * 10
    assert net.frames_sent_totals()["ShuffleReply"] > 0
    far = 0
    for k, i in enumerate(room.nodes):
        beyond = {j for m, j in enumerate(room.nodes) if abs(m - k) >= 2}
        far += len(passive(net, i) & beyond)
    # On a line, shuffles spread knowledge of nodes well beyond the neighbours.
    assert far >= 12 * 3


def test_lost_neighbour_is_replaced_from_the_passive_view() -> None:
    config = OverlayConfig(active_view_size=3, shuffle_interval_s=0.5, repair_interval_s=0.5)
    net = Network(seed=45, config=config)  # no new links: we look at what it asks for
    room = net.add_room(8)
    for a, b in ring_edges(room.nodes):
        net.link(a, b)
    net.run_for(10.0)
    me, gone = room.nodes[0], room.nodes[1]
    assert passive(net, me)
    asked: list[tuple[int, bool]] = []

    def watch(i: int, ev: object) -> None:
        if i == me and isinstance(ev, ConnectRequest):
            j = net.index_of(ev.peer)
            asked.append((j, j in passive(net, me)))

    net.on_event = watch
    net.crash(gone)
    net.run_for(1.0)
    assert asked, "no replacement was requested"
    assert all(in_passive for _, in_passive in asked)


@pytest.mark.parametrize("seed", [46, 47, 48])
def test_overlay_heals_after_a_bridge_node_crashes(seed: int) -> None:
    """Two clusters joined only through one node: when it crashes, the overlay repairs itself
    from passive views into one connected graph, and changes cross again."""
    config = OverlayConfig(active_view_size=5, shuffle_interval_s=1.0, repair_interval_s=0.5,
                           anti_entropy_interval_s=1.0)
    net = Network(seed=seed, config=config, allow_new_links=True)
    room = net.add_room(13)
    bridge, *rest = room.nodes
    left, right = rest[:6], rest[6:]
    rng = random.Random(seed)
    for side in (left, right):
        for a, b in ring_edges(side):
            net.link(a, b, latency=rng.uniform(0.005, 0.05))
        net.link(bridge, side[0])
    net.run_for(15.0)
    net.crash(bridge)
    live = net.live()
    assert net.run_until(lambda: net.is_connected(live, active=True), timeout=30.0)
    cid = net.edit(left[2], lambda r: r.create_entity())
    net.run_for(3.0)
    assert net.delivered(cid, live)
    net.assert_converged(live)


def test_settled_overlay_is_stable() -> None:
    """Once the views have filled, links stay put: repairs do not start ForwardJoin cascades,
    and a repair link that is no longer needed does not evict a working neighbour."""
    net = Network(seed=49, config=OverlayConfig(), allow_new_links=True)
    room = net.add_room(30)
    rng = random.Random(49)
    for a, b in random_connected_edges(room.nodes, 3.0, rng):
        net.link(a, b, latency=rng.uniform(0.005, 0.05))
    net.run_for(60.0)
    edges0 = net.edges()
    t0 = net.now
    net.run_for(60.0)
    evictions = [d for d in net.disconnects if d[0] >= t0 and d[3] == "make_room"]
    changed = edges0 ^ net.edges()
    print(f"\nsettled: {len(evictions)} evictions and {len(changed)} link changes in 60 s")
    assert net.is_connected(active=True)
    assert len(evictions) <= 5
    assert len(changed) <= 10


def _split_cliques(rewire_interval_s: float) -> tuple[Network, list[int], list[int]]:
    """12 nodes on a ring, partitioned into two halves for 30 s (each half becomes a
    complete graph of 6: every view full), an edit on each side, then healed."""
    config = OverlayConfig(active_view_size=5, repair_interval_s=0.5, anti_entropy_interval_s=1.0,
                           rewire_interval_s=rewire_interval_s)
    net = Network(seed=50, config=config, allow_new_links=True)
    room = net.add_room(12)
    left, right = room.nodes[:6], room.nodes[6:]
    for a, b in ring_edges(room.nodes):
        net.link(a, b)
    net.partition([left, right])
    net.run_for(30.0)
    assert all(len(active(net, i)) == 5 for i in room.nodes)
    net.edit_random(left[0])
    net.edit_random(right[0])
    net.run_for(2.0)
    net.heal()  # reopens the two cut ring links: both ends are full, so both are refused
    for i in room.nodes:
        net.introduce(i, room.nodes)
    return net, left, right


def test_two_full_cliques_stay_split_without_rewiring() -> None:
    """The limitation rewiring exists for: HyParView alone never links full views again."""
    net, _left, _right = _split_cliques(rewire_interval_s=0.0)
    net.run_for(60.0)
    assert not net.is_connected(active=True)
    assert not net.converged()


def test_two_full_cliques_merge_after_a_partition() -> None:
    """Two groups whose views all filled up during a partition refuse every link from the
    other side (only a JOIN may displace a neighbour): rewiring links them again, and
    anti-entropy then merges what each side wrote."""
    net, left, right = _split_cliques(rewire_interval_s=5.0)
    assert net.run_until(lambda: net.is_connected(active=True), timeout=60.0)
    assert net.run_until(net.converged, timeout=30.0)
    net.assert_converged()
    for i in left + right:
        assert len(active(net, i)) <= 5


def test_rewiring_keeps_a_healthy_overlay_connected_and_bounded() -> None:
    config = OverlayConfig(active_view_size=4, rewire_interval_s=2.0)
    net = Network(seed=7, config=config, allow_new_links=True)
    room = net.add_room(20)
    for a, b in ring_edges(room.nodes):
        net.link(a, b)
    for i in room.nodes:
        net.introduce(i, room.nodes)
    net.run_for(20.0)
    for step in range(10):
        net.edit_random(room.nodes[step % 20])
        net.run_for(3.0)
        assert net.is_connected(active=True)
        for i in room.nodes:
            # A swap holds its new peer on top of the view until the peer confirms.
            trials = net.nodes[i].overlay.view.trials  # type: ignore[union-attr]
            assert len(trials) <= 1
            assert len(active(net, i)) <= 4 + len(trials)
    assert net.run_until(net.converged, timeout=30.0)


def test_leaves_are_served_beyond_the_view_and_take_no_part_in_membership() -> None:
    """A node's clients are leaves: ten of them on a hub whose view holds two neighbours all
    get every change and every presence update, and none is walked into the overlay."""
    config = OverlayConfig(active_view_size=2, repair_interval_s=0.5)
    net = Network(seed=11, config=config, allow_new_links=True)
    room = net.add_room(14)
    hub, other, *clients = room.nodes
    net.link(hub, other)
    client_config = OverlayConfig(active_view_size=1)
    for c in clients:
        net.nodes[c].overlay.config = client_config  # type: ignore[union-attr]
        net.link(hub, c, leaf=True)
    net.run_for(5.0)
    hub_overlay = net.nodes[hub].overlay
    assert hub_overlay is not None
    assert active(net, hub) == {other}
    assert len(hub_overlay.leaves) == len(clients)
    assert not any(isinstance(e, ConnectRequest) for e in net.nodes[other].events)
    # A change from one client reaches every other client and the other node.
    cid = net.edit_random(clients[0])
    assert cid is not None
    assert net.run_until(lambda: net.delivered(cid), timeout=10.0)
    # Presence too.
    assert net.presence(clients[1], {"position": [1.0, 0.0, 0.0]})
    who = net.nodes[clients[1]].peer_id
    assert net.run_until(lambda: all(
        any(e.participant == who for e in net.nodes[c].events_of(PresenceUpdated))
        for c in [*clients[2:], other]), timeout=10.0)
    # A leaf that leaves is forgotten, not replaced.
    net.crash(clients[0])
    net.run_for(5.0)
    assert len(hub_overlay.leaves) == len(clients) - 1
    assert active(net, hub) == {other}
