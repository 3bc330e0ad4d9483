"""Retention: what the store keeps, for how long, and the sweep that deletes the rest.

Nothing in the store lives forever. Per kind of object (settings `retention_*_s`):
- uploads (`uploads/{id}/`): deleted a while after they were made, unless a job that is not finished
  names them (its request's `upload_id`);
- stage checkpoints (`jobs/{id}/a{n}/`): deleted once the job has been finished for a while (they only
  serve resumes); the record itself stays, so the job and its report can still be read;
- outputs (`outputs/{id}/`): deleted after their retention (per job kind: `retention_outputs_by_kind_s`),
  and the record says so (`outputs_expired_at`), so the API stops handing out URLs to nothing;
- idempotency markers (`index/idempotency/`): deleted after their retention, so a key can be reused;
- multipart uploads that never completed: aborted after a day.
A running job's objects are never touched. Where the store supports S3 lifecycle rules,
`apply_lifecycle_rules` also installs them for what a rule can express (incomplete multipart uploads);
the sweep does everything either way, so correctness does not depend on the store.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from infra.jobs import JobNotFoundError, JobRecord, JobStore
from infra.storage import Storage

logger = logging.getLogger(__name__)
DAY_S = 86400.0


@dataclass
class SweepReport:
    """What one sweep deleted, by kind (object counts)."""

    uploads: int = 0
    checkpoints: int = 0
    outputs: int = 0
    idempotency_keys: int = 0
    multipart_aborted: int = 0
    kept_in_use: list[str] = field(default_factory=list)


def sweep_expired(jobs: JobStore, now: float | None = None) -> SweepReport:
    """Delete what has outlived its retention (see the module docstring); idempotent, safe to run from
    several replicas at once."""
    now = jobs.clock() if now is None else now
    settings, storage, report = jobs.storage.settings, jobs.storage, SweepReport()
    active = [record for record in _records(jobs, jobs.active_ids()) if not record.status.finished]
    in_use = {str(r.request.get("upload_id")) for r in active if r.request.get("upload_id")}
    for prefix in storage.list_prefixes("uploads/"):
        upload_id = prefix.split("/")[1]
        if upload_id in in_use:
            report.kept_in_use.append(upload_id)
        elif _older_than(storage, prefix + "upload.json", now, settings.retention_uploads_s):
            report.uploads += _delete_all(storage, prefix)
    for prefix in storage.list_prefixes("jobs/"):
        _expire_job(jobs, prefix.split("/")[1], now, report)
    for key in storage.list_keys("index/idempotency/"):
        if _older_than(storage, key, now, settings.retention_idempotency_s):
            storage.delete(key)
            report.idempotency_keys += 1
    report.multipart_aborted = _abort_stale_multipart(storage, now)
    logger.info("retention sweep", extra={"report": report.__dict__})
    return report


def _expire_job(jobs: JobStore, job_id: str, now: float, report: SweepReport) -> None:
    try:
        record = jobs.get(job_id)
    except JobNotFoundError:
        return
    if not record.status.finished or record.finished_at is None:
        return
    settings, storage = jobs.storage.settings, jobs.storage
    age = now - record.finished_at
    if age > settings.retention_checkpoints_s:
        for prefix in storage.list_prefixes(f"jobs/{job_id}/"):
            report.checkpoints += _delete_all(storage, prefix)
    outputs_s = settings.retention_outputs_by_kind_s.get(record.kind, settings.retention_outputs_s)
    if age > outputs_s and record.outputs_expired_at is None:
        report.outputs += _delete_all(storage, f"outputs/{job_id}/")

        def expired(r: JobRecord) -> None:
            r.outputs_expired_at = now

        jobs.update(job_id, expired)


def _records(jobs: JobStore, ids: list[str]) -> list[JobRecord]:
    found = []
    for job_id in ids:
        try:
            found.append(jobs.get(job_id))
        except JobNotFoundError:
            continue
    return found


def _older_than(storage: Storage, key: str, now: float, retention_s: float) -> bool:
    modified = storage.last_modified(key)
    return modified is not None and now - modified > retention_s


def _delete_all(storage: Storage, prefix: str) -> int:
    keys = list(storage.list_keys(prefix))
    for key in keys:
        storage.delete(key)
    return len(keys)


def _abort_stale_multipart(storage: Storage, now: float) -> int:
    """Abort multipart uploads started over a day ago and never completed (a writer that died)."""
    aborted = 0
    try:
        uploads = storage.client.list_multipart_uploads(Bucket=storage.bucket).get("Uploads", [])
    except Exception:  # a store without the listing call: its own expiry (or the lifecycle rule) applies
        logger.info("the store does not list multipart uploads; stale ones are left to its lifecycle")
        return 0
    for upload in uploads:
        started = upload["Initiated"]
        started_s = started.timestamp() if isinstance(started, datetime) else float(started)
        if now - started_s > DAY_S:
            storage.client.abort_multipart_upload(
                Bucket=storage.bucket, Key=upload["Key"], UploadId=upload["UploadId"]
            )
            aborted += 1
    return aborted


def apply_lifecycle_rules(storage: Storage) -> bool:
    """Install the lifecycle rule a store can enforce itself (abort incomplete multipart uploads after a
    day); False when the store does not support lifecycle configuration (the sweep still applies)."""
    rules: Any = {
        "Rules": [
            {
                "ID": "soundstage-abort-incomplete-multipart",
                "Status": "Enabled",
                "Filter": {"Prefix": ""},
                "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1},
            }
        ]
    }
    try:
        storage.client.put_bucket_lifecycle_configuration(Bucket=storage.bucket, LifecycleConfiguration=rules)
    except Exception as e:  # not every S3-compatible store implements lifecycle rules
        logger.info("no lifecycle rules on this store (%s): the retention sweep applies", type(e).__name__)
        return False
    return True
