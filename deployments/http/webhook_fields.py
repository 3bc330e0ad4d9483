"""The webhook fields every job submission accepts, beside its kind's request: `webhook_url` and
`webhook_events`. They are not part of the job's request (nor of its hash): they travel as the record's
`webhook` (infra/webhooks.py), so no kind's request model carries them.

A JSON submission's body model is the kind's request model plus these two fields; a form submission
takes them as two more form fields (`webhook_events` comma-separated). With the SSRF guard on (unless
`SOUNDSTAGE_ALLOW_PRIVATE_WEBHOOKS`), the URL's host must resolve to public addresses only and its port be
an allowed one, checked here for a quick 422 and again, pinned, at each delivery.
"""

from __future__ import annotations

import functools
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, ValidationError, create_model

from deployments.http.errors import ApiError
from infra.net_guard import public_address
from infra.settings import Settings
from infra.webhooks import WEBHOOK_EVENTS, WebhookEvent, WebhookSpec

WEBHOOK_FIELDS = ("webhook_url", "webhook_events")
URL_DESCRIPTION = "Where the job's terminal status is POSTed, signed (Standard Webhooks)."
EVENTS_DESCRIPTION = f"Which terminal events to deliver (default all): {', '.join(WEBHOOK_EVENTS)}."


def with_webhook_fields(request: type[BaseModel]) -> type[BaseModel]:
    """`request` plus the optional `webhook_url` / `webhook_events` (the JSON body of a submission)."""
    return _with_webhook_fields(request)


@functools.cache
def _with_webhook_fields(request: Any) -> type[BaseModel]:
    fields: Any = {
        "webhook_url": (str | None, Field(default=None, max_length=2048, description=URL_DESCRIPTION)),
        "webhook_events": (
            list[WebhookEvent] | None,
            Field(default=None, min_length=1, description=EVENTS_DESCRIPTION),
        ),
    }
    return create_model(request.__name__, __base__=request, __module__=request.__module__, **fields)


def split_request(body: BaseModel, request: type[BaseModel]) -> tuple[BaseModel, str | None, Any]:
    """The kind's own request (without the webhook fields), the webhook URL and its events."""
    if type(body) is request:
        return body, None, None
    # Only what the client sent, as sent: an idempotent resubmission compares those fields.
    sent = [name for name in request.model_fields if name in body.model_fields_set]
    own = request.model_validate({name: getattr(body, name) for name in sent})
    return own, getattr(body, "webhook_url", None), getattr(body, "webhook_events", None)


def form_events(value: str | None) -> list[str] | None:
    """A form's `webhook_events`: comma-separated event names."""
    return None if value is None else [part.strip() for part in value.split(",") if part.strip()]


async def webhook_spec(url: str | None, events: Any, settings: Settings) -> WebhookSpec | None:
    """The job's `WebhookSpec`, or None without a URL; 422 for a URL that is bad or not allowed."""
    if url is None:
        if events is not None:
            raise ApiError(422, "invalid_webhook", "`webhook_events` needs a `webhook_url`")
        return None
    if settings.webhook_secret is None:
        raise ApiError(422, "webhooks_disabled", "webhooks are not enabled on this server")
    parts = urlsplit(url)
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise ApiError(422, "invalid_webhook", "`webhook_url` has an invalid port") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ApiError(422, "invalid_webhook", "`webhook_url` must be an absolute http(s) URL")
    if not settings.allow_private_webhooks and (
        port not in settings.url_allowed_ports or await public_address(parts.hostname, port) is None
    ):
        raise ApiError(
            422,
            "webhook_not_allowed",
            "`webhook_url` is not allowed: its host must be public and its port one of the allowed ports",
        )
    try:
        return WebhookSpec(url=url, events=tuple(events) if events is not None else WEBHOOK_EVENTS)
    except ValidationError:
        allowed = ", ".join(WEBHOOK_EVENTS)
        raise ApiError(422, "invalid_webhook", f"`webhook_events` must name events of: {allowed}") from None
