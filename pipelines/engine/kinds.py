"""A job kind: its request model, what is checked before the job exists, its stages and its version.

Each kind lives in one module under `pipelines/jobs/` and is listed once in `pipelines/engine/registry.py`;
the HTTP jobs router (`deployments/http/jobs.py`) derives `POST /v1/jobs/{name}` from it and the runner
validates the stored request with `request` once per attempt.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel

from infra.jobs import JobStore
from infra.settings import Settings
from infra.storage import Storage
from pipelines.engine.clients import Models
from pipelines.engine.stages import Stage

R = TypeVar("R", bound=BaseModel)
InputKind = Literal["file", "upload_id", "url"]


class AdmissionError(ValueError):
    """A request refused before its job exists. `status` is the HTTP status it maps to (404 for a missing
    upload or voice, 409 for a source job that did not succeed, else 422), `code` a stable error code."""

    def __init__(self, code: str, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.code = code
        self.status = status


@dataclass(frozen=True)
class Admission:
    """What `admit` may consult: the object store, the job store, the settings and the model clients.
    `owner` is the tenant the job will belong to, which the voices and uploads it names must belong to
    too (None: no such check, for an admin key or the open API)."""

    storage: Storage
    jobs: JobStore
    settings: Settings
    models: Models
    owner: str | None = None


async def admit_as_is(request: Any, admission: Admission) -> Any:
    """The default `admit`: nothing to check beyond the request model."""
    return request


@dataclass(frozen=True)
class JobKind(Generic[R]):
    """`name` is the URL segment and the record's `kind`. `inputs`: with any, the HTTP route takes a
    multipart form whose audio (a `file`, an `upload_id` or a `url`) becomes the request's `upload_id`;
    without, a JSON body; `other_sources` names request fields that may stand instead of the audio input
    (a loop's `job_id`). `admit` checks (and may complete, e.g. fix a seed) a request before the job is
    created; it raises `AdmissionError`. `version` joins every stage fingerprint: bump it when a change to
    the stages makes old checkpoints wrong."""

    name: str
    request: type[R]
    stages: tuple[Stage[R], ...]
    admit: Callable[[R, Admission], Awaitable[R]] = admit_as_is
    inputs: frozenset[InputKind] = frozenset()
    other_sources: tuple[str, ...] = ()
    version: int = 1
    stage_timeout_s: float | None = None  # None: settings.job_stage_timeout_s
    timeout_s: float | None = None  # None: settings.job_timeout_s
    summary: str = ""
