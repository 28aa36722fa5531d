"""Client failover's pure parts: the host ring, unacknowledged changes, redelivery frames, the
hosts decoder (fuzzed); the node side: a redelivered change is reported for an Ack; which
foreign origins may offer a browser connection."""

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshnode.client.failover import (
    MAX_HOSTS,
    FailoverSettings,
    HostEntry,
    HostRing,
    UnackedChanges,
    normalize_url,
    parse_hosts,
    redelivery_frames,
)
from meshnode.crdt import ROOT, SceneReplica
from meshnode.identity import Identity
from meshnode.overlay.events import ChangeRedelivered
from meshnode.web.host_origins import HostOrigins, origin_of
from protocol.frames import Changes, decode_frame, encode_frame
from tests.overlay.harness import Network

A, B, C = "http://a.example:8470", "http://b.example:8470", "https://c.example"


def test_ring_tries_the_others_round_robin_and_the_lost_one_last() -> None:
    ring = HostRing(A + "/", [B])
    assert ring.learn([C, "ftp://x", "not a url", B]) is True
    assert ring.urls == (A, B, C)
    assert ring.order_after(A) == [B, C, A]
    assert ring.order_after(B) == [C, A, B]
    assert ring.order_after(C) == [A, B, C]
    assert ring.order_after("http://unknown") == [A, B, C]
    assert ring.learn([C]) is False
    ring.learn([f"http://h{i}.example" for i in range(100)])
    assert len(ring.urls) == MAX_HOSTS


def test_backoff_is_bounded() -> None:
    s = FailoverSettings(backoff_initial_s=0.2, backoff_max_s=2.0)
    waits = [HostRing.backoff(n, s) for n in range(1, 40)]
    assert waits[:4] == [0.2, 0.4, 0.8, 1.6]
    assert max(waits) == 2.0 and waits == sorted(waits)


@pytest.mark.parametrize("kwargs", [{"dead_after_s": 1.0}, {"dial_timeout_s": 0.0},
                                    {"backoff_max_s": float("nan")}, {"urls": ("nope",)}])
def test_settings_refuse_what_would_not_work(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="FailoverSettings"):
        FailoverSettings(**kwargs)


def test_unacked_changes_keep_order_until_acked() -> None:
    u = UnackedChanges()
    for cid in (b"1", b"2", b"3"):
        u.add(cid)
    u.acked([b"2", b"unknown"])
    assert list(u) == [b"1", b"3"] and len(u) == 2 and b"1" in u
    u.acked([b"1", b"3"])
    assert len(u) == 0


def test_redelivery_frames_carry_every_change_in_order_within_bounds() -> None:
    room = bytes(32)
    datas = [bytes([i % 256]) * (1000 + 37 * i) for i in range(150)]
    frames = redelivery_frames(room, datas)
    got: list[bytes] = []
    for frame in frames:
        msg = decode_frame(frame)
        assert isinstance(msg, Changes) and msg.room_id == room and msg.push is False
        assert len(msg.changes) <= 64 and len(frame) < 64 * 1024
        got.extend(msg.changes)
    assert got == datas
    assert redelivery_frames(room, []) == []


def test_parse_hosts_keeps_good_entries_only() -> None:
    body = [{"peer_id": "12D3KooWa", "urls": [A + "/", "javascript:alert(1)", A], "live": True},
            {"peer_id": 5, "urls": [B]}, {"peer_id": "x", "urls": []}, "junk",
            {"peer_id": "12D3KooWc", "urls": C}]
    assert parse_hosts(body) == [HostEntry("12D3KooWa", (A,)), HostEntry("12D3KooWc", (C,))]
    assert parse_hosts({"hosts": body[:1]}) == [HostEntry("12D3KooWa", (A,))]
    assert parse_hosts(None) == [] and parse_hosts("[]") == []
    assert normalize_url("http://user:pw@a.example") is None
    assert normalize_url("http://a.example:99999") is None


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(
        st.sampled_from(["peer_id", "urls", "hosts", "live", "x"]) | st.text(max_size=5),
        inner, max_size=5),
    max_leaves=40)


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_parse_hosts_never_raises_and_bounds_what_it_keeps(body: object) -> None:
    entries = parse_hosts(json.loads(json.dumps(body)))
    assert len(entries) <= MAX_HOSTS
    for e in entries:
        assert 1 <= len(e.urls) <= 4
        assert all(normalize_url(u) == u for u in e.urls)


def test_a_leaf_redelivering_a_known_change_is_reported_a_node_is_not() -> None:
    net = Network(seed=3)
    room = net.add_room(3)
    hub, other, client = room.nodes
    net.link(hub, other)
    net.link(hub, client, leaf=True)
    net.run_for(3.0)
    cid = net.edit_random(client)
    assert cid is not None
    assert net.run_until(lambda: net.delivered(cid), timeout=10.0)
    overlay = net.nodes[hub].overlay
    assert overlay is not None
    data = net.nodes[client].replica.change_bytes(cid)
    assert data is not None
    frame = encode_frame(Changes(overlay.room_id, (data,), push=False))
    for sender in (other, client):
        overlay.receive(net.nodes[sender].peer_id, "sync", frame, net.now)
    events = []
    while (ev := overlay.next_event()) is not None:
        events.append(ev)
    assert [e for e in events if isinstance(e, ChangeRedelivered)] == [
        ChangeRedelivered(cid, net.nodes[client].peer_id, net.now)]


def test_only_pages_of_the_rooms_other_hosts_may_offer_cross_origin() -> None:
    owner, host, stranger = Identity.generate(), Identity.generate(), Identity.generate()
    replica = SceneReplica.create(owner, 1_700_000_000.0, name="r", nonce=bytes(16))
    replica.grant(host.public_id, "admin")
    replica.create_entity(ROOT, {})
    replica.commit(1_700_000_000.0)
    origins = HostOrigins(lambda rid: replica if rid == replica.room_id else None)
    origins.remember(host.public_id, "http://host.example:8470/")
    origins.remember(stranger.public_id, "http://evil.example")
    assert origins.allows("http://host.example:8470", replica.room_id)
    assert not origins.allows("http://evil.example", replica.room_id)  # holds no role
    assert not origins.allows("http://host.example:8470", bytes(32))  # not a room of ours
    assert origins.known("http://evil.example") and not origins.known("http://other.example")
    assert origin_of("https://H.example:443/x") == "https://h.example"
    assert origin_of("http://[::1]:8470") == "http://[::1]:8470"
    assert origin_of("file:///etc") is None
