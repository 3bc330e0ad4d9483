"""`job_report` (the body of `GET /v1/jobs/{id}/report`) from job records built in the test: no Ray."""

from __future__ import annotations

from deployments.http.schemas import job_report
from infra.jobs import JobError, JobRecord, JobStatus, StageRecord


def stage(index: int, name: str, weights: str | None, sizes: dict[str, int], retries: int = 0) -> StageRecord:
    models = (
        {} if weights is None else {f"Model{index}": {"model_id": "m", "revision": "r", "weights": weights}}
    )
    return StageRecord(
        index=index,
        name=name,
        prefix=f"jobs/x/stages/{index:02d}-{name}/",
        manifest_key=f"jobs/x/stages/{index:02d}-{name}/manifest.json",
        fingerprint="f",
        objects={n: "0" * 64 for n in sizes},
        sizes=sizes,
        models=models,
        duration_s=1.5 * (index + 1),
        peak_memory_bytes=1000 * (index + 1),
        retries=retries,
        retried_errors=["ConnectionError: gone"] * retries,
        segments=3 * index,
        attempt=2,
    )


def record(**changes: object) -> JobRecord:
    base = JobRecord(
        id="a" * 32,
        kind="voice-replace",
        request={},
        status=JobStatus.SUCCEEDED,
        attempt=2,
        stages=[
            stage(1, "separate", "debug-random", {"vocals.wav": 300, "no_vocals.wav": 200}, retries=1),
            stage(0, "decode", None, {"input.wav": 100}),
            stage(2, "transcribe", "pretrained", {}),
        ],
        created_at=100.0,
        updated_at=120.0,
        started_at=101.0,
        finished_at=111.0,
    )
    return base.model_copy(update=changes)


def test_report_sums_stages_and_names_debug_weights() -> None:
    report = job_report(record(), now=500.0)
    assert [s.name for s in report.stages] == ["decode", "separate", "transcribe"]
    assert report.wall_s == 10.0 and report.queued_s == 1.0
    assert report.stage_compute_s == 1.5 + 3.0 + 4.5
    assert report.checkpoint_bytes == 600
    assert report.stages[1].objects == {"vocals.wav": 300, "no_vocals.wav": 200}
    assert report.stages[1].retries == 1 and report.stages[1].retried_errors == ["ConnectionError: gone"]
    assert report.stages[1].segments == 3
    assert report.weights == {"Model1": "debug-random", "Model2": "pretrained"}
    assert report.debug_weights == ["Model1"]
    assert report.failure is None


def test_report_of_a_failed_running_and_queued_job() -> None:
    error = JobError(code="no_speech", message="no speech found", stage="diarize", attempt=1)
    failed = job_report(record(status=JobStatus.FAILED, error=error), now=500.0)
    assert failed.failure == error
    running = job_report(record(status=JobStatus.RUNNING, finished_at=None), now=131.0)
    assert running.wall_s == 30.0
    queued = job_report(record(status=JobStatus.QUEUED, started_at=None, stages=[]), now=131.0)
    assert queued.wall_s is None and queued.stages == [] and queued.checkpoint_bytes == 0
