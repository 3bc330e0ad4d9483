"""infra/jobs.py: create-only records, CAS updates, leases and the fence, against the embedded S3."""

from __future__ import annotations

import pytest

from infra.jobs import (
    IdempotencyConflictError,
    JobError,
    JobFinishedError,
    JobNotFoundError,
    JobStatus,
    JobStore,
    StaleAttemptError,
    new_job_id,
)
from infra.storage import Storage, job_key


class Clock:
    """A hand-driven clock, so lease expiry is tested without sleeping."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def jobs(storage: Storage, clock: Clock) -> JobStore:
    return JobStore(storage, clock=clock)


def test_create_and_get(jobs: JobStore) -> None:
    record, created = jobs.create("music", {"prompt": "x"})
    assert created and record.status is JobStatus.QUEUED and record.attempt == 0
    assert jobs.get(record.id) == record
    assert record.id in jobs.active_ids()
    with pytest.raises(JobNotFoundError):
        jobs.get(new_job_id())


def test_idempotency_key_returns_the_same_job(jobs: JobStore) -> None:
    first, created = jobs.create("music", {"prompt": "x"}, idempotency_key="key-1")
    again, created_again = jobs.create("music", {"prompt": "x"}, idempotency_key="key-1")
    assert created and not created_again and again.id == first.id
    with pytest.raises(IdempotencyConflictError):
        jobs.create("music", {"prompt": "different"}, idempotency_key="key-1")
    other, _ = jobs.create("music", {"prompt": "x"}, idempotency_key="key-2")
    assert other.id != first.id


def test_claim_lease_and_fence(jobs: JobStore, clock: Clock) -> None:
    record, _ = jobs.create("music", {})
    first = jobs.claim(record.id, "runner-a", lease_s=10)
    assert first is not None and first.attempt == 1 and first.status is JobStatus.RUNNING
    assert jobs.claim(record.id, "runner-b", lease_s=10) is None  # lease still held
    clock.now += 5
    jobs.renew(record.id, first.attempt, lease_s=10)  # heartbeat pushes expiry to +15
    clock.now += 9
    assert jobs.claim(record.id, "runner-b", lease_s=10) is None
    clock.now += 7  # runner-a stopped heartbeating: the lease expired
    second = jobs.claim(record.id, "runner-b", lease_s=10)
    assert second is not None and second.attempt == 2 and second.lease_owner == "runner-b"
    # The superseded runner wakes up: every write it tries is rejected by the fence.
    with pytest.raises(StaleAttemptError):
        jobs.renew(record.id, first.attempt, lease_s=10)
    with pytest.raises(StaleAttemptError):
        jobs.finish(record.id, first.attempt, JobStatus.SUCCEEDED, result={"stale": True})
    done = jobs.finish(record.id, second.attempt, JobStatus.SUCCEEDED, result={"ok": True})
    assert done.status is JobStatus.SUCCEEDED and done.result == {"ok": True} and done.progress == 1.0
    assert record.id not in jobs.active_ids()


def test_a_claim_that_cannot_take_the_job_writes_nothing(jobs: JobStore, storage: Storage) -> None:
    record, _ = jobs.create("music", {})
    first, taken = jobs.try_claim(record.id, "runner-a", lease_s=10)
    assert taken and first.attempt == 1
    etag = storage.get(job_key(record.id)).etag
    held, taken = jobs.try_claim(record.id, "runner-b", lease_s=10)
    assert not taken and held.lease_owner == "runner-a" and held.attempt == 1
    assert storage.get(job_key(record.id)).etag == etag
    jobs.finish(record.id, 1, JobStatus.SUCCEEDED, result={})
    etag = storage.get(job_key(record.id)).etag
    finished, taken = jobs.try_claim(record.id, "runner-b", lease_s=10)
    assert not taken and finished.status is JobStatus.SUCCEEDED
    assert storage.get(job_key(record.id)).etag == etag  # read only: no write for a claim that fails


def test_concurrent_updates_do_not_lose_writes(jobs: JobStore) -> None:
    from concurrent.futures import ThreadPoolExecutor

    record, _ = jobs.create("music", {})

    def bump(_: int) -> None:
        jobs.update(record.id, lambda r: setattr(r, "progress", r.progress + 0.01))

    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(bump, range(20)))
    assert jobs.get(record.id).progress == pytest.approx(0.2)


def test_cancel(jobs: JobStore) -> None:
    queued, _ = jobs.create("music", {})
    cancelled = jobs.request_cancel(queued.id)
    assert cancelled.status is JobStatus.CANCELLED and queued.id not in jobs.active_ids()
    with pytest.raises(JobFinishedError):
        jobs.request_cancel(queued.id)
    running, _ = jobs.create("music", {})
    claimed = jobs.claim(running.id, "runner", lease_s=10)
    assert claimed is not None
    flagged = jobs.request_cancel(running.id)
    assert flagged.status is JobStatus.RUNNING and flagged.cancel_requested


def test_failed_job_keeps_its_error(jobs: JobStore) -> None:
    record, _ = jobs.create("music", {})
    claimed = jobs.claim(record.id, "runner", lease_s=10)
    assert claimed is not None
    error = JobError(code="invalid_input", message="bad", stage="generate", attempt=1)
    failed = jobs.finish(record.id, claimed.attempt, JobStatus.FAILED, error=error)
    assert jobs.get(record.id).error == error and failed.status is JobStatus.FAILED


def test_list_is_newest_first_and_filters(jobs: JobStore, clock: Clock) -> None:
    ids: list[str] = []
    for _ in range(3):
        clock.now += 1
        ids.append(jobs.create("music", {"n": len(ids)})[0].id)
    cancelled = jobs.request_cancel(ids[1])
    listed = [r.id for r in jobs.list_records(limit=3)]
    assert listed == ids[::-1]
    assert [r.id for r in jobs.list_records(limit=2, after=ids[2])] == [ids[1], ids[0]]
    assert cancelled.id in [r.id for r in jobs.list_records(status=JobStatus.CANCELLED)]
    assert ids[1] not in [r.id for r in jobs.list_records(status=JobStatus.QUEUED, limit=200)]
