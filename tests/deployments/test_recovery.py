"""Replicas die mid-job (`ray.kill`) and the job still succeeds.

- A runner replica dies: its lease expires, another replica re-claims the job (attempt 2, the fence)
  and finishes it.
- A model replica dies in the middle of a fanned-out stage: the calls that were on it fail with a Ray
  actor error, which is transient, so just those segments are retried (the report names the error)
  while Serve starts a replacement replica, and the job succeeds with the same result as an
  undisturbed run.
"""

from __future__ import annotations

import httpx
import numpy as np
import pytest

from infra.client import SoundstageClient
from infra.jobs import JobRecord, JobStore
from infra.storage import Storage
from tests.deployments.test_analysis_jobs import chord_wav, fetch, submit
from tests.replicas import kill_replicas_while_busy, kill_runner_of, wait_until

pytestmark = pytest.mark.ray


def test_job_survives_its_runner_being_killed(base_url: str, storage: Storage) -> None:
    client = SoundstageClient(base_url)
    jobs = JobStore(storage)
    job = client.submit("music", {"prompt": "survive this", "duration_s": 30.0, "seed": 5})
    record = wait_until(jobs, job["id"], lambda r: r.status == "running" and r.stage == "generate")
    assert record.attempt == 1
    kill_runner_of(record)

    final = client.wait(job["id"], timeout_s=300)
    assert final["status"] == "succeeded"
    assert final["attempt"] >= 2, "the job should have been re-claimed after its lease expired"
    assert final["result"]["metadata"]["seed"] == 5
    generate = next(s for s in final["stages"] if s["name"] == "generate")
    assert generate["attempt"] == final["attempt"], "generate was interrupted, so the new attempt redid it"


def test_job_survives_its_model_replica_being_killed(base_url: str, storage: Storage) -> None:
    client = SoundstageClient(base_url)
    jobs = JobStore(storage)
    data = chord_wav(seconds=40.0)
    response = submit(base_url, "/v1/jobs/separate", data, segment_s=10, overlap_s=1, mode="vocals")
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]
    # Kill while segments are running on the replicas, with more still to come: once the fan-out has
    # begun (its first progress report, {0, total}, is written as the segments are sent), at the moment
    # a replica has been busy for 0.2 s (see kill_replicas_while_busy for why neither the record alone
    # nor the first busy moment will do). 40 s in 10 s segments is 5 segments, at most 2 in flight per
    # replica (max_ongoing_requests), each running for a second or more: the kill lands while the
    # first ones run and at least 3 are still queued.
    record = wait_until(jobs, job_id, separating)
    assert record.segments is not None and record.segments.total == 5, record.segments
    killed = kill_replicas_while_busy("Separation", settle_s=0.2)
    assert any(killed.values()), killed

    final = client.wait(job_id, timeout_s=300)
    assert final["status"] == "succeeded", final["error"]
    report = httpx.get(f"{base_url}/v1/jobs/{job_id}/report").json()
    separate = next(s for s in report["stages"] if s["name"] == "separate")
    assert separate["retries"] >= 1 and separate["attempt"] == 1, (killed, separate)
    assert any("Actor" in e or "actor" in e for e in separate["retried_errors"]), separate["retried_errors"]
    assert report["debug_weights"] == ["Separation"], report["weights"]
    # The same input again, undisturbed: the same stems (separation is deterministic).
    again = submit(base_url, "/v1/jobs/separate", data, segment_s=10, overlap_s=1, mode="vocals")
    undisturbed = client.wait(again.json()["id"], timeout_s=300)
    for stem in ("vocals", "no_vocals"):
        disturbed_audio, _ = fetch(final["result"][stem]["url"])
        undisturbed_audio, _ = fetch(undisturbed["result"][stem]["url"])
        np.testing.assert_array_equal(disturbed_audio, undisturbed_audio)


def separating(record: JobRecord) -> bool:
    """The `separate` stage's fan-out has begun and (as of the record's last report) not finished."""
    progress = record.segments
    return progress is not None and progress.stage == "separate" and progress.done < progress.total
