"""Jobs ride out the object store stopping for 40 s in their middle (SIGSTOP of the real SeaweedFS
process the session's stack uses, then SIGCONT): a voice replacement paused after four of its stages
committed, and a separation paused in its fan-out. Both succeed, and no stage committed before the pause
is computed again (its record keeps the attempt that made it, its fingerprint and its objects).

Before, botocore's connection errors were not transient (the job failed at once), record and checkpoint
writes were not retried, and the runners' health checks pinged S3, so Serve restarted them all.
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import pytest

from infra.client import SoundstageClient
from infra.embedded_s3 import EmbeddedS3
from infra.jobs import JobRecord, JobStore
from infra.storage import Storage
from tests.deployments.test_analysis_jobs import chord_wav, submit
from tests.deployments.test_voice_replace_recovery import start_job
from tests.dialog import Dialog
from tests.replicas import wait_until

pytestmark = pytest.mark.ray
PAUSE_S = 40.0
JOB_TIMEOUT_S = 900.0


def synthesizing(record: JobRecord) -> bool:
    return record.stage == "synthesize"


def separating(record: JobRecord) -> bool:
    return record.segments is not None and record.segments.stage == "separate"


def store_pid(s3: EmbeddedS3) -> int:
    process: Any = s3._process  # the store's child process (stopped and continued below)
    assert process is not None and process.poll() is None
    return int(process.pid)


def test_jobs_survive_the_store_pausing_for_40_s(
    base_url: str, storage: Storage, s3: EmbeddedS3, dialog: Dialog
) -> None:
    jobs, client = JobStore(storage), SoundstageClient(base_url)
    replace_id = start_job(base_url, dialog, "store-pause-replace")
    committed = {s.name: s for s in wait_until(jobs, replace_id, synthesizing, JOB_TIMEOUT_S).stages}
    assert set(committed) >= {"decode", "separate", "diarize", "transcribe"}
    response = submit(base_url, "/v1/jobs/separate", chord_wav(seconds=60.0), segment_s=5, overlap_s=1)
    assert response.status_code == 202, response.text
    separate_id = response.json()["id"]
    wait_until(jobs, separate_id, separating, JOB_TIMEOUT_S)

    pid = store_pid(s3)
    os.kill(pid, signal.SIGSTOP)
    try:
        time.sleep(PAUSE_S)
    finally:
        os.kill(pid, signal.SIGCONT)

    for job_id in (replace_id, separate_id):
        job = client.wait(job_id, timeout_s=JOB_TIMEOUT_S)
        assert job["status"] == "succeeded", job["error"]
    after = {s.name: s for s in jobs.get(replace_id).stages}
    for name, stage in committed.items():
        assert after[name].attempt == stage.attempt, f"{name} was recomputed"
        assert (after[name].fingerprint, after[name].objects) == (stage.fingerprint, stage.objects)
