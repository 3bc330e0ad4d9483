"""Long-form music (`pipelines/jobs/generation_long.py`): windowed MusicGen continuation through the real
`StageRunner`, job store and embedded S3, with a MusicGen double that continues its context."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from infra.audio import Audio, decode
from infra.jobs import JobRecord, JobStore
from infra.storage import Storage
from models.types import GeneratedAudio, Sampling
from pipelines.engine.clients import ModelCard
from pipelines.engine.stages import StageContext, StageRunner, job_result
from pipelines.jobs.generation import GENERATE_INDEX, MUSIC_KIND
from pipelines.jobs.generation_long import (
    CONTEXT_S,
    MARGIN_S,
    WINDOW_S,
    join_window,
    planned_windows,
    track_seams,
    window_seed,
)
from pipelines.jobs.generation_post import seam_jump_db
from pipelines.jobs.generation_request import MusicJobRequest
from tests.pipelines.test_generation_dag import DOUBLE_INFO, FAST_RETRY, claimed_job
from tests.pipelines.test_stages import models_with

RATE = 8000


class ReplicaDied(RuntimeError):
    """Not transient for the stage's retry policy: the attempt ends here, as when the runner is killed."""


class ContinuingMusicGen:
    """Double of `MusicClient`: a seed-dependent tone; `continue_audio` returns its clip unchanged, then
    new tone. Records every call as (method, seed, duration_s); raises after `die_after` calls."""

    deployment = "MusicGen"

    def __init__(self, die_after: int | None = None) -> None:
        self.calls: list[tuple[str, int, float]] = []
        self.die_after = die_after

    async def info(self) -> ModelCard:
        return ModelCard(deployment="MusicGen", model=DOUBLE_INFO, sample_rate=RATE)

    def _tone(self, seed: int, duration_s: float) -> npt.NDArray[np.float64]:
        if self.die_after is not None and len(self.calls) >= self.die_after:
            raise ReplicaDied("the runner was killed")
        t = np.arange(round(duration_s * RATE)) / RATE
        frequency = 110.0 + seed % 300
        return (0.2 * np.sin(2 * np.pi * frequency * t) + 0.05 * np.sin(6 * np.pi * frequency * t))[None]

    async def generate(
        self, *, prompt: str, duration_s: float, seed: int, sampling: Sampling
    ) -> GeneratedAudio:
        samples = self._tone(seed, duration_s)
        self.calls.append(("generate", seed, duration_s))
        return GeneratedAudio(Audio(samples.astype(np.float32), RATE), seed, DOUBLE_INFO)

    async def continue_audio(
        self, *, clip: Audio, prompt: str, duration_s: float, seed: int, sampling: Sampling
    ) -> GeneratedAudio:
        assert clip.duration_s == pytest.approx(CONTEXT_S) and duration_s <= WINDOW_S
        new = self._tone(seed, duration_s - clip.duration_s)
        self.calls.append(("continue", seed, duration_s))
        samples = np.concatenate([clip.samples, new], axis=1).astype(np.float32)
        return GeneratedAudio(Audio(samples, RATE), seed, DOUBLE_INFO)


@pytest.fixture
def jobs(storage: Storage) -> JobStore:
    return JobStore(storage)


def run(jobs: JobStore, job: JobRecord, music: ContinuingMusicGen) -> StageContext[Any]:
    """The music kind's stages as the runner runs them, `music` the only client."""
    request = MUSIC_KIND.request.model_validate(job.request)
    runner = StageRunner(
        jobs, job, request, models_with(music=music), retry=FAST_RETRY, version=MUSIC_KIND.version
    )
    return asyncio.run(runner.run(MUSIC_KIND.stages))


def generated_audio(jobs: JobStore, storage: Storage, job_id: str) -> Audio:
    stage = next(s for s in jobs.get(job_id).stages if s.name == "generate")
    return decode(storage.get_bytes(stage.prefix + "audio.wav"))


@pytest.mark.parametrize(("duration_s", "windows"), [(30.5, 2), (50.0, 2), (50.01, 3), (300.0, 15)])
def test_plan_counts_windows(duration_s: float, windows: int) -> None:
    assert planned_windows(duration_s) == windows
    request = MusicJobRequest(prompt="x", duration_s=duration_s)
    assert len(track_seams(request)) == windows - 1


def test_short_and_conditioned_requests_are_one_call() -> None:
    assert track_seams(MusicJobRequest(prompt="x", duration_s=WINDOW_S)) == []
    assert track_seams(MusicJobRequest(prompt="x", duration_s=60, model="stable-audio")) == []


def test_300_s_track_has_the_exact_length_and_window_progress(jobs: JobStore, storage: Storage) -> None:
    job = claimed_job(jobs, duration_s=300.0, quality_check=False, loudness_lufs=None)
    music = ContinuingMusicGen()
    segments: list[tuple[str, int, int]] = []
    update = jobs.update

    def spying_update(job_id: str, mark: Any, **kwargs: Any) -> Any:
        record = update(job_id, mark, **kwargs)
        if record.segments is not None:
            segments.append((record.segments.stage, record.segments.done, record.segments.total))
        return record

    jobs.update = spying_update  # type: ignore[method-assign, assignment]
    run(jobs, job, music)
    assert [c[0] for c in music.calls] == ["generate"] + ["continue"] * 14
    assert [c[1] for c in music.calls] == [window_seed(11, i) for i in range(15)]
    last = CONTEXT_S + 10.0 + MARGIN_S  # 300 = 30 + 13 * 20 + 10: the last window adds 10 s (+ margin)
    assert [c[2] for c in music.calls] == pytest.approx([WINDOW_S] * 14 + [last])
    assert generated_audio(jobs, storage, job.id).samples.shape == (1, 300 * RATE)
    assert ("generate", 1, 15) in segments and ("generate", 15, 15) in segments  # progress per window


def test_windows_are_joined_without_a_step() -> None:
    t = np.arange(40 * RATE) / RATE
    track = Audio((0.3 * np.sin(2 * np.pi * 220 * t))[None].astype(np.float32), RATE)
    context = track.samples[:, -round(CONTEXT_S * RATE) :]
    window = Audio(np.concatenate([context, 0.3 * np.ones((1, 5 * RATE))], axis=1).astype(np.float32), RATE)
    joined = join_window(track, window)
    assert joined.samples.shape[1] == 45 * RATE
    np.testing.assert_array_equal(joined.samples[:, : 39 * RATE], track.samples[:, : 39 * RATE])
    assert seam_jump_db(joined, 40.0) < 9.0


def test_a_seam_dropout_fails_the_quality_check(jobs: JobStore, storage: Storage) -> None:
    class DropoutMusicGen(ContinuingMusicGen):
        async def continue_audio(self, **kwargs: Any) -> GeneratedAudio:
            made = await super().continue_audio(**kwargs)
            samples = made.audio.samples.copy()
            samples[:, round(CONTEXT_S * RATE) :] *= 0.01  # the new part comes out 40 dB down
            return GeneratedAudio(Audio(samples, RATE), made.seed, made.model)

    job = claimed_job(jobs, duration_s=45.0, max_regenerations=0)
    result = job_result(run(jobs, job, DropoutMusicGen()))
    assert "seam_level_jump" in result["metadata"]["quality"]["attempts"][0]["issues"]


def test_resume_mid_track_regenerates_only_the_missing_windows(jobs: JobStore, storage: Storage) -> None:
    job = claimed_job(jobs, duration_s=95.0, quality_check=False)
    whole = ContinuingMusicGen()
    run(jobs, job, whole)
    expected = generated_audio(jobs, storage, job.id)
    assert len(whole.calls) == 5

    crashed = claimed_job(jobs, duration_s=95.0, quality_check=False)
    dying = ContinuingMusicGen(die_after=3)  # three windows made and stored, then the runner dies
    with pytest.raises(Exception, match="killed"):
        run(jobs, crashed, dying)
    resumed = jobs.update(crashed.id, lambda r: setattr(r, "attempt", r.attempt + 1))
    music = ContinuingMusicGen()
    run(jobs, resumed, music)
    assert [c[1] for c in music.calls] == [window_seed(11, 3), window_seed(11, 4)]  # only the missing ones
    audio = generated_audio(jobs, storage, crashed.id)
    np.testing.assert_array_equal(audio.samples, expected.samples)  # same seed → identical audio
    stage = next(s for s in jobs.get(crashed.id).stages if s.name == "generate")
    assert stage.attempt == resumed.attempt and stage.index == GENERATE_INDEX
    assert jobs.get(crashed.id).stages[0].objects == jobs.get(job.id).stages[0].objects


def test_a_window_that_does_not_decode_is_made_again(jobs: JobStore, storage: Storage) -> None:
    job = claimed_job(jobs, duration_s=45.0, quality_check=False)
    dying = ContinuingMusicGen(die_after=1)
    with pytest.raises(Exception, match="killed"):
        run(jobs, job, dying)
    keys = [k for k in storage.list_keys(f"jobs/{job.id}/") if "/windows/" in k]
    assert len(keys) == 1
    storage.put_bytes(keys[0], b"torn")
    resumed = jobs.update(job.id, lambda r: setattr(r, "attempt", r.attempt + 1))
    music = ContinuingMusicGen()
    run(jobs, resumed, music)
    assert [c[0] for c in music.calls] == ["generate", "continue"]
    assert generated_audio(jobs, storage, job.id).samples.shape == (1, 45 * RATE)
