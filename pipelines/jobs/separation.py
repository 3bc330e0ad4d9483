"""Source separation jobs: load → separate in overlapping segments across replicas → join → store stems."""

from __future__ import annotations

import asyncio
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from infra.audio import Audio, AudioFormat, decode, encode, resample
from infra.dsp.segments import DEFAULT_OVERLAP_S, cut, join, plan_segments
from infra.dsp.stems import two_stems
from infra.storage import upload_key
from pipelines.engine.outputs import store_audio
from pipelines.engine.stages import Stage, StageContext, StageResult

SEPARATE_JOB = "separate"


class SeparateJobRequest(BaseModel):
    """`POST /v1/jobs/separate` (after the ingress turned a direct file into an upload)."""

    model_config = ConfigDict(extra="forbid")

    upload_id: str = Field(pattern="^[0-9a-f]{32}$")
    mode: Literal["4stems", "vocals"] = Field(
        default="4stems", description="`4stems`: drums, bass, other, vocals; `vocals`: vocals + no_vocals."
    )
    format: AudioFormat = "wav"
    segment_s: float = Field(default=30.0, ge=5.0, le=600.0, description="Segment sent to one replica.")
    overlap_s: float = Field(default=DEFAULT_OVERLAP_S, ge=0.0, le=10.0, description="Crossfaded overlap.")


def load_input(ctx: StageContext, upload_id: str) -> Audio:
    return decode(ctx.storage.get_bytes(upload_key(upload_id, "source")))


async def separate_stems(ctx: StageContext) -> StageResult:
    """Cut the input into overlapping segments, separate them concurrently, crossfade the stems back."""
    request = SeparateJobRequest.model_validate(ctx.request)
    handle = ctx.handles["Separation"]
    info: dict[str, Any] = await handle.info.remote()
    audio = resample(await asyncio.to_thread(load_input, ctx, request.upload_id), info["sample_rate"])
    stems, segments = await separate_in_segments(ctx, audio, request.segment_s, request.overlap_s)
    if request.mode == "vocals":
        stems = two_stems(stems, keep="vocals")
    objects = {f"{name}.wav": await asyncio.to_thread(encode, stem, "wav") for name, stem in stems.items()}
    facts = {"model": _model(info), "segments": segments, "stems": list(stems)}
    return StageResult(objects=objects, facts=facts)


async def separate_in_segments(
    ctx: StageContext, audio: Audio, segment_s: float, overlap_s: float
) -> tuple[dict[str, Audio], int]:
    """`audio` (at the model's rate) cut into overlapping segments, separated concurrently over the
    Separation replicas (a lost replica's segments are retried), stems crossfaded back together; with the
    number of segments."""
    handle = ctx.handles["Separation"]
    segments = plan_segments(audio.num_samples, audio.sample_rate, segment_s=segment_s, overlap_s=overlap_s)
    pieces: list[dict[str, Audio]] = await ctx.map(lambda s: handle.separate.remote(cut(audio, s)), segments)
    total = audio.num_samples
    stems = await asyncio.to_thread(
        lambda: {name: join([p[name] for p in pieces], segments, total) for name in pieces[0]}
    )
    return stems, len(segments)


async def store_stems(ctx: StageContext) -> StageResult:
    request = SeparateJobRequest.model_validate(ctx.request)
    return await asyncio.to_thread(_store, ctx, request.format)


def _store(ctx: StageContext, fmt: AudioFormat) -> StageResult:
    facts = ctx.facts("separate")
    result: dict[str, Any] = {
        name: store_audio(ctx, name, decode(ctx.object("separate", f"{name}.wav")), fmt)
        for name in facts["stems"]
    }
    result["metadata"] = {
        "model": facts["model"],
        "weights": facts["model"]["weights"],
        "segments": facts["segments"],
    }
    return StageResult(facts={"result": result})


def _model(info: dict[str, Any]) -> dict[str, Any]:
    return {key: info[key] for key in ("model_id", "revision", "weights")}


SEPARATION_STAGES = (Stage("separate", separate_stems, models=("Separation",)), Stage("store", store_stems))
