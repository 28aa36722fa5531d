"""Fixtures shared by the media tests that open real aiortc connections."""

from collections.abc import Iterator

import aioice.ice
import pytest

import meshnode.transport.ice as ice_module
from meshnode.transport.ice import IceSettings, install_host_addresses

LOOPBACK_ICE = IceSettings(host_addresses=("127.0.0.1",))


@pytest.fixture(scope="module")
def loopback_only() -> Iterator[None]:
    """Offer only 127.0.0.1 (process-wide in aioice) for one module; undo it afterwards."""
    saved = aioice.ice.get_host_addresses, ice_module._host_addresses
    install_host_addresses(LOOPBACK_ICE.host_addresses)
    yield
    aioice.ice.get_host_addresses, ice_module._host_addresses = saved
