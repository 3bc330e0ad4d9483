"""Kill Serve replicas from a test: the failure every durable job must survive.

Serve replicas are named Ray actors in the `serve` namespace, `SERVE_REPLICA::<app>#<deployment>#<id>`;
`ray.kill(..., no_restart=True)` makes the replica die the way a crashed node's would, and Serve
starts a replacement.
"""

from __future__ import annotations

import time
from collections.abc import Callable

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
