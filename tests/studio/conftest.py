"""The studio tests' browser: one headless Chromium per session, a fresh page state per test, and a
folder for the screenshots each step writes (`SOUNDSTAGE_SCREENSHOT_DIR`, else a temp dir)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium.webdriver import Chrome

from tests.studio.browser import Page, start_chromium


@pytest.fixture(scope="session")
def chromium() -> Iterator[Chrome]:
    driver = start_chromium()
    yield driver
    driver.quit()


@pytest.fixture(scope="session")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    chosen = os.environ.get("SOUNDSTAGE_SCREENSHOT_DIR")
    folder = Path(chosen) if chosen else tmp_path_factory.mktemp("studio-screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture
def page(chromium: Chrome, screenshots: Path) -> Page:
    chromium.get_log("browser")  # drop what earlier tests left in the console
    return Page(chromium, screenshots)
