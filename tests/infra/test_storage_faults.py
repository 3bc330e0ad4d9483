"""infra/storage.py and infra/jobs.py under faults: error classification, bounded retries, part sizes,
index order and markers. Real S3 over HTTP (the embedded server) except where an endpoint must be dead:
then a closed local port stands in for an unreachable store (nothing listens on it)."""

from __future__ import annotations

import time
import uuid

import pytest

from infra.embedded_s3 import free_port
from infra.jobs import JobNotFoundError, JobStore, new_job_id
from infra.settings import Settings
from infra.storage import (
    MAX_PARTS,
    ObjectNotFoundError,
    Storage,
    StorageError,
    TransientStorageError,
    active_job_key,
    job_key,
    part_size_for,
    retrying,
)


@pytest.fixture
def storage(storage: Storage) -> Storage:
    """A bucket of this module's own: the jobs created here must not reach the session stack's runners."""
    own = Storage(storage.settings.model_copy(update={"s3_bucket": f"faults-{uuid.uuid4().hex[:12]}"}))
    own.ensure_bucket()
    return own


def dead_store(settings: Settings, tolerance_s: float = 0.0) -> Storage:
    """A `Storage` whose endpoint refuses connections."""
    return Storage(
        settings.model_copy(
            update={
                "s3_endpoint_url": f"http://127.0.0.1:{free_port()}",
                "s3_outage_tolerance_s": tolerance_s,
                "s3_connect_timeout_s": 0.5,
            }
        )
    )


def test_an_unreachable_store_is_a_transient_error(settings: Settings) -> None:
    """botocore's connection errors are not Python's ConnectionError: they must still count as
    transient (before, a brief outage failed the job as a permanent error)."""
    store = dead_store(settings)
    for call in (lambda: store.get_bytes("a"), lambda: store.put_bytes("a", b"x"), store.ping):
        with pytest.raises(TransientStorageError):
            call()
    with pytest.raises(TransientStorageError):
        store.upload_stream("big", iter([b"x" * 10]))


def test_not_found_and_refusals_are_not_transient(storage: Storage) -> None:
    with pytest.raises(ObjectNotFoundError) as raised:
        storage.get_bytes("test-faults/missing")
    assert not isinstance(raised.value, TransientStorageError)


def test_retrying_rides_out_a_short_outage_and_gives_up_after_the_tolerance() -> None:
    failures = iter([TransientStorageError("down"), TransientStorageError("down")])

    def flaky() -> str:
        error = next(failures, None)
        if error is not None:
            raise error
        return "ok"

    assert retrying(flaky, tolerance_s=30) == "ok"
    started = time.monotonic()
    with pytest.raises(TransientStorageError):
        retrying(lambda: (_ for _ in ()).throw(TransientStorageError("down")), tolerance_s=1.0)
    assert time.monotonic() - started < 15
    with pytest.raises(StorageError):  # a refusal is raised at once, not retried
        retrying(lambda: (_ for _ in ()).throw(StorageError("403")), tolerance_s=60)


def test_job_store_reads_retry_through_an_outage(settings: Settings) -> None:
    """With a tolerance, a record read keeps trying (bounded) instead of failing on the first refusal."""
    store = JobStore(dead_store(settings, tolerance_s=1.5))
    started = time.monotonic()
    with pytest.raises(TransientStorageError):
        store.get(new_job_id())
    assert time.monotonic() - started >= 1.0


@pytest.mark.parametrize("expected", [None, 10 * 1024**2, 80 * 1024**3, 110 * 1000**3, 2 * 1024**4])
def test_part_size_keeps_any_output_within_10000_parts(expected: int | None) -> None:
    minimum = 8 * 1024 * 1024
    size = part_size_for(expected, minimum)
    assert size >= minimum and size % (1024 * 1024) == 0
    if expected:
        assert expected / size < MAX_PARTS * 0.85  # room for an estimate that was a little low


def test_job_records_always_have_their_active_marker(storage: Storage) -> None:
    """The marker is written first: a job whose record exists is always reachable by the sweep."""
    writes: list[str] = []
    original = storage.put_bytes, storage.create

    class Recording(Storage):
        def put_bytes(self, key: str, body: bytes, content_type: str = "application/octet-stream") -> str:
            writes.append(key)
            return original[0](key, body, content_type)

        def create(self, key: str, body: bytes, content_type: str = "application/json") -> str:
            writes.append(key)
            return original[1](key, body, content_type)

    recording = Recording(storage.settings)
    record, created = JobStore(recording).create("music", {"prompt": "x"})
    assert created
    assert writes.index(active_job_key(record.id)) < writes.index(job_key(record.id))


def test_active_ids_are_oldest_first(storage: Storage) -> None:
    jobs = JobStore(storage)
    made = [jobs.create("music", {"n": n})[0].id for n in range(3)]
    active = [job_id for job_id in jobs.active_ids() if job_id in made]
    assert active == made  # created in this order, so served in this order (ids sort newest-first)


def test_a_marker_without_its_record_is_dropped_once_stale(storage: Storage) -> None:
    now = [time.time()]
    jobs = JobStore(storage, clock=lambda: now[0])
    orphan = new_job_id(now[0])
    storage.put_bytes(active_job_key(orphan), orphan.encode())
    with pytest.raises(JobNotFoundError):
        jobs.get(orphan)
    assert not jobs.drop_stale_marker(orphan, older_than_s=60)  # may still be being created
    now[0] += 61
    assert jobs.drop_stale_marker(orphan, older_than_s=60)
    assert orphan not in jobs.active_ids()
