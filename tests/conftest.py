"""Suite-wide test set-up: which tests must not run at the same time as each other.

``python3 dev.py test`` runs the suite on two pytest-xdist workers (``--dist loadgroup``).
Tests that use a machine-wide resource share one ``xdist_group``, so they run one after
another on a single worker: network namespaces and TUN devices (the emulator's teardown
removes namespaces it recognises as left over) and Chromium (CPU-heavy, and its tests assert
frame rates and no freezes). They are one group, not two, because each disturbs the other on
two cores: the emulator runs its nodes at nice -15 and a Chromium test beside it saw a frozen
frame, while Chromium beside the emulator slowed a real partition's heal to twice netsim's.
"""

from pathlib import Path

import pytest
from hypothesis import settings

_GROUPS = {
    "realtime": ("fidelity/", "federation/test_mdns_netns.py", "netsim/test_emulate.py",
                 "browser/"),
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
