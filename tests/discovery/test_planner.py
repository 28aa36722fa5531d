"""The sans-I/O discovery decisions and the rendezvous keys."""

import hashlib

import pytest

from meshnode.discovery import HostRecord
from meshnode.discovery.keys import cid_digest, cid_v1_raw, rendezvous, rendezvous_cid
from meshnode.discovery.planner import (
    AnnounceSchedule,
    Check,
    Dial,
    PeerBackoff,
    PlannerConfig,
    Rejection,
    Skip,
    pick_dials,
    pick_join_dials,
    triage,
)
from meshnode.identity import Identity

CFG = PlannerConfig(announce_interval_s=600, retry_announce_s=5, backoff_base_s=5,
                    backoff_max_s=40, max_providers=6, max_checks=2, max_tracked=3,
                    max_dials=2)
PEERS = sorted(Identity.from_private_bytes(bytes([i]) * 32).public_id for i in range(1, 9))
ME = PEERS[0]


def test_rendezvous_is_a_cidv1_raw_of_a_tagged_hash_not_the_room_id() -> None:
    room = bytes(range(32))
    cid = rendezvous_cid(room)
    assert cid.startswith("bafkrei") and room.hex() not in cid
    assert cid_digest(cid) == hashlib.sha256(rendezvous(room)).digest()
    assert rendezvous(room) != hashlib.sha256(room).digest()
    assert cid_digest("bafy" + cid[4:]) is None and cid_digest("zzz") is None
    with pytest.raises(ValueError):
        rendezvous(b"short")


def test_libp2p_reads_our_cid_as_the_same_multihash() -> None:
    pytest.importorskip("libp2p")
    from libp2p.kad_dht.kad_dht import _encode_key

    cid = cid_v1_raw(b"x")
    assert _encode_key(cid) == bytes((0x12, 0x20)) + hashlib.sha256(b"x").digest()


def test_announce_schedule_announces_new_rooms_at_once_then_every_interval() -> None:
    s = AnnounceSchedule(CFG)
    s.update([b"r1", b"r2"], now=0)
    assert s.due(0) == [b"r1", b"r2"] and s.due(0) == []  # in flight: not due twice
    s.done(b"r1", True, 1)
    s.done(b"r2", False, 1)
    assert s.get_timer() == 6  # r2 retried after 5 s
    s.done(b"r2", False, 6 + 0 * s.due(6).__len__())
    assert s.get_timer() == 16  # then after 10 s (doubling), r1 at 601
    s.soon(20)
    assert s.due(21) == [b"r1", b"r2"]
    s.update([b"r2"], 22)
    assert s.rooms == frozenset({b"r2"})
    s.done(b"r1", True, 23)  # a room dropped meanwhile stays dropped
    assert s.rooms == frozenset({b"r2"})


def test_backoff_doubles_caps_and_stays_bounded() -> None:
    b = PeerBackoff(CFG)
    assert b.failed("p", 0) == 5 and b.failed("p", 5) == 15 and b.failed("p", 15) == 35
    assert b.failed("p", 35) == 75 and b.failed("p", 75) == 115  # capped at 40 s
    assert not b.may_try("p", 100) and b.may_try("p", 115)
    b.succeeded("p")
    assert b.may_try("p", 0)
    for i in range(10):
        b.failed(f"q{i}", 0)
    assert len(b) == 3  # oldest forgotten


def test_triage_checks_a_bounded_few_and_skips_the_rest_with_reasons() -> None:
    b = PeerBackoff(CFG)
    b.failed(PEERS[3], 0)
    providers = [(ME, ()), (PEERS[1], ("/a",)), (PEERS[1], ()), ("QmNotOurs", ()),
                 (PEERS[2], ()), (PEERS[3], ()), (PEERS[4], ()), (PEERS[5], ()),
                 (PEERS[6], ()), (PEERS[7], ())]
    out = triage(providers, me=ME, known_live=[PEERS[2]], backoff=b,
                 may_link=lambda p: p != PEERS[4], now=1, config=CFG)
    assert out == [Check(PEERS[1], ("/a",)), Skip("QmNotOurs", Rejection.BAD_PROVIDER),
                   Skip(PEERS[3], Rejection.BACKING_OFF), Skip(PEERS[4], Rejection.DENIED),
                   Check(PEERS[5], ()), Skip(PEERS[6], Rejection.TOO_MANY_PROVIDERS),
                   Skip(PEERS[7], Rejection.TOO_MANY_PROVIDERS)]


def test_pick_dials_only_live_unlinked_allowed_hosts_with_urls() -> None:
    b = PeerBackoff(CFG)
    b.failed(PEERS[5], 0)
    recs = [HostRecord(p, (f"http://{i}",), (), live=i != 3)
            for i, p in enumerate(PEERS[:7])] + [HostRecord(PEERS[7], (), ("/x",), True)]
    out = pick_dials(recs, me=ME, linked=[PEERS[1]], may_link=lambda p: p != PEERS[2],
                     backoff=b, now=1, config=CFG)
    assert out == [Dial(PEERS[4], "http://4"), Dial(PEERS[6], "http://6")]


def test_config_refuses_cards_that_expire_before_their_republication() -> None:
    with pytest.raises(ValueError):
        PlannerConfig(announce_interval_s=600, card_ttl_s=60)


def test_triage_skips_providers_that_hold_no_role_unchecked() -> None:
    """A provider record is anyone's claim: with an authoritative replica, strangers are
    skipped before any liveness check (never contacted)."""
    members = {PEERS[1], PEERS[3]}
    providers = [(p, ("/x",)) for p in PEERS[1:5]]
    out = triage(providers, me=ME, known_live=[], backoff=PeerBackoff(CFG),
                 may_link=lambda p: True, now=0, config=CFG, member=members.__contains__)
    assert out == [Check(PEERS[1], ("/x",)), Skip(PEERS[2], Rejection.NOT_IN_ROOM),
                   Check(PEERS[3], ("/x",)), Skip(PEERS[4], Rejection.NOT_IN_ROOM)]
    # Without the replica (None) nothing is known: all are checked (up to max_checks).
    out = triage(providers, me=ME, known_live=[], backoff=PeerBackoff(CFG),
                 may_link=lambda p: True, now=0, config=CFG)
    assert [type(a) for a in out] == [Check, Check, Skip, Skip]


def test_join_dials_vouched_hosts_first_strangers_late_and_never_once_admitted() -> None:
    cfg = PlannerConfig(max_dials=3, join_unverified_round=2)
    founder, inviter, s1, s2 = PEERS[4], PEERS[6], PEERS[1], PEERS[2]
    recs = [HostRecord(p, (f"http://{p[-4:]}",), (), True) for p in (s1, s2, founder, inviter)]
    vouched = {founder, inviter}.__contains__
    backoff = PeerBackoff(cfg)

    def pick(round_no: int, admitted: bool, linked: tuple[str, ...] = ()) -> list[str]:
        return [d.peer_id for d in pick_join_dials(
            recs, me=ME, linked=linked, may_link=lambda p: True, backoff=backoff, now=0,
            config=cfg, round_no=round_no, admitted=admitted, vouched=vouched)]

    # Early rounds: only those the genesis or the invite vouch for (their invite is safe).
    assert pick(0, False) == [founder, inviter] and pick(1, False) == [founder, inviter]
    # The vouched did not answer (linked none): strangers too, vouched first, bounded.
    assert pick(2, False) == [founder, inviter, s1]
    assert pick(2, False, linked=(founder, inviter)) == [s1, s2]
    # Admitted: the grants decide; a stranger is never dialled, whatever the round.
    assert pick(4, True, linked=(founder,)) == [inviter]
    # A host that failed is backed off: not dialled again in the next rounds.
    backoff.failed(s1, 0)
    assert pick(3, False, linked=(founder, inviter)) == [s2]


def test_the_answer_watch_counts_libp2p_parse_failures_and_hides_them() -> None:
    import logging

    from meshnode.discovery.answer_watch import DhtAnswerWatch

    seen: list[tuple[str, str]] = []
    watch = DhtAnswerWatch(lambda reason, detail: seen.append((reason, detail)))
    watch.install()
    logger = logging.getLogger("libp2p.kad_dht.provider_store")
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logger.addHandler(handler)
    try:
        logger.warning("Error getting providers from QmX: Error parsing message with type "
                       "'Message'")
        logger.warning("Received an invalid-signed-record, skipping provider")
        logger.warning("Failed to get providers from QmY: connection refused")  # not garbage
        logger.error("Host or peer_routing not initialized")
    finally:
        logger.removeHandler(handler)
        watch.uninstall()
    assert [r for r, _ in seen] == ["bad_dht_answer", "bad_dht_answer"]
    assert [r.getMessage() for r in records] == ["Host or peer_routing not initialized"]
    logger.warning("Error parsing message")  # uninstalled: not counted
    assert len(seen) == 2
