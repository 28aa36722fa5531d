"""The node's TOML configuration: every key parsed, every mistake a ``ConfigError`` naming it."""

import tomllib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshnode.config import (
    DEFAULT_PORT,
    ConfigError,
    NodeConfig,
    config_from_mapping,
    load_config,
    parse_listen,
)
from meshnode.federation import FederationPolicy
from meshnode.media.config import MediaConfig
from meshnode.transport.ice import IceServer, IceSettings

FULL_EXAMPLE = """
# Every key of every section, with a non-default value.
[node]
data_dir = "/var/lib/meshnode"
listen = "0.0.0.0:9000"
public_url = "https://mesh.example.org/"

[network]
bootstrap = ["https://a.example.org", "http://10.0.0.2:8470"]
host_addresses = ["192.0.2.10", "2001:db8::1"]
max_links = 16
max_browsers = 8
max_pending_links = 4
max_pending_browsers = 3
handshake_timeout_s = 8.5
relay_only = true

[[network.ice_servers]]
urls = "stun:stun.example.org:3478"

[[network.ice_servers]]
urls = ["turn:turn.example.org:3478?transport=udp", "turns:turn.example.org:5349"]
username = "mesh"
credential = "s3cret"

[rooms]
default_room = false
default_room_name = "classroom"
admit = "invite"
admit_role = "viewer"
rotate_every_s = 3600
share_jitter_s = 0.5

[store]
synchronous = "normal"
snapshot_every = 250
history_days = 14

[log]
level = "debug"
format = "json"

[http]
header_timeout_s = 5
body_timeout_s = 7.5
offers_per_s = 1.5
offer_burst = 8
trusted_proxies = ["127.0.0.1", "10.1.0.0/16"]

[discovery]
enabled = true
port = 4001
dht_mode = "server"
announce_interval_s = 300
mdns = false
mdns_interfaces = ["eth1", "192.168.7.2"]

[federation]
deny = ["12D3KooWD64rs2AHM3B3ReRkt9Lpb5JCL1aGDpSSHfrfYZnjvWuj"]
allow = ["12D3KooWPhKUQ48otVawpyvrDFVfFhBLgvb7MTyWyxx28E6Nsu51"]
announce = false
no_announce = ["abababababababababababababababababababababababababababababababab"]
announce_rooms = ["cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd"]

[media]
enabled = true
max_publications_per_peer = 2
max_relay_kbps = 50000
max_room_kbps = 20000
max_peer_kbps = 2000
audio_only_below_kbps = 80
last_n = 3
max_audio = 6
audio_radius = 25.0
plan_interval_s = 0.5
recycle_sdp_chars = 20000

[presence]
filter = false
client_msgs_per_s = 150
client_bytes_per_s = 65536
link_msgs_per_s = 2000
link_bytes_per_s = 1048576
near_count = 8
view_radius = 20.0
floor_s = 2.5
interval_s = 0.03
"""


def _cfg(section: str, key: str, value: Any) -> NodeConfig:
    return config_from_mapping({section: {key: value}})


def _error(doc: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as exc:
        config_from_mapping(doc)
    return str(exc.value)


# ------------------------------------------------------------------ defaults and the full file


def test_empty_document_gives_the_defaults() -> None:
    assert config_from_mapping({}) == NodeConfig()
    cfg = NodeConfig()
    assert cfg.data_dir == Path("meshnode-data")
    assert (cfg.listen_host, cfg.listen_port) == ("127.0.0.1", DEFAULT_PORT)
    assert cfg.public_url == "" and cfg.bootstrap == ()
    assert cfg.ice == IceSettings()
    assert cfg.default_room and cfg.default_room_name == "lobby"
    assert (cfg.admit, cfg.admit_role) == ("open", "editor")
    assert (cfg.store_synchronous, cfg.snapshot_every) == ("full", 1_000)
    assert (cfg.log_level, cfg.log_format) == ("info", "text")


def test_empty_sections_change_nothing() -> None:
    doc: dict[str, Any] = {s: {} for s in ("node", "network", "rooms", "store", "log")}
    assert config_from_mapping(doc) == NodeConfig()


def test_full_example_file_loads(tmp_path: Path) -> None:
    path = tmp_path / "meshnode.toml"
    path.write_text(FULL_EXAMPLE, encoding="utf-8")
    cfg = load_config(path)
    assert cfg == NodeConfig(
        data_dir=Path("/var/lib/meshnode"),
        listen_host="0.0.0.0",
        listen_port=9000,
        public_url="https://mesh.example.org/",
        bootstrap=("https://a.example.org", "http://10.0.0.2:8470"),
        ice=IceSettings(
            servers=(
                IceServer(("stun:stun.example.org:3478",)),
                IceServer(("turn:turn.example.org:3478?transport=udp",
                           "turns:turn.example.org:5349"), "mesh", "s3cret"),
            ),
            host_addresses=("192.0.2.10", "2001:db8::1"),
            relay_only=True,
        ),
        max_links=16,
        max_browsers=8,
        max_pending_links=4,
        max_pending_browsers=3,
        handshake_timeout_s=8.5,
        default_room=False,
        default_room_name="classroom",
        admit="invite",
        admit_role="viewer",
        rotate_every_s=3600.0,
        share_jitter_s=0.5,
        store_synchronous="normal",
        snapshot_every=250,
        history_days=14.0,
        log_level="debug",
        log_format="json",
        header_timeout_s=5.0,
        body_timeout_s=7.5,
        offers_per_s=1.5,
        offer_burst=8,
        trusted_proxies=("127.0.0.1/32", "10.1.0.0/16"),
        discovery_port=4001,
        discovery_announce_interval_s=300.0,
        mdns=False,
        mdns_interfaces=("eth1", "192.168.7.2"),
        federation=FederationPolicy.build(
            ["12D3KooWD64rs2AHM3B3ReRkt9Lpb5JCL1aGDpSSHfrfYZnjvWuj"],
            ["12D3KooWPhKUQ48otVawpyvrDFVfFhBLgvb7MTyWyxx28E6Nsu51"],
            ["ab" * 32], ["cd" * 32], announce_default=False),
        media=MediaConfig(max_publications_per_peer=2, max_relay_kbps=50_000.0,
                          max_room_kbps=20_000.0, max_peer_kbps=2_000.0,
                          audio_only_below_kbps=80.0, last_n=3, max_audio=6,
                          audio_radius=25.0, recycle_sdp_chars=20_000),
        presence=(("presence_client_bytes_per_s", 65_536.0), ("presence_client_msgs_per_s", 150.0),
                  ("presence_filter", False), ("presence_floor_s", 2.5),
                  ("presence_interval_s", 0.03), ("presence_link_bytes_per_s", 1_048_576.0),
                  ("presence_link_msgs_per_s", 2_000.0), ("presence_near_count", 8),
                  ("presence_view_radius", 20.0)),
    )
    assert cfg.url == "https://mesh.example.org"
    # The servers reach aiortc as RTCIceServers with their credentials.
    rtc = cfg.ice.rtc_configuration()
    assert rtc.iceServers is not None and len(rtc.iceServers) == 2
    assert rtc.iceServers[1].username == "mesh" and rtc.iceServers[1].credential == "s3cret"
    assert rtc.iceTransportPolicy.value == "relay"


def test_relay_only_needs_a_turn_server() -> None:
    assert "needs a TURN server" in _error({"network": {"relay_only": True}})
    assert "needs a TURN server" in _error({"network": {
        "relay_only": True, "ice_servers": [{"urls": "stun:stun.example.org"}]}})
    assert "network.relay_only" in _error({"network": {"relay_only": "yes"}})


def test_turn_server_without_credentials_is_refused() -> None:
    message = _error({"network": {"ice_servers": [{"urls": ["stun:s.example",
                                                             "turn:t.example:3478"]}]}})
    assert "network.ice_servers[0]" in message and "needs username and credential" in message
    assert "needs username" in _error({"network": {"ice_servers": [{"urls": "turns:t:5349"}]}})
    # STUN needs none.
    assert _cfg("network", "ice_servers", [{"urls": "stun:s.example"}]).ice.servers


def test_trusted_proxies() -> None:
    assert _cfg("http", "trusted_proxies", ["::1", "192.0.2.7"]).trusted_proxies == (
        "::1/128", "192.0.2.7/32")
    assert NodeConfig().trusted_proxies == ()
    for bad in (["proxy.example"], "127.0.0.1", [1]):
        assert "http.trusted_proxies" in _error({"http": {"trusted_proxies": bad}})


def test_full_example_covers_every_known_key() -> None:
    from meshnode.config import _SECTIONS

    doc = tomllib.loads(FULL_EXAMPLE)
    assert {s: set(body) for s, body in doc.items()} == _SECTIONS


def test_mapping_applies_over_base() -> None:
    base = NodeConfig(listen_port=1234, log_level="debug",
                      ice=IceSettings(host_addresses=("127.0.0.1",)))
    cfg = config_from_mapping({"log": {"format": "json"},
                               "network": {"ice_servers": [{"urls": "stun:s.example"}]}}, base)
    assert cfg.listen_port == 1234 and cfg.log_level == "debug" and cfg.log_format == "json"
    assert cfg.ice.host_addresses == ("127.0.0.1",)
    assert cfg.ice.servers == (IceServer(("stun:s.example",)),)


# ------------------------------------------------------------------ each key parsed


@pytest.mark.parametrize(("section", "key", "value", "attr", "expected"), [
    ("node", "data_dir", "data/here", "data_dir", Path("data/here")),
    ("node", "public_url", "http://node.example:80", "public_url", "http://node.example:80"),
    ("node", "public_url", "", "public_url", ""),
    ("network", "bootstrap", [], "bootstrap", ()),
    ("network", "bootstrap", ["http://x:1"], "bootstrap", ("http://x:1",)),
    ("network", "max_links", 1, "max_links", 1),
    ("network", "max_browsers", 200, "max_browsers", 200),
    ("network", "max_pending_links", 1, "max_pending_links", 1),
    ("network", "max_pending_browsers", 64, "max_pending_browsers", 64),
    ("network", "handshake_timeout_s", 3, "handshake_timeout_s", 3.0),
    ("network", "handshake_timeout_s", 0.5, "handshake_timeout_s", 0.5),
    ("rooms", "default_room", True, "default_room", True),
    ("rooms", "default_room", False, "default_room", False),
    ("rooms", "default_room_name", "design review", "default_room_name", "design review"),
    ("rooms", "admit", "open", "admit", "open"),
    ("rooms", "admit", "invite", "admit", "invite"),
    ("rooms", "admit_role", "viewer", "admit_role", "viewer"),
    ("rooms", "admit_role", "editor", "admit_role", "editor"),
    ("rooms", "rotate_every_s", 0, "rotate_every_s", 0.0),
    ("rooms", "share_jitter_s", 1.5, "share_jitter_s", 1.5),
    ("store", "synchronous", "full", "store_synchronous", "full"),
    ("store", "synchronous", "normal", "store_synchronous", "normal"),
    ("store", "snapshot_every", 1, "snapshot_every", 1),
    ("log", "level", "debug", "log_level", "debug"),
    ("log", "level", "info", "log_level", "info"),
    ("log", "level", "warning", "log_level", "warning"),
    ("log", "level", "error", "log_level", "error"),
    ("log", "format", "text", "log_format", "text"),
    ("log", "format", "json", "log_format", "json"),
])
def test_each_key_is_applied(section: str, key: str, value: Any, attr: str,
                             expected: Any) -> None:
    cfg = _cfg(section, key, value)
    assert getattr(cfg, attr) == expected
    # ...and nothing else changed.
    others = {f: getattr(cfg, f) for f in NodeConfig.__dataclass_fields__ if f != attr}
    assert others == {f: getattr(NodeConfig(), f) for f in others}


@pytest.mark.parametrize(("text", "host", "port"), [
    ("127.0.0.1:8470", "127.0.0.1", 8470),
    ("0.0.0.0:0", "0.0.0.0", 0),
    (":9000", "127.0.0.1", 9000),
    ("[::1]:8470", "::1", 8470),
    ("[::]:65535", "::", 65535),
    ("node.example.org:443", "node.example.org", 443),
])
def test_listen(text: str, host: str, port: int) -> None:
    assert parse_listen(text) == (host, port)
    cfg = _cfg("node", "listen", text)
    assert (cfg.listen_host, cfg.listen_port) == (host, port)


@pytest.mark.parametrize("text", [
    "", "8470", "localhost", "localhost:", "host:port", "host:-1", "host:65536", "host:99999",
    "[::1]", "host:8470 ", "host:+80", "host:8_0", "host:\u0663", "host:\u00b2", "host:\uff18",
])
def test_bad_listen(text: str) -> None:
    with pytest.raises(ConfigError, match="listen"):
        parse_listen(text)
    assert "node.listen must be HOST:PORT" in _error({"node": {"listen": text}})


@given(st.text(max_size=30))
def test_parse_listen_only_raises_config_error(text: str) -> None:
    try:
        host, port = parse_listen(text)
    except ConfigError:
        return
    assert 0 <= port < 65536 and host


def test_ice_servers_stun_and_turn() -> None:
    cfg = _cfg("network", "ice_servers", [
        {"urls": "stun:a.example"},
        {"urls": ["stuns:b.example:5349"]},
        {"urls": ["turn:c.example", "turns:c.example:443"], "username": "u", "credential": "p"},
    ])
    assert cfg.ice.servers == (
        IceServer(("stun:a.example",)),
        IceServer(("stuns:b.example:5349",)),
        IceServer(("turn:c.example", "turns:c.example:443"), "u", "p"),
    )
    assert cfg.ice.host_addresses == ()
    assert _cfg("network", "ice_servers", []).ice.servers == ()


def test_host_addresses() -> None:
    cfg = _cfg("network", "host_addresses", ["127.0.0.1", "::1"])
    assert cfg.ice.host_addresses == ("127.0.0.1", "::1")
    assert cfg.ice.servers == ()
    assert _cfg("network", "host_addresses", []).ice.host_addresses == ()


# ------------------------------------------------------------------ mistakes name the key


@pytest.mark.parametrize(("section", "key", "value"), [
    ("node", "data_dir", 5),
    ("node", "data_dir", ["a"]),
    ("node", "listen", 8470),
    ("node", "public_url", True),
    ("network", "bootstrap", "http://a.example"),
    ("network", "bootstrap", ["node-b:8470"]),
    ("network", "bootstrap", ["http://[::1"]),
    ("http", "header_timeout_s", 0),
    ("http", "body_timeout_s", True),
    ("http", "offers_per_s", "2"),
    ("http", "offer_burst", 0),
    ("http", "offer_burst", 2.5),
    ("network", "ice_servers", {"urls": "stun:a"}),
    ("network", "ice_servers", "stun:a"),
    ("network", "host_addresses", "127.0.0.1"),
    ("network", "max_links", "64"),
    ("network", "max_links", 64.0),
    ("network", "max_links", True),
    ("network", "max_browsers", None),
    ("network", "max_browsers", False),
    ("network", "max_pending_links", 1.5),
    ("network", "max_pending_browsers", "8"),
    ("network", "handshake_timeout_s", "5"),
    ("network", "handshake_timeout_s", True),
    ("rooms", "default_room", "yes"),
    ("rooms", "default_room", 1),
    ("rooms", "default_room_name", 7),
    ("store", "snapshot_every", 1.5),
    ("store", "snapshot_every", "1000"),
])
def test_wrong_type_names_the_key(section: str, key: str, value: Any) -> None:
    message = _error({section: {key: value}})
    assert f"{section}.{key}" in message
    assert "must" in message


@pytest.mark.parametrize(("key", "value"), [
    ("rotate_every_s", -1), ("rotate_every_s", True), ("rotate_every_s", "daily"),
    ("share_jitter_s", 61), ("share_jitter_s", -0.5),
])
def test_private_room_key_settings_are_bounded(key: str, value: Any) -> None:
    message = _error({"rooms": {key: value}})
    assert f"rooms.{key} must be" in message


@pytest.mark.parametrize(("section", "key", "value"), [
    ("rooms", "admit", "closed"),
    ("rooms", "admit", 1),
    ("rooms", "admit", ["open"]),
    ("rooms", "admit_role", "admin"),
    ("rooms", "admit_role", "owner"),
    ("rooms", "admit_role", "Editor"),
    ("store", "synchronous", "off"),
    ("store", "synchronous", "FULL"),
    ("store", "synchronous", True),
    ("log", "level", "trace"),
    ("log", "level", "critical"),
    ("log", "level", 10),
    ("log", "format", "xml"),
    ("log", "format", None),
])
def test_bad_choice_names_the_key_and_the_choices(section: str, key: str, value: Any) -> None:
    message = _error({section: {key: value}})
    assert f"{section}.{key}" in message
    assert "must be one of" in message


@pytest.mark.parametrize(("section", "key"), [
    ("network", "max_links"), ("network", "max_browsers"), ("store", "snapshot_every"),
    ("network", "max_pending_links"), ("network", "max_pending_browsers"),
])
@pytest.mark.parametrize("value", [0, -1, -1000])
def test_counts_must_be_positive(section: str, key: str, value: int) -> None:
    assert f"{section}.{key} must be at least 1" in _error({section: {key: value}})


@pytest.mark.parametrize("value", [0, 0.1, -5, 121, float("inf"), float("nan")])
def test_handshake_timeout_must_be_sensible(value: float) -> None:
    assert "network.handshake_timeout_s must be 0.5 to 120 seconds" in _error(
        {"network": {"handshake_timeout_s": value}})


@pytest.mark.parametrize("section", ["node", "network", "rooms", "store", "log"])
def test_unknown_key_in_each_section(section: str) -> None:
    message = _error({section: {"colour": "blue"}})
    assert "colour" in message and f"[{section}]" in message


def test_unknown_keys_are_all_listed() -> None:
    message = _error({"log": {"level": "info", "zeta": 1, "alpha": 2}})
    assert "alpha, zeta" in message


@pytest.mark.parametrize("section", ["nodes", "logging", "ice", "Node", ""])
def test_unknown_section(section: str) -> None:
    message = _error({section: {}})
    assert f"[{section}]" in message and "unknown section" in message
    assert "node, network, rooms, store, log" in message


@pytest.mark.parametrize("section", ["node", "network", "rooms", "store", "log"])
def test_section_that_is_not_a_table(section: str) -> None:
    assert f"[{section}]" in _error({section: "x"})


@pytest.mark.parametrize("url", ["ftp://a", "a.example", "ws://a", "file:///etc", "http//x"])
def test_public_url_needs_http(url: str) -> None:
    assert "node.public_url" in _error({"node": {"public_url": url}})


@pytest.mark.parametrize("entries", [["a.example:8470"], ["ws://a"], [5], [None], [["http://a"]]])
def test_bootstrap_entries_are_urls(entries: list[Any]) -> None:
    assert "network.bootstrap" in _error({"network": {"bootstrap": entries}})


@pytest.mark.parametrize("addresses", [[1], ["127.0.0.1", None], ["localhost"], ["eth0"],
                                       ["999.1.1.1"], ["127.0.0.1:80"]])
def test_host_addresses_must_be_ip_strings(addresses: list[Any]) -> None:
    assert "network.host_addresses" in _error({"network": {"host_addresses": addresses}})


@pytest.mark.parametrize("name", ["", "x" * 201])
def test_default_room_name_length(name: str) -> None:
    assert "rooms.default_room_name" in _error({"rooms": {"default_room_name": name}})


def test_default_room_name_bounds_accepted() -> None:
    assert _cfg("rooms", "default_room_name", "x").default_room_name == "x"
    assert _cfg("rooms", "default_room_name", "é" * 200).default_room_name == "é" * 200


@pytest.mark.parametrize(("entry", "fragment"), [
    ("stun:a", "network.ice_servers[0] must be a dict"),
    ({}, "network.ice_servers[0].urls"),
    ({"urls": []}, "network.ice_servers[0].urls"),
    ({"urls": 5}, "network.ice_servers[0].urls"),
    ({"urls": ["http://a"]}, "network.ice_servers[0].urls"),
    ({"urls": ["stun:a", 5]}, "network.ice_servers[0].urls"),
    ({"urls": "stun"}, "network.ice_servers[0].urls"),
    ({"urls": "turn:"}, "network.ice_servers[0].urls"),
    ({"urls": "STUN:a"}, "network.ice_servers[0].urls"),
    ({"urls": "stun:a", "password": "x"}, "network.ice_servers[0] has unknown keys ['password']"),
    ({"urls": "turn:a", "username": "u"}, "network.ice_servers[0]: give both"),
    ({"urls": "turn:a", "credential": "c"}, "network.ice_servers[0]: give both"),
    ({"urls": "turn:a", "username": 1, "credential": "c"}, "network.ice_servers[0].username"),
    ({"urls": "turn:a", "username": "u", "credential": 2}, "network.ice_servers[0].credential"),
    ({"urls": "turn:a", "username": "u", "credential": ["c"]},
     "network.ice_servers[0].credential"),
])
def test_bad_ice_server(entry: Any, fragment: str) -> None:
    assert fragment in _error({"network": {"ice_servers": [entry]}})


def test_bad_ice_server_index_is_named() -> None:
    good = {"urls": "stun:a"}
    message = _error({"network": {"ice_servers": [good, good, {"urls": "udp:x"}]}})
    assert "network.ice_servers[2]" in message


# ------------------------------------------------------------------ files


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml")


@pytest.mark.parametrize("text", ["[node", "listen = ", "[node]\nlisten = 127.0.0.1:80\n",
                                  "[log]\nlevel = 'info'\nlevel = 'debug'\n"])
def test_invalid_toml(tmp_path: Path, text: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid TOML") as exc:
        load_config(path)
    assert str(path) in str(exc.value)


def test_error_from_file_names_the_key(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[rooms]\nadmit = 'sometimes'\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"rooms\.admit must be one of open, invite"):
        load_config(path)


def test_top_level_key_is_an_unknown_section(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("listen = '127.0.0.1:1'\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"unknown section \[listen\]"):
        load_config(path)


def test_config_error_is_a_value_error() -> None:
    assert issubclass(ConfigError, ValueError)


@given(st.dictionaries(
    st.sampled_from(["node", "network", "rooms", "store", "log", "other"]),
    st.dictionaries(st.text(max_size=20), st.one_of(
        st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=20),
        st.lists(st.text(max_size=20), max_size=3),
        st.lists(st.dictionaries(st.sampled_from(["urls", "username", "credential"]),
                                 st.one_of(st.text(max_size=10), st.integers(),
                                           st.lists(st.text(max_size=10), max_size=2))),
                 max_size=2),
    ), max_size=4),
    max_size=4,
))
def test_random_documents_raise_only_config_error(doc: dict[str, Any]) -> None:
    try:
        cfg = config_from_mapping(doc)
    except ConfigError:
        return
    assert isinstance(cfg, NodeConfig)


@given(st.dictionaries(
    st.sampled_from(["data_dir", "listen", "public_url"]),
    st.one_of(st.text(max_size=20), st.integers()),
))
def test_random_node_sections_raise_only_config_error(body: dict[str, Any]) -> None:
    try:
        cfg = config_from_mapping({"node": body})
    except ConfigError as err:
        assert str(err).startswith("node.")
        return
    assert isinstance(cfg.listen_port, int) and isinstance(cfg.data_dir, Path)


# ------------------------------------------------------------------ url


@pytest.mark.parametrize(("host", "port", "url"), [
    ("127.0.0.1", 8470, "http://127.0.0.1:8470"),
    ("0.0.0.0", 9000, "http://127.0.0.1:9000"),
    ("", 9000, "http://127.0.0.1:9000"),
    ("::", 9000, "http://127.0.0.1:9000"),
    ("::1", 8470, "http://[::1]:8470"),
    ("2001:db8::5", 80, "http://[2001:db8::5]:80"),
    ("node.example.org", 443, "http://node.example.org:443"),
    ("192.168.1.5", 1, "http://192.168.1.5:1"),
])
def test_url_from_listen(host: str, port: int, url: str) -> None:
    assert NodeConfig(listen_host=host, listen_port=port).url == url


@pytest.mark.parametrize(("public", "url"), [
    ("https://mesh.example.org", "https://mesh.example.org"),
    ("https://mesh.example.org/", "https://mesh.example.org"),
    ("https://mesh.example.org/node///", "https://mesh.example.org/node"),
    ("http://[2001:db8::5]:8470/", "http://[2001:db8::5]:8470"),
])
def test_public_url_wins(public: str, url: str) -> None:
    assert NodeConfig(listen_host="0.0.0.0", public_url=public).url == url


def test_url_from_listen_text_ipv6() -> None:
    cfg = _cfg("node", "listen", "[::1]:8471")
    assert cfg.url == "http://[::1]:8471"
    assert _cfg("node", "listen", "[::]:8471").url == "http://127.0.0.1:8471"


def test_media_section_is_checked() -> None:
    cfg = config_from_mapping({"media": {"enabled": False, "last_n": 2, "max_peer_kbps": 300}})
    assert not cfg.media.enabled and cfg.media.last_n == 2 and cfg.media.max_peer_kbps == 300.0
    assert cfg.media.selection().last_n == 2
    assert "media.last_n" in _error({"media": {"last_n": -1}})
    assert "media.enabled" in _error({"media": {"enabled": "yes"}})
    assert "media.recycle_sdp_chars" in _error({"media": {"recycle_sdp_chars": 100}})
    assert "unknown key" in _error({"media": {"bitrate": 1}})


def test_presence_section_sets_the_interest_filter() -> None:
    from meshnode.config import ConfigError, config_from_mapping

    cfg = config_from_mapping({"presence": {"filter": False, "client_msgs_per_s": 120,
                                            "near_count": 8, "view_radius": 12.5}})
    assert dict(cfg.presence) == {"presence_filter": False, "presence_client_msgs_per_s": 120.0,
                                  "presence_near_count": 8, "presence_view_radius": 12.5}
    for bad in ({"floor_s": 6}, {"near_count": 2.5}, {"near_count": True}, {"filter": 1},
                {"client_msgs_per_s": 0}, {"link_bytes_per_s": "lots"}, {"interval_s": 0},
                {"interval_s": 1.0}):
        with pytest.raises(ConfigError, match="presence"):
            config_from_mapping({"presence": bad})
