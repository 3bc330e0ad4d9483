"""How one attempt of a job ends: its stages run to a final status, a result or a typed error.

The runner (`deployments/runner.py`) claims, heartbeats and finishes jobs; this module turns a stage run
into the `Outcome` it writes. Superseded and draining attempts end with no outcome (`CancelledError` and
`StaleAttemptError` propagate): another attempt carries the job on.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError
from ray import exceptions as ray_exceptions
from ray import serve

from infra.jobs import JobError, JobRecord, JobStatus, StageRecord, StaleAttemptError
from infra.storage import TransientStorageError
from pipelines.engine.kinds import JobKind
from pipelines.engine.registry import JOB_KINDS
from pipelines.engine.stages import JobCancelledError, StageFailedError, StageRunner, job_result

logger = logging.getLogger(__name__)

_TRANSIENT = (
    TimeoutError,
    ConnectionError,
    TransientStorageError,
    ray_exceptions.RayActorError,
    ray_exceptions.ActorUnavailableError,
    ray_exceptions.ObjectLostError,
    ray_exceptions.GetTimeoutError,
    serve.exceptions.BackPressureError,
    serve.exceptions.DeploymentUnavailableError,
)


def is_transient(error: BaseException) -> bool:
    """Worth retrying: a replica died or was busy, a call timed out, S3 was unreachable or had a fault."""
    return isinstance(error, _TRANSIENT)


@dataclass(frozen=True)
class Outcome:
    """What the finishing write records. `stages`: committed stage records that join it (the last
    stage's, whose record write was deferred to the finish)."""

    status: JobStatus
    result: dict[str, Any] | None = None
    error: JobError | None = None
    stages: Sequence[StageRecord] = field(default_factory=tuple)


def failed(code: str, message: str, job: JobRecord, stage: str | None = None) -> Outcome:
    return Outcome(
        JobStatus.FAILED, error=JobError(code=code, message=message, stage=stage, attempt=job.attempt)
    )


def stored_request(job: JobRecord) -> tuple[JobKind[Any], Any] | Outcome:
    """The job's kind and its request validated once, or the failure a bad stored job ends with."""
    kind = JOB_KINDS.get(job.kind)
    if kind is None:
        return Outcome(JobStatus.FAILED, error=JobError(code="unknown_kind", message=job.kind))
    try:
        return kind, kind.request.model_validate(job.request)
    except ValidationError as e:
        message = f"the stored request is not a valid {job.kind} request: {e.error_count()} errors"
        return Outcome(JobStatus.FAILED, error=JobError(code="invalid_request", message=message))


async def run_stages(
    kind: JobKind[Any], job: JobRecord, runner: StageRunner[Any], limit_s: float, by_user: Callable[[], bool]
) -> Outcome:
    """Run the job's stages within `limit_s`. `by_user`: whether a cancel of this task is the user's
    (then the job ends cancelled; otherwise the attempt was superseded or is draining, and it re-raises)."""
    try:
        async with asyncio.timeout(limit_s):
            ctx = await runner.run(kind.stages)
    except JobCancelledError:
        return Outcome(JobStatus.CANCELLED)
    except asyncio.CancelledError:
        runner.ctx.cancelled.set()  # threaded work of the stage stops at its next block
        if not by_user():
            raise
        return Outcome(JobStatus.CANCELLED)
    except StageFailedError as e:
        return failed(e.code, e.message, job, e.stage)
    except StaleAttemptError:
        runner.ctx.cancelled.set()
        raise
    except TimeoutError:
        runner.ctx.cancelled.set()
        message = f"the job exceeded its deadline of {limit_s:g} s in stage {runner.job.stage!r}"
        return failed("deadline_exceeded", message, job, runner.job.stage)
    except Exception as e:
        logger.exception("job failed on a runner fault", extra={"job_id": job.id})
        return failed("internal_error", repr(e)[:500], job, runner.job.stage)
    return Outcome(JobStatus.SUCCEEDED, result=job_result(ctx), stages=runner.pending_records)
