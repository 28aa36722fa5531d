"""Fixtures for tests against real node processes."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.nodeproc import NodeProcess


@pytest.fixture
def node(tmp_path: Path) -> Iterator[NodeProcess]:
    """One ``meshnode up`` process on loopback with its default room, killed afterwards."""
    n = NodeProcess(tmp_path / "n").start()
    try:
        yield n
    finally:
        n.kill()
