"""The separate, pitch-shift and diarize job kinds without Ray: their stages run by the real
`StageRunner` with in-process model client doubles against the embedded S3 server, and their `admit`
checks (made before a job exists)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import numpy as np
import pytest
from pydantic import BaseModel

from infra.audio import Audio, decode, encode
from infra.dsp.regions import Turn
from infra.dsp.segments import plan_segments
from infra.jobs import JobStore
from infra.settings import Settings
from infra.storage import Storage, output_key
from infra.uploads import store_upload
from models.types import ModelInfo
from pipelines.engine.clients import ModelCard, Models
from pipelines.engine.kinds import Admission, AdmissionError, JobKind
from pipelines.engine.stages import RetryPolicy, StageContext, StageRunner, job_result
from pipelines.jobs.diarize import DIARIZE_KIND, SpeakerTurns, turns_body
from pipelines.jobs.pitch_shift import PITCH_SHIFT_KIND
from pipelines.jobs.separation import SEPARATE_KIND, Separated
from tests.pipelines.test_stages import models_with

RATE = 8000
STEM_GAINS = {"drums": 0.1, "bass": 0.2, "other": 0.3, "vocals": 0.4}  # they sum to the input


class Card:
    """`info()` of a double: a card with debug weights."""

    deployment = "Fake"

    async def info(self) -> ModelCard:
        model = ModelInfo(f"fake/{self.deployment.lower()}", "r1", "debug-random")
        return ModelCard(deployment=self.deployment, model=model, sample_rate=RATE, extra={"note": "double"})


class FakeSeparation(Card):
    """Double of `SeparationClient`: four stems, fixed fractions of the segment."""

    deployment = "Separation"

    def __init__(self) -> None:
        self.segments = 0

    async def separate(self, *, audio: Audio) -> dict[str, Audio]:
        self.segments += 1
        return {
            name: Audio(audio.samples * np.float32(g), audio.sample_rate) for name, g in STEM_GAINS.items()
        }


class FakePitch(Card):
    """Double of `PitchClient.shift`: halves the level and records its arguments."""

    deployment = "Pitch"

    def __init__(self) -> None:
        self.calls: list[tuple[float, bool]] = []

    async def shift(self, *, audio: Audio, semitones: float, preserve_formants: bool) -> Audio:
        self.calls.append((semitones, preserve_formants))
        return Audio(audio.samples * np.float32(0.5), audio.sample_rate)


TURNS = [Turn(0.0, 1.5, "SPEAKER_00"), Turn(1.5, 3.0, "SPEAKER_01"), Turn(3.0, 4.0, "SPEAKER_00")]


class FakeDiarizer(Card):
    deployment = "Diarizer"

    def __init__(self) -> None:
        self.calls: list[int | None] = []

    async def diarize(self, *, audio: Audio, num_speakers: int | None = None) -> list[Turn]:
        self.calls.append(num_speakers)
        return TURNS


def tone(seconds: float) -> Audio:
    t = np.arange(round(seconds * RATE)) / RATE
    mono = 0.5 * np.sin(2 * np.pi * 220.0 * t)
    return Audio(np.stack([mono, 0.5 * mono]).astype(np.float32), RATE)


def upload(storage: Storage, settings: Settings, audio: Audio) -> str:
    return store_upload(storage, encode(audio, "wav"), "tone.wav", settings).upload_id


def run_kind(
    storage: Storage, kind: JobKind[Any], fields: dict[str, Any], models: Models
) -> tuple[str, StageContext[Any]]:
    """Create, claim and run a job of `kind` as the runner does (the stored request validated again)."""
    jobs = JobStore(storage)
    record, _ = jobs.create(kind.name, kind.request.model_validate(fields).model_dump(mode="json"))
    claimed = jobs.claim(record.id, "test-runner", lease_s=60)
    assert claimed is not None
    request = kind.request.model_validate(claimed.request)
    runner = StageRunner(jobs, claimed, request, models, retry=RetryPolicy(tries=1), version=kind.version)
    return record.id, asyncio.run(runner.run(kind.stages))


def resume(storage: Storage, kind: JobKind[Any], job_id: str, models: Models) -> StageContext[Any]:
    """A new attempt of a finished run: every stage restored from its checkpoint."""
    jobs = JobStore(storage)
    again = jobs.update(job_id, lambda r: setattr(r, "attempt", r.attempt + 1))
    request = kind.request.model_validate(again.request)
    return asyncio.run(StageRunner(jobs, again, request, models, version=kind.version).run(kind.stages))


# separate -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["4stems", "vocals"])
def test_separate_job_stores_stems_and_metadata(storage: Storage, settings: Settings, mode: str) -> None:
    audio = tone(12.0)
    fields = {"upload_id": upload(storage, settings, audio), "mode": mode, "segment_s": 5.0, "format": "flac"}
    fake = FakeSeparation()
    job_id, ctx = run_kind(storage, SEPARATE_KIND, fields, models_with(separation=fake))
    result = job_result(ctx)
    planned = len(plan_segments(audio.num_samples, RATE, segment_s=5.0, overlap_s=1.0))
    model = {"model_id": "fake/separation", "revision": "r1", "weights": "debug-random"}
    assert result["metadata"] == {"model": model, "weights": "debug-random", "segments": planned}
    assert fake.segments == planned
    stems = ["drums", "bass", "other", "vocals"] if mode == "4stems" else ["vocals", "no_vocals"]
    assert [k for k in result if k != "metadata"] == stems
    gains = STEM_GAINS | {"no_vocals": 0.6}
    for name in stems:
        entry = result[name]
        assert entry["key"] == output_key(job_id, f"{name}.flac", 1) and entry["media_type"] == "audio/flac"
        stored = decode(storage.get_bytes(entry["key"]))
        np.testing.assert_allclose(stored.samples, gains[name] * audio.samples, atol=1e-4)
    assert ctx.output(Separated).stems == stems
    restored = resume(storage, SEPARATE_KIND, job_id, models_with(separation=fake))
    assert job_result(restored) == result and fake.segments == planned  # nothing separated again


def admission(storage: Storage, settings: Settings) -> Admission:
    return Admission(storage=storage, jobs=JobStore(storage), settings=settings, models=models_with())


def admit(storage: Storage, settings: Settings, kind: JobKind[Any], **fields: Any) -> BaseModel:
    return asyncio.run(kind.admit(kind.request.model_validate(fields), admission(storage, settings)))  # type: ignore[arg-type]


def test_separate_admit(storage: Storage, settings: Settings) -> None:
    upload_id = upload(storage, settings, tone(1.0))
    fine = {"upload_id": upload_id, "segment_s": 6.0, "overlap_s": 3.0}
    assert admit(storage, settings, SEPARATE_KIND, **fine) == SEPARATE_KIND.request.model_validate(fine)
    with pytest.raises(AdmissionError) as overlap:
        admit(storage, settings, SEPARATE_KIND, upload_id=upload_id, segment_s=6.0, overlap_s=4.0)
    assert (overlap.value.status, overlap.value.code) == (422, "invalid_request")
    assert str(overlap.value) == "overlap_s may be at most half of segment_s"
    assert SEPARATE_KIND.inputs == frozenset({"file", "upload_id", "url"})


@pytest.mark.parametrize("kind", [SEPARATE_KIND, PITCH_SHIFT_KIND, DIARIZE_KIND], ids=lambda k: k.name)
def test_admit_refuses_an_unknown_upload(storage: Storage, settings: Settings, kind: JobKind[Any]) -> None:
    fields: dict[str, Any] = {"upload_id": "f" * 32} | ({"semitones": 2} if kind is PITCH_SHIFT_KIND else {})
    with pytest.raises(AdmissionError) as unknown:
        admit(storage, settings, kind, **fields)
    assert (unknown.value.status, unknown.value.code) == (404, "upload_not_found")
    assert str(unknown.value) == f"no upload with id {'f' * 32!r}"


# pitch-shift --------------------------------------------------------------------------------------


def test_pitch_shift_job(storage: Storage, settings: Settings) -> None:
    audio = tone(2.0)
    fields = {"upload_id": upload(storage, settings, audio), "semitones": -3.5, "preserve_formants": False}
    fake = FakePitch()
    job_id, ctx = run_kind(storage, PITCH_SHIFT_KIND, fields, models_with(pitch=fake))
    result = job_result(ctx)
    assert fake.calls == [(-3.5, False)]
    assert result["metadata"] == {"semitones": -3.5, "preserve_formants": False}
    assert (
        result["audio"]["key"] == output_key(job_id, "shifted.wav", 1)
        and result["audio"]["duration_s"] == 2.0
    )
    stored = decode(storage.get_bytes(result["audio"]["key"]))
    np.testing.assert_allclose(stored.samples, 0.5 * audio.samples, atol=1e-6)
    assert JobStore(storage).get(job_id).stages[0].models == {}  # DSP: no weights in the fingerprint


# diarize ------------------------------------------------------------------------------------------


def test_diarize_job_stores_the_turns_json(storage: Storage, settings: Settings) -> None:
    fake = FakeDiarizer()
    fields = {"upload_id": upload(storage, settings, tone(4.0)), "num_speakers": 2}
    job_id, ctx = run_kind(storage, DIARIZE_KIND, fields, models_with(diarizer=fake))
    result = job_result(ctx)
    assert fake.calls == [2]
    assert result == {
        "turns": {"key": output_key(job_id, "turns.json", 1), "media_type": "application/json"},
        "num_speakers": 2,
    }
    card = asyncio.run(fake.info())
    assert json.loads(storage.get_bytes(result["turns"]["key"])) == turns_body(TURNS, card.as_dict())
    restored = resume(storage, DIARIZE_KIND, job_id, models_with(diarizer=fake))
    assert restored.output(SpeakerTurns).turns == TURNS and fake.calls == [2]  # typed turns, not recomputed
