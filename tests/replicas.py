"""Kill Serve replicas from a test: the failure every durable job must survive.

Serve replicas are named Ray actors in the `serve` namespace, `SERVE_REPLICA::<app>#<deployment>#<id>`;
`ray.kill(..., no_restart=True)` makes the replica die the way a crashed node's would, and Serve
starts a replacement.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import Any

from deployments.tools.serve_config import APP_NAME
from infra.jobs import JobRecord, JobStore


def replica_names(deployment: str) -> list[str]:
    import ray

    actors = ray.util.list_named_actors(all_namespaces=True)
    marker = f"{APP_NAME}#{deployment}#"
    return sorted(a["name"] for a in actors if a["namespace"] == "serve" and marker in a["name"])


def kill_replica(name: str) -> None:
    import ray

    ray.kill(ray.get_actor(name, namespace="serve"), no_restart=True)


def kill_deployment_replicas(deployment: str) -> list[str]:
    """Kill every live replica of `deployment`; the names killed."""
    names = replica_names(deployment)
    assert names, f"no replica of {deployment} to kill"
    for name in names:
        kill_replica(name)
    return names


def ongoing_requests(name: str, timeout_s: float = 2.0) -> int:
    """Requests on replica `name` right now (executing, or with a slot reserved for dispatch), as the
    replica actor itself counts them; 0 for a replica that is gone or does not answer within `timeout_s`
    (one still starting)."""
    import ray
    from ray import exceptions

    try:
        actor = ray.get_actor(name, namespace="serve")
        count: Any = ray.get(actor.get_num_ongoing_requests.remote(), timeout=timeout_s)
        return int(count)
    except (ValueError, exceptions.GetTimeoutError, exceptions.RayActorError):
        return 0


def kill_replicas_while_busy(deployment: str, settle_s: float = 0.2, timeout_s: float = 60) -> dict[str, int]:
    """Wait until a replica of `deployment` has had requests in flight for `settle_s` without a break,
    then at once kill every live replica of it (the busy ones first); each one's in-flight count, asked
    just before the kill.

    The replica's own count, not a job record's `segments` progress: that is written at most twice a
    second, so a record that still says `done < total` can be read after the last segment finished, and
    a kill timed by it hits idle replicas. `settle_s`, because a replica counts a request as soon as it
    takes it, before Serve's router has its acceptance, and the router re-sends a request whose replica
    dies in that gap (milliseconds to tens of them) instead of failing it: killed then, nothing fails
    and nothing is retried by the caller. `settle_s` must stay well below one request's run time."""
    deadline = time.monotonic() + timeout_s
    busy_since: float | None = None
    while True:
        counts = {name: ongoing_requests(name) for name in replica_names(deployment)}
        busy = [name for name, count in counts.items() if count > 0]
        now = time.monotonic()
        busy_since = (now if busy_since is None else busy_since) if busy else None
        if busy_since is not None and now - busy_since >= settle_s:
            for name in [*busy, *(n for n in counts if n not in busy)]:
                with contextlib.suppress(ValueError):  # it died meanwhile
                    kill_replica(name)
            return counts
        assert now < deadline, f"no replica of {deployment} stayed busy for {settle_s} s: {counts}"
        time.sleep(0.01)


def kill_runner_of(record: JobRecord) -> str:
    """Kill the JobRunner replica holding `record`'s lease (owner is `<replica actor name>/<nonce>`)."""
    assert record.lease_owner, f"job {record.id} has no lease owner"
    name = record.lease_owner.rsplit("/", 1)[0]
    kill_replica(name)
    return name


def wait_until(
    jobs: JobStore, job_id: str, condition: Callable[[JobRecord], bool], timeout_s: float = 300
) -> JobRecord:
    """Poll the job record (straight from S3) until `condition` holds."""
    deadline = time.monotonic() + timeout_s
    record = jobs.get(job_id)
    while not condition(record):
        assert time.monotonic() < deadline, f"job never reached the condition: {record}"
        assert not record.status.finished, f"job ended before the condition held: {record}"
        time.sleep(0.05)
        record = jobs.get(job_id)
    return record
