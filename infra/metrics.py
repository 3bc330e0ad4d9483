"""Application metrics, without a metrics library: the catalogue of what soundstage measures, and the
process-wide sink that records it.

`infra` and `pipelines` may not import Ray, so they call `record(METRIC, value, **tags)` and nothing
more; a Serve replica installs a sink (`deployments/metrics.py`: `ray.util.metrics`, exported on Ray's
Prometheus endpoint beside Serve's own) when it starts. Until one is installed (a CLI, a test without
Ray), recording does nothing. A metric never fails the work it measures: a sink's error is logged.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Literal, Protocol

logger = logging.getLogger(__name__)
MetricKind = Literal["counter", "histogram"]
SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0)
LONG_SECONDS = (0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0)
BATCH_SIZES = (1, 2, 3, 4, 6, 8, 12, 16, 32)


@dataclass(frozen=True)
class Metric:
    """One series family: `name` (Prometheus shows it as `ray_<name>`, counters with `_total`), its
    kind, help text, tag keys (every `record` gives exactly these), and a histogram's bucket bounds."""

    name: str
    kind: MetricKind
    description: str
    tags: tuple[str, ...]
    boundaries: tuple[float, ...] = ()


JOBS_SUBMITTED = Metric("soundstage_jobs_submitted", "counter", "Jobs created, by kind.", ("kind",))
JOBS_FINISHED = Metric(
    "soundstage_jobs_finished", "counter", "Jobs that reached a terminal status.", ("kind", "status")
)
QUEUE_WAIT = Metric(
    "soundstage_job_queue_wait_seconds", "histogram", "Creation to first claim.", ("kind",), LONG_SECONDS
)
STAGE_DURATION = Metric(
    "soundstage_stage_duration_seconds",
    "histogram",
    "Committed stages' run time (retries included).",
    ("kind", "stage"),
    LONG_SECONDS,
)
STAGE_RETRIES = Metric(
    "soundstage_stage_retries",
    "counter",
    "Transient failures retried (a whole stage or one segment), by the error's type.",
    ("kind", "stage", "cause"),
)
MODEL_CALL = Metric(
    "soundstage_model_call_seconds",
    "histogram",
    "One model deployment call, from the caller (runner or ingress).",
    ("deployment", "method", "outcome"),
    SECONDS,
)
MODEL_BATCH = Metric(
    "soundstage_model_batch_size",
    "histogram",
    "Requests per batched model call.",
    ("deployment",),
    BATCH_SIZES,
)
S3_REQUEST = Metric(
    "soundstage_s3_request_seconds",
    "histogram",
    "One S3 API call (botocore's retries included).",
    ("operation", "outcome"),
    SECONDS,
)
S3_ERRORS = Metric(
    "soundstage_s3_errors", "counter", "S3 calls that failed, by error code.", ("operation", "error")
)
WEBHOOK_DELIVERIES = Metric(
    "soundstage_webhook_deliveries",
    "counter",
    "Webhook delivery attempts: delivered, retry (will be tried again) or failed (given up).",
    ("event", "outcome"),
)
CATALOGUE: tuple[Metric, ...] = (
    JOBS_SUBMITTED,
    JOBS_FINISHED,
    QUEUE_WAIT,
    STAGE_DURATION,
    STAGE_RETRIES,
    MODEL_CALL,
    MODEL_BATCH,
    S3_REQUEST,
    S3_ERRORS,
    WEBHOOK_DELIVERIES,
)


class MetricsSink(Protocol):
    """Where recorded values go: a counter adds `value`, a histogram observes it."""

    def record(self, metric: Metric, value: float, tags: dict[str, str]) -> None: ...


class _NoSink:
    def record(self, metric: Metric, value: float, tags: dict[str, str]) -> None:
        return None


_sink: MetricsSink = _NoSink()
_lock = threading.Lock()


def install_sink(sink: MetricsSink) -> None:
    """Send this process's metrics to `sink` (once per process; a later call replaces it)."""
    global _sink
    with _lock:
        _sink = sink


def installed_sink() -> MetricsSink | None:
    """The sink installed in this process, or None."""
    return None if isinstance(_sink, _NoSink) else _sink


def record(metric: Metric, value: float = 1.0, **tags: str) -> None:
    """Add `value` to a counter or observe it in a histogram; `tags` must name exactly `metric.tags`."""
    if set(tags) != set(metric.tags):  # a call site's slip: dropped, never a failed job
        logger.warning(
            "metric with the wrong tags dropped", extra={"metric": metric.name, "tags": list(tags)}
        )
        return
    try:
        _sink.record(metric, value, tags)
    except Exception:  # a metric never fails the work it measures
        logger.warning("metric not recorded", extra={"metric": metric.name}, exc_info=True)
