"""The JobRunner deployment: claims jobs by lease, heartbeats them, runs their pipeline, re-claims orphans.

Jobs reach a runner two ways: the ingress calls `submit(job_id)` right after creating the job, and
every replica sweeps the active-job index every `job_reclaim_interval_s`, claiming queued jobs nobody
took and running jobs whose lease expired (their runner died). Claims are compare-and-swap writes, so
exactly one runner wins; the winner's attempt number fences every later write.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from typing import Any

from pydantic import ValidationError
from ray import exceptions as ray_exceptions
from ray import serve

from infra.jobs import JobError, JobRecord, JobStatus, JobStore, StaleAttemptError
from infra.settings import Settings, load_settings
from infra.storage import Storage, StorageError
from pipelines.engine.clients import Models
from pipelines.engine.registry import JOB_KINDS
from pipelines.engine.stages import JobCancelledError, RetryPolicy, StageFailedError, StageRunner, job_result

logger = logging.getLogger(__name__)

_TRANSIENT = (
    TimeoutError,
    ConnectionError,
    StorageError,
    ray_exceptions.RayActorError,
    ray_exceptions.ActorUnavailableError,
    ray_exceptions.ObjectLostError,
    ray_exceptions.GetTimeoutError,
    serve.exceptions.BackPressureError,
    serve.exceptions.DeploymentUnavailableError,
)


def is_transient(error: BaseException) -> bool:
    """Worth retrying: a replica died or was busy, a call timed out, S3 had a fault."""
    return isinstance(error, _TRANSIENT)


@serve.deployment(
    name="JobRunner",
    ray_actor_options={"num_cpus": 0.5},
    max_ongoing_requests=4,
    max_queued_requests=512,
    health_check_period_s=10,
)
class JobRunner:
    def __init__(self, models: Models) -> None:
        self.settings: Settings = load_settings()
        self.jobs = JobStore(Storage(self.settings))
        self.models = models
        self.owner = f"{_replica_name()}/{uuid.uuid4().hex[:8]}"
        self.retry = RetryPolicy(is_transient=is_transient)
        self._running: dict[str, asyncio.Task[None]] = {}
        self._sweeper: asyncio.Task[None] | None = None
        with contextlib.suppress(RuntimeError):  # no running loop: started by the first call instead
            self._ensure_sweeper()

    async def submit(self, job_id: str) -> bool:
        """Claim and run `job_id`, returning when it ends (so ongoing requests = jobs in flight, which
        drives autoscaling). False at once if it is not claimable or this replica is full."""
        self._ensure_sweeper()
        task = await self._try_start(job_id)
        if task is None:
            return False
        await asyncio.shield(task)  # a cancelled caller must not stop the job
        return True

    def running(self) -> list[str]:
        return sorted(self._running)

    async def check_health(self) -> None:
        self._ensure_sweeper()
        if self._sweeper is not None and self._sweeper.done():
            raise RuntimeError(f"job sweeper stopped: {self._sweeper.exception()!r}")
        await asyncio.to_thread(self.jobs.storage.ping)

    def _ensure_sweeper(self) -> None:
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep_forever())

    async def _sweep_forever(self) -> None:
        while True:
            try:
                await self._sweep_once()
            except Exception:
                logger.exception("job sweep failed; trying again next interval")
            await asyncio.sleep(self.settings.job_reclaim_interval_s)

    async def _sweep_once(self) -> None:
        for job_id in await asyncio.to_thread(self.jobs.active_ids):
            if len(self._running) >= self.settings.job_max_concurrent:
                return
            if job_id not in self._running:
                await self._try_start(job_id)

    async def _try_start(self, job_id: str) -> asyncio.Task[None] | None:
        if job_id in self._running or len(self._running) >= self.settings.job_max_concurrent:
            return None
        record = await asyncio.to_thread(self.jobs.get, job_id)
        if not record.claimable(self.jobs.clock()):
            return None
        claimed = await asyncio.to_thread(self.jobs.claim, job_id, self.owner, self.settings.job_lease_s)
        if claimed is None:
            return None
        logger.info("job claimed", extra={"job_id": job_id, "attempt": claimed.attempt, "owner": self.owner})
        task = asyncio.get_running_loop().create_task(self._execute(claimed))
        self._running[job_id] = task
        task.add_done_callback(lambda _: self._running.pop(job_id, None))
        return task

    async def _execute(self, job: JobRecord) -> None:
        work = asyncio.get_running_loop().create_task(self._run_pipeline(job))
        heartbeat = asyncio.get_running_loop().create_task(self._heartbeat(job, work))
        try:
            await work
        except asyncio.CancelledError:
            logger.warning("job superseded; stopped", extra={"job_id": job.id, "attempt": job.attempt})
        except StaleAttemptError:
            logger.warning("job taken over by another runner", extra={"job_id": job.id})
        except Exception:
            logger.exception("job runner fault", extra={"job_id": job.id})
        finally:
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat

    async def _heartbeat(self, job: JobRecord, work: asyncio.Task[None]) -> None:
        while not work.done():
            await asyncio.sleep(self.settings.job_heartbeat_s)
            try:
                await asyncio.to_thread(self.jobs.renew, job.id, job.attempt, self.settings.job_lease_s)
            except StaleAttemptError:
                work.cancel()
                return
            except Exception:
                logger.exception("lease renewal failed", extra={"job_id": job.id})

    async def _run_pipeline(self, job: JobRecord) -> None:
        kind = JOB_KINDS.get(job.kind)
        if kind is None:
            await self._finish(job, JobStatus.FAILED, error=JobError(code="unknown_kind", message=job.kind))
            return
        try:
            request = kind.request.model_validate(job.request)
        except ValidationError as e:
            message = f"the stored request is not a valid {job.kind} request: {e.error_count()} errors"
            await self._finish(job, JobStatus.FAILED, error=JobError(code="invalid_request", message=message))
            return
        runner = StageRunner(self.jobs, job, request, self.models, retry=self.retry, version=kind.version)
        try:
            ctx = await runner.run(kind.stages)
        except JobCancelledError:
            await self._finish(job, JobStatus.CANCELLED)
        except StageFailedError as e:
            error = JobError(code=e.code, message=e.message, stage=e.stage, attempt=job.attempt)
            await self._finish(job, JobStatus.FAILED, error=error)
        except (StaleAttemptError, asyncio.CancelledError):
            raise
        except Exception as e:
            logger.exception("job failed on a runner fault", extra={"job_id": job.id})
            error = JobError(
                code="internal_error", message=repr(e), stage=runner.job.stage, attempt=job.attempt
            )
            await self._finish(job, JobStatus.FAILED, error=error)
        else:
            await self._finish(job, JobStatus.SUCCEEDED, result=job_result(ctx))

    async def _finish(
        self,
        job: JobRecord,
        status: JobStatus,
        result: dict[str, Any] | None = None,
        error: JobError | None = None,
    ) -> None:
        await asyncio.to_thread(self.jobs.finish, job.id, job.attempt, status, result=result, error=error)
        logger.info("job finished", extra={"job_id": job.id, "status": status.value, "attempt": job.attempt})


def _replica_name() -> str:
    """The replica's full id, which is also its Ray actor name in the `serve` namespace."""
    try:
        return str(serve.get_replica_context().replica_id.to_full_id_str())
    except Exception:  # outside a replica (unit tests build the class directly)
        return "local"
