"""The generation DAG (generate → quality/regenerate → master → spectrogram → store) through the real
`StageRunner`, job store and embedded S3, with in-process doubles of the generator clients.
"""

from __future__ import annotations

import asyncio
import io
import json
from typing import Any

import numpy as np
import pytest
from PIL import Image

from deployments.http.schemas import job_report
from infra.audio import Audio, decode, loudness_lufs
from infra.dsp.mastering import true_peak_dbtp
from infra.jobs import JobRecord, JobStore
from infra.storage import Storage
from models.types import GeneratedAudio, ModelInfo, Sampling
from pipelines.engine.clients import ModelCard, Models
from pipelines.engine.kinds import JobKind
from pipelines.engine.stages import RetryPolicy, StageContext, StageFailedError, StageRunner, job_result
from pipelines.jobs.generation import MUSIC_KIND, SFX_KIND
from pipelines.jobs.generation_post import Generated, QualityChecked, regeneration_seed
from pipelines.jobs.generation_request import MusicJobRequest
from tests.pipelines.test_stages import models_with

SAMPLE_RATE = 32000
DOUBLE_INFO = ModelInfo(model_id="test-double", revision=None, weights="debug-random")


class ToneGenerator:
    """Double of a text-to-audio client (`MusicClient.generate`, also standing in for AudioGen and Stable
    Audio): a seed-dependent harmonic tone. Records the seed and the sampling settings of every call."""

    amplitude = 0.3

    def __init__(self, deployment: str = "MusicGen") -> None:
        self.deployment = deployment
        self.seeds: list[int] = []
        self.samplings: list[Sampling] = []

    async def info(self) -> ModelCard:
        return ModelCard(deployment=self.deployment, model=DOUBLE_INFO, sample_rate=SAMPLE_RATE)

    async def generate(
        self, *, prompt: str, duration_s: float, seed: int, sampling: Sampling
    ) -> GeneratedAudio:
        self.seeds.append(seed)
        self.samplings.append(sampling)
        t = np.arange(round(duration_s * SAMPLE_RATE)) / SAMPLE_RATE
        frequency = 220.0 + seed % 200
        wave = sum(self.amplitude / k * np.sin(2 * np.pi * k * frequency * t) for k in (1, 2, 3))
        samples = np.clip(wave, -1.0, 1.0)[None].astype(np.float32)
        return GeneratedAudio(Audio(samples, SAMPLE_RATE), seed, DOUBLE_INFO)

    async def continue_audio(self, **_: Any) -> GeneratedAudio:
        raise AssertionError("no continuation here")


class CleanGenerator(ToneGenerator):
    """Every clip is a clean harmonic tone that passes the check."""


class ClippingGenerator(ToneGenerator):
    """Every clip is overdriven and hard-clipped at full scale."""

    amplitude = 4.0


FAST_RETRY = RetryPolicy(tries=2, base_s=0.01)


@pytest.fixture
def jobs(storage: Storage) -> JobStore:
    return JobStore(storage)


def claimed_job(jobs: JobStore, kind: JobKind[Any] = MUSIC_KIND, **request: Any) -> JobRecord:
    fields = {"prompt": "a test tone", "duration_s": 2.0, "seed": 11, **request}
    record, _ = jobs.create(kind.name, kind.request.model_validate(fields).model_dump(mode="json"))
    claimed = jobs.claim(record.id, "test-runner", lease_s=60)
    assert claimed is not None
    return claimed


def run(
    jobs: JobStore,
    job: JobRecord,
    generator: ToneGenerator,
    kind: JobKind[Any] = MUSIC_KIND,
    models: Models | None = None,
) -> StageContext[Any]:
    """Run `kind`'s stages as the runner does (the stored request validated again); by default
    `generator` is the MusicGen client and every other client fails the test."""
    request = kind.request.model_validate(job.request)
    models = models or models_with(music=generator)
    runner = StageRunner(jobs, job, request, models, retry=FAST_RETRY, version=kind.version)
    return asyncio.run(runner.run(kind.stages))


def test_clipping_generator_is_regenerated_twice_then_best_kept(jobs: JobStore, storage: Storage) -> None:
    generator = ClippingGenerator()
    job = claimed_job(jobs)
    result = job_result(run(jobs, job, generator))
    metadata = result["metadata"]
    quality = metadata["quality"]
    assert metadata["regenerations"] == quality["regenerations"] == 2
    assert len(quality["attempts"]) == 3 and quality["passed"] is False
    assert all("clipping" in a["issues"] and not a["passed"] for a in quality["attempts"])
    expected_seeds = [11, regeneration_seed(11, 1), regeneration_seed(11, 2)]
    assert generator.seeds == expected_seeds  # attempt 0 in `generate`, two more in `quality`
    assert [a["seed"] for a in quality["attempts"]] == expected_seeds
    scores = [a["score"] for a in quality["attempts"]]
    assert quality["chosen_attempt"] == scores.index(max(scores))
    assert metadata["generation_seed"] == expected_seeds[quality["chosen_attempt"]]
    assert metadata["seed"] == 11 and metadata["weights"] == "debug-random"
    stored = json.loads(storage.get_bytes(metadata["key"]))
    assert stored["quality"] == quality and stored["regenerations"] == 2
    assert [s.name for s in jobs.get(job.id).stages] == [
        "generate",
        "quality",
        "master",
        "spectrogram",
        "store",
    ]
    report = job_report(jobs.get(job.id), now=0.0)  # GET /v1/jobs/{id}/report
    (quality_stage,) = [s for s in report.stages if s.name == "quality"]
    assert quality_stage.facts["regenerations"] == 2 and len(quality_stage.facts["attempts"]) == 3


def test_clean_generator_is_not_regenerated(jobs: JobStore, storage: Storage) -> None:
    generator = CleanGenerator()
    job = claimed_job(jobs)
    result = job_result(run(jobs, job, generator))
    quality = result["metadata"]["quality"]
    assert result["metadata"]["regenerations"] == 0 and quality["passed"] is True
    assert quality["attempts"][0]["issues"] == [] and quality["chosen_attempt"] == 0
    assert generator.seeds == [11]
    assert result["metadata"]["generation_seed"] == 11
    (quality_stage,) = [s for s in job_report(jobs.get(job.id), now=0.0).stages if s.name == "quality"]
    assert quality_stage.facts["regenerations"] == 0
    assert generator.samplings == [Sampling()]  # the request's sampling settings, defaults stated once


def test_outputs_audio_spectrogram_metadata(jobs: JobStore, storage: Storage) -> None:
    job = claimed_job(jobs, format="flac")
    result = job_result(run(jobs, job, CleanGenerator()))
    assert result["audio"]["key"] == f"outputs/{job.id}/a1/audio.flac"
    assert result["spectrogram"]["key"] == f"outputs/{job.id}/a1/spectrogram.png"
    assert result["spectrogram"]["media_type"] == "image/png"
    assert result["metadata"]["key"] == f"outputs/{job.id}/a1/metadata.json"
    audio = decode(storage.get_bytes(result["audio"]["key"]))
    assert audio.sample_rate == SAMPLE_RATE and audio.num_samples == 2 * SAMPLE_RATE
    assert loudness_lufs(audio) == pytest.approx(-14.0, abs=0.5)
    png = Image.open(io.BytesIO(storage.get_bytes(result["spectrogram"]["key"])))
    assert png.format == "PNG" and png.size == (
        result["spectrogram"]["width"],
        result["spectrogram"]["height"],
    )
    mastering = result["metadata"]["mastering"]
    assert mastering["loudness_after_lufs"] == pytest.approx(-14.0, abs=0.5)
    assert mastering["loudness_before_lufs"] > -14.0 and mastering["true_peak_after_dbtp"] <= -1.0
    assert result["metadata"]["loopable"] is False


def test_loopable_clip_is_shorter_by_the_crossfade(jobs: JobStore, storage: Storage) -> None:
    job = claimed_job(jobs, loopable=True, loop_crossfade_s=0.25, loudness_lufs=-20.0)
    result = job_result(run(jobs, job, CleanGenerator()))
    audio = decode(storage.get_bytes(result["audio"]["key"]))
    assert audio.num_samples == round(1.75 * SAMPLE_RATE)
    assert result["metadata"]["duration_s"] == pytest.approx(1.75)
    assert result["metadata"]["mastering"]["loop_crossfade_s"] == 0.25
    assert loudness_lufs(audio) == pytest.approx(-20.0, abs=0.5) and true_peak_dbtp(audio) <= -1.0


def test_quality_check_off_keeps_the_first_clip(jobs: JobStore) -> None:
    generator = ClippingGenerator()
    result = job_result(run(jobs, claimed_job(jobs, quality_check=False), generator))
    quality = result["metadata"]["quality"]
    assert quality["checked"] is False and quality["regenerations"] == 0 and generator.seeds == [11]
    assert quality["attempts"][0]["issues"] == ["clipping"]  # measured and reported, not acted on


def test_resumed_quality_stage_reproduces_the_attempts(jobs: JobStore, storage: Storage) -> None:
    job = claimed_job(jobs)
    first = job_result(run(jobs, job, ClippingGenerator()))
    quality_stage = next(s for s in jobs.get(job.id).stages if s.name == "quality")
    storage.put_bytes(quality_stage.prefix + "audio.wav", b"lost")  # the checkpoint no longer verifies
    resumed = jobs.update(job.id, lambda r: setattr(r, "attempt", r.attempt + 1))
    generator = ClippingGenerator()
    second = job_result(run(jobs, resumed, generator))
    assert generator.seeds == [regeneration_seed(11, 1), regeneration_seed(11, 2)]  # `generate` restored
    assert second["metadata"]["quality"] == first["metadata"]["quality"]
    redone = next(s for s in jobs.get(job.id).stages if s.name == "quality")
    assert redone.attempt == resumed.attempt and redone.objects == quality_stage.objects  # bit for bit


def test_loop_crossfade_must_fit_the_duration() -> None:
    with pytest.raises(ValueError, match="at most half"):
        MusicJobRequest(prompt="x", duration_s=1.0, loopable=True, loop_crossfade_s=0.6)
    MusicJobRequest(prompt="x", duration_s=1.0, loopable=False, loop_crossfade_s=0.6)


@pytest.mark.parametrize(
    ("kind", "model", "family", "deployment"),
    [
        (MUSIC_KIND, "musicgen", "music", "MusicGen"),
        (MUSIC_KIND, "stable-audio", "stable_audio", "StableAudio"),
        (SFX_KIND, "audiogen", "sfx", "AudioGen"),
        (SFX_KIND, "stable-audio", "stable_audio", "StableAudio"),
    ],
)
def test_each_model_is_generated_by_its_client(
    jobs: JobStore, kind: JobKind[Any], model: str, family: str, deployment: str
) -> None:
    generator = CleanGenerator(deployment)
    sampling = Sampling(guidance_scale=5.0, steps=20, negative_prompt="hiss", top_k=50)
    job = claimed_job(jobs, kind, model=model, **sampling.model_dump())
    ctx = run(jobs, job, generator, kind, models_with(**{family: generator}))  # every other client fails
    assert generator.seeds == [11] and generator.samplings == [sampling]
    generated = ctx.output(Generated)
    assert generated.model == DOUBLE_INFO and generated.seed == 11 and generated.conditioning is None
    assert ctx.output(QualityChecked).passed
    stages = jobs.get(job.id).stages
    assert [s.models for s in stages[:2]] == [{deployment: DOUBLE_INFO.as_dict()}] * 2  # fingerprinted
    assert job_result(ctx)["metadata"]["model"] == DOUBLE_INFO.as_dict()


def test_a_request_without_a_fixed_seed_fails_generate(jobs: JobStore) -> None:
    with pytest.raises(StageFailedError) as failed:
        run(jobs, claimed_job(jobs, seed=None), CleanGenerator())
    assert (failed.value.stage, failed.value.code) == ("generate", "invalid_input")
