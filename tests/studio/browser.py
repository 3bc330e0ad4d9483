"""Headless Chromium for the studio tests: Debian's `chromium` and `chromium-driver`, driven by selenium.

A missing browser fails the test (with the command that installs it): the studio is tested in a real
browser or not at all, so the tests never skip silently.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver import Chrome
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

CHROMIUM = ("chromium", "chromium-browser")
CHROMEDRIVER = ("chromedriver", "chromium-driver")
INSTALL = "apt-get install -y chromium chromium-driver"
WINDOW = (1366, 860)  # a laptop screen
WAVEFORM_BACKGROUND = (0x15, 0x17, 0x1C)  # studio.css / waveform.js


def _found(names: tuple[str, ...]) -> str | None:
    return next((path for name in names if (path := shutil.which(name))), None)


def start_chromium() -> Chrome:
    """Headless Chromium at a laptop's window size; fails the test if Chromium or its driver is missing."""
    binary, driver = _found(CHROMIUM), _found(CHROMEDRIVER)
    if binary is None or driver is None:
        pytest.fail(f"the studio tests need Chromium and chromedriver on PATH: {INSTALL}", pytrace=False)
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for argument in (
        "--headless=new",
        "--no-sandbox",  # CI runs as root
        "--disable-dev-shm-usage",
        f"--window-size={WINDOW[0]},{WINDOW[1]}",
        "--autoplay-policy=no-user-gesture-required",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # An explicit driver path: selenium does not look for (or download) a driver of its own.
    return webdriver.Chrome(options=options, service=Service(executable_path=driver))


@dataclass
class Page:
    """The browser on one studio page, with the waits and checks the tests share."""

    driver: Chrome
    shots: Path
    console: list[dict[str, Any]] = field(default_factory=list)

    def open(self, url: str) -> None:
        """Load `url` with no key stored from an earlier test."""
        self.driver.get(url)
        self.driver.execute_script("sessionStorage.clear(); localStorage.clear();")
        self.driver.get(url)
        self.wait_for("document.querySelector('#tools [aria-selected=\"true\"]')", "the page to start")

    def js(self, script: str, *args: Any) -> Any:
        return self.driver.execute_script(script, *args)

    def find(self, css: str) -> WebElement:
        return self.driver.find_element("css selector", css)

    def find_all(self, css: str) -> list[WebElement]:
        return self.driver.find_elements("css selector", css)

    def wait_for(self, condition: str, what: str, timeout_s: float = 60) -> Any:
        """Wait until the JS expression `condition` is truthy (one that throws counts as false); its
        value. On timeout: a screenshot, and the page's console in the failure."""

        def check(driver: WebDriver) -> Any:
            return driver.execute_script(f"try {{ return ({condition}); }} catch (e) {{ return false; }}")

        try:
            return WebDriverWait(self.driver, timeout_s, poll_frequency=0.2).until(check)
        except TimeoutException:
            self.shot(f"timeout-{what.replace(' ', '-')[:40]}")
            shown = self.text("#job")
            pytest.fail(f"timed out waiting for {what}; console: {self.logs()}; job view: {shown}")

    def wait_row(self, job_id: str) -> WebElement:
        """The job list's row of `job_id`, once it is listed."""
        self.wait_for(f"document.querySelector('tr[data-job-id=\"{job_id}\"]')", f"job {job_id} listed")
        return self.find(f'tr[data-job-id="{job_id}"]')

    def text(self, css: str) -> str:
        found = self.find_all(css)
        return found[0].text if found else ""

    def shot(self, name: str) -> Path:
        path = self.shots / f"{name}.png"
        self.driver.save_screenshot(str(path))
        return path

    def logs(self) -> list[dict[str, Any]]:
        """Every console entry so far (selenium hands each out once)."""
        self.console += self.driver.get_log("browser")
        return self.console

    def script_errors(self) -> list[str]:
        """Console errors that are not a failed request (those the page expects and shows itself)."""
        return [
            e["message"]
            for e in self.logs()
            if e["level"] == "SEVERE" and "Failed to load resource" not in e["message"]
        ]

    def canvas_ink(self, figure: WebElement) -> float:
        """The share of the figure's waveform canvas pixels that are not the background colour."""
        script = """
            const canvas = arguments[0].querySelector('canvas');
            const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
            const [r, g, b] = arguments[1];
            let ink = 0;
            for (let i = 0; i < data.length; i += 4) {
              if (Math.abs(data[i] - r) + Math.abs(data[i + 1] - g) + Math.abs(data[i + 2] - b) > 24) ink++;
            }
            return ink / (data.length / 4);
        """
        return float(self.js(script, figure, list(WAVEFORM_BACKGROUND)))

    def audio_duration(self, figure: WebElement, timeout_s: float = 30) -> float:
        """The duration of the figure's <audio> element, once its metadata has loaded (fails after
        `timeout_s` without: the element could not read the file)."""
        script = "const a = arguments[0].querySelector('audio'); return a.readyState >= 1 ? a.duration : 0;"

        def loaded(driver: WebDriver) -> float:
            return float(driver.execute_script(script, figure) or 0)

        try:
            return float(WebDriverWait(self.driver, timeout_s, poll_frequency=0.2).until(loaded))
        except TimeoutException:
            self.shot("timeout-audio-metadata")
            pytest.fail(f"the audio element loaded no metadata; console: {self.logs()}")
