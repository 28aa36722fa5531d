"""Suite-wide test set-up: which tests must not run at the same time as each other.

``python3 dev.py test`` runs the suite on two pytest-xdist workers (``--dist loadgroup``).
Tests that use a machine-wide resource or judge real time share one group, so they run one
after another on a single worker: network namespaces and TUN devices (the emulator's teardown
removes namespaces it recognises as left over; its fidelity cases compare real heal times with
netsim's) and Chromium's live media (its tests assert frame rates and no freezes). They are
one group, not two, because each disturbs the other on two cores: the emulator runs its nodes
at nice -15, the media tests their browser and node at nice -10. The other Chromium tests
(pages, people, private rooms) judge no timing and run on either worker.
"""

from typing import Any

import pytest
from hypothesis import settings

_GROUPS = {
    "realtime": ("fidelity/", "federation/test_mdns_netns.py", "netsim/test_emulate.py",
                 "browser/test_media.py"),
}


def _group_of(rel: str) -> str | None:
    """The group of a test file (its path below tests/), if it has one."""
    for group, prefixes in _GROUPS.items():
        if rel.startswith(prefixes):
            return group
    return None


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """``--dist loadgroup``, with the groups read from the test's path. (Not ``xdist_group``
    marks: xdist groups by an ``@group`` suffix it appends to each test's ``_nodeid``, which
    pytest 9 no longer reads (``nodeid`` comes from ``_id``), so such marks are silently
    ignored; they were, and the real-time tests ran side by side on the two workers.)"""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadGroupScheduling

    class PathGroups(LoadGroupScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            group = _group_of(path.removeprefix("tests/"))
            return group if group is not None else super()._split_scope(nodeid)

    return PathGroups(config, log)


# The suite's property tests draw the same examples on every run (``derandomize``), so a
# change that breaks one fails every time and a green run stays green: exploring new
# examples is done on purpose (``pytest --hypothesis-profile=explore``), not by CI's luck.
settings.register_profile("default", derandomize=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile("default")
