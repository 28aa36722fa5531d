"""The node's configuration: one TOML file, every key checked, documented in docs/operators.md.

Command-line flags of ``meshnode up`` override the file; the file overrides the defaults.
"""

import ipaddress
import re
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from meshnode.federation.policy import FederationPolicy
from meshnode.identity import public_key_from_peer_id
from meshnode.media.config import (
    MEDIA_KEYS,
    MediaConfig,
    MediaConfigError,
    media_config_from_mapping,
)
from meshnode.transport.ice import IceServer, IceSettings
from protocol.link import MAX_URL_CHARS

DEFAULT_PORT = 8470
ADMIT_POLICIES = ("open", "invite")
LOG_FORMATS = ("text", "json")
LOG_LEVELS = ("debug", "info", "warning", "error")
SYNC_MODES = ("full", "normal")
ICE_SCHEMES = ("stun", "stuns", "turn", "turns")
MAX_ROOM_NAME_CHARS = 200  # as POST /api/rooms
MAX_POLICY_ENTRIES = 10_000
_IFNAME = re.compile(r"[A-Za-z0-9_.:@-]{1,15}")  # Linux IFNAMSIZ is 16, the NUL included


class ConfigError(ValueError):
    """The configuration file or a flag is wrong; the message names the key and the fix."""


@dataclass(frozen=True, slots=True)
class NodeConfig:
    """Everything an operator can set. See docs/operators.md for each key."""

    data_dir: Path = Path("meshnode-data")
    listen_host: str = "127.0.0.1"
    listen_port: int = DEFAULT_PORT
    public_url: str = ""
    bootstrap: tuple[str, ...] = ()
    ice: IceSettings = field(default_factory=IceSettings)
    max_links: int = 64
    max_browsers: int = 32
    max_pending_links: int = 16
    max_pending_browsers: int = 16
    handshake_timeout_s: float = 5.0
    default_room: bool = True
    default_room_name: str = "lobby"
    admit: str = "open"
    admit_role: str = "editor"
    rotate_every_s: float = 86_400.0
    share_jitter_s: float = 2.0
    store_synchronous: str = "full"
    snapshot_every: int = 1_000
    # [store] history_days: changes older than this are pruned at each snapshot (0: never)
    history_days: float = 30.0
    log_level: str = "info"
    log_format: str = "text"
    # [http]: limits of the HTTP endpoint (guard.py)
    header_timeout_s: float = 10.0
    body_timeout_s: float = 10.0
    offers_per_s: float = 2.0
    offer_burst: int = 16
    # [http] trusted_proxies: reverse proxies whose X-Forwarded-For names the client (guard.py)
    trusted_proxies: tuple[str, ...] = ()
    # [federation]: which operators' nodes this node federates with (meshnode.federation)
    federation: FederationPolicy = field(default_factory=FederationPolicy)
    # [discovery]: LAN discovery (meshnode.discovery.mdns); () = the private-range interfaces
    mdns: bool = True
    mdns_interfaces: tuple[str, ...] = ()
    # [discovery]: the libp2p Kademlia DHT (meshnode.discovery)
    discovery_enabled: bool = True
    discovery_port: int = 0
    discovery_dht_mode: str = "server"
    discovery_announce_interval_s: float = 600.0
    # [media]: the media relay (meshnode.media.config)
    media: MediaConfig = field(default_factory=MediaConfig)
    # [presence]: interest management, as OverlayConfig overrides (name, value)
    presence: tuple[tuple[str, float | int | bool], ...] = ()

    @property
    def url(self) -> str:
        """Where peers and browsers reach this node's HTTP endpoint."""
        if self.public_url:
            return self.public_url.rstrip("/")
        host = self.listen_host
        if host in ("0.0.0.0", "", "::"):
            host = "127.0.0.1"
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.listen_port}"


_SECTIONS: dict[str, set[str]] = {
    "node": {"data_dir", "listen", "public_url"},
    "network": {"bootstrap", "ice_servers", "host_addresses", "relay_only", "max_links",
                "max_browsers", "max_pending_links", "max_pending_browsers",
                "handshake_timeout_s"},
    "rooms": {"default_room", "default_room_name", "admit", "admit_role", "rotate_every_s",
              "share_jitter_s"},
    "store": {"synchronous", "snapshot_every", "history_days"},
    "log": {"level", "format"},
    "http": {"header_timeout_s", "body_timeout_s", "offers_per_s", "offer_burst",
             "trusted_proxies"},
    "federation": {"deny", "allow", "announce", "no_announce", "announce_rooms"},
    "discovery": {"enabled", "port", "dht_mode", "announce_interval_s", "mdns",
                  "mdns_interfaces"},
    "media": set(MEDIA_KEYS),
    "presence": {"filter", "client_msgs_per_s", "client_bytes_per_s", "link_msgs_per_s",
                 "link_bytes_per_s", "near_count", "view_radius", "floor_s", "interval_s"},
}

# [presence] key -> (low, high) for numbers; each maps to OverlayConfig.presence_<key>.
_PRESENCE_RANGES: dict[str, tuple[float, float]] = {
    "client_msgs_per_s": (1.0, 10_000.0), "client_bytes_per_s": (1_024.0, 100_000_000.0),
    "link_msgs_per_s": (1.0, 100_000.0), "link_bytes_per_s": (1_024.0, 1_000_000_000.0),
    "near_count": (1, 1_000), "view_radius": (0.01, 1_000_000.0), "floor_s": (0.1, 4.9),
    "interval_s": (0.001, 0.5),
}


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:8470`` for IPv6; a bare ``:PORT`` means 127.0.0.1)."""
    host, sep, port = text.rpartition(":")
    # isascii: str.isdigit() also accepts "²" (int() then fails) and "٣" (int() reads 3).
    if not sep or not port.isascii() or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ConfigError(f"listen must be HOST:PORT, e.g. 127.0.0.1:{DEFAULT_PORT}; "
                          f"got {text!r}")
    host = host.strip("[]") or "127.0.0.1"
    return host, int(port)


def check_node_url(url: Any, what: str) -> str:
    """A node's URL as the node and the CLI take it: ``http(s)://host[:port][/path]``; raises
    ``ConfigError`` naming ``what`` and showing the fix."""
    example = f"http://node-b:{DEFAULT_PORT}"
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        fix = f" (did you mean 'http://{url}'?)" if isinstance(url, str) and url else ""
        raise ConfigError(f"{what} must be a node URL starting with http:// or https://, "
                          f"e.g. {example}; got {url!r}{fix}")
    try:
        parts = urlsplit(url)
        host, _port = parts.hostname, parts.port
    except ValueError as err:
        raise ConfigError(f"{what} must be a valid URL ({err}), e.g. {example}; "
                          f"got {url!r}") from None
    if not host or any(c.isspace() for c in url):
        raise ConfigError(f"{what} must name a host, e.g. {example}; got {url!r}")
    if len(url) > MAX_URL_CHARS:
        raise ConfigError(f"{what} is longer than {MAX_URL_CHARS} characters")
    return url


def _want(value: Any, kind: type | tuple[type, ...], key: str) -> Any:
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise ConfigError(f"{key} must be a {names}, not {type(value).__name__}")
    return value


def _choice(value: Any, choices: tuple[str, ...], key: str) -> str:
    if value not in choices:
        raise ConfigError(f"{key} must be one of {', '.join(choices)}; got {value!r}")
    return str(value)


def _ice_servers(value: Any) -> tuple[IceServer, ...]:
    _want(value, list, "network.ice_servers")
    out = []
    for i, entry in enumerate(value):
        key = f"network.ice_servers[{i}]"
        _want(entry, dict, key)
        unknown = set(entry) - {"urls", "username", "credential"}
        if unknown:
            raise ConfigError(f"{key} has unknown keys {sorted(unknown)}")
        urls = entry.get("urls")
        if isinstance(urls, str):
            urls = [urls]
        if not isinstance(urls, list) or not urls or not all(
            isinstance(u, str) and u.partition(":")[0] in ICE_SCHEMES and u.partition(":")[2]
            for u in urls
        ):
            raise ConfigError(f"{key}.urls must list stun:/turn: URLs")
        user, cred = entry.get("username"), entry.get("credential")
        if (user is None) != (cred is None):
            raise ConfigError(f"{key}: give both username and credential (TURN) or neither")
        if user is not None:
            _want(user, str, f"{key}.username")
            _want(cred, str, f"{key}.credential")
        elif any(u.startswith(("turn:", "turns:")) for u in urls):
            # Every TURN server asks for credentials: without them each allocation is
            # refused and links fail later as hello_timeout, far from the cause.
            raise ConfigError(f"{key}: a turn: server needs username and credential (the "
                              "TURN server's long-term user, or its REST API's static-auth "
                              "pair); `meshnode doctor` checks that the server accepts them")
        out.append(IceServer(tuple(urls), user, cred))
    return tuple(out)


def _peer_ids(value: Any, key: str) -> list[str]:
    _want(value, list, key)
    if len(value) > MAX_POLICY_ENTRIES:
        raise ConfigError(f"{key} lists more than {MAX_POLICY_ENTRIES} PeerIDs")
    for i, peer in enumerate(value):
        try:
            public_key_from_peer_id(peer)
        except ValueError as err:
            raise ConfigError(f"{key}[{i}] is not a node's PeerID ({err}); a PeerID looks "
                              "like 12D3KooW... (the first line `meshnode up` prints, or "
                              "`meshnode status`'s peer_id)") from None
    return list(value)


def _room_ids(value: Any, key: str) -> list[str]:
    _want(value, list, key)
    if len(value) > MAX_POLICY_ENTRIES:
        raise ConfigError(f"{key} lists more than {MAX_POLICY_ENTRIES} rooms")
    for i, room in enumerate(value):
        ok = isinstance(room, str) and len(room) == 64
        if ok:
            try:
                bytes.fromhex(room)
            except ValueError:
                ok = False
        if not ok:
            raise ConfigError(f"{key}[{i}] must be a room ID: 64 hex digits, as `meshnode "
                              f"room list` prints it; got {room!r}")
    return [r.lower() for r in value]


def _federation(body: dict[str, Any]) -> FederationPolicy:
    deny = _peer_ids(body.get("deny", []), "federation.deny")
    allow = _peer_ids(body["allow"], "federation.allow") if "allow" in body else None
    both = sorted(set(deny) & set(allow or ()))
    if both:
        raise ConfigError(f"federation.deny and federation.allow both name {both[0]}; "
                          "remove it from one of them (deny would win)")
    return FederationPolicy.build(
        deny, allow, _room_ids(body.get("no_announce", []), "federation.no_announce"),
        _room_ids(body.get("announce_rooms", []), "federation.announce_rooms"),
        _want(body.get("announce", True), bool, "federation.announce"))


def _networks(value: Any) -> tuple[str, ...]:
    """``[http] trusted_proxies``: IP addresses or networks (``"10.0.0.0/8"``), normalised."""
    _want(value, list, "http.trusted_proxies")
    out = []
    for entry in value:
        try:
            out.append(str(ipaddress.ip_network(_want(entry, str, "http.trusted_proxies"),
                                                strict=False)))
        except (ConfigError, ValueError):
            raise ConfigError("http.trusted_proxies must list the IP addresses (or networks, "
                              "like \"10.0.0.0/8\") of your reverse proxies, e.g. "
                              f"[\"127.0.0.1\"]; got {entry!r}") from None
    return tuple(out)


def _interfaces(value: Any) -> tuple[str, ...]:
    _want(value, list, "discovery.mdns_interfaces")
    for entry in value:
        ok = isinstance(entry, str) and _IFNAME.fullmatch(entry) is not None
        if isinstance(entry, str) and not ok:
            try:
                ipaddress.ip_address(entry)
                ok = True
            except ValueError:
                pass
        if not ok:
            raise ConfigError("discovery.mdns_interfaces must list interface names (eth1, "
                              f"wlan0) or their IP addresses; got {entry!r}")
    return tuple(value)


def config_from_mapping(doc: dict[str, Any], base: NodeConfig | None = None) -> NodeConfig:
    """Check a parsed TOML document and apply it over ``base`` (default: the defaults)."""
    cfg = base or NodeConfig()
    for section, body in doc.items():
        if section not in _SECTIONS:
            raise ConfigError(f"unknown section [{section}]; known: {', '.join(_SECTIONS)}")
        _want(body, dict, f"[{section}]")
        unknown = set(body) - _SECTIONS[section]
        if unknown:
            raise ConfigError(f"unknown key(s) in [{section}]: {', '.join(sorted(unknown))}")
    node = doc.get("node", {})
    net = doc.get("network", {})
    rooms = doc.get("rooms", {})
    store = doc.get("store", {})
    log = doc.get("log", {})
    changes: dict[str, Any] = {}
    if "data_dir" in node:
        changes["data_dir"] = Path(_want(node["data_dir"], str, "node.data_dir"))
    if "listen" in node:
        try:
            changes["listen_host"], changes["listen_port"] = parse_listen(
                _want(node["listen"], str, "node.listen"))
        except ConfigError as err:
            msg = str(err)
            raise ConfigError(msg if msg.startswith("node.") else f"node.{msg}") from None
    if "public_url" in node:
        url = _want(node["public_url"], str, "node.public_url")
        if url and not url.startswith(("http://", "https://")):
            raise ConfigError("node.public_url must start with http:// or https://")
        if len(url) > MAX_URL_CHARS:
            raise ConfigError(f"node.public_url is longer than {MAX_URL_CHARS} characters "
                              "(it travels in every hello)")
        changes["public_url"] = url
    if "bootstrap" in net:
        boot = _want(net["bootstrap"], list, "network.bootstrap")
        for url in boot:
            check_node_url(url, "each network.bootstrap entry")
        changes["bootstrap"] = tuple(boot)
    ice = cfg.ice
    if "ice_servers" in net:
        ice = replace(ice, servers=_ice_servers(net["ice_servers"]))
    if "host_addresses" in net:
        addrs = _want(net["host_addresses"], list, "network.host_addresses")
        for addr in addrs:
            try:
                ipaddress.ip_address(_want(addr, str, "network.host_addresses"))
            except (ConfigError, ValueError):
                raise ConfigError("network.host_addresses must be a list of IP address "
                                  f"strings; got {addr!r}") from None
        ice = replace(ice, host_addresses=tuple(addrs))
    if "relay_only" in net:
        relay = _want(net["relay_only"], bool, "network.relay_only")
        if relay and not any(u.startswith(("turn:", "turns:")) for srv in ice.servers
                             for u in srv.urls):
            raise ConfigError("network.relay_only needs a TURN server in network.ice_servers")
        ice = replace(ice, relay_only=relay)
    changes["ice"] = ice
    for key, section, name in (("max_links", net, "network.max_links"),
                               ("max_browsers", net, "network.max_browsers"),
                               ("max_pending_links", net, "network.max_pending_links"),
                               ("max_pending_browsers", net, "network.max_pending_browsers"),
                               ("snapshot_every", store, "store.snapshot_every")):
        src = key if key != "snapshot_every" else "snapshot_every"
        if src in section:
            value = _want(section[src], int, name)
            if value < 1:
                raise ConfigError(f"{name} must be at least 1")
            changes[key] = value
    if "history_days" in store:
        days = _want(store["history_days"], (int, float), "store.history_days")
        if isinstance(days, bool) or days < 0:
            raise ConfigError("store.history_days must be 0 (keep every change) or more days")
        changes["history_days"] = float(days)
    if "handshake_timeout_s" in net:
        timeout = _want(net["handshake_timeout_s"], (int, float), "network.handshake_timeout_s")
        if isinstance(timeout, bool) or not 0.5 <= timeout <= 120:
            raise ConfigError("network.handshake_timeout_s must be 0.5 to 120 seconds (5 suits "
                              "most networks; 10 for satellite paths)")
        changes["handshake_timeout_s"] = float(timeout)
    if "default_room" in rooms:
        changes["default_room"] = _want(rooms["default_room"], bool, "rooms.default_room")
    if "default_room_name" in rooms:
        name = _want(rooms["default_room_name"], str, "rooms.default_room_name")
        if not 0 < len(name) <= MAX_ROOM_NAME_CHARS:
            raise ConfigError(f"rooms.default_room_name must be 1 to {MAX_ROOM_NAME_CHARS} "
                              "characters")
        changes["default_room_name"] = name
    if "admit" in rooms:
        changes["admit"] = _choice(rooms["admit"], ADMIT_POLICIES, "rooms.admit")
    if "admit_role" in rooms:
        changes["admit_role"] = _choice(rooms["admit_role"], ("viewer", "editor"),
                                        "rooms.admit_role")
    # Private rooms (meshnode.rooms.key_upkeep): scheduled key rotation, SHARE jitter.
    for key, low, high, hint in (("rotate_every_s", 0.0, 365 * 86_400.0,
                                  "0 (never) or seconds up to a year; 86400 is a day"),
                                 ("share_jitter_s", 0.0, 60.0, "0 to 60 seconds (2 suits most "
                                                              "rooms)")):
        if key in rooms:
            value = rooms[key]
            if isinstance(value, bool) or not isinstance(value, int | float) \
                    or not low <= value <= high:
                raise ConfigError(f"rooms.{key} must be {hint}")
            changes[key] = float(value)
    if "synchronous" in store:
        changes["store_synchronous"] = _choice(store["synchronous"], SYNC_MODES,
                                               "store.synchronous")
    http = doc.get("http", {})
    for key in ("header_timeout_s", "body_timeout_s", "offers_per_s"):
        if key in http:
            if isinstance(http[key], bool):
                raise ConfigError(f"http.{key} must be a number of seconds")
            value = float(_want(http[key], (int, float), f"http.{key}"))
            if not 0 < value <= 3600:
                raise ConfigError(f"http.{key} must be above 0 and at most 3600")
            changes[key] = value
    if "offer_burst" in http:
        burst = _want(http["offer_burst"], int, "http.offer_burst")
        if not 1 <= burst <= 10_000:
            raise ConfigError("http.offer_burst must be 1 to 10000")
        changes["offer_burst"] = burst
    if "trusted_proxies" in http:
        changes["trusted_proxies"] = _networks(http["trusted_proxies"])
    if "federation" in doc:
        changes["federation"] = _federation(doc["federation"])
    disc = doc.get("discovery", {})
    changes.update(_discovery(disc))
    if "mdns" in disc:
        changes["mdns"] = _want(disc["mdns"], bool, "discovery.mdns")
    if "mdns_interfaces" in disc:
        changes["mdns_interfaces"] = _interfaces(disc["mdns_interfaces"])
    if "media" in doc:
        try:
            changes["media"] = media_config_from_mapping(doc["media"], cfg.media)
        except MediaConfigError as err:
            raise ConfigError(str(err)) from None
    if "presence" in doc:
        changes["presence"] = _presence(doc["presence"])
    if "level" in log:
        changes["log_level"] = _choice(log["level"], LOG_LEVELS, "log.level")
    if "format" in log:
        changes["log_format"] = _choice(log["format"], LOG_FORMATS, "log.format")
    return replace(cfg, **changes)


def _presence(section: dict[str, Any]) -> tuple[tuple[str, float | int | bool], ...]:
    """``[presence]`` as ``OverlayConfig`` overrides (docs/operators.md, "Presence")."""
    out: list[tuple[str, float | int | bool]] = []
    for key in sorted(section):
        value: Any = section[key]
        if key == "filter":
            out.append(("presence_filter", _want(value, bool, "presence.filter")))
            continue
        low, high = _PRESENCE_RANGES[key]
        kinds = (int,) if key == "near_count" else (int, float)
        if type(value) not in kinds or not low <= value <= high:
            what = "an integer" if key == "near_count" else "a number"
            raise ConfigError(f"presence.{key} must be {what} from {low:g} to {high:g}"
                              + (" (under half of the 10 s presence expiry, so nobody "
                                 "vanishes between refreshes)" if key == "floor_s" else ""))
        out.append((f"presence_{key}", value if key == "near_count" else float(value)))
    return tuple(out)


def _discovery(section: dict[str, Any]) -> dict[str, Any]:
    """The ``[discovery]`` keys, checked."""
    changes: dict[str, Any] = {}
    if "enabled" in section:
        changes["discovery_enabled"] = _want(section["enabled"], bool, "discovery.enabled")
    if "port" in section:
        port = _want(section["port"], int, "discovery.port")
        if not 0 <= port < 65536:
            raise ConfigError("discovery.port must be 0 (any free port) to 65535")
        changes["discovery_port"] = port
    if "dht_mode" in section:
        changes["discovery_dht_mode"] = _choice(section["dht_mode"], ("server", "client"),
                                                "discovery.dht_mode")
    if "announce_interval_s" in section:
        value = section["announce_interval_s"]
        if isinstance(value, bool) or not isinstance(value, int | float) or not (
                10 <= value <= 86_400):
            raise ConfigError("discovery.announce_interval_s must be 10 to 86400 seconds "
                              "(600 suits most nodes)")
        changes["discovery_announce_interval_s"] = float(value)
    return changes


def load_config(path: Path) -> NodeConfig:
    """Read and check a TOML configuration file."""
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"configuration file {path} does not exist") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path} is not valid TOML: {err}") from None
    return config_from_mapping(doc)
