"""Per-key quotas at the edge (`infra/quotas.py` keeps the counts): requests per minute, concurrent
jobs, generated + processed audio-seconds per day. Over a limit: 429 `quota_exceeded`, with
`Retry-After` and a message naming the limit.

`RequestRate` is ASGI middleware after the key check, so a tenant over its rate is refused before its
body is read. Jobs reserve a concurrency slot and charge their audio-seconds before the record is
created (`JobQuota`); synchronous routes charge the audio they process (`charge_processed`); speech
reserves an estimate of the audio it will generate and settles on what it generated (`SpeechCharge`).
The open API (no keys configured) has no tenants and no quotas.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from deployments.http.errors import ApiError, ASGIApp, Receive, Scope, Send, error_response
from infra.audio import Audio
from infra.jobs import new_job_id
from infra.quotas import QuotaExceededError, QuotaStore
from infra.settings import Settings
from infra.storage import StorageError
from infra.tenancy import Tenant
from infra.uploads import upload_info

logger = logging.getLogger(__name__)


def quota_error(error: QuotaExceededError) -> ApiError:
    """429 naming the limit, with `Retry-After`."""
    return ApiError(429, error.code, str(error), headers={"Retry-After": str(error.retry_after_s)})


class RequestRate:
    """Count every `/v1` request of a keyed tenant against its `requests_per_minute`; 429 over it. A store
    that cannot be reached lets the request through (the routes answer 503 for it themselves)."""

    def __init__(self, app: ASGIApp, quotas: QuotaStore, settings: Settings) -> None:
        self.app = app
        self.quotas = quotas
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # `Authenticate` puts the tenant on every `/v1` HTTP request, and only there.
        tenant: Tenant | None = (scope.get("state") or {}).get("tenant")
        who = tenant.id if tenant is not None else None
        per_minute = self.settings.quota_for(who).requests_per_minute if who is not None else None
        if who is not None and per_minute is not None:
            try:
                await asyncio.to_thread(self.quotas.count_request, who, per_minute)
            except QuotaExceededError as e:
                headers = {"Retry-After": str(e.retry_after_s)}
                response = error_response(429, e.code, str(e), headers, path=str(scope.get("path", "")))
                await response(scope, receive, send)
                return
            except StorageError:
                logger.warning("request rate not counted: the store is unreachable")
        await self.app(scope, receive, send)


def audio_seconds(request: BaseModel, input_s: float = 0.0) -> float:
    """What a job costs: the audio it generates (every `duration_s` / `*_duration_s` field it asks for)
    plus the audio it processes (`input_s`, its input's duration), in seconds."""
    generated = 0.0
    for name, value in request:
        if (name == "duration_s" or name.endswith("_duration_s")) and isinstance(value, int | float):
            generated += float(value)
    return round(generated + input_s, 6)


@dataclass
class JobQuota:
    """The slot and audio-seconds reserved for one job about to be created under `job_id`."""

    quotas: QuotaStore
    tenant: str | None
    job_id: str
    seconds: float = 0.0
    held: bool = False

    @classmethod
    async def reserve(
        cls, quotas: QuotaStore, settings: Settings, tenant: Tenant, request: BaseModel, now: float
    ) -> JobQuota:
        """Reserve a concurrency slot, then charge the job's audio-seconds (429 if either is over)."""
        ticket = cls(quotas, tenant.id, new_job_id(now))
        if tenant.id is None:
            return ticket
        limits = settings.quota_for(tenant.id)
        try:
            await asyncio.to_thread(quotas.hold_job, tenant.id, ticket.job_id, limits.concurrent_jobs)
            ticket.held = True
            if limits.audio_seconds_per_day is not None:
                seconds = audio_seconds(request, await _input_seconds(quotas, request))
                await asyncio.to_thread(quotas.charge_audio, tenant.id, seconds, limits.audio_seconds_per_day)
                ticket.seconds = seconds
        except QuotaExceededError as e:
            await ticket.cancel()
            raise quota_error(e) from e
        except BaseException:
            await ticket.cancel()
            raise
        return ticket

    async def settle(self, job_id: str, created: bool) -> None:
        """After `JobStore.create`: a job that already existed (an idempotent resubmission) takes back
        the reservation; one created under another id (a crash-recovered key) keeps its slot."""
        if self.tenant is None or job_id == self.job_id:
            return
        if not created:
            await self.cancel()
            return
        await asyncio.to_thread(self.quotas.release_job, self.tenant, self.job_id)
        await asyncio.to_thread(self.quotas.hold_job, self.tenant, job_id, None)

    async def cancel(self) -> None:
        """Give back what was reserved (the job was not created)."""
        if self.tenant is None:
            return
        if self.held:
            await asyncio.to_thread(self.quotas.release_job, self.tenant, self.job_id)
            self.held = False
        if self.seconds:
            await asyncio.to_thread(self.quotas.refund_audio, self.tenant, self.seconds)
            self.seconds = 0.0


async def _input_seconds(quotas: QuotaStore, request: BaseModel) -> float:
    upload_id: Any = getattr(request, "upload_id", None)
    if not isinstance(upload_id, str):
        return 0.0
    info = await asyncio.to_thread(upload_info, quotas.storage, upload_id)
    return info.duration_s


async def charge_processed(quotas: QuotaStore, settings: Settings, tenant: Tenant, seconds: float) -> None:
    """Charge a synchronous route's input audio against the tenant's audio-seconds (429 over it)."""
    if tenant.id is None:
        return
    per_day = settings.quota_for(tenant.id).audio_seconds_per_day
    if per_day is None:
        return
    try:
        await asyncio.to_thread(quotas.charge_audio, tenant.id, seconds, per_day)
    except QuotaExceededError as e:
        raise quota_error(e) from e


# Speech runs ~15 characters a second at speed 1 (English, the stock voices); the reservation is settled
# on the audio really generated, so the estimate only decides whether a request near the limit starts.
SPEECH_CHARS_PER_S = 15.0


@dataclass
class SpeechCharge:
    """The audio-seconds one speech request is charged: an estimate reserved before any synthesis (429
    when it does not fit today's quota), then the seconds really generated, counted as the sentences
    stream (`counted`) and settled once the response is over (`settle`: the difference charged or
    refunded). A stream a server fault cut short keeps what was reserved."""

    quotas: QuotaStore
    tenant: str | None
    reserved: float = 0.0
    generated: float = 0.0
    settled: bool = False

    @classmethod
    async def reserve(
        cls, quotas: QuotaStore, settings: Settings, tenant: Tenant, characters: int, speed: float
    ) -> SpeechCharge:
        charge = cls(quotas, tenant.id)
        if tenant.id is None:
            return charge
        per_day = settings.quota_for(tenant.id).audio_seconds_per_day
        estimate = round(characters / (SPEECH_CHARS_PER_S * speed), 3)
        try:
            await asyncio.to_thread(quotas.charge_audio, tenant.id, estimate, per_day)
        except QuotaExceededError as e:
            raise quota_error(e) from e
        charge.reserved = estimate
        return charge

    async def counted(self, stream: AsyncIterator[Audio]) -> AsyncIterator[Audio]:
        """`stream`, adding each sentence's duration to what is charged."""
        async for audio in stream:
            self.generated += audio.duration_s
            yield audio

    async def settle(self) -> None:
        """Charge the generated seconds instead of the estimate (never refused: the audio was made)."""
        if self.tenant is None or self.settled:
            return
        self.settled = True
        difference = round(self.generated - self.reserved, 6)
        if difference > 0:
            await asyncio.to_thread(self.quotas.charge_audio, self.tenant, difference, None)
        elif difference < 0:
            await asyncio.to_thread(self.quotas.refund_audio, self.tenant, -difference)
