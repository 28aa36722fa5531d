"""Fixtures for browser tests: a headless Debian Chromium, driven over DevTools.

Without ``/usr/bin/chromium`` the browser tests are skipped, unless ``MESHNODE_REQUIRE_BROWSER``
is set (CI sets it), in which case they fail: a missing browser must not pass silently.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import pytest

from .chromium import CHROMIUM_PATH, Chromium


@pytest.fixture
def chromium_path() -> str:
    if not os.path.exists(CHROMIUM_PATH):
        if os.environ.get("MESHNODE_REQUIRE_BROWSER"):
            pytest.fail(
                f"{CHROMIUM_PATH} is missing and MESHNODE_REQUIRE_BROWSER is set: install "
                "Debian's Chromium (apt-get install -y chromium)"
            )
        pytest.skip(
            f"{CHROMIUM_PATH} is missing: install Debian's Chromium (apt-get install -y "
            "chromium) to run the browser tests; set MESHNODE_REQUIRE_BROWSER=1 to make its "
            "absence a failure"
        )
    return CHROMIUM_PATH


@pytest.fixture
async def chromium(chromium_path: str) -> AsyncIterator[Chromium]:
    """A running headless Chromium with a fresh profile, killed after the test."""
    browser = await Chromium.launch(chromium_path)
    try:
        yield browser
    finally:
        await browser.close()


MEDIA_FLAGS = ("--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
               "--autoplay-policy=no-user-gesture-required")
"""Chromium with a fake microphone (a beeping tone) and camera, and autoplay allowed."""


@pytest.fixture
async def media_chromium(chromium_path: str) -> AsyncIterator[Chromium]:
    """A Chromium with a fake microphone and camera (the pages of a test share it)."""
    browser = await Chromium.launch(chromium_path, extra_flags=MEDIA_FLAGS)
    try:
        yield browser
    finally:
        await browser.close()
