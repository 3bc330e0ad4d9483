"""The stage runner: run a job's stages in order, commit each one to S3, skip what is already committed.

A stage is `async (ctx) -> StageResult`. Its objects are written under
`jobs/{id}/stages/{nn}-{name}/`, then a `manifest.json` with the SHA-256 of each object and the stage
fingerprint, then a fenced update of the job record. A resumed job skips every stage whose committed
manifest matches its fingerprint and whose objects still hash to the manifest.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import resource
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from infra.jobs import JobRecord, JobStore, StageRecord
from infra.storage import ObjectNotFoundError, Storage, check_name, stage_prefix

logger = logging.getLogger(__name__)


class JobCancelledError(Exception):
    """The job's cancel flag was seen between stages."""


class StageFailedError(Exception):
    """A stage failed for good; `stage` names it and `code` says why (invalid input or out of retries)."""

    def __init__(self, stage: str, code: str, message: str) -> None:
        super().__init__(f"stage {stage!r} failed: {message}")
        self.stage = stage
        self.code = code
        self.message = message


@dataclass(frozen=True)
class StageResult:
    """What a stage produced: named objects to commit and small JSON-able facts."""

    objects: Mapping[str, bytes] = field(default_factory=dict)
    facts: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class StageContext:
    """What a stage sees: the request, the deployment handles, and earlier stages' committed output."""

    job: JobRecord
    handles: Mapping[str, Any]
    storage: Storage
    outputs: dict[str, StageResult] = field(default_factory=dict)

    @property
    def request(self) -> dict[str, Any]:
        return self.job.request

    def object(self, stage: str, name: str) -> bytes:
        return self.outputs[stage].objects[name]

    def facts(self, stage: str) -> Mapping[str, Any]:
        return self.outputs[stage].facts


StageFn = Callable[[StageContext], Awaitable[StageResult]]


@dataclass(frozen=True)
class Stage:
    name: str
    run: StageFn


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff for transient failures: `tries` attempts, waits `base_s * 2**n`."""

    tries: int = 3
    base_s: float = 0.5
    is_transient: Callable[[BaseException], bool] = lambda e: isinstance(e, (TimeoutError, ConnectionError))


def fingerprint(stage: str, request_hash: str, previous: Sequence[StageRecord]) -> str:
    """Hash of the stage name, the job's request and every earlier stage's object digests."""
    parts = [stage, request_hash, *(json.dumps(r.objects, sort_keys=True) for r in previous)]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def peak_rss_bytes() -> int:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


class StageRunner:
    """Runs one attempt of one job. Every job-record write is fenced by `attempt`."""

    def __init__(
        self,
        jobs: JobStore,
        job: JobRecord,
        handles: Mapping[str, Any],
        retry: RetryPolicy | None = None,
    ) -> None:
        self.jobs = jobs
        self.job = job
        self.attempt = job.attempt
        self.ctx = StageContext(job=job, handles=handles, storage=jobs.storage)
        self.retry = retry or RetryPolicy()

    async def run(self, stages: Sequence[Stage]) -> StageContext:
        """Run (or restore) every stage in order; raise `JobCancelledError` / `StageFailedError`."""
        for index, stage in enumerate(stages):
            await self._check_cancel()
            committed = sorted(self.job.stages, key=lambda r: r.index)[:index]
            expected = fingerprint(stage.name, self.job.request_hash, committed)
            restored = await asyncio.to_thread(self._restore, index, stage.name, expected)
            if restored is None:
                await self._set_stage(stage.name, index / len(stages))
                restored = await self._run_and_commit(index, stage, expected, len(stages))
            self.ctx.outputs[stage.name] = restored
        return self.ctx

    async def _check_cancel(self) -> None:
        record = await asyncio.to_thread(self.jobs.get, self.job.id)
        if record.cancel_requested:
            raise JobCancelledError(self.job.id)

    async def _set_stage(self, name: str, progress: float) -> None:
        def mark(record: JobRecord) -> None:
            record.stage = name
            record.progress = max(record.progress, progress)

        self.job = await asyncio.to_thread(self.jobs.update, self.job.id, mark, attempt=self.attempt)

    def _restore(self, index: int, name: str, expected: str) -> StageResult | None:
        """The committed output of stage `index` if its fingerprint matches and its objects verify."""
        record = next((r for r in self.job.stages if r.index == index), None)
        if record is None or record.name != name or record.fingerprint != expected:
            return None
        try:
            objects = {n: self.jobs.storage.get_bytes(record.prefix + n) for n in record.objects}
        except ObjectNotFoundError:
            return None
        if any(sha256(body) != record.objects[n] for n, body in objects.items()):
            logger.warning("checkpoint digest mismatch", extra={"job_id": self.job.id, "stage": name})
            return None
        logger.info("stage restored from checkpoint", extra={"job_id": self.job.id, "stage": name})
        return StageResult(objects=objects, facts=record.facts)

    async def _run_and_commit(self, index: int, stage: Stage, expected: str, total: int) -> StageResult:
        started = time.monotonic()
        result, retries = await self._run_with_retries(stage)
        record = StageRecord(
            index=index,
            name=stage.name,
            prefix=stage_prefix(self.job.id, index, stage.name),
            manifest_key=stage_prefix(self.job.id, index, stage.name) + "manifest.json",
            fingerprint=expected,
            objects={check_name(n): sha256(body) for n, body in result.objects.items()},
            facts=dict(result.facts),
            duration_s=time.monotonic() - started,
            peak_memory_bytes=peak_rss_bytes(),
            retries=retries,
            attempt=self.attempt,
        )
        await asyncio.to_thread(self._commit, record, result, (index + 1) / total)
        return result

    async def _run_with_retries(self, stage: Stage) -> tuple[StageResult, int]:
        for retry in range(self.retry.tries):
            try:
                return await stage.run(self.ctx), retry
            except Exception as e:
                if not self.retry.is_transient(e):
                    raise StageFailedError(stage.name, _error_code(e), str(e)) from e
                if retry + 1 == self.retry.tries:
                    raise StageFailedError(stage.name, "retries_exhausted", f"{type(e).__name__}: {e}") from e
                logger.warning(
                    "transient stage failure, retrying",
                    extra={"job_id": self.job.id, "stage": stage.name, "error": repr(e)},
                )
                await asyncio.sleep(self.retry.base_s * 2**retry)
        raise AssertionError("unreachable: the loop returns or raises")

    def _commit(self, record: StageRecord, result: StageResult, progress: float) -> None:
        """Objects first, then the manifest, then the (fenced) job record."""
        for name, body in result.objects.items():
            self.jobs.storage.put_bytes(record.prefix + name, body)
        self.jobs.storage.put_bytes(record.manifest_key, record.model_dump_json(indent=1).encode())

        def add(job: JobRecord) -> None:
            job.stages = [s for s in job.stages if s.index != record.index] + [record]
            job.progress = max(job.progress, progress)

        self.job = self.jobs.update(self.job.id, add, attempt=self.attempt)
        self.ctx.job = self.job


def _error_code(e: BaseException) -> str:
    code = getattr(e, "code", None)
    return code if isinstance(code, str) else "invalid_input" if isinstance(e, ValueError) else "stage_error"


def job_result(ctx: StageContext) -> dict[str, Any]:
    """The job's published result: the last stage's `result` fact."""
    last = list(ctx.outputs.values())[-1]
    return dict(last.facts["result"])
