"""The generation pipeline (music and sound effects): generate → store (audio + metadata in `outputs/`).

Issue 5 grows this into the full generation DAG (quality check, regenerate, loudness, loop, spectrogram).
"""

from __future__ import annotations

import asyncio
import json
import secrets
from typing import Annotated, Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from infra.audio import MEDIA_TYPES, AudioFormat, decode, encode, loudness_lufs, peak_dbfs
from infra.storage import output_key
from models.common import GeneratedAudio
from pipelines.stages import Stage, StageContext, StageResult

MUSIC_JOB = "music"
SFX_JOB = "sfx"
Prompt = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=2000)]


class GenerationJobRequest(BaseModel):
    """What music and sound-effect jobs share. `duration_s` limits are checked by the ingress."""

    model_config = ConfigDict(extra="forbid")

    model: str
    prompt: Prompt = Field(description="What to generate, in words.", examples=["lo-fi beat with warm piano"])
    duration_s: float = Field(default=8.0, gt=0, description="Length of the result in seconds.")
    seed: int | None = Field(
        default=None, ge=0, lt=2**31, description="Same seed, same prompt, same weights → same audio."
    )
    format: AudioFormat = Field(default="wav", description="Container of the stored result.")
    guidance_scale: float | None = Field(
        default=None, ge=1.0, le=20.0, description="Classifier-free guidance (default 3, Stable Audio 7)."
    )
    top_k: int = Field(default=250, ge=1, le=4096, description="MusicGen/AudioGen sampling.")
    temperature: float = Field(default=1.0, gt=0.0, le=5.0, description="MusicGen/AudioGen sampling.")
    steps: int = Field(default=100, ge=1, le=500, description="Stable Audio denoising steps.")
    negative_prompt: str | None = Field(default=None, max_length=2000, description="Stable Audio only.")

    def with_seed(self) -> Self:
        """Fix the seed at submission, so a resumed job regenerates the same audio."""
        return self if self.seed is not None else self.model_copy(update={"seed": secrets.randbelow(2**31)})


class MusicJobRequest(GenerationJobRequest):
    """`POST /v1/jobs/music`: MusicGen (autoregressive, default) or Stable Audio Open (diffusion, fast)."""

    model: Literal["musicgen", "stable-audio"] = "musicgen"


class SfxJobRequest(GenerationJobRequest):
    """`POST /v1/jobs/sfx`: AudioGen (default) or Stable Audio Open."""

    model: Literal["audiogen", "stable-audio"] = "audiogen"


REQUESTS: dict[str, type[GenerationJobRequest]] = {MUSIC_JOB: MusicJobRequest, SFX_JOB: SfxJobRequest}
DEPLOYMENTS = {"musicgen": "MusicGen", "audiogen": "AudioGen", "stable-audio": "StableAudio"}


def generation_request(ctx: StageContext) -> GenerationJobRequest:
    return REQUESTS[ctx.job.kind].model_validate(ctx.request)


async def generate_clip(ctx: StageContext) -> StageResult:
    """Call the chosen generator's deployment; commit the clip as 32-bit float WAV."""
    request = generation_request(ctx)
    handle = ctx.handles[DEPLOYMENTS[request.model]]
    generated: GeneratedAudio
    if request.model == "stable-audio":
        generated = await handle.generate.remote(
            request.prompt,
            request.duration_s,
            request.seed,
            request.steps,
            request.guidance_scale or 7.0,
            request.negative_prompt,
        )
    else:
        generated = await handle.generate.remote(
            request.prompt,
            request.duration_s,
            request.seed,
            request.guidance_scale or 3.0,
            request.top_k,
            request.temperature,
        )
    audio = generated.audio
    facts = {
        "model": generated.model.as_dict(),
        "seed": generated.seed,
        "sample_rate": audio.sample_rate,
        "channels": audio.channels,
        "duration_s": audio.duration_s,
    }
    wav = await asyncio.to_thread(encode, audio, "wav")
    return StageResult(objects={"audio.wav": wav}, facts=facts)


async def store_clip(ctx: StageContext) -> StageResult:
    """Encode in the requested format, write `outputs/{job_id}/audio.*` and `metadata.json`."""
    return await asyncio.to_thread(_store, ctx, generation_request(ctx))


def _store(ctx: StageContext, request: GenerationJobRequest) -> StageResult:
    audio = decode(ctx.object("generate", "audio.wav"))
    generated = ctx.facts("generate")
    audio_key = output_key(ctx.job.id, f"audio.{request.format}")
    metadata_key = output_key(ctx.job.id, "metadata.json")
    metadata: dict[str, Any] = {
        "job_id": ctx.job.id,
        "prompt": request.prompt,
        "model": generated["model"],
        "weights": generated["model"]["weights"],
        "seed": generated["seed"],
        "sample_rate": audio.sample_rate,
        "channels": audio.channels,
        "duration_s": round(audio.duration_s, 6),
        "format": request.format,
        "loudness_lufs": _finite_or_none(loudness_lufs(audio)),
        "peak_dbfs": _finite_or_none(peak_dbfs(audio)),
    }
    ctx.storage.put_bytes(audio_key, encode(audio, request.format), MEDIA_TYPES[request.format])
    ctx.storage.put_bytes(metadata_key, json.dumps(metadata, indent=1).encode(), "application/json")
    result = {
        "audio": {"key": audio_key, "media_type": MEDIA_TYPES[request.format]},
        "metadata": {"key": metadata_key, **metadata},
    }
    return StageResult(objects={"metadata.json": json.dumps(metadata).encode()}, facts={"result": result})


def _finite_or_none(value: float) -> float | None:
    return round(value, 3) if value == value and abs(value) != float("inf") else None


GENERATION_STAGES = (Stage("generate", generate_clip), Stage("store", store_clip))
