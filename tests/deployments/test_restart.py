"""A full restart of the local stack loses nothing: Serve, Ray and the SeaweedFS store all die in the
middle of a job and start again on the same data dir; the job resumes from its last committed stage
and finishes, and a result from before the restart still downloads through the very same presigned URL.

The stop is a crash (Ray's processes and the store killed, as by a power cut or `kill -9` of
`soundstage serve`): a graceful stop would let the JobRunner finish the job in its drain period, and
then there would be nothing left to resume. It restarts the session's own stack and store (so that only
one Ray cluster ever runs), which are as good as new afterwards for the tests that follow.
"""

from __future__ import annotations

import os
import signal

import httpx
import pytest

from infra.client import SoundstageClient
from infra.embedded_s3 import EmbeddedS3
from infra.jobs import JobRecord, JobStore
from infra.storage import Storage
from tests.replicas import wait_until

# Runs in a pytest process of its own (`bash infra/dev.sh test` runs `-m own_cluster` after the suite).
pytestmark = [pytest.mark.ray, pytest.mark.own_cluster]


def generate_committed(record: JobRecord) -> bool:
    """`generate` is committed and a later stage of the same attempt is running."""
    return record.status == "running" and any(stage.name == "generate" for stage in record.stages)


def crash(stack: object, s3: EmbeddedS3) -> None:
    """Kill the whole stack at once: nothing drains, no lease is handed back, nothing is flushed."""
    import ray

    ray.shutdown()  # this process started the cluster: every Ray process goes, no graceful shutdown
    assert s3._process is not None
    os.kill(s3._process.pid, signal.SIGKILL)
    s3._process.wait()
    stack.stop()  # type: ignore[attr-defined]  # tidies up what is left: nothing runs any more
    s3.stop()


def test_a_job_resumes_across_a_full_stack_restart(
    stack: object, s3: EmbeddedS3, storage: Storage, base_url: str
) -> None:
    client = SoundstageClient(base_url)
    jobs = JobStore(storage)
    earlier = client.wait(
        client.submit("music", {"prompt": "before the restart", "duration_s": 2.0, "seed": 3})["id"],
        timeout_s=300,
    )
    assert earlier["status"] == "succeeded", earlier["error"]
    url = earlier["result"]["audio"]["url"]
    audio = httpx.get(url).content
    assert audio

    job = client.submit("music", {"prompt": "across the restart", "duration_s": 30.0, "seed": 4})
    interrupted = wait_until(jobs, job["id"], generate_committed)
    assert interrupted.attempt == 1
    crash(stack, s3)
    with pytest.raises(httpx.ConnectError):
        httpx.get(url)

    s3.start()
    stack.start()  # type: ignore[attr-defined]
    final = client.wait(job["id"], timeout_s=300)
    assert final["status"] == "succeeded", final["error"]
    assert final["attempt"] >= 2, "the job was re-claimed after the restart"
    generate = next(s for s in final["stages"] if s["name"] == "generate")
    assert generate["attempt"] == 1, "generate was committed before the stop: restored, not redone"
    assert final["result"]["metadata"]["seed"] == 4

    again = httpx.get(url)
    assert (again.status_code, again.content) == (200, audio), "the same presigned URL still works"
    assert client.job(earlier["id"])["status"] == "succeeded"
