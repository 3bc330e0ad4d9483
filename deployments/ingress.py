"""The HTTP ingress: parse and validate, create jobs, hand them to the runner, report on them.

(No `from __future__ import annotations` here: FastAPI must see real annotations on the
`serve.ingress` methods.)

Nothing here runs a model or a pipeline; it only talks to S3 (job records, presigned URLs) and to
the other deployments through their handles.
"""

import asyncio
import functools
import logging
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, Query, Request
from fastapi.responses import JSONResponse
from ray import serve
from ray.serve.handle import DeploymentHandle

from deployments.http_errors import ApiError, BodySizeLimit, install_error_handlers
from deployments.schemas import JobList, JobView, ModelsView, job_view
from infra.jobs import (
    IdempotencyConflictError,
    JobFinishedError,
    JobNotFoundError,
    JobRecord,
    JobStatus,
    JobStore,
)
from infra.settings import Settings, load_settings
from infra.storage import InvalidKeyPartError, Storage, StorageError
from pipelines.generation import MUSIC_JOB, MusicJobRequest

logger = logging.getLogger(__name__)


@functools.cache
def _settings() -> Settings:
    return load_settings()


app = FastAPI(
    title="soundstage",
    version="0.1.0",
    description="AI audio models on Ray Serve: durable generation jobs, results in S3 via presigned URLs.",
)
app.add_middleware(BodySizeLimit, max_bytes=lambda: _settings().max_request_bytes)
install_error_handlers(app)


def require_api_key(authorization: Annotated[str | None, Header()] = None) -> None:
    """If `SOUNDSTAGE_API_KEYS` is set, `/v1` wants `Authorization: Bearer <key>`."""
    keys = _settings().api_keys
    if not keys:
        return
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or token not in keys:
        raise ApiError(401, "unauthorized", "missing or invalid API key (Authorization: Bearer <key>)")


Authorized = Depends(require_api_key)


@serve.deployment(
    name="Ingress",
    ray_actor_options={"num_cpus": 0.25},
    max_ongoing_requests=200,
    max_queued_requests=1000,
)
@serve.ingress(app)
class Ingress:
    def __init__(self, runner: DeploymentHandle, music: DeploymentHandle) -> None:
        self.settings = _settings()
        self.storage = Storage(self.settings)
        self.jobs = JobStore(self.storage)
        self.runner = runner
        self.models = {"MusicGen": music}
        self._dispatches: set[asyncio.Task[None]] = set()

    @app.get("/healthz", tags=["service"])
    async def healthz(self) -> dict[str, str]:
        """Liveness of the ingress and its object store."""
        try:
            await asyncio.to_thread(self.storage.ping)
        except StorageError as e:
            raise ApiError(503, "storage_unavailable", str(e)) from e
        return {"status": "ok"}

    @app.get("/v1/models", tags=["service"], dependencies=[Authorized])
    async def list_models(self) -> ModelsView:
        """Each model deployment: model id, revision, weights kind, device, replica states."""
        infos = {name: await handle.info.remote() for name, handle in self.models.items()}
        status = await asyncio.to_thread(serve.status)
        deployments = status.applications[serve.get_replica_context().app_name].deployments
        return ModelsView.build(infos, deployments)

    @app.post("/v1/jobs/music", status_code=202, tags=["jobs"], dependencies=[Authorized])
    async def submit_music(
        self,
        body: MusicJobRequest,
        request: Request,
        idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
    ) -> JSONResponse:
        """Generate music from a text prompt. Returns `202 {id, status_url}`; poll the status URL."""
        if body.duration_s > self.settings.max_generation_s:
            raise ApiError(
                422,
                "duration_too_long",
                f"duration_s {body.duration_s:g} exceeds the limit of {self.settings.max_generation_s:g} s",
            )
        if len(body.prompt) > self.settings.max_prompt_chars:
            raise ApiError(
                422, "prompt_too_long", f"prompt exceeds {self.settings.max_prompt_chars} characters"
            )
        return await self._submit(MUSIC_JOB, body.with_seed().model_dump(), idempotency_key, request)

    async def _submit(
        self, kind: str, payload: dict[str, Any], idempotency_key: str | None, request: Request
    ) -> JSONResponse:
        try:
            record, created = await asyncio.to_thread(self.jobs.create, kind, payload, idempotency_key)
        except IdempotencyConflictError as e:
            raise ApiError(409, "idempotency_conflict", str(e)) from e
        if created:
            self._dispatch(record.id)
        view = job_view(record, self.storage, str(request.base_url))
        return JSONResponse(status_code=202 if created else 200, content=view.model_dump(mode="json"))

    def _dispatch(self, job_id: str) -> None:
        """Hand the job to a runner without waiting; runners' sweeps pick it up if this call is lost."""

        async def send() -> None:
            try:
                await self.runner.submit.remote(job_id)
            except Exception:
                logger.warning("dispatch failed; a runner sweep will claim it", extra={"job_id": job_id})

        task = asyncio.get_running_loop().create_task(send())
        self._dispatches.add(task)
        task.add_done_callback(self._dispatches.discard)

    @app.get("/v1/jobs/{job_id}", tags=["jobs"], dependencies=[Authorized])
    async def get_job(self, job_id: str, request: Request) -> JobView:
        """Status, progress, stage, error, and the result with presigned URLs once it succeeded."""
        record = await self._load(job_id)
        return job_view(record, self.storage, str(request.base_url))

    @app.delete("/v1/jobs/{job_id}", status_code=202, tags=["jobs"], dependencies=[Authorized])
    async def cancel_job(self, job_id: str, request: Request) -> JobView:
        """Cancel: a queued job stops at once, a running one at its next stage boundary."""
        await self._load(job_id)
        try:
            record = await asyncio.to_thread(self.jobs.request_cancel, job_id)
        except JobFinishedError as e:
            raise ApiError(409, "job_finished", str(e)) from e
        return job_view(record, self.storage, str(request.base_url))

    @app.get("/v1/jobs", tags=["jobs"], dependencies=[Authorized])
    async def list_jobs(
        self,
        request: Request,
        status: JobStatus | None = None,
        limit: Annotated[int, Query(ge=1, le=200)] = 50,
        after: Annotated[str | None, Query(pattern="^[0-9a-f]{32}$")] = None,
    ) -> JobList:
        """Newest first. Page with `after=<last id>`."""
        records = await asyncio.to_thread(self.jobs.list_records, status, limit, after)
        views = [job_view(r, self.storage, str(request.base_url)) for r in records]
        return JobList(jobs=views, next_after=views[-1].id if len(views) == limit else None)

    async def _load(self, job_id: str) -> JobRecord:
        try:
            return await asyncio.to_thread(self.jobs.get, job_id)
        except (JobNotFoundError, InvalidKeyPartError):
            raise ApiError(404, "job_not_found", f"no job with id {job_id!r}") from None
