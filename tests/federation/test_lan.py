"""mDNS announcements as untrusted input, the LAN peer table's bounds and backoff, and which
interfaces and URL mDNS uses (pure parts of meshnode.discovery.lan / .mdns)."""

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshnode.discovery.lan import LanAnnouncement, LanPeers, LanRejected, parse_announcement
from meshnode.discovery.mdns import announced_url, lan_addresses
from meshnode.federation import FederationPolicy
from meshnode.identity import Identity

ME, A, B = (Identity.generate().public_id for _ in range(3))
NAME = "x._meshnode._tcp.local."


def _txt(peer: str = A, url: str = "http://10.0.0.2:8470") -> dict[bytes, bytes | None]:
    return {b"v": b"1", b"peer": peer.encode(), b"url": url.encode()}


def test_a_good_announcement() -> None:
    assert parse_announcement(_txt()) == LanAnnouncement(A, "http://10.0.0.2:8470")
    assert parse_announcement(_txt(url="https://node.example/mesh")).url.startswith("https")


@pytest.mark.parametrize(("props", "reason"), [
    ({**_txt(), b"v": b"2"}, "bad_version"),
    ({b"v": b"1", b"url": b"http://10.0.0.2:1"}, "missing_field"),
    ({**_txt(), b"peer": None}, "missing_field"),
    ({**_txt(), b"peer": b"12D3KooWnope"}, "bad_peer_id"),
    ({**_txt(), b"peer": "é".encode()}, "bad_peer_id"),
    (_txt(url="ftp://10.0.0.2/"), "bad_url"),
    (_txt(url="http://127.0.0.1:8470"), "bad_url"),  # would make us dial ourselves
    (_txt(url="http://[::1]:8470"), "bad_url"),
    (_txt(url="http://0.0.0.0:8470"), "bad_url"),
    (_txt(url="http://224.0.0.251:5353"), "bad_url"),
    (_txt(url="http://u:p@10.0.0.2/"), "bad_url"),
    (_txt(url="http://10.0.0.2:99999"), "bad_url"),
    (_txt(url="http://10.0.0.2/ x"), "bad_url"),
    ({**_txt(), b"pad": b"x" * 2000}, "too_large"),
])
def test_bad_announcements_are_refused_with_a_reason(props: dict[bytes, bytes | None],
                                                     reason: str) -> None:
    with pytest.raises(LanRejected) as err:
        parse_announcement(props)
    assert err.value.reason == reason


@given(st.dictionaries(st.binary(max_size=12), st.none() | st.binary(max_size=80),
                       max_size=8))
def test_any_txt_record_parses_or_is_refused_with_a_reason(
        props: dict[bytes, bytes | None]) -> None:
    try:
        parse_announcement(props)
    except LanRejected as err:
        assert err.reason in {"too_large", "bad_version", "missing_field", "bad_peer_id",
                              "bad_url"}


@given(st.text(max_size=120))
def test_any_url_parses_or_is_refused(url: str) -> None:
    try:
        parse_announcement(_txt(url=url))
    except LanRejected as err:
        assert err.reason in {"bad_url", "missing_field"}


EVERYONE = FederationPolicy()


def _table(policy: FederationPolicy = EVERYONE, **kw: Any) -> LanPeers:
    def refusal(peer: str) -> str | None:
        r = policy.refusal(peer)
        return None if r is None else r.value
    return LanPeers(ME, refusal, **kw)


def test_self_and_refused_peers_are_never_dialled() -> None:
    table = _table(FederationPolicy.build(deny=[B]))
    for peer, reason in ((ME, "self"), (B, "denied")):
        with pytest.raises(LanRejected) as err:
            table.seen(NAME, LanAnnouncement(peer, "http://10.0.0.9:1"), 0.0)
        assert err.value.reason == reason
    assert table.due(100.0, ()) == []
    closed = _table(FederationPolicy(allow=frozenset({A})))
    with pytest.raises(LanRejected, match="not_allowed"):
        closed.seen(NAME, LanAnnouncement(B, "http://10.0.0.9:1"), 0.0)


def test_the_table_is_bounded() -> None:
    table = _table(capacity=3)
    peers = [Identity.generate().public_id for _ in range(5)]
    refused = 0
    for i, peer in enumerate(peers):
        try:
            table.seen(f"{i}{NAME}", LanAnnouncement(peer, "http://10.0.0.9:1"), 0.0)
        except LanRejected as err:
            assert err.reason == "table_full"
            refused += 1
    assert len(table) == 3 and refused == 2
    table.gone(f"0{NAME}")
    table.seen(f"4{NAME}", LanAnnouncement(peers[4], "http://10.0.0.9:1"), 0.0)
    assert len(table) == 3


def test_failed_dials_back_off_whatever_the_peer_announces_next() -> None:
    table = _table(base_backoff_s=5.0, max_backoff_s=60.0)
    table.seen(NAME, LanAnnouncement(A, "http://10.0.0.2:1"), 0.0)
    assert [d.peer_id for d in table.due(0.0, ())] == [A]
    assert table.due(1.0, ()) == []  # under way: not picked again
    waits = []
    now = 0.0
    for _ in range(6):
        table.dialled(A, False, now)
        # a new URL resets nothing
        table.seen(NAME, LanAnnouncement(A, f"http://10.0.0.2:{int(now) + 2}"), now)
        start = now
        while not table.due(now, ()):
            now += 1.0
        waits.append(now - start)
    assert waits == [10.0, 20.0, 40.0, 60.0, 60.0, 60.0]
    table.dialled(A, True, now)
    assert table.due(now + 1, {A}) == []  # linked: busy
    assert table.due(now + 5, ()) != []  # the link dropped: dialled again after 5 s


def test_dials_per_tick_are_limited() -> None:
    table = _table()
    for i in range(10):
        table.seen(f"{i}{NAME}", LanAnnouncement(Identity.generate().public_id,
                                                 "http://10.0.0.9:1"), 0.0)
    assert len(table.due(0.0, ())) == 1


ADAPTERS = [("lo", ["127.0.0.1", "::1"]),
            ("eth0", ["192.0.2.2", "fd00::2", "fe80::1%eth0"]),
            ("wan0", ["203.0.113.5", "2001:db8::5"]),
            ("wlan0", ["192.168.1.7"]), ("adhoc", ["169.254.3.4"]), ("cgnat", ["100.64.0.1"])]


def test_default_interfaces_are_the_private_ranges() -> None:
    assert lan_addresses(ADAPTERS) == ["fd00::2", "192.168.1.7", "169.254.3.4"]


def test_interfaces_named_by_the_operator() -> None:
    assert lan_addresses(ADAPTERS, ["wan0"]) == ["203.0.113.5", "2001:db8::5"]
    assert lan_addresses(ADAPTERS, ["192.168.1.7", "lo"]) == ["192.168.1.7"]
    assert lan_addresses(ADAPTERS, ["nope"]) == []


def test_announced_url() -> None:
    addrs = ["fd00::2", "192.168.1.7"]
    assert announced_url("https://n.example/", "127.0.0.1", 8470, addrs) == (
        "https://n.example", "")
    assert announced_url("", "0.0.0.0", 8470, addrs) == ("http://192.168.1.7:8470", "")
    assert announced_url("", "::", 8470, ["fd00::2"]) == ("http://[fd00::2]:8470", "")
    assert announced_url("", "192.168.1.7", 1, addrs) == ("http://192.168.1.7:1", "")
    url, why = announced_url("", "127.0.0.1", 8470, addrs)
    assert url is None and "listens on 127.0.0.1 only" in why
