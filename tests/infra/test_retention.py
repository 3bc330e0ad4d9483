"""infra/retention.py: expired uploads, checkpoints, outputs and idempotency markers are gone after the
sweep; a job that is not finished keeps its upload. Real S3 over HTTP (the embedded server), in a bucket
of this module's own; time moves by the job store's clock (the objects' own timestamps are real)."""

from __future__ import annotations

import time
import uuid

import pytest

from infra.jobs import JobStatus, JobStore
from infra.retention import sweep_expired
from infra.storage import Storage, output_key, stage_prefix, upload_key

DAY = 86400.0


@pytest.fixture
def bucket(storage: Storage) -> Storage:
    own = Storage(storage.settings.model_copy(update={"s3_bucket": f"retention-{uuid.uuid4().hex[:12]}"}))
    own.ensure_bucket()
    return own


def upload(storage: Storage) -> str:
    upload_id = uuid.uuid4().hex
    storage.put_bytes(upload_key(upload_id, "source"), b"RIFF")
    storage.put_bytes(upload_key(upload_id, "upload.json"), b"{}")
    return upload_id


def test_expired_objects_are_deleted_and_a_running_jobs_are_kept(bucket: Storage) -> None:
    now = [time.time()]
    jobs = JobStore(bucket, clock=lambda: now[0])
    idle, in_use = upload(bucket), upload(bucket)
    done, _ = jobs.create("separate", {"upload_id": idle}, idempotency_key="once")
    running, _ = jobs.create("separate", {"upload_id": in_use})
    for record in (done, running):
        assert jobs.claim(record.id, "runner", lease_s=10 * 365 * DAY) is not None
        bucket.put_bytes(stage_prefix(record.id, 0, "separate", 1) + "vocals.wav", b"stem")
        bucket.put_bytes(output_key(record.id, "vocals.wav", 1), b"out")
    result = {"vocals": {"key": output_key(done.id, "vocals.wav", 1), "media_type": "audio/wav"}}
    jobs.finish(done.id, 1, JobStatus.SUCCEEDED, result=result)

    fresh = sweep_expired(jobs)  # nothing is old yet
    assert (fresh.uploads, fresh.checkpoints, fresh.outputs, fresh.idempotency_keys) == (0, 0, 0, 0)

    now[0] += 40 * DAY
    report = sweep_expired(jobs)
    assert report.uploads == 2 and report.checkpoints == 1 and report.outputs == 1
    assert report.idempotency_keys == 1 and report.kept_in_use == [in_use]
    assert not bucket.exists(upload_key(idle, "source"))
    assert bucket.exists(upload_key(in_use, "source"))  # its job is still running
    assert not list(bucket.list_keys(f"jobs/{done.id}/a1/"))
    assert not list(bucket.list_keys(f"outputs/{done.id}/"))
    assert bucket.exists(stage_prefix(running.id, 0, "separate", 1) + "vocals.wav")
    assert bucket.exists(output_key(running.id, "vocals.wav", 1))
    expired = jobs.get(done.id)
    assert expired.outputs_expired_at == now[0] and expired.result == result  # the record stays

    again = sweep_expired(jobs)  # idempotent
    assert (again.uploads, again.checkpoints, again.outputs) == (0, 0, 0)
