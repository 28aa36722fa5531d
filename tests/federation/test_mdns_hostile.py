"""A malicious mDNS responder against ``MdnsDiscovery`` (the driver between zeroconf and the
link manager): floods of service names, names outside our service type, hostile TXT records,
a denied PeerID, and peers that never answer a dial. Every one is ignored with a reason
(``meshnode_mdns_rejected_total``) and a log line, and the dials stay bounded: at most one new
dial per tick, each failing peer backed off, a denied peer never dialled.

Zeroconf's side is replaced by what it hands the driver (browser callbacks, resolved TXT
properties); the link manager is the real one, with its ``dial_url`` counting instead of
opening WebRTC links to addresses that do not exist."""

import asyncio
import logging
from collections import Counter
from dataclasses import dataclass
from typing import Any

import pytest

from meshnode.discovery.mdns import SERVICE_TYPE, MdnsDiscovery
from meshnode.federation import FederationPolicy
from meshnode.identity import Identity
from meshnode.metrics import NodeMetrics
from meshnode.runtime.links import LinkManager, LinkRefused, LinkSettings, LocalHello

ME = Identity.generate()
DENIED = Identity.generate().public_id
GOOD = [Identity.generate().public_id for _ in range(3)]


@dataclass
class _Info:
    properties: dict[bytes, bytes | None]


class _Zeroconf:
    """What a hostile LAN makes zeroconf resolve: service name -> TXT properties."""

    def __init__(self) -> None:
        self.txt: dict[str, dict[bytes, bytes | None]] = {}

    def get_service_info(self, type_: str, name: str, timeout: int) -> _Info | None:
        props = self.txt.get(name)
        return None if props is None else _Info(props)


def _no_hello(kind_hint: str) -> LocalHello:
    raise AssertionError("no link is opened here")


def _txt(peer: str, url: str = "http://192.0.2.7:8470") -> dict[bytes, bytes | None]:
    return {b"v": b"1", b"peer": peer.encode(), b"url": url.encode()}


def _samples(metrics: NodeMetrics, name: str) -> Counter[str]:
    out: Counter[str] = Counter()
    for family in metrics.registry.collect():
        for s in family.samples:
            if s.name == name:
                out[next(iter(s.labels.values()), "")] += int(s.value)
    return out


async def test_a_hostile_responder_is_ignored_and_never_dialled_in_a_loop(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="meshnode.mdns")
    metrics = NodeMetrics()
    links = LinkManager(ME, LinkSettings(), _no_hello, metrics,
                        federation=FederationPolicy.build(deny=[DENIED]))
    dials: Counter[str] = Counter()

    async def dial_url(url: str, *, signaling: str = "http",
                       expected_peer: str | None = None) -> Any:
        dials[expected_peer or url] += 1
        raise LinkRefused("unreachable", url)  # nobody at the announced address

    links.dial_url = dial_url  # type: ignore[method-assign]
    now = [0.0]
    mdns = MdnsDiscovery(ME.public_id, "http://192.0.2.1:8470", 8470, ["192.0.2.1"], links,
                         metrics, clock=lambda: now[0])
    zc = _Zeroconf()
    mdns._loop = asyncio.get_running_loop()
    mdns._zc = zc

    def announce(name: str, props: dict[bytes, bytes | None] | None) -> None:
        if props is not None:
            zc.txt[name] = props
        mdns._on_service_state_change(zc, SERVICE_TYPE, name, None)

    async def settle() -> None:
        for _ in range(50):  # the resolutions (worker threads) and dials finish
            await asyncio.sleep(0.01)
            if not mdns._resolving and not mdns._dialing:
                return

    try:
        hostile = {
            "bad version": {**_txt(GOOD[0]), b"v": b"9"},
            "no peer": {b"v": b"1", b"url": b"http://192.0.2.7:1"},
            "not a peer id": _txt("12D3KooWnotakey"),
            "loopback url": _txt(GOOD[0], "http://127.0.0.1:8470"),
            "credentials": _txt(GOOD[0], "http://u:p@192.0.2.7/"),
            "huge": {**_txt(GOOD[0]), b"pad": b"x" * 4000},
            "denied": _txt(DENIED),
            "ourselves": _txt(ME.public_id),
        }
        for i, (what, props) in enumerate(hostile.items()):
            announce(f"h{i}.{SERVICE_TYPE}", props)
            await settle()
            assert not mdns._resolving, what
        announce("x" * 300 + "." + SERVICE_TYPE, _txt(GOOD[0]))  # a name over 255 chars
        announce("evil._http._tcp.local.", _txt(GOOD[0]))  # another service type
        announce(f"gone.{SERVICE_TYPE}", None)  # resolves to nothing
        await settle()
        # A flood of names in one burst: 256 queued for the loop, the rest dropped; of those,
        # only 4 resolved at once (the rest come back with their next announcement).
        for i in range(400):
            zc.txt[f"f{i}.{SERVICE_TYPE}"] = _txt(GOOD[i % 3])
            mdns._on_service_state_change(zc, SERVICE_TYPE, f"f{i}.{SERVICE_TYPE}", None)
        await settle()
        rejected = _samples(metrics, "meshnode_mdns_rejected_total")
        for reason in ("bad_version", "missing_field", "bad_peer_id", "bad_url", "too_large",
                       "denied", "bad_name", "unresolved", "flood"):
            assert rejected[reason] >= 1, (reason, rejected)
        assert rejected["flood"] == 400 - 256 and "self" not in rejected
        assert "mDNS: ignored" in caplog.text
        assert set(mdns.table.peers()) <= set(GOOD)

        # Ten minutes of ticks (one a second): each good peer fails every dial.
        for second in range(600):
            now[0] = float(second)
            started = mdns.tick()
            assert started <= 1  # at most one new dial per tick
            if started:
                await settle()
        assert DENIED not in dials and ME.public_id not in dials
        assert set(dials) <= set(GOOD)
        # Backoff 10, 20, 40, 80, 160, 300 s: 7 dials in 600 s at most, per peer.
        assert 1 <= max(dials.values()) <= 7, dials
        assert sum(_samples(metrics, "meshnode_mdns_dials_total").values()) == sum(
            dials.values())
    finally:
        mdns._zc = None
        await mdns.aclose()
