"""The metrics sink of every Serve replica: `infra.metrics` records become `ray.util.metrics` series,
which Ray's metrics agent exports on its Prometheus endpoint beside Serve's own (`ray_` prefix).

`install_ray_metrics()` runs where a replica starts (ingress, runner, model hosts); `timed_model_call`
and `record_batch` are the model clients' and batched deployments' one-line hooks."""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from infra import metrics
from infra.metrics import Metric

T = TypeVar("T")


class RayMetricsSink:
    """One `ray.util.metrics` Counter or Histogram per catalogue entry, made when first recorded (in
    the process that records it, as Ray requires)."""

    def __init__(self) -> None:
        self._series: dict[str, Any] = {}
        self._lock = threading.Lock()

    def record(self, metric: Metric, value: float, tags: dict[str, str]) -> None:
        series = self._series.get(metric.name) or self._make(metric)
        if metric.kind == "counter":
            series.inc(value, tags=tags)
        else:
            series.observe(value, tags=tags)

    def _make(self, metric: Metric) -> Any:
        from ray.util import metrics as ray_metrics

        with self._lock:
            if metric.name not in self._series:
                series: Any = (
                    ray_metrics.Counter(metric.name, metric.description, tag_keys=metric.tags)
                    if metric.kind == "counter"
                    else ray_metrics.Histogram(
                        metric.name, metric.description, list(metric.boundaries), tag_keys=metric.tags
                    )
                )
                self._series[metric.name] = series
            return self._series[metric.name]


def install_ray_metrics() -> None:
    """Record this process's metrics through Ray: in a process Ray runs (a replica), once. A no-op
    elsewhere (a runner or ingress built in-process by a test) and when a sink is installed already."""
    import ray

    if ray.is_initialized() and metrics.installed_sink() is None:
        metrics.install_sink(RayMetricsSink())


def timed_model_call(call: Callable[..., Coroutine[Any, Any, T]]) -> Callable[..., Coroutine[Any, Any, T]]:
    """Wrap `DeploymentClient._call(self, method, **kwargs)`: its latency by deployment, method and
    outcome (ok, error, cancelled)."""

    @functools.wraps(call)
    async def timed(self: Any, method: str, **kwargs: Any) -> T:
        started, outcome = time.monotonic(), "error"
        try:
            result = await call(self, method, **kwargs)
            outcome = "ok"
            return result
        except BaseException as e:
            outcome = "error" if isinstance(e, Exception) else "cancelled"
            raise
        finally:
            elapsed = time.monotonic() - started
            metrics.record(
                metrics.MODEL_CALL, elapsed, deployment=self.deployment, method=method, outcome=outcome
            )

    return timed


def record_batch(size: int) -> None:
    """A batched model call of `size` requests, tagged with the replica's deployment."""
    from ray import serve

    metrics.record(metrics.MODEL_BATCH, float(size), deployment=serve.get_replica_context().deployment)
