"""S3 request latency and errors, from botocore's own call events (no wrapper around each call):
`before-call` notes the start in the call's context, `after-call` (an answer, any status) and
`after-call-error` (no answer: refused, reset, timed out) record it (`infra.metrics`)."""

from __future__ import annotations

import time
from typing import Any

from infra import metrics

_STARTED = "soundstage_started"


def observe_s3_calls(client: Any) -> None:
    """Record every API call `client` (a boto3 S3 client) makes."""
    events = client.meta.events
    events.register("before-call.s3", _started)
    events.register("after-call.s3", _answered)
    events.register("after-call-error.s3", _unanswered)


def _started(context: dict[str, Any], **_: Any) -> None:
    context[_STARTED] = time.monotonic()  # returns None: a value would stand in for the S3 answer


def _answered(
    http_response: Any, parsed: dict[str, Any], model: Any, context: dict[str, Any], **_: Any
) -> None:
    status = int(http_response.status_code)
    outcome = "ok" if status < 300 else "client_error" if status < 500 else "server_error"
    _observe(model.name, outcome, context)
    if status >= 300:
        code = str((parsed.get("Error") or {}).get("Code") or status)
        metrics.record(metrics.S3_ERRORS, operation=model.name, error=code)


def _unanswered(exception: BaseException, context: dict[str, Any], event_name: str, **_: Any) -> None:
    operation = event_name.rsplit(".", 1)[-1]
    _observe(operation, "unreachable", context)
    metrics.record(metrics.S3_ERRORS, operation=operation, error=type(exception).__name__)


def _observe(operation: str, outcome: str, context: dict[str, Any]) -> None:
    started = context.pop(_STARTED, None)
    if started is not None:
        metrics.record(metrics.S3_REQUEST, time.monotonic() - started, operation=operation, outcome=outcome)
