"""Reading and listing job records, and the index markers that listings page.

Status listing reads index markers rather than records: `index/status/{status}/{id}` (and, for a job
made by a tenant, `index/owner/{digest}/{status}/{id}`). A status change writes the new marker before
the record and deletes the old one after it, so a record is never missing from its status's index; a
marker left over by a crash or a lost race is skipped (the record is read and checked) and deleted once
the record has finished in another status. The markers of one transition are written concurrently:
they are independent objects, and each is a round trip to the store.
"""

from __future__ import annotations

import contextlib
import hashlib
import heapq
import json
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from pydantic import ValidationError

from infra.job_records import JobNotFoundError, JobRecord, JobStatus, job_created_at
from infra.storage import ObjectNotFoundError, Storage, check_id, job_key, retrying

T = TypeVar("T")

logger = logging.getLogger(__name__)

_STALE_MARKER_S = 600.0  # a marker whose record never appeared (a creation that died half-way)
# Index writes of one transition go out together; boto3 clients are thread-safe. Threads start lazily.
_INDEX_POOL = ThreadPoolExecutor(8, thread_name_prefix="job-index")


def status_keys(record: JobRecord, status: JobStatus) -> list[str]:
    """The index markers that list `record` under `status`: the global one, and its owner's."""
    keys = [f"{status_prefix(status)}{record.id}"]
    if record.owner is not None:
        keys.append(f"{status_prefix(status, record.owner)}{record.id}")
    return keys


def status_prefix(status: JobStatus, owner: str | None = None) -> str:
    if owner is None:
        return f"index/status/{status.value}/"
    return f"index/owner/{hashlib.sha256(owner.encode()).hexdigest()[:32]}/{status.value}/"


def idempotency_marker(kind: str, key: str, owner: str | None) -> str:
    scope = f"{kind}:{key}" if owner is None else f"{owner}:{kind}:{key}"
    return f"index/idempotency/{hashlib.sha256(scope.encode()).hexdigest()}"


class JobListing:
    """Reads of job records on one `Storage`, and their indexes. Blocking (boto3)."""

    def __init__(self, storage: Storage, clock: Callable[[], float] = time.time) -> None:
        self.storage = storage
        self.clock = clock

    def _s3(self, call: Callable[[], T]) -> T:
        """Every record read and write rides out a store outage of up to `s3_outage_tolerance_s`."""
        return retrying(call, self.storage.settings.s3_outage_tolerance_s)

    def _all(self, calls: Sequence[Callable[[], object]]) -> None:
        """Run independent store calls at once (each with `_s3`'s retries); the first error is raised
        after all of them have ended."""
        if len(calls) <= 1:
            for call in calls:
                self._s3(call)
            return
        futures = [_INDEX_POOL.submit(self._s3, call) for call in calls]
        for future in futures:
            future.exception()
        for future in futures:
            future.result()

    def _mark_calls(self, keys: list[str]) -> list[Callable[[], object]]:
        def put(key: str) -> Callable[[], object]:
            return lambda: self.storage.put_bytes(key, key.rsplit("/", 1)[1].encode(), "text/plain")

        return [put(key) for key in keys]

    def _unmark_calls(self, keys: list[str]) -> list[Callable[[], object]]:
        def delete(key: str) -> Callable[[], object]:
            return lambda: self.storage.delete(key)

        return [delete(key) for key in keys]

    # Reads ---------------------------------------------------------------------------------------

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

    # Listings ------------------------------------------------------------------------------------

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
        prefix = status_prefix(status, owner)
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

    def active_ids(self) -> list[str]:
        """Ids of jobs not yet finished (queued or running), from the active index, oldest first (ids
        sort newest-first), so that a backlog is worked off in arrival order and no job starves."""
        keys = self._s3(lambda: list(self.storage.list_keys("index/active/")))
        return [key.rsplit("/", 1)[1] for key in reversed(keys)]

    def webhook_job_ids(self) -> list[str]:
        """Ids of finished jobs that still owe a webhook delivery, oldest first."""
        keys = self._s3(lambda: list(self.storage.list_keys("index/webhooks/")))
        return [key.rsplit("/", 1)[1] for key in reversed(keys)]
