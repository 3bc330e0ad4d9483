"""soundstage's metrics on Ray's Prometheus endpoint of the session stack (127.0.0.1, the port the
stack was given), beside Serve's own: a music job is run, then its series are looked for."""

from __future__ import annotations

import re
import time
from typing import Any

import httpx
import pytest

from infra.client import SoundstageClient

pytestmark = pytest.mark.ray
EXPORT_WAIT_S = 90.0  # Ray's agents export every few seconds; a loaded 2-core box can take much longer
EXPECTED = {
    # counters as README and infra/grafana/soundstage.json name them (with `_total`)
    "jobs submitted": r'ray_soundstage_jobs_submitted_total\{[^}]*kind="music"',
    "jobs finished": r'ray_soundstage_jobs_finished_total\{[^}]*kind="music"[^}]*status="succeeded"'
    r'|ray_soundstage_jobs_finished_total\{[^}]*status="succeeded"[^}]*kind="music"',
    "queue wait": r'ray_soundstage_job_queue_wait_seconds_bucket\{[^}]*kind="music"',
    "stage duration": r'ray_soundstage_stage_duration_seconds_bucket\{[^}]*stage="generate"',
    "model call": r'ray_soundstage_model_call_seconds_bucket\{[^}]*deployment="MusicGen"',
    "batch size": r'ray_soundstage_model_batch_size_bucket\{[^}]*deployment="MusicGen"',
    "s3 requests": r'ray_soundstage_s3_request_seconds_bucket\{[^}]*operation="PutObject"',
    "serve's own": r"ray_serve_",
}


def test_a_jobs_series_are_on_the_metrics_endpoint(stack: Any, base_url: str) -> None:
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/metrics", stack.metrics_url)
    client = SoundstageClient(base_url)
    job = client.submit("music", {"prompt": "metered", "duration_s": 0.5, "quality_check": False})
    client.wait(job["id"], timeout_s=300)
    missing, text = dict(EXPECTED), ""
    deadline = time.monotonic() + EXPORT_WAIT_S
    while missing and time.monotonic() < deadline:
        text = httpx.get(stack.metrics_url, timeout=30).text
        missing = {name: rx for name, rx in missing.items() if not re.search(rx, text)}
        if missing:
            time.sleep(2.0)
    ours = sorted({line.split("{")[0] for line in text.splitlines() if line.startswith("ray_soundstage")})
    assert not missing, f"series not exported: {sorted(missing)}; soundstage's series there: {ours}"
