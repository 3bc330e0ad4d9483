"""The generation DAG after `generate`: quality check and regeneration, mastering, spectrogram, store.

    generate → quality (regenerate ≤ 2x) → master (loudness, optional loop) → spectrogram → store

Each function here is the body of one stage in `pipelines/jobs/generation.py`'s `GENERATION_STAGES`; it takes
the validated request (and, for `quality`, a way to generate again), so it does not import that module.

Regeneration stays durable: every retry's seed is derived from the first attempt's seed by a hash
(`regeneration_seed`), so a job resumed after a crash re-runs the `quality` stage to the same attempts,
the same choice and the same audio. Every attempt's seed, score and issues are recorded in the stage
facts and in `metadata.json`.

When every attempt fails the check, the job still succeeds with the best-scoring attempt, and the
metadata says `quality.passed: false`. The check is a heuristic: rain, surf or a "white noise riser"
are *meant* to be noise-like, and failing such a job would throw away exactly what was asked for,
after paying for three generations. The caller gets the audio and the named issues, and decides.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from infra.audio import Audio, decode, encode, loudness_lufs, peak_dbfs
from infra.dsp.mastering import master
from infra.dsp.quality import QualityReport, assess_quality
from infra.dsp.spectrogram import HEIGHT, WIDTH, render_png
from infra.storage import output_key
from models.types import GeneratedAudio
from pipelines.engine.outputs import store_audio, store_json
from pipelines.engine.stages import StageContext, StageResult

if TYPE_CHECKING:
    from pipelines.jobs.generation import GenerationJobRequest

CLIP = "audio.wav"  # every audio checkpoint of this DAG: 32-bit float WAV, lossless
SPECTROGRAM = "spectrogram.png"
Regenerate = Callable[[int], Awaitable[GeneratedAudio]]
"""Generate the request's clip again with another seed (the same deployment, prompt and settings)."""


@dataclass(frozen=True)
class Attempt:
    """One generated clip and its quality report."""

    seed: int
    audio: Audio
    model: Mapping[str, Any]
    report: QualityReport

    def record(self, index: int) -> dict[str, Any]:
        return {"attempt": index, "seed": self.seed, **self.report.as_dict()}


def regeneration_seed(first_seed: int, attempt: int) -> int:
    """The seed of retry `attempt` (1, 2, …): a hash of the first seed, in the request's range [0, 2**31)."""
    digest = hashlib.blake2b(f"soundstage-regenerate/{first_seed}/{attempt}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % 2**31


async def select_clip(
    ctx: StageContext, request: GenerationJobRequest, regenerate: Regenerate
) -> StageResult:
    """Stage `quality`: score the generated clip; while it fails and retries remain, generate again with
    the next derived seed. Commits the chosen attempt's audio; facts list every attempt."""
    generated = ctx.facts("generate")
    first_wav = ctx.object("generate", CLIP)
    audio = await asyncio.to_thread(decode, first_wav)
    attempts = [Attempt(generated["seed"], audio, generated["model"], await _assess(audio))]
    retries = request.max_regenerations if request.quality_check else 0
    for retry in range(1, retries + 1):
        if attempts[-1].report.passed:
            break
        clip = await regenerate(regeneration_seed(generated["seed"], retry))
        attempts.append(Attempt(clip.seed, clip.audio, clip.model.as_dict(), await _assess(clip.audio)))
    chosen = max(range(len(attempts)), key=lambda i: (attempts[i].report.passed, attempts[i].report.score))
    best = attempts[chosen]
    wav = first_wav if chosen == 0 else await asyncio.to_thread(encode, best.audio, "wav")
    facts = {
        "checked": request.quality_check,
        "passed": best.report.passed,
        "regenerations": len(attempts) - 1,
        "chosen_attempt": chosen,
        "seed": best.seed,
        "model": dict(best.model),
        "attempts": [a.record(i) for i, a in enumerate(attempts)],
    }
    return StageResult(objects={CLIP: wav}, facts=facts)


async def _assess(audio: Audio) -> QualityReport:
    return await asyncio.to_thread(assess_quality, audio)


def master_clip(ctx: StageContext, request: GenerationJobRequest) -> StageResult:
    """Stage `master`: loudness to `request.loudness_lufs` under the true-peak ceiling, then the loop
    crossfade when `request.loopable`."""
    audio = decode(ctx.object("quality", CLIP))
    crossfade = request.loop_crossfade_s if request.loopable else None
    mastered, report = master(
        audio,
        target_lufs=request.loudness_lufs,
        true_peak_db=request.true_peak_db,
        loop_crossfade_s=crossfade,
    )
    return StageResult(objects={CLIP: encode(mastered, "wav")}, facts={"mastering": report.as_dict()})


def spectrogram_image(ctx: StageContext) -> StageResult:
    """Stage `spectrogram`: the mastered clip's mel spectrogram as a dark-theme PNG."""
    png = render_png(decode(ctx.object("master", CLIP)))
    return StageResult(objects={SPECTROGRAM: png}, facts={"width": WIDTH, "height": HEIGHT})


def store_outputs(ctx: StageContext, request: GenerationJobRequest) -> StageResult:
    """Stage `store`: `outputs/{job_id}/audio.{format}`, `spectrogram.png` and `metadata.json`."""
    audio = decode(ctx.object("master", CLIP))
    metadata = generation_metadata(ctx, request, audio)
    png_key = output_key(ctx.job.id, SPECTROGRAM)
    ctx.storage.put_bytes(png_key, ctx.object("spectrogram", SPECTROGRAM), "image/png")
    result = {
        "audio": store_audio(ctx, "audio", audio, request.format),
        "spectrogram": {"key": png_key, "media_type": "image/png", **ctx.facts("spectrogram")},
        "metadata": {**store_json(ctx, "metadata", metadata), **metadata},
    }
    return StageResult(objects={"metadata.json": json.dumps(metadata).encode()}, facts={"result": result})


def generation_metadata(ctx: StageContext, request: GenerationJobRequest, audio: Audio) -> dict[str, Any]:
    """What `metadata.json` says about the clip: model and weights, seeds, every quality attempt,
    loudness before and after mastering, the loop."""
    generated, quality = ctx.facts("generate"), ctx.facts("quality")
    mastering = ctx.facts("master")["mastering"]
    return {
        "job_id": ctx.job.id,
        "prompt": request.prompt,
        "model": quality["model"],
        "weights": quality["model"]["weights"],
        "seed": generated["seed"],
        "generation_seed": quality["seed"],
        "conditioning": generated.get("conditioning"),
        "sample_rate": audio.sample_rate,
        "channels": audio.channels,
        "duration_s": round(audio.duration_s, 6),
        "format": request.format,
        "loudness_lufs": _finite_or_none(loudness_lufs(audio)),
        "peak_dbfs": _finite_or_none(peak_dbfs(audio)),
        "loudness_before_lufs": mastering["loudness_before_lufs"],
        "loopable": request.loopable,
        "mastering": mastering,
        "quality": {key: quality[key] for key in ("checked", "passed", "regenerations", "chosen_attempt")}
        | {"attempts": quality["attempts"]},
        "regenerations": quality["regenerations"],
    }


def _finite_or_none(value: float) -> float | None:
    return round(value, 3) if value == value and abs(value) != float("inf") else None
