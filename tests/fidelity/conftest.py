"""The fidelity suite needs root and /dev/net/tun (network namespaces, TUN devices).

Without them it is skipped, unless ``MESHNODE_REQUIRE_NETNS=1`` (CI sets it): then every test
fails, saying what is missing, so that CI never passes by skipping.
"""

import os

import pytest

from netsim.emulate.preflight import Refusal, this_host

HOST_REFUSALS = (Refusal.NOT_ROOT, Refusal.NO_TUN, Refusal.NO_IP_TOOL)


def missing() -> list[str]:
    """What this machine lacks to emulate (empty: nothing)."""
    host = this_host()
    out = []
    if host.euid != 0:
        out.append("root")
    if not host.tun_device:
        out.append("/dev/net/tun")
    if not host.ip_tool:
        out.append("the ip command (iproute2)")
    return out


@pytest.fixture(autouse=True)
def _netns_available() -> None:
    lacking = missing()
    if not lacking:
        return
    message = f"emulation needs {', '.join(lacking)}"
    if os.environ.get("MESHNODE_REQUIRE_NETNS") == "1":
        pytest.fail(f"MESHNODE_REQUIRE_NETNS=1 but {message}")
    pytest.skip(message)
