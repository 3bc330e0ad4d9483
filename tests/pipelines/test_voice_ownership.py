"""A voice replacement job checks its voice's owner again when it runs, not only at admission: a record
naming another tenant's voice, or a voice deleted since admission, fails the stage with the typed
`voice_not_found` and the voice is never spoken. Real job store and embedded S3 (a bucket of its own);
the stage is voice replacement's own `speaker` lookup inside a one-stage job, with a VoiceClone double
that records what it was asked to speak."""

from __future__ import annotations

import asyncio
import uuid

import numpy as np
import pytest

from infra.audio import Audio
from infra.jobs import JobStore
from infra.settings import Settings
from infra.storage import Storage
from infra.tenancy import key_digest
from infra.voice_store import delete_voice, save_voice
from models.types import VoiceReference
from pipelines.engine.context import StageContext, StageOutput, StageResult
from pipelines.engine.stages import RetryPolicy, Stage, StageFailedError, StageRunner
from pipelines.jobs.voice_replace_stages import speaker
from pipelines.voice.request import VoiceReplaceJobRequest
from tests.pipelines.test_stages import models_with


class Spoke(StageOutput):
    samples: int


class RecordingClone:
    deployment = "VoiceClone"

    def __init__(self) -> None:
        self.references: list[VoiceReference] = []

    async def synthesize(self, *, text: str, reference: VoiceReference) -> Audio:
        self.references.append(reference)
        return Audio(np.zeros((1, 2400), np.float32), 24000)


async def speak_once(ctx: StageContext[VoiceReplaceJobRequest]) -> StageResult:
    say = await speaker(ctx)
    return StageResult(record=Spoke(samples=(await say("Hello there.")).num_samples))


@pytest.fixture
def own(settings: Settings) -> Storage:
    store = Storage(settings.model_copy(update={"s3_bucket": f"voice-owner-{uuid.uuid4().hex[:8]}"}))
    store.ensure_bucket()
    return store


def tone() -> Audio:
    t = np.arange(6 * 24000) / 24000
    return Audio((0.3 * np.sin(2 * np.pi * 180 * t))[None].astype(np.float32), 24000)


def run_as(storage: Storage, owner: str | None, voice: str, clone: RecordingClone) -> Spoke:
    jobs = JobStore(storage)
    request = {"upload_id": uuid.uuid4().hex, "voice": voice}
    record, _ = jobs.create("voice-replace", request, owner=owner)
    job = jobs.claim(record.id, "test-runner", lease_s=600)
    assert job is not None
    runner = StageRunner(
        jobs,
        job,
        VoiceReplaceJobRequest.model_validate(request),
        models_with(voice_clone=clone),
        retry=RetryPolicy(tries=1, base_s=0.01),
    )
    stage = Stage("synthesize", speak_once, output=Spoke)
    return asyncio.run(runner.run([stage])).output(Spoke)


def test_a_job_never_speaks_in_another_tenants_voice(own: Storage) -> None:
    alices = save_voice(own, "alice's", tone(), "some words", "given", owner="alice").voice_id
    clone = RecordingClone()
    with pytest.raises(StageFailedError) as failed:
        run_as(own, "bob", alices, clone)
    assert (failed.value.stage, failed.value.code) == ("synthesize", "voice_not_found")
    assert alices in failed.value.message and clone.references == []
    # Its owner's job speaks it.
    assert run_as(own, "alice", alices, clone).samples == 2400
    assert clone.references[0].transcript == "some words"


def test_a_voice_deleted_after_admission_fails_typed(own: Storage) -> None:
    voice = save_voice(own, "gone", tone(), "some words", "given", owner="alice").voice_id
    delete_voice(own, voice, "alice")
    clone = RecordingClone()
    with pytest.raises(StageFailedError) as failed:
        run_as(own, "alice", voice, clone)
    assert failed.value.code == "voice_not_found" and clone.references == []


def test_admin_and_open_jobs_may_use_any_voice(own: Storage, monkeypatch: pytest.MonkeyPatch) -> None:
    alices = save_voice(own, "alice's", tone(), "some words", "given", owner="alice").voice_id
    monkeypatch.setenv("SOUNDSTAGE_ADMIN_KEY_HASHES", f'["root:{key_digest("admin-key")}"]')
    clone = RecordingClone()
    assert run_as(own, "root", alices, clone).samples == 2400  # an admin key's job, as admission allowed
    assert run_as(own, None, alices, clone).samples == 2400  # the open API: nothing is owned
    assert len(clone.references) == 2
