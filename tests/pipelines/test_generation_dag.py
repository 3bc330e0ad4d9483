"""The generation DAG (generate → quality/regenerate → master → spectrogram → store) through the real
`StageRunner`, job store and embedded S3, with named test doubles standing in for the MusicGen deployment.
"""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
import pytest
from PIL import Image

from deployments.http.schemas import job_report
from infra.audio import Audio, decode, loudness_lufs
from infra.dsp.mastering import true_peak_dbtp
from infra.jobs import JobRecord, JobStore
from infra.storage import Storage
from models.types import GeneratedAudio, ModelInfo
from pipelines.engine.stages import RetryPolicy, StageContext, StageRunner, job_result
from pipelines.jobs.generation import GENERATION_STAGES, MUSIC_JOB, MusicJobRequest
from pipelines.jobs.generation_dag import regeneration_seed

SAMPLE_RATE = 32000
DOUBLE_INFO = ModelInfo(model_id="test-double", revision=None, weights="debug-random")


class RemoteMethod:
    """`handle.method.remote(...)` returning an awaitable, as a Serve `DeploymentHandle` does."""

    def __init__(self, fn: Callable[..., Awaitable[Any]]) -> None:
        self.fn = fn

    def remote(self, *args: Any) -> Awaitable[Any]:
        return self.fn(*args)


class ToneGenerator:
    """Test double standing in for the MusicGen deployment handle: `generate.remote(prompt, duration_s,
    seed, guidance_scale, top_k, temperature)` → `GeneratedAudio` (a seed-dependent tone), `info.remote()`.
    Records the seed of every call."""

    amplitude = 0.3

    def __init__(self) -> None:
        self.seeds: list[int] = []
        self.generate = RemoteMethod(self._generate)
        self.info = RemoteMethod(self._info)

    async def _generate(
        self, prompt: str, duration_s: float, seed: int, guidance: float, top_k: int, temperature: float
    ) -> GeneratedAudio:
        self.seeds.append(seed)
        t = np.arange(round(duration_s * SAMPLE_RATE)) / SAMPLE_RATE
        frequency = 220.0 + seed % 200
        wave = sum(self.amplitude / k * np.sin(2 * np.pi * k * frequency * t) for k in (1, 2, 3))
        samples = np.clip(wave, -1.0, 1.0)[None].astype(np.float32)
        return GeneratedAudio(Audio(samples, SAMPLE_RATE), seed, DOUBLE_INFO)

    async def _info(self) -> dict[str, Any]:
        return DOUBLE_INFO.as_dict()


class CleanGenerator(ToneGenerator):
    """Stands in for the MusicGen deployment; every clip is a clean harmonic tone that passes the check."""


class ClippingGenerator(ToneGenerator):
    """Stands in for the MusicGen deployment; every clip is overdriven and hard-clipped at full scale."""

    amplitude = 4.0


FAST_RETRY = RetryPolicy(tries=2, base_s=0.01)


@pytest.fixture
def jobs(storage: Storage) -> JobStore:
    return JobStore(storage)


def claimed_job(jobs: JobStore, **request: Any) -> JobRecord:
    body = MusicJobRequest(prompt="a test tone", duration_s=2.0, seed=11, **request).model_dump()
    record, _ = jobs.create(MUSIC_JOB, body)
    claimed = jobs.claim(record.id, "test-runner", lease_s=60)
    assert claimed is not None
    return claimed


def run(jobs: JobStore, job: JobRecord, generator: ToneGenerator) -> StageContext:
    runner = StageRunner(jobs, job, handles={"MusicGen": generator}, retry=FAST_RETRY)
    return asyncio.run(runner.run(GENERATION_STAGES))


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


def test_outputs_audio_spectrogram_metadata(jobs: JobStore, storage: Storage) -> None:
    job = claimed_job(jobs, format="flac")
    result = job_result(run(jobs, job, CleanGenerator()))
    assert result["audio"]["key"] == f"outputs/{job.id}/audio.flac"
    assert result["spectrogram"]["key"] == f"outputs/{job.id}/spectrogram.png"
    assert result["spectrogram"]["media_type"] == "image/png"
    assert result["metadata"]["key"] == f"outputs/{job.id}/metadata.json"
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
