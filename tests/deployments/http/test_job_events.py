"""`GET /v1/jobs/{id}/events` (deployments/http/job_events.py) over a real HTTP connection: the app in
uvicorn on 127.0.0.1, the real embedded S3 store; a thread plays the runner, writing the record as a
job's stages would."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from deployments.http.api import build_http_app
from deployments.http.services import Services
from infra.jobs import JobError, JobRecord, JobStatus, JobStore, SegmentProgress
from infra.settings import Settings
from infra.storage import Storage
from tests.deployments.http.conftest import RecordingRunner, bearer, keyed
from tests.deployments.http.live_server import live_server
from tests.pipelines.test_stages import models_with

Event = tuple[str, str, dict[str, Any]]  # (id, event, data)


@pytest.fixture
def served(settings: Settings, storage: Storage) -> Iterator[tuple[str, JobStore]]:
    fast = keyed(settings).model_copy(update={"events_poll_s": 0.05, "events_keepalive_s": 0.5})
    jobs = JobStore(storage)
    services = Services(fast, storage, jobs, models_with(), RecordingRunner())
    with live_server(build_http_app(services)) as base:
        yield base, jobs


def read_events(response: httpx.Response) -> Iterator[Event]:
    """Parse an SSE stream into (id, event, data) triples; comments and `retry:` lines are skipped."""
    fields: dict[str, str] = {}
    for line in response.iter_lines():
        if line == "":
            if "event" in fields:
                yield fields.get("id", ""), fields["event"], json.loads(fields["data"])
            fields = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(": ")
            fields[name] = value


def events_of(base: str, job_id: str, headers: dict[str, str] | None = None) -> list[Event]:
    with httpx.stream(
        "GET", f"{base}/v1/jobs/{job_id}/events", headers={**bearer("alice"), **(headers or {})}, timeout=20
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        return list(read_events(response))


def play_runner(jobs: JobStore, job_id: str, storage: Storage) -> None:
    """What a runner writes: claim, a stage with 3 segments, a retry, a stored result, success."""
    time.sleep(0.3)
    claimed = jobs.claim(job_id, "test-runner", 30)
    assert claimed is not None
    for done in range(4):

        def step(record: JobRecord, done: int = done) -> None:
            record.stage = "separate_stems"
            record.segments = SegmentProgress(stage="separate_stems", done=done, total=3)
            record.progress = done / 4

        jobs.update(job_id, step, attempt=claimed.attempt)
        time.sleep(0.15)
    storage.put_bytes(f"outputs/{job_id}/a1/mix.wav", b"RIFF", "audio/wav")
    result = {"mix": {"key": f"outputs/{job_id}/a1/mix.wav", "format": "wav"}}
    jobs.finish(job_id, claimed.attempt, JobStatus.SUCCEEDED, result=result)


def test_a_job_streams_status_stage_progress_and_result_then_ends(
    served: tuple[str, JobStore], storage: Storage
) -> None:
    base, jobs = served
    record, _ = jobs.create("separate", {"upload_id": "x"}, owner="alice")
    runner = threading.Thread(target=play_runner, args=(jobs, record.id, storage))
    runner.start()
    events = events_of(base, record.id)
    runner.join()
    names = [name for _, name, _ in events]
    assert names[0] == "status" and events[0][2]["status"] == "queued"
    assert names[-2:] == ["result", "end"]
    statuses = [data["status"] for _, name, data in events if name == "status"]
    assert statuses == ["queued", "running", "succeeded"]
    progress = [data for _, name, data in events if name == "progress" and data["segments"]]
    assert [p["segments"]["done"] for p in progress][:4] == [0, 1, 2, 3]  # the poll outpaces the steps
    assert progress[-1]["progress"] == 1.0  # success completes the progress
    assert [data["stage"] for _, name, data in events if name == "stage"][-1] == "separate_stems"
    result = events[-2][2]
    assert result["status"] == "succeeded" and result["result"]["mix"]["url"].startswith("http")
    assert httpx.get(result["result"]["mix"]["url"]).content == b"RIFF"  # a working presigned URL
    assert events[-1][2] == {"id": record.id, "status": "succeeded"}
    ids = [int(event_id) for event_id, _, _ in events]
    assert ids == sorted(ids)


def test_last_event_id_resumes_without_repeating(served: tuple[str, JobStore]) -> None:
    base, jobs = served
    record, _ = jobs.create("separate", {"upload_id": "x"}, owner="alice")
    jobs.request_cancel(record.id)
    first = events_of(base, record.id)
    assert [name for _, name, _ in first] == ["status", "stage", "progress", "end"]  # the full state
    assert first[0][2]["status"] == "cancelled"
    again = events_of(base, record.id, {"Last-Event-ID": first[-1][0]})
    assert [name for _, name, _ in again] == ["end"]  # seen everything: only told that it ended
    older = events_of(base, record.id, {"Last-Event-ID": str(int(first[0][0]) - 1)})
    assert [name for _, name, _ in older] == ["status", "stage", "progress", "end"]


def test_a_failed_job_streams_its_error(served: tuple[str, JobStore]) -> None:
    base, jobs = served
    record, _ = jobs.create("separate", {"upload_id": "x"}, owner="alice")
    claimed = jobs.claim(record.id, "test-runner", 30)
    assert claimed is not None
    error = JobError(code="model_failed", message="the model failed", stage="separate_stems", attempt=1)
    jobs.finish(record.id, claimed.attempt, JobStatus.FAILED, error=error)
    events = events_of(base, record.id)
    assert [name for _, name, _ in events] == ["status", "stage", "progress", "error", "end"]
    assert events[-2][2] == {"id": record.id, **error.model_dump()}


def test_another_tenants_job_has_no_events(served: tuple[str, JobStore]) -> None:
    base, jobs = served
    record, _ = jobs.create("separate", {"upload_id": "x"}, owner="alice")
    answer = httpx.get(f"{base}/v1/jobs/{record.id}/events", headers=bearer("bob"))
    assert answer.status_code == 404 and answer.json()["error"]["code"] == "job_not_found"
    assert httpx.get(f"{base}/v1/jobs/{record.id}/events").status_code == 401
    assert httpx.get(f"{base}/v1/jobs/{'f' * 31}/events", headers=bearer("alice")).status_code == 404


def test_many_listeners_share_one_poller(served: tuple[str, JobStore], storage: Storage) -> None:
    """Twenty listeners on one job: each gets the whole stream; the replica keeps one watch for them."""
    base, jobs = served
    record, _ = jobs.create("separate", {"upload_id": "x"}, owner="alice")
    results: list[list[Event]] = []
    listeners = [
        threading.Thread(target=lambda: results.append(events_of(base, record.id))) for _ in range(20)
    ]
    for listener in listeners:
        listener.start()
    play_runner(jobs, record.id, storage)
    for listener in listeners:
        listener.join(20)
    assert len(results) == 20
    assert all([name for _, name, _ in events][-2:] == ["result", "end"] for events in results)
