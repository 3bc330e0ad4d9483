"""The generation DAG's stage records, and its stages after `generate`: quality check and
regeneration, mastering, spectrogram, store.

    generate → quality (regenerate ≤ 2x) → master (loudness, optional loop) → spectrogram → store

`pipelines/jobs/generation.py` holds the `generate` stage (the generator call) and the job kinds; it
imports this module, never the other way round: `select_clip` takes a way to generate again.

Regeneration stays durable: every retry's seed is derived from the first attempt's seed by a hash
(`regeneration_seed`), so a job resumed after a crash re-runs the `quality` stage to the same attempts,
the same choice and the same audio. Every attempt's seed, score and issues are recorded in the stage
record and in `metadata.json`.

When every attempt fails the check, the job still succeeds with the best-scoring attempt, and the
metadata says `quality.passed: false`. The check is a heuristic: rain, surf or a "white noise riser"
are *meant* to be noise-like, and failing such a job would throw away exactly what was asked for,
after paying for three generations. The caller gets the audio and the named issues, and decides.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
from pydantic import BaseModel, ConfigDict

from infra.audio import Audio, decode, encode, loudness_lufs, peak_dbfs
from infra.dsp.mastering import master
from infra.dsp.quality import QualityReport, assess_quality
from infra.dsp.spectrogram import HEIGHT, WIDTH, render_png
from infra.storage import output_key
from models.types import GeneratedAudio, ModelInfo
from pipelines.engine.outputs import store_audio, store_json
from pipelines.engine.stages import StageContext, StageOutput, StageResult, Stored
from pipelines.jobs.generation_request import GenerationJobRequest

G = TypeVar("G", bound=GenerationJobRequest)
CLIP = "audio.wav"  # every audio checkpoint of this DAG: 32-bit float WAV, lossless
SPECTROGRAM = "spectrogram.png"
MAX_SEAM_JUMP_DB = 9.0  # a window seam louder or quieter than this is an issue (a dropout or a burst)
SEAM_SPAN_S = 0.5
Regenerate = Callable[[int], Awaitable[GeneratedAudio]]
"""Generate the request's clip again with another seed (the same client, prompt and settings)."""


class Generated(StageOutput):
    """The `generate` stage: the clip (`audio.wav`), the weights and seed that made it, its conditioning."""

    model: ModelInfo
    seed: int
    sample_rate: int
    channels: int
    duration_s: float
    conditioning: dict[str, str] | None
    seams_s: list[float] = []  # where the windows of a long track meet (`generation_long`)


class AttemptScore(BaseModel):
    """One attempt of the `quality` stage: its seed and its quality report (`QualityReport.as_dict`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    attempt: int
    seed: int
    score: float
    passed: bool
    issues: list[str]
    clipping_ratio: float
    rms_dbfs: float | None
    hf_ratio: float | None
    spectral_flatness: float


class QualityChecked(StageOutput):
    """The `quality` stage: the chosen clip (`audio.wav`) and every attempt."""

    checked: bool
    passed: bool
    regenerations: int
    chosen_attempt: int
    seed: int
    model: ModelInfo
    attempts: list[AttemptScore]


class Mastered(StageOutput):
    """The `master` stage: the mastered clip (`audio.wav`) and `MasteringReport.as_dict()`."""

    mastering: dict[str, Any]


class Spectrogram(StageOutput):
    """The `spectrogram` stage: `spectrogram.png`, of this size in pixels."""

    width: int
    height: int


@dataclass(frozen=True)
class Attempt:
    """One generated clip and its quality report."""

    seed: int
    audio: Audio
    model: ModelInfo
    report: QualityReport

    def score(self, index: int) -> AttemptScore:
        return AttemptScore(attempt=index, seed=self.seed, **self.report.as_dict())


def regeneration_seed(first_seed: int, attempt: int) -> int:
    """The seed of retry `attempt` (1, 2, …): a hash of the first seed, in the request's range [0, 2**31)."""
    digest = hashlib.blake2b(f"soundstage-regenerate/{first_seed}/{attempt}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % 2**31


async def select_clip(ctx: StageContext[G], regenerate: Regenerate) -> StageResult:
    """Stage `quality`: score the generated clip; while it fails and retries remain, generate again with
    the next derived seed. Commits the chosen attempt's audio; the record lists every attempt."""
    request, generated = ctx.request, ctx.output(Generated)
    first_wav = ctx.object(Generated, CLIP)
    audio = await asyncio.to_thread(decode, first_wav)
    seams = generated.seams_s
    attempts = [Attempt(generated.seed, audio, generated.model, await _assess(audio, seams))]
    retries = request.max_regenerations if request.quality_check else 0
    for retry in range(1, retries + 1):
        if attempts[-1].report.passed:
            break
        clip = await regenerate(regeneration_seed(generated.seed, retry))
        attempts.append(Attempt(clip.seed, clip.audio, clip.model, await _assess(clip.audio, seams)))
    chosen = max(range(len(attempts)), key=lambda i: (attempts[i].report.passed, attempts[i].report.score))
    best = attempts[chosen]
    wav = first_wav if chosen == 0 else await asyncio.to_thread(encode, best.audio, "wav")
    record = QualityChecked(
        checked=request.quality_check,
        passed=best.report.passed,
        regenerations=len(attempts) - 1,
        chosen_attempt=chosen,
        seed=best.seed,
        model=best.model,
        attempts=[a.score(i) for i, a in enumerate(attempts)],
    )
    return StageResult(record=record, objects={CLIP: wav})


async def _assess(audio: Audio, seams_s: list[float]) -> QualityReport:
    report = await asyncio.to_thread(assess_quality, audio)
    jumps = [seam_jump_db(audio, at) for at in seams_s]
    if any(jump > MAX_SEAM_JUMP_DB for jump in jumps):
        return dataclasses.replace(report, issues=[*report.issues, "seam_level_jump"])
    return report


def seam_jump_db(audio: Audio, at_s: float) -> float:
    """|level change| (dB) across a window seam at `at_s`: RMS of the `SEAM_SPAN_S` before vs after."""
    at, span = round(at_s * audio.sample_rate), round(SEAM_SPAN_S * audio.sample_rate)
    before, after = audio.samples[:, max(0, at - span) : at], audio.samples[:, at : at + span]
    if before.size == 0 or after.size == 0:
        return 0.0
    rms = [float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) + 1e-9 for x in (before, after)]
    return float(abs(20 * np.log10(rms[1] / rms[0])))


async def master_audio(ctx: StageContext[G]) -> StageResult:
    """Stage `master`: loudness to `loudness_lufs` under the true-peak ceiling, then the loop crossfade
    when `loopable`."""
    return await asyncio.to_thread(_master, ctx.request, ctx.object(QualityChecked, CLIP))


def _master(request: GenerationJobRequest, wav: bytes) -> StageResult:
    crossfade = request.loop_crossfade_s if request.loopable else None
    mastered, report = master(
        decode(wav),
        target_lufs=request.loudness_lufs,
        true_peak_db=request.true_peak_db,
        loop_crossfade_s=crossfade,
    )
    return StageResult(record=Mastered(mastering=report.as_dict()), objects={CLIP: encode(mastered, "wav")})


async def draw_spectrogram(ctx: StageContext[G]) -> StageResult:
    """Stage `spectrogram`: the mastered clip's mel spectrogram as a dark-theme PNG."""
    png = await asyncio.to_thread(lambda: render_png(decode(ctx.object(Mastered, CLIP))))
    return StageResult(record=Spectrogram(width=WIDTH, height=HEIGHT), objects={SPECTROGRAM: png})


async def store_clip(ctx: StageContext[G]) -> StageResult:
    """Stage `store`: `outputs/{job_id}/audio.{format}`, `spectrogram.png` and `metadata.json`, the
    three written at once."""
    audio, metadata = await asyncio.to_thread(_decode_and_describe, ctx)
    png_key = output_key(ctx.job.id, SPECTROGRAM, ctx.job.attempt)
    png = ctx.object(Spectrogram, SPECTROGRAM)
    _, stored_audio, stored_metadata = await asyncio.gather(
        asyncio.to_thread(ctx.storage.put_bytes, png_key, png, "image/png"),
        asyncio.to_thread(store_audio, ctx, "audio", audio, ctx.request.format),
        asyncio.to_thread(store_json, ctx, "metadata", metadata),
    )
    result = {
        "audio": stored_audio,
        "spectrogram": {"key": png_key, "media_type": "image/png", **ctx.output(Spectrogram).model_dump()},
        "metadata": {**stored_metadata, **metadata},
    }
    return StageResult(record=Stored(result=result), objects={"metadata.json": json.dumps(metadata).encode()})


def _decode_and_describe(ctx: StageContext[G]) -> tuple[Audio, dict[str, Any]]:
    audio = decode(ctx.object(Mastered, CLIP))
    return audio, generation_metadata(ctx, audio)


def generation_metadata(ctx: StageContext[G], audio: Audio) -> dict[str, Any]:
    """What `metadata.json` says about the clip: model and weights, seeds, every quality attempt,
    loudness before and after mastering, the loop."""
    request, generated = ctx.request, ctx.output(Generated)
    quality, mastering = ctx.output(QualityChecked), ctx.output(Mastered).mastering
    model = quality.model.as_dict()
    return {
        "job_id": ctx.job.id,
        "prompt": request.prompt,
        "model": model,
        "weights": model["weights"],
        "seed": generated.seed,
        "generation_seed": quality.seed,
        "conditioning": generated.conditioning,
        "sample_rate": audio.sample_rate,
        "channels": audio.channels,
        "duration_s": round(audio.duration_s, 6),
        "format": request.format,
        "loudness_lufs": _finite_or_none(loudness_lufs(audio)),
        "peak_dbfs": _finite_or_none(peak_dbfs(audio)),
        "loudness_before_lufs": mastering["loudness_before_lufs"],
        "loopable": request.loopable,
        "mastering": mastering,
        "quality": quality.model_dump(include={"checked", "passed", "regenerations", "chosen_attempt"})
        | {"attempts": [a.model_dump() for a in quality.attempts]},
        "regenerations": quality.regenerations,
    }


def _finite_or_none(value: float) -> float | None:
    return round(value, 3) if value == value and abs(value) != float("inf") else None
