"""The JobRunner deployment: claims jobs by lease, heartbeats them, runs their pipeline, re-claims orphans.

Jobs reach a runner two ways: the ingress calls `submit(job_id)` right after creating the job, and
every replica sweeps the active-job index every `job_reclaim_interval_s` (oldest job first), claiming
queued jobs nobody took and running jobs whose lease expired (their runner died). Claims are
compare-and-swap writes, so exactly one runner wins; the winner's attempt number fences every later write.

Work and leases do not share threads: stages run their blocking calls on the replica's work pool
(`runner_threads`), while claims, renewals and sweeps use a small pool of their own, so a busy replica
still renews its leases. The heartbeat also sees a cancel request and cancels the running stage, which
cancels its in-flight model calls. A draining replica (downscaling, shutdown) stops claiming and hands
its leases back, so another replica resumes the jobs at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from ray import serve

from deployments.families.warmth import cold_deployments
from deployments.job_outcome import Outcome, is_transient, run_stages, stored_request
from deployments.metrics import install_ray_metrics
from deployments.webhooks import WebhookSender
from infra.jobs import JobNotFoundError, JobRecord, JobStore, StaleAttemptError
from infra.retention import apply_lifecycle_rules, sweep_expired
from infra.settings import Settings, load_settings
from infra.storage import Storage
from infra.store_probe import probe_conditional_writes
from pipelines.engine.clients import Models
from pipelines.engine.kinds import JobKind
from pipelines.engine.stages import RetryPolicy, StageRunner

logger = logging.getLogger(__name__)
T = TypeVar("T")

_STALE_MARKER_S = 600.0  # an active marker whose record never appeared is dropped after this long


@serve.deployment(
    name="JobRunner",
    ray_actor_options={"num_cpus": 0.5},
    max_ongoing_requests=4,
    max_queued_requests=512,
    health_check_period_s=10,
)
class JobRunner:
    def __init__(self, models: Models) -> None:
        install_ray_metrics()
        self.settings: Settings = load_settings()
        self.jobs = JobStore(Storage(self.settings))
        probe_conditional_writes(self.jobs.storage)  # claims are CAS writes: refuse a store that fakes them
        self.models = models
        self.owner = f"{_replica_name()}/{uuid.uuid4().hex[:8]}"
        self.retry = RetryPolicy(is_transient=is_transient)
        self._running: dict[str, asyncio.Task[None]] = {}
        self._cancelled: set[str] = set()
        self._claiming: dict[str, asyncio.Future[asyncio.Task[None] | None]] = {}
        self._draining = False
        self._sweeper: asyncio.Task[None] | None = None
        self._work_pool = ThreadPoolExecutor(self.settings.runner_threads, thread_name_prefix="job-work")
        self._lease_pool = ThreadPoolExecutor(2, thread_name_prefix="job-lease")
        self.webhooks = WebhookSender(self.jobs, self.settings, self._leased)
        self._deliveries: set[asyncio.Task[int]] = set()
        self._webhook_sweep: asyncio.Task[int] | None = None
        with contextlib.suppress(RuntimeError):  # no running loop: started by the first call instead
            self._ensure_sweeper()

    async def submit(self, job_id: str) -> bool:
        """Claim and run `job_id`, returning when it ends (so ongoing requests = jobs in flight, which
        drives autoscaling); also when this replica's sweep claimed it first. False at once if it is not
        claimable here: another replica runs it, it has finished, or this replica is full or draining."""
        self._ensure_sweeper()
        task = await self._try_start(job_id)
        if task is None:
            return False
        await asyncio.shield(task)  # a cancelled caller must not stop the job
        return True

    def running(self) -> list[str]:
        return sorted(self._running)

    async def check_health(self) -> None:
        """The replica's own health: its sweeper runs and its event loop answers. The store is not
        pinged: an S3 outage must not restart every runner and lose its in-flight work."""
        self._ensure_sweeper()
        if self._sweeper is not None and self._sweeper.done():
            raise RuntimeError(f"job sweeper stopped: {self._sweeper.exception()!r}")

    def __del__(self) -> Coroutine[Any, Any, list[str]] | None:
        """Graceful shutdown (downscaling, redeploy): Serve calls this and awaits the coroutine, which
        stops claiming and hands every lease back. Garbage collection of a drained (or never started)
        runner gets None: there is nothing left to hand back."""
        if getattr(self, "_draining", True):
            return None
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return None
        return self.drain()

    async def drain(self) -> list[str]:
        """Stop claiming, stop the running jobs and release their leases (fenced); returns their ids."""
        self._draining = True
        if self._sweeper is not None:
            self._sweeper.cancel()
        handed = list(self._running.items())
        for _, task in handed:
            task.cancel()
        for _, task in handed:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        return [job_id for job_id, _ in handed]

    def _ensure_sweeper(self) -> None:
        if self._sweeper is None and not self._draining:
            loop = asyncio.get_running_loop()
            loop.set_default_executor(self._work_pool)  # stages' asyncio.to_thread calls run here
            self._sweeper = loop.create_task(self._sweep_forever())

    async def _leased(self, call: Callable[[], T]) -> T:
        """A claim, renewal or sweep read, on the lease pool (never queued behind stage work)."""
        return await asyncio.get_running_loop().run_in_executor(self._lease_pool, call)

    async def _sweep_forever(self) -> None:
        last_retention = 0.0
        with contextlib.suppress(Exception):  # best effort: the retention sweep applies either way
            await self._leased(lambda: apply_lifecycle_rules(self.jobs.storage))
        while True:
            try:
                await self._sweep_once()
                self._deliver_webhooks()
                if self.jobs.clock() - last_retention > self.settings.retention_sweep_interval_s:
                    last_retention = self.jobs.clock()
                    await self._leased(lambda: sweep_expired(self.jobs))
            except Exception:
                logger.exception("job sweep failed; trying again next interval")
            await asyncio.sleep(self.settings.job_reclaim_interval_s)

    async def _sweep_once(self) -> None:
        """Claim what is claimable, oldest job first; one bad index entry never stops the sweep."""
        for job_id in await self._leased(self.jobs.active_ids):
            if self._draining or len(self._running) >= self.settings.job_max_concurrent:
                return
            try:
                await self._try_start(job_id)
            except JobNotFoundError:
                await self._drop_stale(job_id)
            except Exception:
                logger.exception("could not claim a job; skipping it this sweep", extra={"job_id": job_id})

    async def _try_start(self, job_id: str) -> asyncio.Task[None] | None:
        """Claim and start `job_id` here; a claim already under way on this replica (the sweep and a
        `submit` racing) is awaited rather than made twice."""
        claiming = self._claiming.get(job_id)
        if claiming is not None:
            return await asyncio.shield(claiming)
        future: asyncio.Future[asyncio.Task[None] | None] = asyncio.get_running_loop().create_future()
        self._claiming[job_id] = future
        try:
            task = await self._claim_and_start(job_id)
        except BaseException as e:
            future.set_exception(e)
            future.exception()  # retrieved: a racing caller re-raises it, nobody else must
            raise
        else:
            future.set_result(task)
            return task
        finally:
            del self._claiming[job_id]

    async def _claim_and_start(self, job_id: str) -> asyncio.Task[None] | None:
        if (
            self._draining
            or job_id in self._running
            or len(self._running) >= self.settings.job_max_concurrent
        ):
            return self._running.get(job_id)
        claimed, taken = await self._leased(
            lambda: self.jobs.try_claim(job_id, self.owner, self.settings.job_lease_s)
        )
        if not taken:
            if claimed.status.finished:  # its active marker outlived it (or the claim cancelled it)
                await self._drop_stale(job_id)
            return None
        logger.info("job claimed", extra={"job_id": job_id, "attempt": claimed.attempt, "owner": self.owner})
        task = asyncio.get_running_loop().create_task(self._execute(claimed))
        self._running[job_id] = task
        task.add_done_callback(lambda _: self._forget(job_id))
        return task

    async def _drop_stale(self, job_id: str) -> None:
        await self._leased(lambda: self.jobs.drop_stale_marker(job_id, _STALE_MARKER_S))

    def _forget(self, job_id: str) -> None:
        self._running.pop(job_id, None)
        self._cancelled.discard(job_id)

    async def _execute(self, job: JobRecord) -> None:
        work = asyncio.get_running_loop().create_task(self._run_pipeline(job))
        heartbeat = asyncio.get_running_loop().create_task(self._heartbeat(job, work))
        try:
            await work
        except asyncio.CancelledError:
            if self._draining:
                await self._hand_back(job)
            else:
                logger.warning("job superseded; stopped", extra={"job_id": job.id, "attempt": job.attempt})
        except StaleAttemptError:
            logger.warning("job taken over by another runner", extra={"job_id": job.id})
        except Exception:
            logger.exception("job runner fault", extra={"job_id": job.id})
        finally:
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat

    async def _hand_back(self, job: JobRecord) -> None:
        """Release the lease of a job this draining replica stops (another replica resumes it)."""

        def release(record: JobRecord) -> None:
            record.lease_owner = None
            record.lease_expires_at = self.jobs.clock()

        with contextlib.suppress(StaleAttemptError, JobNotFoundError):
            await self._leased(lambda: self.jobs.update(job.id, release, attempt=job.attempt))
            logger.info("lease handed back", extra={"job_id": job.id, "attempt": job.attempt})

    async def _heartbeat(self, job: JobRecord, work: asyncio.Task[None]) -> None:
        """Renew the lease; stop the work when the job was taken over or its cancel was requested."""
        while not work.done():
            await asyncio.sleep(self.settings.job_heartbeat_s)
            try:
                record = await self._leased(
                    lambda: self.jobs.renew(job.id, job.attempt, self.settings.job_lease_s)
                )
            except StaleAttemptError:
                work.cancel()
                return
            except Exception:
                logger.exception("lease renewal failed", extra={"job_id": job.id})
                continue
            if record.cancel_requested and job.id not in self._cancelled:
                logger.info("cancel requested; stopping the running stage", extra={"job_id": job.id})
                self._cancelled.add(job.id)
                work.cancel()

    async def _run_pipeline(self, job: JobRecord) -> None:
        admitted = stored_request(job)
        if isinstance(admitted, Outcome):
            await self._finish(job, admitted)
            return
        kind, request = admitted
        runner = self._stage_runner(kind, job, request)
        limit_s = kind.timeout_s or self.settings.job_timeout_s
        await self._finish(
            job, await run_stages(kind, job, runner, limit_s, lambda: job.id in self._cancelled)
        )

    def _stage_runner(self, kind: JobKind[Any], job: JobRecord, request: Any) -> StageRunner[Any]:
        return StageRunner(
            self.jobs,
            job,
            request,
            self.models,
            retry=self.retry,
            version=kind.version,
            stage_timeout_s=kind.stage_timeout_s,
            cold_probe=cold_deployments,
            defer_last_record=True,
        )

    async def _finish(self, job: JobRecord, outcome: Outcome) -> None:
        await self._leased(
            lambda: self.jobs.finish(
                job.id,
                job.attempt,
                outcome.status,
                result=outcome.result,
                error=outcome.error,
                stages=outcome.stages,
            )
        )
        logger.info(
            "job finished", extra={"job_id": job.id, "status": outcome.status.value, "attempt": job.attempt}
        )
        self._deliver_webhooks(job.id)

    def _deliver_webhooks(self, job_id: str | None = None) -> None:
        """Send `job_id`'s due webhooks now, or (None) sweep every job that owes one unless a sweep is
        still going; in the background, so a slow receiver delays neither claims nor the job's end."""
        if job_id is None and self._webhook_sweep is not None and not self._webhook_sweep.done():
            return
        task = asyncio.get_running_loop().create_task(
            self.webhooks.deliver_due(job_id) if job_id else self.webhooks.sweep()
        )
        if job_id is None:
            self._webhook_sweep = task
        self._deliveries.add(task)
        task.add_done_callback(self._delivered)

    def _delivered(self, task: asyncio.Task[int]) -> None:
        self._deliveries.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.warning("webhook delivery failed; the sweep retries it", exc_info=task.exception())


def _replica_name() -> str:
    """The replica's full id, which is also its Ray actor name in the `serve` namespace."""
    try:
        return str(serve.get_replica_context().replica_id.to_full_id_str())
    except Exception:  # outside a replica (unit tests build the class directly)
        return "local"
