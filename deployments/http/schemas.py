"""Response bodies of the HTTP API (request bodies live with their pipelines)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from deployments.families.warmth import DeploymentWarmth, replica_counts
from infra.jobs import JobError, JobRecord, JobStatus, SegmentProgress
from infra.storage import Storage
from infra.webhooks import PendingDelivery, WebhookAttempt, WebhookSpec


class StageView(BaseModel):
    index: int
    name: str
    duration_s: float
    retries: int
    attempt: int
    peak_memory_bytes: int


class JobView(BaseModel):
    id: str
    kind: str
    status: JobStatus
    status_url: str
    progress: float
    stage: str | None
    segments: SegmentProgress | None = None
    detail: str | None = Field(
        default=None,
        description="What the job waits for, e.g. `waiting for model StableAudio` (a cold start).",
    )
    attempt: int
    cancel_requested: bool
    request: dict[str, Any]
    stages: list[StageView]
    error: JobError | None
    result: dict[str, Any] | None
    outputs_expired_at: float | None = None  # retention deleted the outputs: `result` is then null
    created_at: float
    started_at: float | None
    finished_at: float | None


class StageReport(BaseModel):
    index: int
    name: str
    attempt: int
    duration_s: float
    peak_memory_bytes: int
    retries: int
    retried_errors: list[str]
    segments: int
    checkpoint_bytes: int
    objects: dict[str, int]
    models: dict[str, dict[str, Any]]
    facts: dict[str, Any] = Field(description="What the stage found (e.g. quality attempts, lines).")


class JobReport(BaseModel):
    """`GET /v1/jobs/{id}/report`: where a job's time and memory went, and how it failed if it did."""

    id: str
    kind: str
    status: JobStatus
    attempt: int
    wall_s: float | None = Field(description="Start of the first attempt to the end (or now).")
    queued_s: float | None = Field(description="Creation to the first claim.")
    stage_compute_s: float = Field(description="Sum of the committed stages' durations.")
    checkpoint_bytes: int
    weights: dict[str, str | None] = Field(description="Deployment → weights kind it ran with.")
    debug_weights: list[str] = Field(description="Deployments that ran random-init `debug…` weights.")
    stages: list[StageReport]
    failure: JobError | None
    webhook: WebhookSpec | None = None
    webhook_attempts: list[WebhookAttempt] = Field(
        default_factory=list, description="Every delivery attempt."
    )
    webhook_pending: list[PendingDelivery] = Field(default_factory=list, description="Deliveries still owed.")


class JobList(BaseModel):
    jobs: list[JobView]
    next_after: str | None


class DeploymentView(BaseModel):
    deployment: str
    status: str
    replicas: dict[str, int]
    warmth: str = Field(
        description="`warm` (a replica runs), `starting` (a cold start under way) or `cold` (scaled to zero)."
    )
    model: dict[str, Any] | None = Field(
        default=None, description="The model's card; for a cold deployment the last one seen (or null)."
    )


class ModelsView(BaseModel):
    deployments: list[DeploymentView]

    @classmethod
    def build(cls, infos: dict[str, dict[str, Any]], deployments: dict[str, Any]) -> ModelsView:
        """`infos`: deployment name → model info; `deployments`: the app's entries of `serve.status()`."""
        views = []
        for name, d in deployments.items():
            replicas = replica_counts(d)
            views.append(
                DeploymentView(
                    deployment=name,
                    status=str(getattr(d.status, "value", d.status)),
                    replicas=replicas,
                    warmth=DeploymentWarmth(name, replicas).warmth.value,
                    model=infos.get(name),
                )
            )
        return cls(deployments=views)


def _with_urls(result: dict[str, Any], storage: Storage) -> dict[str, Any]:
    """Add a fresh presigned GET `url` next to every stored object `key` in the result, also in lists
    and nested entries (a soundscape's `layers`)."""
    return {name: _with_url(value, storage) for name, value in result.items()}


def _with_url(value: Any, storage: Storage) -> Any:
    if isinstance(value, list):
        return [_with_url(item, storage) for item in value]
    if not isinstance(value, dict):
        return value
    if "key" in value:
        filename = str(value["key"]).rsplit("/", 1)[-1]
        return {**value, "url": storage.presigned_url(value["key"], filename=filename)}
    return {name: _with_url(item, storage) for name, item in value.items()}


def job_view(record: JobRecord, storage: Storage, base_url: str) -> JobView:
    return JobView(
        id=record.id,
        kind=record.kind,
        status=record.status,
        status_url=f"{base_url.rstrip('/')}/v1/jobs/{record.id}",
        progress=round(record.progress, 4),
        stage=record.stage,
        segments=record.segments,
        detail=record.detail,
        attempt=record.attempt,
        cancel_requested=record.cancel_requested,
        request=record.request,
        stages=[StageView.model_validate(s.model_dump()) for s in record.stages],
        error=record.error,
        result=_with_urls(record.result, storage)
        if record.result and not record.outputs_expired_at
        else None,
        outputs_expired_at=record.outputs_expired_at,
        created_at=record.created_at,
        started_at=record.started_at,
        finished_at=record.finished_at,
    )


def job_report(record: JobRecord, now: float) -> JobReport:
    stages = [
        StageReport(
            **s.model_dump(include=set(StageReport.model_fields) - {"objects", "checkpoint_bytes"}),
            objects=s.sizes,
            checkpoint_bytes=sum(s.sizes.values()),
        )
        for s in sorted(record.stages, key=lambda s: s.index)
    ]
    weights = {name: model.get("weights") for s in stages for name, model in s.models.items()}
    started = record.started_at
    return JobReport(
        id=record.id,
        kind=record.kind,
        status=record.status,
        attempt=record.attempt,
        wall_s=None if started is None else round((record.finished_at or now) - started, 3),
        queued_s=None if started is None else round(started - record.created_at, 3),
        stage_compute_s=round(sum(s.duration_s for s in stages), 3),
        checkpoint_bytes=sum(s.checkpoint_bytes for s in stages),
        weights=weights,
        debug_weights=sorted(name for name, kind in weights.items() if (kind or "").startswith("debug")),
        stages=stages,
        failure=record.error,
        webhook=record.webhook,
        webhook_attempts=record.webhook_attempts,
        webhook_pending=record.webhook_pending,
    )
