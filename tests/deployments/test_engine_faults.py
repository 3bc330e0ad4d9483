"""The engine's faults on the real local stack (the session's Ray cluster and SeaweedFS store): a runner
replica drained by downscaling mid-job, a model call that never returns, and a lease stolen mid-stage.

The app under test is tests/deployments/engine_app.py: the real JobRunner (with three test job kinds)
and a real model deployment that sleeps, deployed beside the soundstage app on a bucket of its own (so
the soundstage runners never see these jobs, nor these runners theirs), with a 9 s lease (3 s heartbeat).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator

import pytest
from ray import serve

from infra.embedded_s3 import EmbeddedS3
from infra.jobs import JobRecord, JobStatus, JobStore
from infra.settings import Settings
from infra.storage import ObjectNotFoundError, Storage
from tests.deployments.engine_app import HOLD, WEDGE, WEDGE_LONG, engine_app, hold_body

pytestmark = pytest.mark.ray
APP = "engine-faults"
LEASE_S = 9.0


@pytest.fixture(scope="module")
def bucket(settings: Settings) -> Storage:
    own = Storage(settings.model_copy(update={"s3_bucket": f"engine-faults-{uuid.uuid4().hex[:12]}"}))
    own.ensure_bucket()
    return own


@pytest.fixture(scope="module")
def env(s3: EmbeddedS3, stack: object, bucket: Storage) -> Iterator[dict[str, str]]:
    env = {
        **s3.env,
        "SOUNDSTAGE_S3_BUCKET": bucket.settings.s3_bucket,
        "SOUNDSTAGE_JOB_LEASE_S": str(LEASE_S),
        "SOUNDSTAGE_JOB_RECLAIM_INTERVAL_S": "1",
        "SOUNDSTAGE_JOB_MAX_CONCURRENT": "1",
        "SOUNDSTAGE_RETENTION_SWEEP_INTERVAL_S": "86400",
    }
    serve.run(engine_app(env, runners=1), name=APP, route_prefix=None)
    yield env
    serve.delete(APP)


@pytest.fixture
def jobs(env: dict[str, str], bucket: Storage) -> JobStore:
    return JobStore(bucket)


def wait_for(
    jobs: JobStore, job_id: str, until: Callable[[JobRecord], bool], timeout_s: float = 60
) -> JobRecord:
    ends = time.monotonic() + timeout_s
    while True:
        record = jobs.get(job_id)
        if until(record):
            return record
        assert time.monotonic() < ends, f"job {job_id} never got there: {record.status} {record.stage}"
        time.sleep(0.1)


def running_stage(record: JobRecord) -> bool:
    return record.status is JobStatus.RUNNING and record.stage is not None and record.lease_owner is not None


def release(jobs: JobStore, key: str) -> None:
    jobs.storage.put_bytes(key, b"go")


def test_a_model_call_that_never_returns_fails_at_the_deadline_or_is_cancelled(jobs: JobStore) -> None:
    wedged, _ = jobs.create(WEDGE, {"tag": uuid.uuid4().hex})
    failed = wait_for(jobs, wedged.id, lambda r: r.status.finished)
    assert failed.status is JobStatus.FAILED and failed.error is not None
    assert (failed.error.code, failed.error.stage) == ("deadline_exceeded", "wedge")
    assert "stage 'wedge' exceeded its deadline of 3 s" in failed.error.message
    assert failed.finished_at is not None and failed.started_at is not None
    assert failed.finished_at - failed.started_at < 30

    tag = uuid.uuid4().hex
    stuck, _ = jobs.create(WEDGE_LONG, {"tag": tag})
    wait_for(jobs, stuck.id, running_stage)
    time.sleep(0.5)  # the model call is in flight on the Sleeper replica
    asked = time.monotonic()
    jobs.request_cancel(stuck.id)  # what DELETE /v1/jobs/{id} does
    cancelled = wait_for(jobs, stuck.id, lambda r: r.status.finished, timeout_s=30)
    took = time.monotonic() - asked
    assert cancelled.status is JobStatus.CANCELLED
    assert took < 2 * LEASE_S / 3 + 5, f"cancelled {took:.1f} s after the DELETE"
    deadline = time.monotonic() + 10
    while True:  # the cancel reached the replica's in-flight call
        try:
            jobs.storage.get_bytes(f"cancelled/{tag}")
            break
        except ObjectNotFoundError:
            assert time.monotonic() < deadline, "the Sleeper's call was never cancelled"
            time.sleep(0.1)


def test_a_stolen_lease_publishes_only_the_new_attempts_output(jobs: JobStore) -> None:
    key = f"release/{uuid.uuid4().hex}"
    job, _ = jobs.create(HOLD, {"release_key": key})
    first = wait_for(jobs, job.id, running_stage)
    assert first.attempt == 1

    def steal(record: JobRecord) -> None:  # another runner claims it and hands it back at once
        record.attempt += 1
        record.lease_owner = None
        record.lease_expires_at = jobs.clock()

    jobs.update(job.id, steal, attempt=1)
    wait_for(jobs, job.id, lambda r: r.attempt == 3 and running_stage(r))  # a runner re-claimed it
    release(jobs, key)  # both attempts' threads now write: attempt 1's runs on, unseen
    done = wait_for(jobs, job.id, lambda r: r.status.finished)
    assert done.status is JobStatus.SUCCEEDED, done.error
    published = done.result["out"]["key"] if done.result else ""
    assert published == f"outputs/{job.id}/a3/out.bin"
    assert jobs.storage.get_bytes(published) == hold_body(job.id, 3)
    old = f"outputs/{job.id}/a1/out.bin"
    ends = time.monotonic() + 10
    while True:  # the superseded attempt's late write landed, under a key nothing names
        try:
            assert jobs.storage.get_bytes(old) == hold_body(job.id, 1)
            break
        except ObjectNotFoundError:
            assert time.monotonic() < ends, "attempt 1's thread never wrote"
            time.sleep(0.1)
    final = jobs.get(job.id)
    assert final.result == done.result and final.attempt == 3
    assert all(stage.attempt == 3 for stage in final.stages)


def test_a_runner_drained_by_downscaling_hands_its_job_to_another_replica(
    jobs: JobStore, env: dict[str, str]
) -> None:
    """One job per replica (JOB_MAX_CONCURRENT=1). Serve stops the newest replica when it scales down,
    so the job started after the upscale is the one drained; it must be re-claimed long before its
    9 s lease would have run out."""
    blocker_key, moved_key = f"release/{uuid.uuid4().hex}", f"release/{uuid.uuid4().hex}"
    blocker, _ = jobs.create(HOLD, {"release_key": blocker_key})
    on_old = wait_for(jobs, blocker.id, running_stage)
    serve.run(engine_app(env, runners=2), name=APP, route_prefix=None)  # a second, newer replica
    moved, _ = jobs.create(HOLD, {"release_key": moved_key})
    on_new = wait_for(jobs, moved.id, running_stage)
    assert on_new.lease_owner != on_old.lease_owner
    try:
        serve.run(engine_app(env, runners=1), name=APP, route_prefix=None)  # Serve drains the newest
        handed = wait_for(jobs, moved.id, lambda r: r.lease_owner is None, timeout_s=30)
        assert handed.status is JobStatus.RUNNING and handed.attempt == 1
        handed_at = time.monotonic()
        release(jobs, blocker_key)  # the surviving replica's slot frees up
        release(jobs, moved_key)
        done = wait_for(jobs, moved.id, lambda r: r.status.finished)
        took = time.monotonic() - handed_at
        assert done.status is JobStatus.SUCCEEDED, done.error
        # attempt 2 ran on the surviving replica (the drained one is gone) and published its own output
        assert done.attempt == 2 and done.result == {"out": {"key": f"outputs/{moved.id}/a2/out.bin"}}
        assert took < LEASE_S - 2, f"resumed and finished {took:.1f} s after the hand-back"
        assert (
            sum(serve.status().applications[APP].deployments["EngineTestRunner"].replica_states.values()) == 1
        )
        assert wait_for(jobs, blocker.id, lambda r: r.status.finished).status is JobStatus.SUCCEEDED
    finally:
        release(jobs, blocker_key)
        release(jobs, moved_key)
