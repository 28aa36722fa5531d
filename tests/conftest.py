"""Suite-wide test set-up: which tests must not run at the same time as each other.

``python3 dev.py test`` runs the suite on two pytest-xdist workers (``--dist loadgroup``).
Tests that use a machine-wide resource are put in one ``xdist_group`` each, so they run one
after another on a single worker: network namespaces and TUN devices (the emulator's
teardown removes namespaces it recognises as left over) and Chromium (CPU-heavy, and its
tests assert frame rates that a second browser would disturb).
"""

from pathlib import Path

import pytest
from hypothesis import settings

_GROUPS = {
    "netns": ("fidelity/", "federation/test_mdns_netns.py", "netsim/test_emulate.py"),
    "browser": ("browser/",),
}
_ROOT = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        rel = Path(str(item.fspath)).relative_to(_ROOT).as_posix()
        for group, prefixes in _GROUPS.items():
            if rel.startswith(prefixes):
                item.add_marker(pytest.mark.xdist_group(group))


# The suite's property tests draw the same examples on every run (``derandomize``), so a
# change that breaks one fails every time and a green run stays green: exploring new
# examples is done on purpose (``pytest --hypothesis-profile=explore``), not by CI's luck.
settings.register_profile("default", derandomize=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile("default")
