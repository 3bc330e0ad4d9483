"""Webhook deliveries, sent by the job runners: each pending delivery of a finished job is claimed by a
short lease in the job record, POSTed signed (infra/webhooks.py), and its attempt recorded in the record;
a failed attempt is due again after an exponential backoff, until `webhook_max_attempts`.

The payload is Standard Webhooks' shape, `{"type": "job.succeeded", "timestamp": ISO-8601, "data": job}`,
where `data` is the job as `GET /v1/jobs/{id}` shows it (presigned URLs fresh at each attempt). Unless
`SOUNDSTAGE_ALLOW_PRIVATE_WEBHOOKS` is set, the receiver's host must resolve only to public addresses
and its port be one of `SOUNDSTAGE_URL_ALLOWED_PORTS`; the connection goes to the address checked. A 2xx
answer is a delivery; no redirect is followed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import urlsplit

import httpx

from deployments.http.schemas import job_view
from infra import metrics
from infra.jobs import JobNotFoundError, JobRecord, JobStore
from infra.net_guard import pinned_url, public_address
from infra.settings import Settings
from infra.webhooks import PendingDelivery, WebhookAttempt, retry_delay_s, signed_headers

logger = logging.getLogger(__name__)
T = TypeVar("T")
_LEASE_SLACK_S = 5.0


class DeliveryRefusedError(Exception):
    """The receiver may not be reached (SSRF guard): the delivery is not retried."""


class WebhookSender:
    """Delivers the pending webhooks of finished jobs. `offload` runs a blocking store call off the loop."""

    def __init__(
        self,
        jobs: JobStore,
        settings: Settings,
        offload: Callable[[Callable[[], Any]], Any] | None = None,
    ) -> None:
        self.jobs = jobs
        self.settings = settings
        self._offload = offload

    async def _io(self, call: Callable[[], T]) -> T:
        if self._offload is not None:
            result: T = await self._offload(call)
            return result
        return await asyncio.to_thread(call)

    async def sweep(self) -> int:
        """Deliver what is due for every job that owes a delivery; returns the attempts made."""
        made = 0
        for job_id in await self._io(self.jobs.webhook_job_ids):
            try:
                made += await self.deliver_due(job_id)
            except JobNotFoundError:
                continue
            except Exception:
                logger.exception("webhook delivery failed; trying again next sweep", extra={"job_id": job_id})
        return made

    async def deliver_due(self, job_id: str) -> int:
        """Attempt each due delivery of `job_id` once; returns how many attempts were made."""
        made = 0
        while (claimed := await self._io(lambda: self._claim(job_id))) is not None:
            record, delivery = claimed
            attempt = await self._attempt(record, delivery)
            await self._io(lambda: self._record(job_id, delivery, attempt))  # noqa: B023
            made += 1
        return made

    def _claim(self, job_id: str) -> tuple[JobRecord, PendingDelivery] | None:
        """Lease one due delivery (compare-and-swap on the record), or None when none is due."""
        taken: list[PendingDelivery] = []

        def lease(record: JobRecord) -> None:
            taken.clear()
            now = self.jobs.clock()
            for pending in record.webhook_pending:
                if pending.due(now):
                    pending.lease_until = now + self.settings.webhook_timeout_s + _LEASE_SLACK_S
                    taken.append(pending.model_copy())
                    return

        record = self.jobs.update(job_id, lease)
        return (record, taken[0]) if taken else None

    def _record(self, job_id: str, delivery: PendingDelivery, attempt: WebhookAttempt) -> None:
        def note(record: JobRecord) -> None:
            record.webhook_attempts.append(attempt)
            kept = [p for p in record.webhook_pending if p.id != delivery.id]
            if not attempt.final:
                retry = delivery.model_copy(
                    update={
                        "attempts": attempt.attempt,
                        "lease_until": None,
                        "next_attempt_at": attempt.at
                        + retry_delay_s(attempt.attempt, self.settings.webhook_retry_base_s),
                    }
                )
                kept.append(retry)
            record.webhook_pending = kept

        self.jobs.update(job_id, note)
        outcome = "delivered" if attempt.delivered else "failed" if attempt.final else "retry"
        metrics.record(metrics.WEBHOOK_DELIVERIES, event=delivery.event, outcome=outcome)
        logger.info(
            "webhook attempt",
            extra={"job_id": job_id, "delivery": delivery.id, "ok": attempt.delivered, "n": attempt.attempt},
        )

    async def _attempt(self, record: JobRecord, delivery: PendingDelivery) -> WebhookAttempt:
        number = delivery.attempts + 1
        started, at = time.monotonic(), self.jobs.clock()
        status: int | None = None
        error: str | None = None
        refused = False
        try:
            status = await self._post(record, delivery, int(at))
        except DeliveryRefusedError as e:
            error, refused = str(e), True
        except (httpx.HTTPError, TimeoutError, OSError) as e:
            error = f"no answer: {type(e).__name__}"
        delivered = status is not None and 200 <= status < 300
        if status is not None and not delivered:
            error = f"answered {status}"
        final = delivered or refused or number >= self.settings.webhook_max_attempts
        return WebhookAttempt(
            delivery_id=delivery.id,
            event=delivery.event,
            attempt=number,
            at=at,
            status_code=status,
            error=error,
            duration_ms=round((time.monotonic() - started) * 1000, 1),
            delivered=delivered,
            final=final,
        )

    async def _post(self, record: JobRecord, delivery: PendingDelivery, timestamp: int) -> int:
        secret = self.settings.webhook_secret
        if secret is None or record.webhook is None:
            raise DeliveryRefusedError("webhooks are not configured (SOUNDSTAGE_WEBHOOK_SECRET)")
        body = self.payload(record, delivery, timestamp)
        headers = signed_headers(secret.get_secret_value(), delivery.id, timestamp, body)
        url = record.webhook.url
        async with asyncio.timeout(self.settings.webhook_timeout_s):
            target, extensions = await self._target(url)
            parts = urlsplit(url)
            async with httpx.AsyncClient(follow_redirects=False, trust_env=False, timeout=None) as client:
                request = client.build_request(
                    "POST",
                    target,
                    content=body,
                    headers={**headers, "Host": parts.netloc},
                    extensions=extensions,
                )
                response = await client.send(request)
                return response.status_code

    async def _target(self, url: str) -> tuple[str, dict[str, str]]:
        """The URL to connect to: `url` itself, or (guard on) `url` pinned to its checked address."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise DeliveryRefusedError("the webhook URL is not an absolute http(s) URL")
        if self.settings.allow_private_webhooks:
            return url, {}
        port = parts.port or (443 if parts.scheme == "https" else 80)
        address = await public_address(parts.hostname, port)
        if port not in self.settings.url_allowed_ports or address is None:
            raise DeliveryRefusedError("the webhook host is not public or its port is not allowed")
        return pinned_url(url, address), {"sni_hostname": parts.hostname}

    def payload(self, record: JobRecord, delivery: PendingDelivery, timestamp: int) -> bytes:
        view = job_view(record, self.jobs.storage, self.settings.public_base_url or "")
        event = {
            "type": delivery.event,
            "timestamp": datetime.fromtimestamp(timestamp, UTC).isoformat().replace("+00:00", "Z"),
            "data": view.model_dump(mode="json"),
        }
        return json.dumps(event, separators=(",", ":")).encode()
