"""A runner replica dies mid-job (`ray.kill`): the lease expires, another replica re-claims the job
(attempt 2, the fence) and finishes it."""

from __future__ import annotations

import time

import pytest

from infra.client import SoundstageClient
from infra.jobs import JobStore
from infra.storage import Storage

pytestmark = pytest.mark.ray


def test_job_survives_its_runner_being_killed(base_url: str, storage: Storage) -> None:
    import ray

    client = SoundstageClient(base_url)
    jobs = JobStore(storage)
    job = client.submit("music", {"prompt": "survive this", "duration_s": 30.0, "seed": 5})
    deadline = time.monotonic() + 120
    record = jobs.get(job["id"])
    while not (record.status == "running" and record.stage == "generate"):
        assert time.monotonic() < deadline, f"job never started generating: {record}"
        time.sleep(0.1)
        record = jobs.get(job["id"])
    assert record.attempt == 1 and record.lease_owner
    # The lease owner is "<replica actor name>/<nonce>"; Serve replicas are named actors.
    replica = ray.get_actor(record.lease_owner.rsplit("/", 1)[0], namespace="serve")
    ray.kill(replica, no_restart=True)

    final = client.wait(job["id"], timeout_s=300)
    assert final["status"] == "succeeded"
    assert final["attempt"] >= 2, "the job should have been re-claimed after its lease expired"
    assert final["result"]["metadata"]["seed"] == 5
    assert all(stage["attempt"] == final["attempt"] for stage in final["stages"])
