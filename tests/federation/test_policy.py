"""The federation policy's decisions and its configuration (pure, no node)."""

import pytest

from meshnode.config import ConfigError, config_from_mapping
from meshnode.federation import FederationPolicy, FederationRefusal
from meshnode.identity import Identity

A, B, C = (Identity.generate().public_id for _ in range(3))
ROOM = "ab" * 32


def test_default_policy_federates_with_everyone_and_announces_every_room() -> None:
    policy = FederationPolicy()
    assert policy.may_link(A) and policy.refusal(B, "client") is None
    assert policy.may_announce(bytes.fromhex(ROOM)) and not policy.restricted


def test_deny_refuses_the_peer_whatever_kind_its_hello_says() -> None:
    policy = FederationPolicy.build(deny=[B])
    assert not policy.may_link(B)
    assert policy.refusal(B, "node") is FederationRefusal.DENIED
    # the same key, calling itself a client, is the same operator
    assert policy.refusal(B, "client") is FederationRefusal.DENIED
    assert policy.may_link(A)


def test_allow_list_binds_nodes_only_and_deny_wins() -> None:
    policy = FederationPolicy(frozenset({C}), frozenset({A, C}))
    assert policy.may_link(A)
    assert policy.refusal(B) is FederationRefusal.NOT_ALLOWED
    assert policy.refusal(B, "client") is None  # people reach the rooms under room rules
    assert policy.refusal(C) is FederationRefusal.DENIED
    assert FederationPolicy(allow=frozenset()).refusal(A) is FederationRefusal.NOT_ALLOWED


def test_the_node_never_refuses_itself() -> None:
    policy = FederationPolicy(allow=frozenset({A})).for_node(B)
    assert policy.may_link(B) and not policy.may_link(C)


def test_per_room_announce() -> None:
    other = "cd" * 32
    policy = FederationPolicy.build(no_announce=[ROOM.upper()])
    assert not policy.may_announce(bytes.fromhex(ROOM)) and not policy.may_announce(ROOM)
    assert policy.may_announce(other)
    closed = FederationPolicy.build(announce_rooms=[other], announce_default=False)
    assert closed.may_announce(bytes.fromhex(other)) and not closed.may_announce(ROOM)
    assert closed.describe()["announce_rooms"] == [other]


def test_config_section() -> None:
    cfg = config_from_mapping({"federation": {"deny": [B], "allow": [A], "announce": False,
                                              "announce_rooms": [ROOM]},
                               "discovery": {"mdns": False, "mdns_interfaces": ["eth1",
                                                                                "10.0.0.2"]}})
    assert cfg.federation.refusal(B) is FederationRefusal.DENIED
    assert cfg.federation.refusal(C) is FederationRefusal.NOT_ALLOWED
    assert cfg.federation.may_announce(ROOM) and not cfg.federation.may_announce("00" * 32)
    assert not cfg.mdns and cfg.mdns_interfaces == ("eth1", "10.0.0.2")
    defaults = config_from_mapping({})
    assert defaults.mdns and defaults.mdns_interfaces == ()
    assert defaults.federation == FederationPolicy()


@pytest.mark.parametrize(("doc", "says"), [
    ({"federation": {"deny": ["12D3KooWnotakey"]}}, "federation.deny[0] is not a node's PeerID"),
    ({"federation": {"deny": [B[:-3]]}}, "federation.deny[0] is not a node's PeerID"),
    ({"federation": {"allow": [A, 7]}}, "federation.allow[1] is not a node's PeerID"),
    ({"federation": {"deny": B}}, "federation.deny must be a list"),
    ({"federation": {"deny": [A], "allow": [A]}}, "both name"),
    ({"federation": {"no_announce": ["lobby"]}}, "federation.no_announce[0] must be a room ID"),
    ({"federation": {"announce": "yes"}}, "federation.announce must be a bool"),
    ({"federation": {"denied": []}}, "unknown key(s) in [federation]: denied"),
    ({"discovery": {"mdns_interfaces": ["eth0; rm -rf"]}}, "discovery.mdns_interfaces"),
    ({"discovery": {"mdns": 1}}, "discovery.mdns must be a bool"),
])
def test_config_errors_name_the_key(doc: dict[str, object], says: str) -> None:
    with pytest.raises(ConfigError, match=None) as err:
        config_from_mapping(doc)  # type: ignore[arg-type]
    assert says in str(err.value)
