"""Webhook records and signatures: what a job asks to be told, what is still owed, what was attempted.

A job submitted with `webhook_url` carries a `WebhookSpec` in its record. When the job reaches a terminal
status, `JobStore` queues a `PendingDelivery` in the same compare-and-swap write (so a delivery is owed
exactly when the status is final, and survives any runner dying), and indexes the job under
`index/webhooks/`. Runners deliver pending ones (deployments/webhooks.py) and record every attempt.

Signatures follow the Standard Webhooks spec (https://www.standardwebhooks.com): headers `webhook-id`
(the delivery's id, the same on every retry), `webhook-timestamp` (seconds since the epoch, per attempt)
and `webhook-signature: v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`, keyed with the secret's
bytes: `whsec_<base64>` is decoded after its prefix; a secret without the prefix is used as UTF-8 bytes.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

WebhookEvent = Literal["job.succeeded", "job.failed", "job.cancelled"]
WEBHOOK_EVENTS: tuple[WebhookEvent, ...] = ("job.succeeded", "job.failed", "job.cancelled")
WEBHOOK_INDEX = "index/webhooks/"
SECRET_PREFIX = "whsec_"


class WebhookSpec(BaseModel):
    """Where a job's terminal status is delivered, and which statuses (all terminal ones by default)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    url: str = Field(max_length=2048)
    events: tuple[WebhookEvent, ...] = WEBHOOK_EVENTS


class PendingDelivery(BaseModel):
    """A delivery still owed: its id (the `webhook-id`), event, attempts so far, when it is next due, and
    the lease of the runner sending it now (another runner leaves it alone until then)."""

    id: str
    event: WebhookEvent
    attempts: int = 0
    next_attempt_at: float
    lease_until: float | None = None

    def due(self, now: float) -> bool:
        return self.next_attempt_at <= now and (self.lease_until is None or self.lease_until <= now)


class WebhookAttempt(BaseModel):
    """One delivery attempt as the job report shows it."""

    delivery_id: str
    event: WebhookEvent
    attempt: int
    at: float
    status_code: int | None = None
    error: str | None = None
    duration_ms: float
    delivered: bool
    final: bool = Field(description="No further attempt: delivered, refused for good, or out of attempts.")


def webhook_index_key(job_id: str) -> str:
    return f"{WEBHOOK_INDEX}{job_id}"


def event_for(status: str) -> WebhookEvent:
    """The event of a terminal job status (`succeeded` → `job.succeeded`)."""
    event = f"job.{status}"
    if event not in WEBHOOK_EVENTS:
        raise ValueError(f"no webhook event for status {status!r}; events are {', '.join(WEBHOOK_EVENTS)}")
    return event


def queue_delivery(spec: WebhookSpec | None, status: str, now: float) -> PendingDelivery | None:
    """The delivery a job owes on reaching terminal `status`, or None (no webhook, or event filtered)."""
    if spec is None:
        return None
    event = event_for(status)
    if event not in spec.events:
        return None
    return PendingDelivery(id=f"msg_{secrets.token_hex(12)}", event=event, next_attempt_at=now)


def retry_delay_s(attempts: int, base_s: float, cap_s: float = 3600.0) -> float:
    """Exponential backoff after the `attempts`-th failure: base, 2 x base, 4 x base, … up to `cap_s`."""
    return float(min(cap_s, base_s * 2 ** max(0, attempts - 1)))


def secret_key(secret: str) -> bytes:
    """The HMAC key of a `whsec_<base64>` secret (or of a plain secret, as UTF-8)."""
    if secret.startswith(SECRET_PREFIX):
        return base64.b64decode(secret[len(SECRET_PREFIX) :])
    return secret.encode()


def sign(secret: str, delivery_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` header value: `v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`."""
    signed = f"{delivery_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret_key(secret), signed, hashlib.sha256).digest()
    return f"v1,{base64.b64encode(digest).decode()}"


def signed_headers(secret: str, delivery_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    return {
        "webhook-id": delivery_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(secret, delivery_id, timestamp, body),
        "content-type": "application/json",
    }


def verify(secret: str, headers: dict[str, str], body: bytes, now: float, tolerance_s: float = 300) -> bool:
    """A receiver's check: one of the space-separated `v1,` signatures matches and the timestamp is
    within `tolerance_s` of `now` (replays of old deliveries are refused)."""
    lowered = {k.lower(): v for k, v in headers.items()}
    delivery_id, timestamp = lowered.get("webhook-id", ""), lowered.get("webhook-timestamp", "")
    if not timestamp.isdigit() or abs(now - int(timestamp)) > tolerance_s:
        return False
    expected = sign(secret, delivery_id, int(timestamp), body)
    given = lowered.get("webhook-signature", "").split()
    return any(hmac.compare_digest(expected, candidate) for candidate in given)
