"""Every write an attempt makes is fenced: attempt-scoped keys for checkpoints and outputs, and only the
keys that the (fenced) record names count.

Before, stage objects, manifests and `outputs/` used keys every attempt shared, so a runner whose lease
was taken over (and whose threaded work ran on) could overwrite the newer attempt's published output.
Here a superseded attempt writes after the new attempt finished; the job's result and its bytes are
the new attempt's. The job store and S3 are real (the embedded server over HTTP).
"""

from __future__ import annotations

import asyncio
import uuid

import numpy as np
import pytest
from pydantic import BaseModel

from infra.audio import Audio, decode
from infra.jobs import JobStatus, JobStore, StaleAttemptError
from infra.storage import Storage
from pipelines.engine.outputs import store_audio
from pipelines.engine.stages import Stage, StageContext, StageResult, StageRunner, Stored, job_result
from tests.pipelines.test_stages import models_with


class Tone(BaseModel):
    hz: float


async def store_tone(ctx: StageContext[Tone]) -> StageResult:
    t = np.arange(800, dtype=np.float32) / 8000
    audio = Audio(np.sin(2 * np.pi * ctx.request.hz * t)[None, :].astype(np.float32), 8000)
    entry = await asyncio.to_thread(store_audio, ctx, "audio", audio, "wav")
    return StageResult(record=Stored(result={"audio": entry}))


STAGES = (Stage("store", store_tone, output=Stored),)


@pytest.fixture
def bucket(storage: Storage) -> Storage:
    """A bucket of this test's own: its job runs on a fake clock, so the session stack's runners (on the
    real one) would see its lease long expired and claim it."""
    own = Storage(storage.settings.model_copy(update={"s3_bucket": f"fencing-{uuid.uuid4().hex[:12]}"}))
    own.ensure_bucket()
    return own


def test_a_superseded_attempts_late_writes_are_invisible(bucket: Storage) -> None:
    storage = bucket
    now = [1_000_000.0]
    jobs = JobStore(storage, clock=lambda: now[0])
    record, _ = jobs.create("tone", {"hz": 440.0})
    first = jobs.claim(record.id, "runner-a", lease_s=10)
    assert first is not None
    now[0] += 11  # runner-a stalls; its lease runs out and runner-b takes over
    second = jobs.claim(record.id, "runner-b", lease_s=10)
    assert second is not None and second.attempt == first.attempt + 1

    ctx = asyncio.run(StageRunner(jobs, second, Tone(hz=440.0), models_with()).run(STAGES))
    published = job_result(ctx)
    jobs.finish(record.id, second.attempt, JobStatus.SUCCEEDED, result=published)
    before = storage.get_bytes(published["audio"]["key"])

    # runner-a wakes up: a record write of its attempt is refused by the fence, and the work it had in
    # flight (threads run on after a task is cancelled) writes its output under its own attempt's key.
    with pytest.raises(StaleAttemptError):
        asyncio.run(StageRunner(jobs, first, Tone(hz=220.0), models_with()).run(STAGES))
    late = StageContext(job=first, request=Tone(hz=220.0), models=models_with(), storage=storage)
    asyncio.run(store_tone(late))
    assert storage.exists(f"outputs/{record.id}/a{first.attempt}/audio.wav")

    final = jobs.get(record.id)
    assert final.result == published
    assert published["audio"]["key"] == f"outputs/{record.id}/a{second.attempt}/audio.wav"
    assert storage.get_bytes(published["audio"]["key"]) == before  # byte for byte the new attempt's
    assert decode(before).num_samples == 800
