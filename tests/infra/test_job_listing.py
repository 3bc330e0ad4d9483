"""`GET /v1/jobs?status=` pages a per-status index (infra/jobs.py): old matches are found, every page
costs about `limit` record reads, and markers left over by a status change are skipped and cleaned.

Before, a status filter read records newest-first one by one, up to 2,000 of them, and silently
returned nothing older. The store is real (the embedded server over HTTP), in a bucket of this test's own.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from infra.jobs import JobStatus, JobStore
from infra.storage import Storage

JOBS = 60


class CountingStorage(Storage):
    """The real store, counting record reads (`get` of a `job.json`)."""

    record_reads = 0

    def get(self, key: str) -> Any:
        if key.endswith("/job.json"):
            self.record_reads += 1
        return super().get(key)


@pytest.fixture
def jobs(storage: Storage) -> JobStore:
    own = CountingStorage(
        storage.settings.model_copy(update={"s3_bucket": f"listing-{uuid.uuid4().hex[:12]}"})
    )
    own.ensure_bucket()
    return JobStore(own)


def finish(jobs: JobStore, job_id: str, status: JobStatus) -> None:
    claimed = jobs.claim(job_id, "test-runner", lease_s=60)
    assert claimed is not None
    jobs.finish(job_id, claimed.attempt, status, result={} if status is JobStatus.SUCCEEDED else None)


def test_status_listing_pages_old_matches_cheaply(jobs: JobStore) -> None:
    ids = [jobs.create("test", {"n": i})[0].id for i in range(JOBS)]  # ids[0] is the oldest
    oldest = ids[:3]
    for job_id in oldest:
        finish(jobs, job_id, JobStatus.SUCCEEDED)
    finish(jobs, ids[-1], JobStatus.FAILED)
    storage = jobs.storage
    assert isinstance(storage, CountingStorage)
    storage.record_reads = 0
    # scan_limit would have hidden everything older than the newest 50 records
    first = jobs.list_records(status=JobStatus.SUCCEEDED, limit=2, scan_limit=50)
    assert [r.id for r in first] == [oldest[2], oldest[1]]
    second = jobs.list_records(status=JobStatus.SUCCEEDED, limit=2, after=first[-1].id, scan_limit=50)
    assert [r.id for r in second] == [oldest[0]]
    assert storage.record_reads <= 4, f"{storage.record_reads} record reads for three matches"
    queued = jobs.list_records(status=JobStatus.QUEUED, limit=200)
    assert [r.id for r in queued] == list(reversed(ids[3:-1]))  # newest first, none finished
    assert [r.id for r in jobs.list_records(status=JobStatus.FAILED)] == [ids[-1]]
    assert jobs.list_records(status=JobStatus.RUNNING) == []


def test_a_tenant_lists_only_its_own_jobs_by_status(jobs: JobStore) -> None:
    mine = [jobs.create("test", {"n": i}, owner="key-a")[0].id for i in range(3)]
    theirs = [jobs.create("test", {"n": i}, owner="key-b")[0].id for i in range(3)]
    finish(jobs, mine[0], JobStatus.CANCELLED)
    finish(jobs, theirs[0], JobStatus.CANCELLED)
    assert [r.id for r in jobs.list_records(status=JobStatus.CANCELLED, owner="key-a")] == [mine[0]]
    assert [r.id for r in jobs.list_records(status=JobStatus.QUEUED, owner="key-b")] == theirs[:0:-1]
    assert {r.id for r in jobs.list_records(status=JobStatus.CANCELLED)} == {mine[0], theirs[0]}


def test_a_tenants_listing_pages_its_own_jobs_across_statuses(jobs: JobStore) -> None:
    """Without a status filter a tenant's listing merges its own status indexes, newest first: its old
    jobs are found behind any number of other tenants' newer ones (before, the newest `scan_limit`
    records were read and everything older was silently left out)."""
    mine = [jobs.create("test", {"n": i}, owner="key-a")[0].id for i in range(3)]
    for i in range(JOBS):
        jobs.create("test", {"n": i}, owner="key-b")
    finish(jobs, mine[0], JobStatus.FAILED)
    claimed = jobs.claim(mine[1], "test-runner", lease_s=60)
    assert claimed is not None  # running
    storage = jobs.storage
    assert isinstance(storage, CountingStorage)
    storage.record_reads = 0
    first = jobs.list_records(owner="key-a", limit=2, scan_limit=50)
    assert [r.id for r in first] == [mine[2], mine[1]]
    assert [r.status for r in first] == [JobStatus.QUEUED, JobStatus.RUNNING]
    second = jobs.list_records(owner="key-a", limit=2, after=first[-1].id, scan_limit=50)
    assert [r.id for r in second] == [mine[0]]
    assert storage.record_reads <= 4, f"{storage.record_reads} record reads for three jobs"
    assert len(jobs.list_records(owner="key-b", limit=100)) == JOBS


def test_a_leftover_marker_is_skipped_and_cleaned(jobs: JobStore) -> None:
    """A status change that died between its new marker and its record (or lost a race) leaves a marker
    for a status the job does not have: never listed, and deleted once the job has finished."""
    record, _ = jobs.create("test", {"n": 1})
    leftover = f"index/status/running/{record.id}"
    jobs.storage.put_bytes(leftover, record.id.encode())
    assert jobs.list_records(status=JobStatus.RUNNING) == []
    jobs.request_cancel(record.id)  # queued: cancelled at once
    assert jobs.list_records(status=JobStatus.RUNNING) == []
    assert list(jobs.storage.list_keys("index/status/running/")) == []
    assert list(jobs.storage.list_keys("index/status/queued/")) == []
    assert [r.id for r in jobs.list_records(status=JobStatus.CANCELLED)] == [record.id]


def test_an_unreadable_record_is_left_out_not_fatal(jobs: JobStore) -> None:
    """A `job.json` that is not a job record (a broken write, a stray object) is skipped by every
    listing; before, the unfiltered listing raised and `GET /v1/jobs` answered 500."""
    good = jobs.create("test", {"n": 1}, owner="key-a")[0].id
    bad = jobs.create("test", {"n": 2}, owner="key-a")[0].id
    record_key = f"jobs/{bad}/job.json"
    jobs.storage.replace(record_key, b"v2", jobs.storage.get(record_key).etag)
    assert [r.id for r in jobs.list_records()] == [good]
    assert [r.id for r in jobs.list_records(owner="key-a")] == [good]
    assert [r.id for r in jobs.list_records(status=JobStatus.QUEUED)] == [good]
