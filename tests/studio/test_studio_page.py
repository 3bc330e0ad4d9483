"""The studio page in headless Chromium against the HTTP app in-process (no Ray): uvicorn on 127.0.0.1,
the real embedded S3 store (a bucket of this module's own), API keys on. The test plays the job runner,
writing the record as a job's stages would (a runner double: the real one is a Ray deployment, run by
tests/studio/test_studio_stack.py)."""

from __future__ import annotations

import threading
import tomllib
import uuid
from collections.abc import Iterator
from fnmatch import fnmatch
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import numpy as np
import pytest
from selenium.webdriver.common.keys import Keys

from deployments.http.api import build_http_app
from deployments.http.services import Services
from deployments.http.studio.routes import FILES, STATIC_DIR
from infra.audio import Audio, encode
from infra.jobs import JobStatus, JobStore, SegmentProgress
from infra.settings import Settings
from infra.storage import Storage
from tests.deployments.http.conftest import KEYS, FakeTTS, RecordingRunner, keyed
from tests.deployments.http.live_server import live_server
from tests.pipelines.test_stages import models_with
from tests.studio.browser import Page

REPO = Path(__file__).parents[2]
XSS_PROMPT = '<img src=x onerror="window.studioXss = 1">synth <b>pad</b>'


@pytest.fixture(scope="module")
def served(settings: Settings) -> Iterator[tuple[str, JobStore, Storage]]:
    own = keyed(settings).model_copy(
        update={"s3_bucket": f"studio-{uuid.uuid4().hex[:8]}", "events_poll_s": 0.1}
    )
    storage = Storage(own)
    storage.ensure_bucket()
    jobs = JobStore(storage)
    services = Services(own, storage, jobs, models_with(tts=FakeTTS()), RecordingRunner())
    with live_server(build_http_app(services)) as base:
        yield base, jobs, storage


def wav(samples: np.ndarray, rate: int = 16000) -> bytes:
    return encode(Audio(samples[None].astype(np.float32), rate), "wav")


def stem_entry(storage: Storage, job_id: str, name: str, samples: np.ndarray) -> dict[str, Any]:
    key = f"outputs/{job_id}/a1/{name}.wav"
    storage.put_bytes(key, wav(samples), "audio/wav")
    return {"key": key, "media_type": "audio/wav", "sample_rate": 16000, "channels": 1, "duration_s": 1.0}


def music(prompt: str) -> dict[str, Any]:
    return {"prompt": prompt, "duration_s": 2, "model": "musicgen"}


def use_key(page: Page, name: str, remember: bool = False) -> None:
    page.find("#api-key").clear()
    page.find("#api-key").send_keys(KEYS[name])
    if remember != page.find("#remember-key").is_selected():
        page.find("#remember-key").click()
    page.find("#key-form button[type=submit]").click()


def test_the_page_and_its_files_are_served_with_a_content_security_policy(
    served: tuple[str, JobStore, Storage], settings: Settings
) -> None:
    base, _, _ = served
    page = httpx.get(f"{base}/studio")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert '<script type="module" src="/studio/js/app.js">' in page.text
    policy = dict(d.strip().split(" ", 1) for d in page.headers["content-security-policy"].split(";"))
    store = urlsplit(str(settings.s3_endpoint_url))
    assert policy["default-src"] == "'none'" and policy["script-src"] == "'self'"
    assert policy["style-src"] == "'self'" and policy["frame-ancestors"] == "'none'"
    for directive in ("media-src", "img-src", "connect-src"):  # the presigned result URLs' origin
        assert policy[directive] == f"'self' {store.scheme}://{store.netloc}"
    assert "unsafe" not in page.headers["content-security-policy"]
    assert page.headers["x-content-type-options"] == "nosniff"
    script = httpx.get(f"{base}/studio/js/app.js")
    assert script.status_code == 200 and script.headers["content-type"].startswith("text/javascript")
    assert httpx.get(f"{base}/studio/").text == page.text
    for missing in ("/studio/nope.js", "/studio/%2e%2e/routes.py", "/studio/..%2f__init__.py"):
        answer = httpx.get(f"{base}{missing}")
        assert answer.status_code == 404 and answer.json()["error"]["code"] == "not_found", missing


def test_every_static_file_is_in_the_package_data() -> None:
    patterns = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    package = STATIC_DIR.parent.relative_to(REPO).as_posix().replace("/", ".")
    assert {"index.html", "studio.css", "js/app.js"} <= set(FILES)
    for name in FILES:
        assert any(fnmatch(f"static/{name}", p) for p in patterns[package]), name


def test_the_key_is_asked_for_used_and_kept_for_the_tab(
    served: tuple[str, JobStore, Storage], page: Page
) -> None:
    base, jobs, _ = served
    mine, _ = jobs.create("music", music("alice's pad"), owner="alice")
    theirs, _ = jobs.create("music", music("bob's drums"), owner="bob")
    page.open(f"{base}/studio")
    page.wait_for("document.querySelector('#jobs-error').textContent.includes('401 unauthorized')", "the 401")
    page.shot("key-1-no-key")
    use_key(page, "alice")
    page.wait_row(mine.id)
    assert page.find_all(f'tr[data-job-id="{theirs.id}"]') == []
    assert page.text("#jobs-error") == ""
    assert page.js("return sessionStorage.getItem('soundstage.apiKey')") == KEYS["alice"]
    assert page.js("return localStorage.getItem('soundstage.apiKey')") is None
    page.driver.refresh()  # the tab keeps the key: nothing to type again
    page.wait_row(mine.id)
    assert page.find("#api-key").get_attribute("value") == KEYS["alice"]
    use_key(page, "alice", remember=True)
    page.wait_for("localStorage.getItem('soundstage.apiKey') !== null", "the key remembered")
    assert page.js("return sessionStorage.getItem('soundstage.apiKey')") is None
    page.shot("key-2-alice")
    page.find("#forget-key").click()
    page.wait_for("document.querySelector('#jobs-error').textContent.includes('401')", "the key forgotten")
    assert page.js("return localStorage.getItem('soundstage.apiKey')") is None
    assert page.script_errors() == []


def start_separation(jobs: JobStore, job_id: str) -> None:
    """The runner double: claim the job and report half of its segments done."""
    claimed = jobs.claim(job_id, "test-runner", 30)
    assert claimed is not None

    def halfway(record: Any) -> None:
        record.stage = "separate_stems"
        record.segments = SegmentProgress(stage="separate_stems", done=1, total=2)
        record.progress = 0.5

    jobs.update(job_id, halfway, attempt=claimed.attempt)


def finish_separation(jobs: JobStore, storage: Storage, job_id: str, attempt: int) -> None:
    """The runner double's end: two stems stored, the job succeeded."""
    t, rng = np.arange(16000) / 16000, np.random.default_rng(0)
    result = {
        "vocals": stem_entry(storage, job_id, "vocals", 0.5 * np.sin(2 * np.pi * 220 * t)),
        "no_vocals": stem_entry(storage, job_id, "no_vocals", 0.3 * rng.standard_normal(16000)),
        "metadata": {"model": {"model_id": "debug/htdemucs"}, "weights": "debug-random", "segments": 2},
    }
    jobs.finish(job_id, attempt, JobStatus.SUCCEEDED, result=result)


def test_live_progress_then_a_player_per_stem(served: tuple[str, JobStore, Storage], page: Page) -> None:
    base, jobs, storage = served
    record, _ = jobs.create("separate", {"upload_id": "a" * 32, "mode": "vocals"}, owner="alice")
    start_separation(jobs, record.id)
    page.open(f"{base}/studio")
    use_key(page, "alice")
    page.wait_row(record.id).find_element("css selector", "button").click()
    page.wait_for("document.querySelector('#job .progress-text').textContent.includes('1/2 seg')", "progress")
    assert "50 %" in page.text("#job .progress-text") and "separate_stems" in page.text("#job .progress-text")
    assert page.find("#job progress").get_attribute("value") == "0.5"
    page.shot("stems-1-running")
    attempt = jobs.get(record.id).attempt
    threading.Thread(target=finish_separation, args=(jobs, storage, record.id, attempt)).start()
    drawn = "document.querySelectorAll('#job figure.player[data-waveform=\"drawn\"]').length === 2"
    page.wait_for(drawn, "both stems drawn")  # the page saw `succeeded` on the event stream
    figures = page.find_all("#job figure.player")
    assert [f.find_element("css selector", "strong").text for f in figures] == ["vocals", "no_vocals"]
    for figure in figures:
        assert page.canvas_ink(figure) > 0.05
        assert abs(page.audio_duration(figure) - 1.0) < 0.01
        link = figure.find_element("css selector", "a[download]")
        assert httpx.get(str(link.get_attribute("href"))).content[:4] == b"RIFF"
    assert "Debug weights" in page.text("#job .debug-banner")
    assert page.text("#job .status") == "SUCCEEDED"
    page.shot("stems-2-succeeded")
    assert page.script_errors() == []


def test_api_text_is_shown_as_text_never_as_html(served: tuple[str, JobStore, Storage], page: Page) -> None:
    base, jobs, _ = served
    record, _ = jobs.create("music", music(XSS_PROMPT), owner="alice")
    page.open(f"{base}/studio")
    use_key(page, "alice")
    cell = page.wait_row(record.id).find_element("css selector", "td.what")
    assert str(cell.get_attribute("textContent")).startswith(XSS_PROMPT)
    assert page.find_all("#job-rows img, #job-rows b") == []
    assert page.js("return window.studioXss === undefined")
    page.shot("xss-text")


def focus_order(page: Page, presses: int) -> list[str]:
    """The ids (or tag names) of the elements that Tab reaches, in order, from the top of the page."""
    page.js("document.activeElement?.blur(); window.scrollTo(0, 0);")
    order = []
    for _ in range(presses):
        page.driver.switch_to.active_element.send_keys(Keys.TAB)
        order.append(page.js("const a = document.activeElement; return a.id || a.className || a.tagName;"))
    return order


def test_the_page_is_keyboard_friendly(served: tuple[str, JobStore, Storage], page: Page) -> None:
    base, _, _ = served
    page.open(f"{base}/studio")
    unlabelled = page.js(
        "return [...document.querySelectorAll('input, select, textarea')]"
        ".filter(c => !c.labels?.length && !c.getAttribute('aria-label')).map(c => c.id || c.name);"
    )
    assert unlabelled == []
    assert page.find_all("[onclick], div[tabindex], span[tabindex]") == []  # controls are buttons
    order = focus_order(page, 9)
    assert order[:6] == ["skip", "api-key", "remember-key", "BUTTON", "forget-key", "tab-music"], order
    assert order[6:9] == ["music-prompt", "music-model", "music-duration"], order  # one stop for the tabs
    page.driver.switch_to.active_element.send_keys(Keys.SHIFT, Keys.TAB, Keys.NULL)
    page.driver.switch_to.active_element.send_keys(Keys.SHIFT, Keys.TAB, Keys.NULL)
    page.driver.switch_to.active_element.send_keys(Keys.SHIFT, Keys.TAB, Keys.NULL)
    assert page.js("return document.activeElement.id") == "tab-music"
    page.driver.switch_to.active_element.send_keys(Keys.ARROW_RIGHT)
    assert page.js("return document.activeElement.id") == "tab-sfx"
    assert page.find("#panel-sfx").is_displayed() and not page.find("#panel-music").is_displayed()
    page.driver.switch_to.active_element.send_keys(Keys.END)
    assert page.js("return document.activeElement.id") == "tab-pitch"
    page.driver.switch_to.active_element.send_keys(Keys.ENTER)  # already selected; stays
    page.driver.switch_to.active_element.send_keys(Keys.TAB)
    assert page.js("return document.activeElement.id") == "pitch-file"
    page.shot("keyboard-pitch-tab")
