"""Job records: their status, stage records, errors and ids (what `jobs/{id}/job.json` holds)."""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field

from infra.storage import check_id
from infra.webhooks import PendingDelivery, WebhookAttempt, WebhookSpec

_MAX_MS = 0xFFFFFFFFFFFF


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)


class JobNotFoundError(KeyError):
    """No job with that id."""


class JobFinishedError(RuntimeError):
    """The job already reached a final status."""


class StaleAttemptError(RuntimeError):
    """The writer's attempt was superseded (its lease expired and another runner claimed the job)."""


class IdempotencyConflictError(ValueError):
    """An `Idempotency-Key` was reused with a different request."""


class StageRecord(BaseModel):
    """One committed stage: where its objects are, what they hash to, what it cost."""

    index: int
    name: str
    prefix: str
    manifest_key: str
    fingerprint: str
    objects: dict[str, str] = Field(default_factory=dict, description="object name -> sha256")
    sizes: dict[str, int] = Field(default_factory=dict, description="object name -> bytes")
    models: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="deployment -> model_id, revision, weights of the model it ran"
    )
    facts: dict[str, Any] = Field(
        default_factory=dict, description="inline facts; empty when they are in the object `facts_key`"
    )
    facts_key: str | None = Field(
        default=None, description="the attempt's object holding facts too large for the record"
    )
    facts_sha256: str | None = None
    facts_bytes: int = 0
    duration_s: float
    peak_memory_bytes: int
    retries: int = 0
    retried_errors: list[str] = Field(default_factory=list, description="the transient errors retried")
    segments: int = 0
    attempt: int


class SegmentProgress(BaseModel):
    """Fan-out progress of the running stage: `done` of `total` segments (or lines) finished."""

    stage: str
    done: int
    total: int


class JobError(BaseModel):
    code: str
    message: str
    stage: str | None = None
    attempt: int = 0


class JobRecord(BaseModel):
    id: str
    kind: str
    request: dict[str, Any]
    status: JobStatus = JobStatus.QUEUED
    attempt: int = 0
    lease_owner: str | None = None
    lease_expires_at: float | None = None
    cancel_requested: bool = False
    stage: str | None = None
    progress: float = 0.0
    segments: SegmentProgress | None = None
    detail: str | None = None  # what the running stage waits for, e.g. "waiting for model StableAudio"
    stages: list[StageRecord] = Field(default_factory=list)
    error: JobError | None = None
    result: dict[str, Any] | None = None
    request_hash: str = ""
    outputs_expired_at: float | None = None  # set when retention deleted the outputs
    owner: str | None = None  # the tenant (API key) that made it; None: made without tenancy
    webhook: WebhookSpec | None = None  # where the terminal status is delivered (infra/webhooks.py)
    webhook_pending: list[PendingDelivery] = Field(default_factory=list)
    webhook_attempts: list[WebhookAttempt] = Field(default_factory=list)
    created_at: float
    updated_at: float
    started_at: float | None = None
    finished_at: float | None = None

    def lease_expired(self, now: float) -> bool:
        return self.lease_expires_at is None or self.lease_expires_at <= now

    def claimable(self, now: float) -> bool:
        if self.status is JobStatus.QUEUED:
            return True
        return self.status is JobStatus.RUNNING and self.lease_expired(now)


def new_job_id(now: float | None = None) -> str:
    """32 hex characters whose order is newest-first (inverted milliseconds, then randomness)."""
    ms = int((time.time() if now is None else now) * 1000)
    return f"{_MAX_MS - ms:012x}{secrets.token_hex(10)}"


def job_created_at(job_id: str) -> float:
    """When `job_id` was made (seconds since the epoch), read back from its first 12 hex digits."""
    return (_MAX_MS - int(check_id(job_id)[:12], 16)) / 1000


def request_hash(kind: str, request: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps([kind, request], sort_keys=True).encode()).hexdigest()
