"""The music generation pipeline: generate → store (encoded audio + metadata under `outputs/{job_id}/`).

Issue 5 grows this into the full generation DAG (quality check, regenerate, loudness, loop, spectrogram).
"""

from __future__ import annotations

import asyncio
import json
import secrets
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from infra.audio import MEDIA_TYPES, AudioFormat, decode, encode, loudness_lufs, peak_dbfs
from infra.storage import output_key
from models.common import GeneratedAudio
from pipelines.stages import Stage, StageContext, StageResult

MUSIC_JOB = "music"
Prompt = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=2000)]


class MusicJobRequest(BaseModel):
    """`POST /v1/jobs/music`. The limit on `duration_s` is a setting, checked by the ingress."""

    model_config = ConfigDict(extra="forbid")

    prompt: Prompt = Field(description="What to generate, in words.", examples=["lo-fi beat with warm piano"])
    duration_s: float = Field(default=8.0, gt=0, description="Length of the result in seconds.")
    seed: int | None = Field(
        default=None, ge=0, lt=2**31, description="Same seed, same prompt, same weights → same audio."
    )
    format: AudioFormat = Field(default="wav", description="Container of the stored result.")
    guidance_scale: float = Field(default=3.0, ge=1.0, le=20.0, description="Classifier-free guidance.")
    top_k: int = Field(default=250, ge=1, le=4096)
    temperature: float = Field(default=1.0, gt=0.0, le=5.0)

    def with_seed(self) -> MusicJobRequest:
        """Fix the seed at submission, so a resumed job regenerates the same audio."""
        return self if self.seed is not None else self.model_copy(update={"seed": secrets.randbelow(2**31)})


async def generate_music(ctx: StageContext) -> StageResult:
    """Call the MusicGen deployment; commit the clip as 32-bit float WAV."""
    request = MusicJobRequest.model_validate(ctx.request)
    generated: GeneratedAudio = await ctx.handles["MusicGen"].generate.remote(
        request.prompt,
        request.duration_s,
        request.seed,
        request.guidance_scale,
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


async def store_music(ctx: StageContext) -> StageResult:
    """Encode in the requested format, write `outputs/{job_id}/audio.*` and `metadata.json`."""
    request = MusicJobRequest.model_validate(ctx.request)
    return await asyncio.to_thread(_store, ctx, request)


def _store(ctx: StageContext, request: MusicJobRequest) -> StageResult:
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


MUSIC_STAGES = (Stage("generate", generate_music), Stage("store", store_music))
