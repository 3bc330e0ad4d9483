"""Durable job records in S3: create-only, compare-and-swap updates, fenced leases.

`jobs/{id}/job.json` is the single source of truth. Every update reads the record, checks the fence
(the attempt number the writer claimed), and writes back with `If-Match` on the ETag it read, so two
writers can never both win and a runner whose lease was taken over can never write again.

Status listing reads index markers rather than records: `index/status/{status}/{id}` (and, for a job
made by a tenant, `index/owner/{digest}/{status}/{id}`). A status change writes the new marker before
the record and deletes the old one after it, so a record is never missing from its status's index; a
marker left over by a crash or a lost race is skipped (the record is read and checked) and deleted once
the record has finished in another status.
"""

from __future__ import annotations

import contextlib
import hashlib
import heapq
import json
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from pydantic import ValidationError

from infra import metrics
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
from infra.storage import (
    ObjectNotFoundError,
    PreconditionFailedError,
    Storage,
    active_job_key,
    check_id,
    job_key,
    retrying,
)
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
T = TypeVar("T")

logger = logging.getLogger(__name__)

_CAS_TRIES = 50
_STALE_MARKER_S = 600.0  # a marker whose record never appeared (a creation that died half-way)


def _status_keys(record: JobRecord, status: JobStatus) -> list[str]:
    """The index markers that list `record` under `status`: the global one, and its owner's."""
    keys = [f"{_status_prefix(status)}{record.id}"]
    if record.owner is not None:
        keys.append(f"{_status_prefix(status, record.owner)}{record.id}")
    return keys


def _status_prefix(status: JobStatus, owner: str | None = None) -> str:
    if owner is None:
        return f"index/status/{status.value}/"
    return f"index/owner/{hashlib.sha256(owner.encode()).hexdigest()[:32]}/{status.value}/"


def _idempotency_marker(kind: str, key: str, owner: str | None) -> str:
    scope = f"{kind}:{key}" if owner is None else f"{owner}:{kind}:{key}"
    return f"index/idempotency/{hashlib.sha256(scope.encode()).hexdigest()}"


def _encode(record: JobRecord) -> bytes:
    return record.model_dump_json(indent=1).encode()


class JobStore:
    """Job records on one `Storage`. Methods are blocking (boto3); call them off the event loop."""

    def __init__(self, storage: Storage, clock: Callable[[], float] = time.time) -> None:
        self.storage = storage
        self.clock = clock

    def _s3(self, call: Callable[[], T]) -> T:
        """Every record read and write rides out a store outage of up to `s3_outage_tolerance_s`."""
        return retrying(call, self.storage.settings.s3_outage_tolerance_s)

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
        # The active marker first: every record that exists is then reachable by the runners' sweep,
        # whatever happens between the two writes (a marker without a record is skipped by the sweep).
        self._s3(lambda: self.storage.put_bytes(active_job_key(job_id), job_id.encode(), "text/plain"))
        self._mark(_status_keys(record, JobStatus.QUEUED))
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
        marker = _idempotency_marker(kind, key, owner)
        try:
            self._s3(lambda: self.storage.create(marker, job_id.encode(), "text/plain"))
            return job_id
        except PreconditionFailedError:
            return check_id(self._s3(lambda: self.storage.get_bytes(marker)).decode())

    def find_idempotent(self, kind: str, key: str, owner: str | None = None) -> JobRecord | None:
        """The job an earlier request of `owner` with this idempotency key created, or None (no such
        key yet, or its record was never written)."""
        marker = _idempotency_marker(kind, key, owner)
        try:
            job_id = check_id(self._s3(lambda: self.storage.get_bytes(marker)).decode())
            return self.get(job_id)
        except (ObjectNotFoundError, JobNotFoundError):
            return None

    def get(self, job_id: str) -> JobRecord:
        return self._read(job_id)[0]

    def _read(self, job_id: str) -> tuple[JobRecord, str]:
        try:
            stored = self._s3(lambda: self.storage.get(job_key(job_id)))
        except ObjectNotFoundError:
            raise JobNotFoundError(job_id) from None
        return JobRecord.model_validate_json(stored.body), stored.etag

    def with_facts(self, record: JobRecord) -> JobRecord:
        """`record` with every stage's facts inline, read back from the facts objects of the stages
        whose facts were too large for the record (for reports; the record itself stays small)."""
        stages = []
        for stage in record.stages:
            if stage.facts_key is not None:
                key = stage.facts_key
                with contextlib.suppress(ObjectNotFoundError):  # expired: the report shows none
                    facts = json.loads(self._s3(lambda: self.storage.get_bytes(key)))  # noqa: B023
                    stage = stage.model_copy(update={"facts": facts})
            stages.append(stage)
        return record.model_copy(update={"stages": stages})

    def list_records(
        self,
        status: JobStatus | None = None,
        limit: int = 50,
        after: str | None = None,
        scan_limit: int = 2000,
        owner: str | None = None,
    ) -> list[JobRecord]:
        """Newest first; `after` is the last id of the previous page. With `status` or `owner` (a
        tenant's jobs), the status indexes are paged (about `limit` record reads a page, however old the
        matches are); with neither, the records themselves, at most `scan_limit` of them."""
        if status is not None or owner is not None:
            return self._list_indexed([status] if status else list(JobStatus), limit, after, owner)
        found: list[JobRecord] = []
        start = f"jobs/{check_id(after)}/~" if after else None
        for scanned, prefix in enumerate(self.storage.list_prefixes("jobs/", start_after=start)):
            if scanned >= scan_limit or len(found) >= limit:
                break
            record = self._listable(prefix.split("/")[1])
            if record is not None:
                found.append(record)
        return found

    def _listable(self, job_id: str) -> JobRecord | None:
        """The record, or None if it is gone or cannot be read as one (logged: one bad record never
        fails a listing)."""
        try:
            return self.get(job_id)
        except JobNotFoundError:
            return None
        except ValidationError:
            logger.warning("job %s: its record is not a job record; left out of the listing", job_id)
            return None

    def _list_indexed(
        self, statuses: list[JobStatus], limit: int, after: str | None, owner: str | None
    ) -> list[JobRecord]:
        """Page the index markers of `statuses` (the owner's own when `owner` is given), merged newest
        first (ids sort that way); a job is listed under the one status its record has."""
        streams = [self._markers(status, after, owner) for status in statuses]
        found: list[JobRecord] = []
        for job_id, status, key in heapq.merge(*streams):
            if len(found) >= limit:
                break
            record = self._indexed_record(job_id, status, key)
            if record is not None and (owner is None or record.owner == owner):
                found.append(record)
        return found

    def _markers(
        self, status: JobStatus, after: str | None, owner: str | None
    ) -> Iterator[tuple[str, JobStatus, str]]:
        prefix = _status_prefix(status, owner)
        start = prefix + check_id(after) if after else None
        for key in self.storage.list_keys(prefix, start_after=start):
            yield key.rsplit("/", 1)[1], status, key

    def _indexed_record(self, job_id: str, status: JobStatus, key: str) -> JobRecord | None:
        """The record a `status` marker names, if it has that status; a marker left over by a status
        change is skipped (and deleted once the job has finished, or its record long gone)."""
        record = self._listable(job_id)
        if record is None:
            if self.clock() - job_created_at(job_id) > _STALE_MARKER_S and not self.storage.exists(
                job_key(job_id)
            ):
                self._s3(lambda: self.storage.delete(key))
            return None
        if record.status is status:
            return record
        if record.status.finished:  # a finished job never changes status again
            self._s3(lambda: self.storage.delete(key))
        return None

    def _mark(self, keys: list[str]) -> None:
        for key in keys:
            self._s3(lambda: self.storage.put_bytes(key, key.rsplit("/", 1)[1].encode(), "text/plain"))  # noqa: B023

    def _unmark(self, keys: list[str]) -> None:
        for key in keys:
            self._s3(lambda: self.storage.delete(key))  # noqa: B023

    def active_ids(self) -> list[str]:
        """Ids of jobs not yet finished (queued or running), from the active index, oldest first (ids
        sort newest-first), so that a backlog is worked off in arrival order and no job starves."""
        keys = self._s3(lambda: list(self.storage.list_keys("index/active/")))
        return [key.rsplit("/", 1)[1] for key in reversed(keys)]

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
            self._index_webhooks(record)  # a finish that died before indexing its delivery
        self._s3(lambda: self.storage.delete(active_job_key(job_id)))
        return True

    # Compare-and-swap updates -------------------------------------------------------------------

    def update(
        self, job_id: str, mutate: Callable[[JobRecord], None], *, attempt: int | None = None
    ) -> JobRecord:
        """Apply `mutate` to a fresh copy and write it back with `If-Match`, retrying lost races.

        With `attempt`, the write is fenced: `StaleAttemptError` if the job was claimed since.
        """
        for _ in range(_CAS_TRIES):
            record, etag = self._read(job_id)
            if attempt is not None and record.attempt != attempt:
                raise StaleAttemptError(f"job {job_id}: attempt {attempt} superseded by {record.attempt}")
            before = record.status
            mutate(record)
            record.updated_at = self.clock()
            body = _encode(record)
            if record.status is not before:
                self._mark(_status_keys(record, record.status))  # before the record: never unlisted
            try:
                # A write that timed out but landed makes its retry lose the race: read and try again.
                self._s3(lambda: self.storage.replace(job_key(job_id), body, etag))  # noqa: B023
            except PreconditionFailedError:
                continue
            if record.status is not before:
                self._unmark(_status_keys(record, before))
            self._index_webhooks(record)
            if record.status.finished:
                self._s3(lambda: self.storage.delete(active_job_key(job_id)))
                if not before.finished:
                    metrics.record(metrics.JOBS_FINISHED, kind=record.kind, status=record.status.value)
            return record
        raise RuntimeError(f"job {job_id}: gave up after {_CAS_TRIES} conflicting updates")

    def _index_webhooks(self, record: JobRecord) -> None:
        """Index a job that owes webhook deliveries (before its active marker goes); unindex it once
        none are owed. Jobs without a webhook touch nothing."""
        if record.webhook is None or not record.status.finished:
            return
        key = webhook_index_key(record.id)
        if record.webhook_pending:
            self._s3(lambda: self.storage.put_bytes(key, record.id.encode(), "text/plain"))
        else:
            self._s3(lambda: self.storage.delete(key))

    def webhook_job_ids(self) -> list[str]:
        """Ids of finished jobs that still owe a webhook delivery, oldest first."""
        keys = self._s3(lambda: list(self.storage.list_keys("index/webhooks/")))
        return [key.rsplit("/", 1)[1] for key in reversed(keys)]

    def claim(self, job_id: str, owner: str, lease_s: float) -> JobRecord | None:
        """Take the job if it is queued or its lease expired; the returned `attempt` is the fence."""
        claimed: list[bool] = []

        def take(record: JobRecord) -> None:
            claimed.clear()
            now = self.clock()
            if not record.claimable(now):
                return
            if record.cancel_requested:
                _finish(record, JobStatus.CANCELLED, now)
                return
            record.status = JobStatus.RUNNING
            record.attempt += 1
            record.lease_owner = owner
            record.lease_expires_at = now + lease_s
            record.started_at = record.started_at or now
            claimed.append(True)

        record = self.update(job_id, take)
        if claimed and record.attempt == 1 and record.started_at is not None:
            metrics.record(metrics.QUEUE_WAIT, record.started_at - record.created_at, kind=record.kind)
        return record if claimed else None

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
    ) -> JobRecord:
        """Record the final status (fenced); the job leaves the active index."""

        def close(record: JobRecord) -> None:
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
