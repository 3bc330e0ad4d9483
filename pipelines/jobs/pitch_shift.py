"""Pitch-shift jobs: load → shift (formant-preserving DSP on the Pitch deployment) → store."""

from __future__ import annotations

import asyncio

from pydantic import BaseModel, ConfigDict, Field

from infra.audio import AudioFormat, decode, encode
from pipelines.engine.outputs import store_audio
from pipelines.engine.stages import Stage, StageContext, StageResult
from pipelines.jobs.separation import load_input

PITCH_SHIFT_JOB = "pitch-shift"


class PitchShiftJobRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    upload_id: str = Field(pattern="^[0-9a-f]{32}$")
    semitones: float = Field(ge=-24.0, le=24.0, description="Up (positive) or down, in semitones.")
    preserve_formants: bool = Field(default=True, description="Keep the voice's timbre (spectral envelope).")
    format: AudioFormat = "wav"


async def shift(ctx: StageContext) -> StageResult:
    request = PitchShiftJobRequest.model_validate(ctx.request)
    audio = await asyncio.to_thread(load_input, ctx, request.upload_id)
    shifted = await ctx.handles["Pitch"].shift.remote(audio, request.semitones, request.preserve_formants)
    return StageResult(objects={"shifted.wav": await asyncio.to_thread(encode, shifted, "wav")})


async def store_shifted(ctx: StageContext) -> StageResult:
    request = PitchShiftJobRequest.model_validate(ctx.request)
    audio = decode(ctx.object("shift", "shifted.wav"))
    entry = await asyncio.to_thread(store_audio, ctx, "shifted", audio, request.format)
    metadata = {"semitones": request.semitones, "preserve_formants": request.preserve_formants}
    return StageResult(facts={"result": {"audio": entry, "metadata": metadata}})


PITCH_SHIFT_STAGES = (Stage("shift", shift), Stage("store", store_shifted))
