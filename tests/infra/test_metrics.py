"""The metrics observer: what `infra` and `pipelines` record through `infra.metrics` (no Ray here), seen
by a recording sink over the real embedded store, in a bucket of the test's own."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field

import pytest
from pydantic import BaseModel

from infra import metrics
from infra.embedded_s3 import free_port
from infra.jobs import JobStatus, JobStore
from infra.metrics import Metric
from infra.settings import Settings
from infra.storage import ObjectNotFoundError, Storage, TransientStorageError
from pipelines.engine.checkpoints import RetryPolicy
from pipelines.engine.context import StageContext, StageOutput, StageResult
from pipelines.engine.stages import Stage, StageRunner
from tests.pipelines.test_stages import models_with


@dataclass
class RecordingSink:
    """A sink that keeps every record: (metric name, value, tags)."""

    seen: list[tuple[str, float, dict[str, str]]] = field(default_factory=list)

    def record(self, metric: Metric, value: float, tags: dict[str, str]) -> None:
        self.seen.append((metric.name, value, tags))

    def of(self, metric: Metric) -> list[tuple[float, dict[str, str]]]:
        return [(value, tags) for name, value, tags in self.seen if name == metric.name]


@pytest.fixture
def sink(monkeypatch: pytest.MonkeyPatch) -> RecordingSink:
    """This process's sink for the test (the one before is put back after it)."""
    recording = RecordingSink()
    monkeypatch.setattr(metrics, "_sink", recording)
    return recording


@pytest.fixture
def own_storage(settings: Settings) -> Storage:
    storage = Storage(settings.model_copy(update={"s3_bucket": f"m-{uuid.uuid4().hex[:8]}"}))
    storage.ensure_bucket()
    return storage


class Request(BaseModel):
    n: int


class Done(StageOutput):
    pass


def test_a_job_records_submitted_queue_wait_stages_retries_and_finished(
    sink: RecordingSink, own_storage: Storage
) -> None:
    jobs = JobStore(own_storage)
    record, _ = jobs.create("metered", {"n": 1})
    claimed = jobs.claim(record.id, "test-runner", lease_s=60)
    assert claimed is not None
    tries: list[int] = []

    async def flaky(ctx: StageContext[Request]) -> StageResult:
        tries.append(1)
        if len(tries) < 3:
            raise ConnectionError("replica went away")
        return StageResult(record=Done())

    runner = StageRunner(jobs, claimed, Request(n=1), models_with(), retry=RetryPolicy(tries=3, base_s=0.01))
    asyncio.run(runner.run((Stage("flaky", flaky, output=Done),)))
    jobs.finish(record.id, claimed.attempt, JobStatus.SUCCEEDED, result={})
    jobs.update(record.id, lambda r: None)  # a later write of the finished job is not a second finish
    assert sink.of(metrics.JOBS_SUBMITTED) == [(1.0, {"kind": "metered"})]
    ((wait, tags),) = sink.of(metrics.QUEUE_WAIT)
    assert wait >= 0 and tags == {"kind": "metered"}
    ((duration, tags),) = sink.of(metrics.STAGE_DURATION)
    assert duration > 0 and tags == {"kind": "metered", "stage": "flaky"}
    cause = {"kind": "metered", "stage": "flaky", "cause": "ConnectionError"}
    assert sink.of(metrics.STAGE_RETRIES) == [(1.0, cause)] * 2
    assert sink.of(metrics.JOBS_FINISHED) == [(1.0, {"kind": "metered", "status": "succeeded"})]


def test_a_cancelled_queued_job_is_finished_once(sink: RecordingSink, own_storage: Storage) -> None:
    jobs = JobStore(own_storage)
    record, _ = jobs.create("metered", {"n": 2})
    jobs.request_cancel(record.id)
    assert sink.of(metrics.JOBS_FINISHED) == [(1.0, {"kind": "metered", "status": "cancelled"})]


def test_s3_requests_and_errors(sink: RecordingSink, own_storage: Storage, settings: Settings) -> None:
    own_storage.put_bytes("probe/x", b"1")
    with pytest.raises(ObjectNotFoundError):
        own_storage.get_bytes("probe/missing")
    requests = [tags for _, tags in sink.of(metrics.S3_REQUEST)]
    assert {"operation": "PutObject", "outcome": "ok"} in requests
    assert {"operation": "GetObject", "outcome": "client_error"} in requests
    assert (1.0, {"operation": "GetObject", "error": "NoSuchKey"}) in sink.of(metrics.S3_ERRORS)
    down = settings.model_copy(
        update={"s3_endpoint_url": f"http://127.0.0.1:{free_port()}", "s3_outage_tolerance_s": 0.0}
    )
    with pytest.raises(TransientStorageError):
        Storage(down).get_bytes("probe/x")
    unreachable = [tags for _, tags in sink.of(metrics.S3_REQUEST) if tags["outcome"] == "unreachable"]
    assert unreachable and unreachable[0]["operation"] == "GetObject"


def test_wrong_tags_are_dropped_not_raised(sink: RecordingSink) -> None:
    metrics.record(metrics.JOBS_SUBMITTED, kind="music", extra="x")
    metrics.record(metrics.JOBS_FINISHED, kind="music")
    assert sink.seen == []


def test_the_catalogue() -> None:
    names = [m.name for m in metrics.CATALOGUE]
    assert len(set(names)) == len(names) and all(n.startswith("soundstage_") for n in names)
    for metric in metrics.CATALOGUE:
        assert (metric.kind == "histogram") == bool(metric.boundaries), metric.name
        assert list(metric.boundaries) == sorted(metric.boundaries), metric.name
