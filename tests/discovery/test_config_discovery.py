"""The ``[discovery]`` configuration keys."""

import pytest

from meshnode.config import ConfigError, NodeConfig, config_from_mapping


def test_discovery_defaults_and_keys() -> None:
    cfg = NodeConfig()
    assert cfg.discovery_enabled and cfg.discovery_port == 0
    assert cfg.discovery_dht_mode == "server" and cfg.discovery_announce_interval_s == 600
    cfg = config_from_mapping({"discovery": {"enabled": False, "port": 4001,
                                             "dht_mode": "client", "announce_interval_s": 60}})
    assert (cfg.discovery_enabled, cfg.discovery_port, cfg.discovery_dht_mode,
            cfg.discovery_announce_interval_s) == (False, 4001, "client", 60.0)


@pytest.mark.parametrize(("key", "value", "says"), [
    ("enabled", "yes", "discovery.enabled"),
    ("port", 70000, "discovery.port"),
    ("dht_mode", "peer", "discovery.dht_mode"),
    ("announce_interval_s", 1, "10 to 86400"),
    ("announce_interval_s", True, "10 to 86400"),
    ("mdns_everywhere", True, "unknown key"),
])
def test_bad_discovery_keys_are_refused_with_the_fix(key: str, value: object,
                                                     says: str) -> None:
    with pytest.raises(ConfigError, match=says):
        config_from_mapping({"discovery": {key: value}})
