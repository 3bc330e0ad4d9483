"""The jobs router, derived from the job-kind registry: submit any kind, then get, report, cancel, list.

`POST /v1/jobs/{kind}` takes the kind's request model as a JSON body, or, for kinds with audio inputs,
as a multipart form whose fields are the model's fields (plus `file` / `url`, which become an upload).
The request is validated once here, `admit`ted (checks that need the store or the models), and stored
in the job record; the runner validates the stored request again with the same model.
"""

import asyncio
import inspect
import re
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Header, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ValidationError

from deployments.http.errors import ApiError
from deployments.http.guards import EdgeRoute
from deployments.http.inputs import stored_input
from deployments.http.job_events import job_events
from deployments.http.quotas import JobQuota
from deployments.http.schemas import JobList, JobReport, JobView, job_report, job_view
from deployments.http.services import Authorized, CurrentTenant, Services, Svc, require_api_key
from deployments.http.webhook_fields import (
    EVENTS_DESCRIPTION,
    URL_DESCRIPTION,
    form_events,
    split_request,
    webhook_spec,
    with_webhook_fields,
)
from infra.jobs import IdempotencyConflictError, JobFinishedError, JobNotFoundError, JobRecord, JobStatus
from infra.storage import InvalidKeyPartError
from infra.tenancy import Tenant
from infra.uploads import upload_info
from infra.webhooks import WebhookSpec
from pipelines.engine.kinds import JobKind
from pipelines.engine.registry import JOB_KINDS

JOB_ID = "^[0-9a-f]{32}$"
JOB_ID_RE = re.compile(JOB_ID)
IdempotencyKey = Annotated[str | None, Header(max_length=255)]
router = APIRouter(route_class=EdgeRoute, tags=["jobs"], dependencies=[Authorized])


async def submit(
    svc: Services,
    kind: JobKind[Any],
    body: BaseModel,
    key: str | None,
    request: Request,
    webhook: WebhookSpec | None = None,
) -> JSONResponse:
    """Admit, create (idempotently) and dispatch a job: 202 when created, 200 for a known key. The job,
    and its idempotency key, belong to the caller's tenant; so must an `upload_id` it names. The tenant's
    concurrency slot and audio-seconds are reserved before the record is written (429 over a quota)."""
    tenant = require_api_key(request)
    upload_id = getattr(body, "upload_id", None)
    if isinstance(upload_id, str) and not tenant.admin:
        await asyncio.to_thread(upload_info, svc.storage, upload_id, tenant.id)
    if key is not None:  # a resubmission gets its job back whatever the quotas and admission say now
        existing = await asyncio.to_thread(svc.jobs.find_idempotent, kind.name, key, tenant.id)
        if existing is not None:
            return _resubmitted(svc, existing, body, request)
    admitted = await kind.admit(body, svc.admission_for(tenant))
    payload = admitted.model_dump(mode="json")
    quota = await JobQuota.reserve(svc.quotas, svc.settings, tenant, admitted, svc.jobs.clock())
    try:
        record, created = await asyncio.to_thread(
            svc.jobs.create, kind.name, payload, key, tenant.id, quota.job_id, webhook=webhook
        )
    except IdempotencyConflictError as e:
        await quota.cancel()
        raise ApiError(409, "idempotency_conflict", str(e)) from e
    except BaseException:
        await quota.cancel()
        raise
    await quota.settle(record.id, created)
    if created or record.status is JobStatus.QUEUED:  # a resubmission re-sends a job nobody took yet
        svc.dispatch(record.id)
    view = job_view(record, svc.storage, str(request.base_url))
    return JSONResponse(status_code=202 if created else 200, content=view.model_dump(mode="json"))


def _resubmitted(svc: Services, record: JobRecord, body: BaseModel, request: Request) -> JSONResponse:
    """200 with the job an earlier request with the same idempotency key made, if this request asks
    for the same thing: every field the client gave equals the stored one (fields it left out, such as
    a seed that admission fixed, are the stored job's). 409 `idempotency_conflict` otherwise."""
    given = body.model_dump(mode="json", include=body.model_fields_set)
    if any(record.request.get(name) != value for name, value in given.items()):
        message = f"Idempotency-Key already used for job {record.id} with a different request"
        raise ApiError(409, "idempotency_conflict", message)
    if record.status is JobStatus.QUEUED:  # re-sent to a runner, in case the first dispatch was lost
        svc.dispatch(record.id)
    view = job_view(record, svc.storage, str(request.base_url))
    return JSONResponse(status_code=200, content=view.model_dump(mode="json"))


def _json_route(kind: JobKind[Any]) -> Any:
    async def submit_json(
        body: Any, request: Request, svc: Svc, idempotency_key: IdempotencyKey = None
    ) -> JSONResponse:
        own, url, events = split_request(body, kind.request)
        webhook = await webhook_spec(url, events, svc.settings)
        return await submit(svc, kind, own, idempotency_key, request, webhook)

    submit_json.__annotations__["body"] = with_webhook_fields(kind.request)
    return submit_json


def _form_route(kind: JobKind[Any]) -> Any:
    """An endpoint whose signature lists the request model's fields as form fields (for the docs and
    FastAPI's parsing), plus the audio inputs the kind accepts."""
    fields = kind.request.model_fields

    async def submit_form(request: Request, svc: Svc, **form: Any) -> JSONResponse:
        key = form.pop("idempotency_key", None)
        webhook = await webhook_spec(
            form.pop("webhook_url", None), form_events(form.pop("webhook_events", None)), svc.settings
        )
        file, url = form.pop("file", None), form.pop("url", None)
        given: dict[str, Any] = {"file": file, "upload_id": form.get("upload_id"), "url": url}
        sources: dict[str, Any] = {name: value for name, value in given.items() if name in kind.inputs}
        sources |= {name: form.get(name) for name in kind.other_sources}
        if sum(v is not None for v in sources.values()) != 1:
            raise ApiError(
                422, "input_required", f"send exactly one of {', '.join(f'`{s}`' for s in sources)}"
            )
        if file is not None or url is not None:  # a given `upload_id` is checked by the kind's admit()
            form["upload_id"] = await stored_input(svc, require_api_key(request), file, None, url)
        try:
            body = kind.request.model_validate({k: v for k, v in form.items() if v is not None})
        except ValidationError as e:
            raise RequestValidationError([{**err, "loc": ("body", *err["loc"])} for err in e.errors()]) from e
        return await submit(svc, kind, body, key, request, webhook)

    params = [
        inspect.Parameter("request", inspect.Parameter.KEYWORD_ONLY, annotation=Request),
        inspect.Parameter("svc", inspect.Parameter.KEYWORD_ONLY, annotation=Svc),
    ]
    if "file" in kind.inputs:
        params.append(_param("file", UploadFile | None, File(None, description="An audio file.")))
    if "url" in kind.inputs:
        params.append(_param("url", str | None, Form(None, max_length=4096, description="An http(s) URL.")))
    for name, info in fields.items():
        if name == "upload_id":  # the upload may come as `file` or `url` instead
            default = None
        else:
            default = ... if info.is_required() else info.get_default(call_default_factory=True)
        params.append(_param(name, info.annotation, Form(default, description=info.description)))
    params.append(_param("webhook_url", str | None, Form(None, max_length=2048, description=URL_DESCRIPTION)))
    params.append(_param("webhook_events", str | None, Form(None, description=EVENTS_DESCRIPTION)))
    params.append(_param("idempotency_key", str | None, Header(None, max_length=255)))
    submit_form.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    return submit_form


def _param(name: str, annotation: Any, default: Any) -> inspect.Parameter:
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation, default=default)


for _kind in JOB_KINDS.values():
    router.add_api_route(
        f"/v1/jobs/{_kind.name}",
        _form_route(_kind) if _kind.inputs else _json_route(_kind),
        methods=["POST"],
        status_code=202,
        summary=f"Submit a {_kind.name} job",
        description=_kind.summary,
        name=f"submit_{_kind.name.replace('-', '_')}",
    )


async def load_job(svc: Services, job_id: str, tenant: Tenant) -> JobRecord:
    """The job, or 404 `job_not_found` (a malformed id too: it is not echoed; another tenant's too)."""
    if not JOB_ID_RE.fullmatch(job_id):
        raise ApiError(404, "job_not_found", "no job with this id (ids are 32 hex digits)")
    try:
        record = await asyncio.to_thread(svc.jobs.get, job_id)
    except (JobNotFoundError, InvalidKeyPartError):
        record = None
    if record is None or not tenant.owns(record.owner):
        raise ApiError(404, "job_not_found", f"no job with id {job_id!r}")
    return record


@router.get("/v1/jobs/{job_id}")
async def get_job(job_id: str, request: Request, svc: Svc, tenant: CurrentTenant) -> JobView:
    """Status, progress, stage, error, and the result with presigned URLs once it succeeded."""
    return job_view(await load_job(svc, job_id, tenant), svc.storage, str(request.base_url))


@router.get("/v1/jobs/{job_id}/events", response_class=StreamingResponse)
async def get_job_events(
    job_id: str,
    request: Request,
    svc: Svc,
    tenant: CurrentTenant,
    last_event_id: Annotated[str | None, Header(max_length=32)] = None,
) -> StreamingResponse:
    """Server-Sent Events (`status`, `stage`, `progress`, `retry`, `result`, `error`, `end`) until the job
    reaches a terminal status; `Last-Event-ID` resumes. Formats: deployments/http/job_events.py."""
    record = await load_job(svc, job_id, tenant)
    stream = job_events(request.app, record, str(request.base_url), last_event_id)
    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(stream, media_type="text/event-stream", headers=headers)


@router.get("/v1/jobs/{job_id}/report")
async def get_job_report(job_id: str, svc: Svc, tenant: CurrentTenant) -> JobReport:
    """Per-stage timings, peak memory, retries, fan-out segments, checkpoint sizes, the weights each
    model ran with, and the failure (stage, error, attempt) if the job failed."""
    record = await asyncio.to_thread(svc.jobs.with_facts, await load_job(svc, job_id, tenant))
    return job_report(record, svc.jobs.clock())


@router.delete("/v1/jobs/{job_id}", status_code=202)
async def cancel_job(job_id: str, request: Request, svc: Svc, tenant: CurrentTenant) -> JobView:
    """Cancel: a queued job stops at once, a running one at its next stage boundary."""
    await load_job(svc, job_id, tenant)
    try:
        record = await asyncio.to_thread(svc.jobs.request_cancel, job_id)
    except JobFinishedError as e:
        raise ApiError(409, "job_finished", str(e)) from e
    return job_view(record, svc.storage, str(request.base_url))


@router.get("/v1/jobs")
async def list_jobs(
    request: Request,
    svc: Svc,
    tenant: CurrentTenant,
    status: JobStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    after: Annotated[str | None, Query(pattern=JOB_ID)] = None,
) -> JobList:
    """Newest first. Page with `after=<last id>`. A tenant sees its own jobs; an admin key sees all."""
    owner = None if tenant.admin else tenant.id
    records = await asyncio.to_thread(svc.jobs.list_records, status, limit, after, 2000, owner)
    views = [job_view(r, svc.storage, str(request.base_url)) for r in records]
    return JobList(jobs=views, next_after=views[-1].id if len(views) == limit else None)
