"""Response bodies of the HTTP API (request bodies live with their pipelines)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from infra.jobs import JobError, JobRecord, JobStatus
from infra.storage import Storage


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
    attempt: int
    cancel_requested: bool
    request: dict[str, Any]
    stages: list[StageView]
    error: JobError | None
    result: dict[str, Any] | None
    created_at: float
    started_at: float | None
    finished_at: float | None


class JobList(BaseModel):
    jobs: list[JobView]
    next_after: str | None


class DeploymentView(BaseModel):
    deployment: str
    status: str
    replicas: dict[str, int]
    model: dict[str, Any] | None = None


class ModelsView(BaseModel):
    deployments: list[DeploymentView]

    @classmethod
    def build(cls, infos: dict[str, dict[str, Any]], deployments: dict[str, Any]) -> ModelsView:
        """`infos`: deployment name → model info; `deployments`: the app's entries of `serve.status()`."""
        return cls(
            deployments=[
                DeploymentView(
                    deployment=name,
                    status=str(getattr(d.status, "value", d.status)),
                    replicas={str(getattr(k, "value", k)): int(v) for k, v in d.replica_states.items()},
                    model=infos.get(name),
                )
                for name, d in deployments.items()
            ]
        )


def _with_urls(result: dict[str, Any], storage: Storage) -> dict[str, Any]:
    """Add a fresh presigned GET `url` next to every stored object `key` in the result."""
    out: dict[str, Any] = {}
    for name, value in result.items():
        if isinstance(value, dict) and "key" in value:
            filename = str(value["key"]).rsplit("/", 1)[-1]
            value = {**value, "url": storage.presigned_url(value["key"], filename=filename)}
        out[name] = value
    return out


def job_view(record: JobRecord, storage: Storage, base_url: str) -> JobView:
    return JobView(
        id=record.id,
        kind=record.kind,
        status=record.status,
        status_url=f"{base_url.rstrip('/')}/v1/jobs/{record.id}",
        progress=round(record.progress, 4),
        stage=record.stage,
        attempt=record.attempt,
        cancel_requested=record.cancel_requested,
        request=record.request,
        stages=[StageView.model_validate(s.model_dump()) for s in record.stages],
        error=record.error,
        result=_with_urls(record.result, storage) if record.result else None,
        created_at=record.created_at,
        started_at=record.started_at,
        finished_at=record.finished_at,
    )
