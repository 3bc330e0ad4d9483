"""The stage runner: run a job's stages in order, commit each one to S3, skip what is already committed.

A stage is `async (ctx) -> StageResult`: a typed stage record (`StageOutput`, committed as the stage's
facts) and named objects. Later stages read earlier records by type (`ctx.output(Diarized).target`).
Its objects are written under `jobs/{id}/a{attempt}/stages/{nn}-{name}/`, then a `manifest.json` with the
SHA-256 of each object and the stage fingerprint, then a fenced update of the job record. Facts larger
than `job_facts_inline_max_bytes` go to a `facts.json` object beside them, which the record names with its
digest (the record, rewritten on every heartbeat, stays small). A resumed job skips every stage whose
committed manifest matches its fingerprint and whose objects (and facts object) still hash to the record.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from pydantic import BaseModel

from infra.jobs import JobRecord, JobStore, SegmentProgress, StageRecord, StaleAttemptError
from infra.storage import retrying, stage_prefix
from pipelines.engine.checkpoints import (
    RetryPolicy,
    describe,
    fingerprint,
    object_name,
    peak_rss_bytes,
    record_stage_metrics,
    sha256,
)
from pipelines.engine.clients import ModelClient, Models
from pipelines.engine.committed import read_committed, stored_form
from pipelines.engine.context import (
    JobCancelledError,
    StageContext,
    StageFailedError,
    StageOutput,
    StageResult,
    error_code,
)
from pipelines.engine.context import Stored as Stored  # the job modules import these from here
from pipelines.engine.context import job_result as job_result

logger = logging.getLogger(__name__)
T = TypeVar("T")
U = TypeVar("U")
R = TypeVar("R", bound=BaseModel)
SEGMENT_REPORT_INTERVAL_S = 0.5  # at most two job-record writes a second for fan-out progress
WAITING_FOR_MODEL = "waiting for model"
ColdProbe = Callable[[list[str]], Awaitable[list[str]]]
"""Deployment names → those of them with no running replica (scaled to zero, or starting)."""


def no_models(request: Any, models: Models) -> Sequence[ModelClient]:
    return ()


@dataclass(frozen=True)
class Stage(Generic[R]):
    """`output`: the type of the stage's record. `models`: the clients the stage calls for a request;
    their model id, revision and weights kind join the stage fingerprint, so a checkpoint made with
    other weights is recomputed, not reused."""

    name: str
    run: Callable[[StageContext[R]], Awaitable[StageResult]]
    output: type[StageOutput]
    models: Callable[[R, Models], Sequence[ModelClient]] = no_models


class StageRunner(Generic[R]):
    """Runs one attempt of one job. Every job-record write is fenced by `attempt`."""

    def __init__(
        self,
        jobs: JobStore,
        job: JobRecord,
        request: R,
        models: Models,
        retry: RetryPolicy | None = None,
        version: int = 1,
        stage_timeout_s: float | None = None,
        cold_probe: ColdProbe | None = None,
        defer_last_record: bool = False,
    ) -> None:
        """`defer_last_record`: the last stage's commit writes its objects and manifest but leaves its
        record to the caller (`pending_records`), who puts it in the job's finishing write: the result
        and its stage land in one fenced update instead of two."""
        self.jobs = jobs
        self.defer_last_record = defer_last_record
        self.pending_records: list[StageRecord] = []
        self.cold_probe = cold_probe
        self.job = job
        self.attempt = job.attempt
        self.version = version
        self.stage_timeout_s = stage_timeout_s or jobs.storage.settings.job_stage_timeout_s
        self.retry = retry or RetryPolicy()
        self.ctx = StageContext(
            job=job, request=request, models=models, storage=jobs.storage, retry=self.retry
        )
        self._model_infos: dict[str, dict[str, Any]] = {}
        self._last_segment_report = 0.0
        self._records: dict[int, StageRecord] = {r.index: r for r in job.stages}
        self._commit: asyncio.Future[None] | None = None
        self._marked_by_commit = False  # the last commit scheduled also marks the stage after it

    async def run(self, stages: Sequence[Stage[R]]) -> StageContext[R]:
        """Run (or restore) every stage in order; raise `JobCancelledError` / `StageFailedError`.

        A stage's output goes to the next stage in memory at once; its checkpoint is committed in the
        background while the next stage runs (commits stay in stage order, each one objects → manifest →
        record), and the run returns only when every commit is done."""
        try:
            for index, stage in enumerate(stages):
                self._raise_failed_commit()
                committed = [self._records[i] for i in range(index) if i in self._records]
                clients = stage.models(self.ctx.request, self.ctx.models)
                fresh = index not in self._records  # nothing committed to restore: mark while probing
                models = await self._prepare(index, stage.name, clients, len(stages), mark=fresh)
                expected = fingerprint(stage.name, self.job.request_hash, committed, models, self.version)
                restored = None if fresh else await asyncio.to_thread(self._restore, index, stage, expected)
                if restored is None:
                    if not fresh:
                        await self._mark_or_check(index, stage.name, len(stages))
                    following = stages[index + 1].name if index + 1 < len(stages) else None
                    restored = await self._run_and_commit(
                        index, stage, expected, following, len(stages), models
                    )
                    self._marked_by_commit = following is not None
                else:
                    self._marked_by_commit = False
                self.ctx.outputs[stage.output] = restored
        finally:
            if self._commit is not None:
                await self._commit
        return self.ctx

    def _raise_failed_commit(self) -> None:
        if self._commit is not None and self._commit.done():
            self._commit.result()  # a commit refused by the fence (or the store) stops the attempt here

    async def _prepare(
        self, index: int, stage: str, clients: Sequence[ModelClient], total: int, mark: bool
    ) -> dict[str, dict[str, Any]]:
        """The stage's model identities (after any cold start), and with `mark` the stage mark or the
        cancel check at the same time; the first error stops the other."""
        ready = asyncio.ensure_future(self._ready_models(stage, clients))
        marked = asyncio.ensure_future(self._mark_or_check(index, stage, total) if mark else asyncio.sleep(0))
        try:
            await asyncio.gather(ready, marked)
        finally:
            ready.cancel()
            marked.cancel()
        return ready.result()

    async def _ready_models(self, stage: str, clients: Sequence[ModelClient]) -> dict[str, dict[str, Any]]:
        await self._wait_for_cold_models(stage, clients)
        return await self._models(clients)

    async def _wait_for_cold_models(self, stage: str, clients: Sequence[ModelClient]) -> None:
        """When a model the stage calls is scaled to zero: say so on the record (`detail`), wait for its
        cold start (a call to a cold deployment queues until a replica runs), then clear the note."""
        if self.cold_probe is None or not clients:
            return
        cold = await self.cold_probe([c.deployment for c in clients])
        if not cold:
            return
        logger.info("waiting for cold models", extra={"job_id": self.job.id, "stage": stage})
        await self._set_detail(stage, f"{WAITING_FOR_MODEL} {', '.join(cold)}")
        cards = await asyncio.gather(*(c.info() for c in clients if c.deployment in cold))
        self._model_infos.update({card.deployment: card.identity for card in cards})
        await self._set_detail(stage, None)

    async def _set_detail(self, stage: str, detail: str | None) -> None:
        def mark(record: JobRecord) -> None:
            if record.cancel_requested:
                raise JobCancelledError(self.job.id)
            record.stage = stage
            record.detail = detail

        self.job = await asyncio.to_thread(self.jobs.update, self.job.id, mark, attempt=self.attempt)

    async def _models(self, clients: Sequence[ModelClient]) -> dict[str, dict[str, Any]]:
        """Model id, revision and weights kind of each deployment the stage calls (asked once a run)."""
        for client in clients:
            if client.deployment not in self._model_infos:
                self._model_infos[client.deployment] = (await client.info()).identity
        return {c.deployment: self._model_infos[c.deployment] for c in clients}

    async def _mark_or_check(self, index: int, name: str, total: int) -> None:
        """Before a stage runs: when the previous stage's commit carries this stage's mark (the usual
        case), only read the record for the cancel flag and the fence; else mark it here."""
        if not self._marked_by_commit:
            await self._set_stage(name, index / total)
            return
        record = await asyncio.to_thread(self.jobs.get, self.job.id)
        if record.attempt != self.attempt:
            raise StaleAttemptError(
                f"job {self.job.id}: attempt {self.attempt} superseded by {record.attempt}"
            )
        if record.cancel_requested:
            raise JobCancelledError(self.job.id)

    async def _set_stage(self, name: str, progress: float) -> None:
        """Mark the stage on the record; the same (fenced) write checks the cancel flag."""

        def mark(record: JobRecord) -> None:
            if record.cancel_requested:
                raise JobCancelledError(self.job.id)
            record.stage = name
            record.progress = max(record.progress, progress)

        self.job = await asyncio.to_thread(self.jobs.update, self.job.id, mark, attempt=self.attempt)

    def _s3(self, call: Callable[[], T]) -> T:
        """Checkpoint reads and writes ride out a store outage of up to `s3_outage_tolerance_s`."""
        return retrying(call, self.jobs.storage.settings.s3_outage_tolerance_s)

    def _restore(self, index: int, stage: Stage[R], expected: str) -> StageResult | None:
        """The committed output of stage `index` if its fingerprint matches and its objects verify."""
        record = next((r for r in self.job.stages if r.index == index), None)
        if record is None or record.name != stage.name or record.fingerprint != expected:
            return None
        committed = read_committed(self.jobs.storage, record)
        if committed is None:
            return None
        objects, facts = committed
        self._records[index] = record.model_copy(update={"facts": facts})  # later fingerprints chain them
        logger.info("stage restored from checkpoint", extra={"job_id": self.job.id, "stage": stage.name})
        return StageResult(record=stage.output.model_validate(facts), objects=objects)

    async def _run_and_commit(
        self,
        index: int,
        stage: Stage[R],
        expected: str,
        following: str | None,
        total: int,
        models: dict[str, dict[str, Any]],
    ) -> StageResult:
        started = time.monotonic()
        self.ctx.on_segments = functools.partial(self._report_segments, stage.name, index, total)
        result, errors = await self._run_with_retries(stage)
        if not isinstance(result.record, stage.output):
            raise TypeError(
                f"stage {stage.name!r} returned {type(result.record).__name__}, not {stage.output}"
            )
        record = StageRecord(
            index=index,
            name=stage.name,
            prefix=stage_prefix(self.job.id, index, stage.name, self.attempt),
            manifest_key=stage_prefix(self.job.id, index, stage.name, self.attempt) + "manifest.json",
            fingerprint=expected,
            objects={object_name(n): sha256(body) for n, body in result.objects.items()},
            sizes={n: len(body) for n, body in result.objects.items()},
            models=models,
            facts=result.record.model_dump(mode="json"),
            duration_s=time.monotonic() - started,
            peak_memory_bytes=peak_rss_bytes(),
            retries=len(errors),
            retried_errors=errors[-20:],
            segments=self.ctx.segments_total,
            attempt=self.attempt,
        )
        self._records[index] = record
        record_stage_metrics(self.job.kind, record, errors)
        self._commit = asyncio.ensure_future(
            self._commit_after(self._commit, record, result, following, (index + 1) / total)
        )
        return result

    async def _commit_after(
        self,
        previous: asyncio.Future[None] | None,
        record: StageRecord,
        result: StageResult,
        following: str | None,
        progress: float,
    ) -> None:
        if previous is not None:
            await previous  # commits land in stage order; a failed one fails the ones after it
        await asyncio.to_thread(self._write_checkpoint, record, result, following, progress)

    async def _run_with_retries(self, stage: Stage[R]) -> tuple[StageResult, list[str]]:
        """The stage's result and the transient errors retried on the way (whole stage or one segment)."""
        errors: list[str] = []
        ends_at = asyncio.get_running_loop().time() + self.stage_timeout_s  # one deadline for all tries
        for retry in range(self.retry.tries):
            self.ctx.segments_done = self.ctx.segments_total = 0
            self.ctx.retried_errors = []
            deadline = asyncio.timeout_at(ends_at)
            try:
                async with deadline:
                    result = await stage.run(self.ctx)
                return result, errors + self.ctx.retried_errors
            except Exception as e:
                if isinstance(e, TimeoutError) and deadline.expired():
                    self.ctx.cancelled.set()  # threaded work of the stage stops at its next block
                    message = f"stage {stage.name!r} exceeded its deadline of {self.stage_timeout_s:g} s"
                    raise StageFailedError(stage.name, "deadline_exceeded", message) from e
                errors += self.ctx.retried_errors
                if not self.retry.is_transient(e):
                    raise StageFailedError(stage.name, error_code(e), str(e)) from e
                errors.append(describe(e))
                if retry + 1 == self.retry.tries:
                    raise StageFailedError(stage.name, "retries_exhausted", errors[-1]) from e
                logger.warning(
                    "transient stage failure, retrying",
                    extra={"job_id": self.job.id, "stage": stage.name, "error": repr(e)},
                )
                await asyncio.sleep(self.retry.base_s * 2**retry)
        raise AssertionError("unreachable: the loop returns or raises")

    async def _report_segments(self, name: str, index: int, stages: int, done: int, total: int) -> None:
        """Fan-out progress on the job record: throttled, except the first and the last report."""
        now = time.monotonic()
        if 0 < done < total and now - self._last_segment_report < SEGMENT_REPORT_INTERVAL_S:
            return
        self._last_segment_report = now

        def mark(record: JobRecord) -> None:
            record.segments = SegmentProgress(stage=name, done=done, total=total)
            record.progress = max(record.progress, (index + done / max(total, 1)) / stages)

        self.job = await asyncio.to_thread(self.jobs.update, self.job.id, mark, attempt=self.attempt)

    def _write_checkpoint(
        self, record: StageRecord, result: StageResult, following: str | None, progress: float
    ) -> None:
        """Objects first, then the manifest, then the (fenced) job record, which also marks the stage
        `following` (already running: one record write a stage, not two)."""
        storage = self.jobs.storage
        for name, body in result.objects.items():
            self._s3(functools.partial(storage.put_bytes, record.prefix + name, body))
        record = stored_form(storage, record)
        manifest = record.model_dump_json(indent=1).encode()
        self._s3(lambda: storage.put_bytes(record.manifest_key, manifest))
        if following is None and self.defer_last_record:
            self.pending_records.append(record)
            return

        def add(job: JobRecord) -> None:
            job.stages = [s for s in job.stages if s.index != record.index] + [record]
            job.progress = max(job.progress, progress)
            job.segments = None
            if following is not None:
                job.stage = following

        self.job = self.jobs.update(self.job.id, add, attempt=self.attempt)
        self.ctx.job = self.job
