"""Pitch-shift jobs: load → shift (formant-preserving DSP on the Pitch deployment) → store."""

from __future__ import annotations

import asyncio

from pydantic import BaseModel, ConfigDict, Field

from infra.audio import AudioFormat, decode, encode
from infra.uploads import load_upload
from pipelines.engine.kinds import Admission, JobKind
from pipelines.engine.outputs import store_audio
from pipelines.engine.stages import Stage, StageContext, StageOutput, StageResult, Stored
from pipelines.jobs.separation import UPLOAD_ID, admit_upload

PITCH_SHIFT_JOB = "pitch-shift"


class PitchShiftJobRequest(BaseModel):
    """`POST /v1/jobs/pitch-shift` (the HTTP layer turns a `file` into the `upload_id`)."""

    model_config = ConfigDict(extra="forbid")

    upload_id: str = Field(pattern=UPLOAD_ID)
    semitones: float = Field(ge=-24.0, le=24.0, description="Up (positive) or down, in semitones.")
    preserve_formants: bool = Field(default=True, description="Keep the voice's timbre (spectral envelope).")
    format: AudioFormat = "wav"


class Shifted(StageOutput):
    """The `shift` stage: the shifted audio is its `shifted.wav` object."""

    sample_rate: int
    channels: int
    duration_s: float


async def admit_pitch_shift(request: PitchShiftJobRequest, admission: Admission) -> PitchShiftJobRequest:
    """404 `upload_not_found` for an unknown upload."""
    await admit_upload(admission, request.upload_id)
    return request


async def shift(ctx: StageContext[PitchShiftJobRequest]) -> StageResult:
    request = ctx.request
    audio = await asyncio.to_thread(load_upload, ctx.storage, request.upload_id)
    shifted = await ctx.models.pitch.shift(
        audio=audio, semitones=request.semitones, preserve_formants=request.preserve_formants
    )
    record = Shifted(
        sample_rate=shifted.sample_rate, channels=shifted.channels, duration_s=round(shifted.duration_s, 6)
    )
    body = await asyncio.to_thread(encode, shifted, "wav")
    return StageResult(record=record, objects={"shifted.wav": body})


async def store_shifted(ctx: StageContext[PitchShiftJobRequest]) -> StageResult:
    request = ctx.request
    audio = decode(ctx.object(Shifted, "shifted.wav"))
    entry = await asyncio.to_thread(store_audio, ctx, "shifted", audio, request.format)
    metadata = {"semitones": request.semitones, "preserve_formants": request.preserve_formants}
    return StageResult(record=Stored(result={"audio": entry, "metadata": metadata}))


PITCH_SHIFT_STAGES: tuple[Stage[PitchShiftJobRequest], ...] = (
    Stage("shift", shift, output=Shifted),  # DSP: no weights to fingerprint
    Stage("store", store_shifted, output=Stored),
)

PITCH_SHIFT_KIND = JobKind(
    name=PITCH_SHIFT_JOB,
    request=PitchShiftJobRequest,
    stages=PITCH_SHIFT_STAGES,
    admit=admit_pitch_shift,
    inputs=frozenset({"file", "upload_id"}),
    summary="Shift pitch by `semitones` keeping duration (and, by default, formants).",
)
