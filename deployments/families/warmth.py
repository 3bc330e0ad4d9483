"""Which model deployments are cold: scaled to zero replicas (`min_replicas: 0` in serve_config.yaml).

Ray Serve 2.60 queues a handle call to a deployment with no replica in the caller's router (it counts
against the deployment's `max_queued_requests`; past it the call fails with `BackPressureError`), and the
router reports the queued call to the controller at once, which starts a replica; the call then runs on
it. So a call never fails for coldness, it waits for the cold start (the model's load time). Jobs use
that wait (the stage runner marks the job `waiting for model`); the HTTP edge must not hang a request on
it, so it asks here first and answers 503 + Retry-After while the model starts.

The replica counts come from `serve.status()` (one controller call), kept for `STATUS_TTL_S` per process
so that a burst of requests or a job's stages do not each ask the controller.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from deployments.serve_status import serve_status

STATUS_TTL_S = 1.0
_LIVE_STATES = {"STARTING", "UPDATING", "RECOVERING", "PENDING_MIGRATION"}


class Warmth(StrEnum):
    WARM = "warm"  # at least one replica is running
    STARTING = "starting"  # none running, one being started (a cold start under way)
    COLD = "cold"  # scaled to zero, nothing starting


@dataclass(frozen=True)
class DeploymentWarmth:
    """A deployment's replicas by state (`serve.status()`), and what that makes it."""

    deployment: str
    replicas: dict[str, int]

    @property
    def warmth(self) -> Warmth:
        if self.replicas.get("RUNNING", 0) > 0:
            return Warmth.WARM
        if any(self.replicas.get(state, 0) > 0 for state in _LIVE_STATES):
            return Warmth.STARTING
        return Warmth.COLD


def replica_counts(overview: Any) -> dict[str, int]:
    """`DeploymentStatusOverview.replica_states` as plain `{state: count}`."""
    return {str(getattr(k, "value", k)): int(v) for k, v in overview.replica_states.items()}


class _StatusCache:
    """This process's last `serve.status()` for its own application, at most `STATUS_TTL_S` old."""

    def __init__(self) -> None:
        self._at = -STATUS_TTL_S
        self._deployments: dict[str, DeploymentWarmth] = {}

    async def get(self, deployment: str) -> DeploymentWarmth | None:
        """The deployment's counts; None outside a Serve replica (nothing to ask) or for an unknown one."""
        app = _app_name()
        if app is None:
            return None
        if time.monotonic() - self._at >= STATUS_TTL_S:  # two callers racing here both ask: harmless
            self._deployments = await asyncio.to_thread(_read_status, app)
            self._at = time.monotonic()
        return self._deployments.get(deployment)


def _read_status(app: str) -> dict[str, DeploymentWarmth]:
    status = serve_status().applications.get(app)
    if status is None:
        return {}
    return {name: DeploymentWarmth(name, replica_counts(d)) for name, d in status.deployments.items()}


def _app_name() -> str | None:
    from ray import serve

    try:
        return str(serve.get_replica_context().app_name)
    except Exception:  # not inside a replica (a driver's own handle): no status to consult
        return None


_STATUS = _StatusCache()  # per process: a cache of the controller's view, not state of ours


async def warmth_of(deployment: str) -> Warmth:
    """`deployment`'s warmth; `WARM` where it cannot be known (outside a replica), so callers just call."""
    found = await _STATUS.get(deployment)
    return Warmth.WARM if found is None else found.warmth


async def cold_deployments(deployments: list[str]) -> list[str]:
    """Those of `deployments` with no running replica (cold, or starting)."""
    return [name for name in deployments if await warmth_of(name) is not Warmth.WARM]
