"""Durable job records in S3: create-only, compare-and-swap updates, fenced leases.

`jobs/{id}/job.json` is the single source of truth. Every update reads the record, checks the fence
(the attempt number the writer claimed), and writes back with `If-Match` on the ETag it read, so two
writers can never both win and a runner whose lease was taken over can never write again. Reads,
listings and the status index markers are `infra/job_listing.py`'s.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from infra import metrics
from infra.job_listing import JobListing, idempotency_marker, status_keys
from infra.job_records import (
    IdempotencyConflictError,
    JobError,
    JobFinishedError,
    JobNotFoundError,
    JobRecord,
    JobStatus,
    SegmentProgress,
    StageRecord,
    StaleAttemptError,
    job_created_at,
    new_job_id,
    request_hash,
)
from infra.storage import ObjectNotFoundError, PreconditionFailedError, active_job_key, check_id, job_key
from infra.webhooks import (
    WebhookSpec,
    queue_delivery,
    webhook_index_key,
)

__all__ = [
    "IdempotencyConflictError",
    "JobError",
    "JobFinishedError",
    "JobNotFoundError",
    "JobRecord",
    "JobStatus",
    "JobStore",
    "SegmentProgress",
    "StageRecord",
    "StaleAttemptError",
    "job_created_at",
    "new_job_id",
    "request_hash",
]

logger = logging.getLogger(__name__)

_CAS_TRIES = 50


def _encode(record: JobRecord) -> bytes:
    return record.model_dump_json(indent=1).encode()


class JobStore(JobListing):
    """Job records on one `Storage`. Methods are blocking (boto3); call them off the event loop."""

    # Creation and reads -------------------------------------------------------------------------

    def create(
        self,
        kind: str,
        request: dict[str, Any],
        idempotency_key: str | None = None,
        owner: str | None = None,
        job_id: str | None = None,
        webhook: WebhookSpec | None = None,
    ) -> tuple[JobRecord, bool]:
        """Create a queued job; with `idempotency_key`, return the existing job instead (created=False).
        `job_id`: the id to use (one from `new_job_id`, reserved beforehand, e.g. by a quota).
        `webhook`: where its terminal status is delivered."""
        digest = request_hash(kind, request)
        job_id = check_id(job_id) if job_id is not None else new_job_id(self.clock())
        if idempotency_key is not None:
            job_id = self._claim_idempotency_key(kind, idempotency_key, job_id, owner)
        now = self.clock()
        record = JobRecord(
            id=job_id,
            kind=kind,
            request=request,
            request_hash=digest,
            owner=owner,
            webhook=webhook,
            created_at=now,
            updated_at=now,
        )
        # The markers first (at once): every record that exists is then reachable by the runners' sweep
        # and listed, whatever happens before the record is written (a marker without a record is
        # skipped by the sweep and by listings).
        active = lambda: self.storage.put_bytes(active_job_key(job_id), job_id.encode(), "text/plain")  # noqa: E731
        self._all([active, *self._mark_calls(status_keys(record, JobStatus.QUEUED))])
        try:
            self._s3(lambda: self.storage.create(job_key(job_id), _encode(record)))
        except PreconditionFailedError:
            existing = self.get(job_id)
            if existing.request_hash != digest:
                raise IdempotencyConflictError(
                    f"Idempotency-Key already used for job {job_id} with a different request"
                ) from None
            if existing.status.finished:  # the marker written above must not outlive the job
                self._s3(lambda: self.storage.delete(active_job_key(job_id)))
            return existing, False
        logger.info("job created", extra={"job_id": job_id, "kind": kind})
        metrics.record(metrics.JOBS_SUBMITTED, kind=kind)
        return record, True

    def _claim_idempotency_key(self, kind: str, key: str, job_id: str, owner: str | None = None) -> str:
        """Map the key to a job id once (create-only); a crash between this and the record is harmless.
        Keys are scoped by `owner`: two tenants' equal keys are two jobs."""
        marker = idempotency_marker(kind, key, owner)
        try:
            self._s3(lambda: self.storage.create(marker, job_id.encode(), "text/plain"))
            return job_id
        except PreconditionFailedError:
            return check_id(self._s3(lambda: self.storage.get_bytes(marker)).decode())

    def find_idempotent(self, kind: str, key: str, owner: str | None = None) -> JobRecord | None:
        """The job an earlier request of `owner` with this idempotency key created, or None (no such
        key yet, or its record was never written)."""
        marker = idempotency_marker(kind, key, owner)
        try:
            job_id = check_id(self._s3(lambda: self.storage.get_bytes(marker)).decode())
            return self.get(job_id)
        except (ObjectNotFoundError, JobNotFoundError):
            return None

    def drop_stale_marker(self, job_id: str, older_than_s: float) -> bool:
        """Delete the active marker of `job_id` if its record is missing and the id is older than
        `older_than_s` (a creation that died between marker and record), or if the job has finished."""
        try:
            record = self.get(job_id)
        except JobNotFoundError:
            if self.clock() - job_created_at(job_id) < older_than_s:
                return False
        else:
            if not record.status.finished:
                return False
            webhooks = self._webhook_index_call(record)
            if webhooks is not None:  # a finish that died before indexing its delivery
                self._s3(webhooks)
        self._s3(lambda: self.storage.delete(active_job_key(job_id)))
        return True

    # Compare-and-swap updates -------------------------------------------------------------------

    def update(
        self, job_id: str, mutate: Callable[[JobRecord], bool | None], *, attempt: int | None = None
    ) -> JobRecord:
        """Apply `mutate` to a fresh copy and write it back with `If-Match`, retrying lost races. A
        `mutate` that returns False changed nothing: the record as read is returned, nothing written.

        With `attempt`, the write is fenced: `StaleAttemptError` if the job was claimed since.
        """
        for _ in range(_CAS_TRIES):
            record, etag = self._read(job_id)
            if attempt is not None and record.attempt != attempt:
                raise StaleAttemptError(f"job {job_id}: attempt {attempt} superseded by {record.attempt}")
            before = record.status
            if mutate(record) is False:
                return record
            record.updated_at = self.clock()
            body = _encode(record)
            if record.status is not before:  # before the record: never unlisted
                self._all(self._mark_calls(status_keys(record, record.status)))
            try:
                # A write that timed out but landed makes its retry lose the race: read and try again.
                self._s3(lambda: self.storage.replace(job_key(job_id), body, etag))  # noqa: B023
            except PreconditionFailedError:
                continue
            self._after_write(record, before)
            return record
        raise RuntimeError(f"job {job_id}: gave up after {_CAS_TRIES} conflicting updates")

    def _after_write(self, record: JobRecord, before: JobStatus) -> None:
        """Index upkeep once the record is written, at once where order does not matter: the old
        status's markers go; a finished job's webhook index is written before its active marker goes."""
        tidy = self._unmark_calls(status_keys(record, before)) if record.status is not before else []
        webhooks = self._webhook_index_call(record)
        if webhooks is not None:
            self._all([*tidy, webhooks])
            tidy = []
        if record.status.finished:
            job_id = record.id
            tidy.append(lambda: self.storage.delete(active_job_key(job_id)))
            if not before.finished:
                metrics.record(metrics.JOBS_FINISHED, kind=record.kind, status=record.status.value)
        self._all(tidy)

    def _webhook_index_call(self, record: JobRecord) -> Callable[[], object] | None:
        """The write that indexes a finished job owing webhook deliveries (or unindexes one that owes
        none any more); None for jobs without a webhook."""
        if record.webhook is None or not record.status.finished:
            return None
        key, body = webhook_index_key(record.id), record.id.encode()
        if record.webhook_pending:
            return lambda: self.storage.put_bytes(key, body, "text/plain")
        return lambda: self.storage.delete(key)

    def claim(self, job_id: str, owner: str, lease_s: float) -> JobRecord | None:
        """Take the job if it is queued or its lease expired; the returned `attempt` is the fence."""
        record, claimed = self.try_claim(job_id, owner, lease_s)
        return record if claimed else None

    def try_claim(self, job_id: str, owner: str, lease_s: float) -> tuple[JobRecord, bool]:
        """`claim` in one read (and one write when claimable): the record, and whether it was taken.
        Not taken: the record as read (leased elsewhere, or finished) or as cancelled by this claim."""
        claimed: list[bool] = []

        def take(record: JobRecord) -> bool:
            claimed.clear()
            now = self.clock()
            if not record.claimable(now):
                return False
            if record.cancel_requested:
                _finish(record, JobStatus.CANCELLED, now)
                return True
            record.status = JobStatus.RUNNING
            record.attempt += 1
            record.lease_owner = owner
            record.lease_expires_at = now + lease_s
            record.started_at = record.started_at or now
            claimed.append(True)
            return True

        record = self.update(job_id, take)
        if claimed and record.attempt == 1 and record.started_at is not None:
            metrics.record(metrics.QUEUE_WAIT, record.started_at - record.created_at, kind=record.kind)
        return record, bool(claimed)

    def renew(self, job_id: str, attempt: int, lease_s: float) -> JobRecord:
        """Extend the lease (heartbeat); `StaleAttemptError` if the job was taken over."""

        def extend(record: JobRecord) -> None:
            record.lease_expires_at = self.clock() + lease_s

        return self.update(job_id, extend, attempt=attempt)

    def finish(
        self,
        job_id: str,
        attempt: int,
        status: JobStatus,
        *,
        result: dict[str, Any] | None = None,
        error: JobError | None = None,
        stages: Sequence[StageRecord] = (),
    ) -> JobRecord:
        """Record the final status (fenced); the job leaves the active index. `stages`: committed stage
        records (objects and manifest written) that join the record in this same write."""
        indexes = {stage.index for stage in stages}

        def close(record: JobRecord) -> None:
            if stages:
                record.stages = [s for s in record.stages if s.index not in indexes] + list(stages)
                record.segments = None
            _finish(record, status, self.clock())
            record.result = result
            record.error = error
            if status is JobStatus.SUCCEEDED:
                record.progress = 1.0

        return self.update(job_id, close, attempt=attempt)

    def request_cancel(self, job_id: str) -> JobRecord:
        """Cancel a queued job at once; flag a running one (its runner stops between stages)."""

        def cancel(record: JobRecord) -> None:
            if record.status.finished:
                raise JobFinishedError(f"job {job_id} already {record.status.value}")
            record.cancel_requested = True
            if record.status is JobStatus.QUEUED:
                _finish(record, JobStatus.CANCELLED, self.clock())

        return self.update(job_id, cancel)


def _finish(record: JobRecord, status: JobStatus, now: float) -> None:
    record.status = status
    record.finished_at = now
    record.lease_owner = None
    record.lease_expires_at = None
    delivery = queue_delivery(record.webhook, status.value, now)  # owed in the same write as the status
    if delivery is not None:
        record.webhook_pending.append(delivery)
