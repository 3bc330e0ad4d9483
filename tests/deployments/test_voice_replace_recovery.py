"""A voice-replacement job survives its model replica and, separately, its runner replica being killed
in the middle of the job (`ray.kill`, real local Ray cluster, real offline weights).

- The TTS replica dies while the job's `synthesize` stage has its lines in flight: only those calls are
  retried (the report names the actor error), no earlier stage runs again, and the job succeeds.
- The runner replica dies during `synthesize`: another replica re-claims the job (attempt 2), restores
  every stage committed before the kill from its checkpoint (same fingerprint and object digests,
  still recorded as attempt 1: not recomputed) and finishes the rest.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from infra.audio import encode
from infra.client import SoundstageClient
from infra.jobs import JobRecord, JobStore
from infra.storage import Storage
from tests.deployments.test_voice_replace_http import JOB_TIMEOUT_S
from tests.dialog import Dialog
from tests.replicas import kill_replicas_while_busy, kill_runner_of, wait_until

pytestmark = pytest.mark.ray


def start_job(base_url: str, dialog: Dialog, key: str) -> str:
    files = {"file": ("dialog.wav", encode(dialog.audio, "wav"), "audio/wav")}
    fields = {"voice": "heart", "target_speaker": "SPEAKER_01"}
    headers = {"Idempotency-Key": key}
    response = httpx.post(
        f"{base_url}/v1/jobs/voice-replace", files=files, data=fields, headers=headers, timeout=180
    )
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


def transcribing(record: JobRecord) -> bool:
    """The stage before `synthesize` is running: no line has been sent to TTS yet."""
    return record.stage == "transcribe"


def synthesizing(record: JobRecord) -> bool:
    """The `synthesize` stage has sent its lines to the TTS deployment (its first segment report)."""
    return record.segments is not None and record.segments.stage == "synthesize"


def finish(base_url: str, job_id: str) -> dict[str, Any]:
    job = SoundstageClient(base_url).wait(job_id, timeout_s=JOB_TIMEOUT_S)
    assert job["status"] == "succeeded", job["error"]
    return httpx.get(f"{base_url}/v1/jobs/{job_id}/report", timeout=60).json()


def test_survives_the_tts_replica_dying(base_url: str, storage: Storage, dialog: Dialog) -> None:
    job_id = start_job(base_url, dialog, "recovery-tts")
    wait_until(JobStore(storage), job_id, transcribing, timeout_s=JOB_TIMEOUT_S)
    # Watched from before `synthesize` starts, killed while lines are executing on it (the replica's own
    # count; nothing but this job's lines runs on TTS): a kill timed by the record (written at most twice
    # a second) could land after the last line had come back, and then nothing was retried (seen on a
    # loaded clean-clone run); and watching only from the first `synthesize` report missed the whole
    # stage on a quiet one.
    kill_replicas_while_busy("TTS", settle_s=0.05, timeout_s=JOB_TIMEOUT_S)

    report = finish(base_url, job_id)
    stages = {s["name"]: s for s in report["stages"]}
    assert stages["synthesize"]["retries"] >= 1
    assert any("ctor" in e for e in stages["synthesize"]["retried_errors"]), stages["synthesize"]
    assert report["attempt"] == 1
    for name in ("decode", "separate", "diarize", "transcribe"):
        assert stages[name]["retries"] == 0 and stages[name]["attempt"] == 1


def test_survives_the_runner_replica_dying(base_url: str, storage: Storage, dialog: Dialog) -> None:
    jobs = JobStore(storage)
    job_id = start_job(base_url, dialog, "recovery-runner")
    before = wait_until(jobs, job_id, synthesizing, timeout_s=JOB_TIMEOUT_S)
    committed = {s.name: s for s in before.stages}
    assert set(committed) >= {"decode", "separate", "diarize", "transcribe"}
    kill_runner_of(before)

    report = finish(base_url, job_id)
    assert report["attempt"] >= 2
    after = {s.name: s for s in jobs.get(job_id).stages}
    for name, stage in committed.items():
        assert after[name].attempt == 1, f"{name} was recomputed"
        assert (after[name].fingerprint, after[name].objects) == (stage.fingerprint, stage.objects)
    for name in ("synthesize", "remix", "store"):
        assert after[name].attempt == report["attempt"]
