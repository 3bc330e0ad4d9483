"""Source separation jobs: load → separate in overlapping segments across replicas → join → store stems.

Also the helpers the other audio-input kinds share: `admit_upload` (the upload exists, 404 otherwise)
and `separate_in_segments` (the fan-out over the Separation replicas; voice replacement uses it too).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from infra.audio import Audio, AudioFormat, decode, encode, resample
from infra.dsp.segments import DEFAULT_OVERLAP_S, DEFAULT_SEGMENT_S, cut, join, plan_segments
from infra.dsp.stems import two_stems
from infra.uploads import UploadInfo, UploadNotFoundError, load_upload, upload_info
from pipelines.engine.clients import ModelClient, Models, SeparationClient
from pipelines.engine.kinds import Admission, AdmissionError, JobKind
from pipelines.engine.outputs import store_audio
from pipelines.engine.stages import Stage, StageContext, StageOutput, StageResult, Stored

SEPARATE_JOB = "separate"
UPLOAD_ID = "^[0-9a-f]{32}$"


class SeparateJobRequest(BaseModel):
    """`POST /v1/jobs/separate` (the HTTP layer turns a `file` or `url` into the `upload_id`)."""

    model_config = ConfigDict(extra="forbid")

    upload_id: str = Field(pattern=UPLOAD_ID)
    mode: Literal["4stems", "vocals"] = Field(
        default="4stems", description="`4stems`: drums, bass, other, vocals; `vocals`: vocals + no_vocals."
    )
    format: AudioFormat = "wav"
    segment_s: float = Field(
        default=DEFAULT_SEGMENT_S, ge=5.0, le=600.0, description="Segment sent to one replica."
    )
    overlap_s: float = Field(default=DEFAULT_OVERLAP_S, ge=0.0, le=10.0, description="Crossfaded overlap.")


class Separated(StageOutput):
    """The `separate` stage: the stems (one `{name}.wav` object each), the segment count, the weights."""

    stems: list[str]
    segments: int
    model: dict[str, Any]


async def admit_upload(admission: Admission, upload_id: str) -> UploadInfo:
    """The upload's description; `AdmissionError` 404 `upload_not_found` if there is none, or if it is
    another tenant's than the job's (`admission.owner`)."""
    try:
        return await asyncio.to_thread(upload_info, admission.storage, upload_id, admission.owner)
    except UploadNotFoundError as e:
        raise AdmissionError(e.code, str(e), status=404) from e


async def admit_separation(request: SeparateJobRequest, admission: Admission) -> SeparateJobRequest:
    """422 `invalid_request` if segments would overlap by more than half; 404 for an unknown upload."""
    if 2 * request.overlap_s > request.segment_s:
        raise AdmissionError("invalid_request", "overlap_s may be at most half of segment_s")
    await admit_upload(admission, request.upload_id)
    return request


async def separate_in_segments(
    ctx: StageContext[Any], client: SeparationClient, audio: Audio, segment_s: float, overlap_s: float
) -> tuple[dict[str, Audio], int]:
    """`audio` (at the model's rate) cut into overlapping segments, separated concurrently over the
    Separation replicas (a lost replica's segments are retried), stems crossfaded back together; with the
    number of segments."""
    segments = plan_segments(audio.num_samples, audio.sample_rate, segment_s=segment_s, overlap_s=overlap_s)
    pieces = await ctx.map(lambda s: client.separate(audio=cut(audio, s)), segments)
    total = audio.num_samples
    stems = await asyncio.to_thread(
        lambda: {name: join([p[name] for p in pieces], segments, total) for name in pieces[0]}
    )
    return stems, len(segments)


async def separate_stems(ctx: StageContext[SeparateJobRequest]) -> StageResult:
    """Cut the input into overlapping segments, separate them concurrently, crossfade the stems back."""
    request, client = ctx.request, ctx.models.separation
    card = await client.info()
    source = await asyncio.to_thread(load_upload, ctx.storage, request.upload_id)
    audio = await asyncio.to_thread(resample, source, card.sample_rate)
    stems, segments = await separate_in_segments(ctx, client, audio, request.segment_s, request.overlap_s)
    if request.mode == "vocals":
        stems = two_stems(stems, keep="vocals")
    objects = {f"{name}.wav": await asyncio.to_thread(encode, stem, "wav") for name, stem in stems.items()}
    record = Separated(stems=list(stems), segments=segments, model=card.identity)
    return StageResult(record=record, objects=objects)


async def store_stems(ctx: StageContext[SeparateJobRequest]) -> StageResult:
    """Each stem at `outputs/{job_id}/{stem}.{format}`; the weights and segment count as metadata."""
    return StageResult(record=await asyncio.to_thread(_store, ctx, ctx.request.format))


def _store(ctx: StageContext[SeparateJobRequest], fmt: AudioFormat) -> Stored:
    separated = ctx.output(Separated)
    result: dict[str, Any] = {
        name: store_audio(ctx, name, decode(ctx.object(Separated, f"{name}.wav")), fmt)
        for name in separated.stems
    }
    result["metadata"] = {
        "model": separated.model,
        "weights": separated.model["weights"],
        "segments": separated.segments,
    }
    return Stored(result=result)


def _separation(request: SeparateJobRequest, models: Models) -> Sequence[ModelClient]:
    return (models.separation,)


SEPARATION_STAGES: tuple[Stage[SeparateJobRequest], ...] = (
    Stage("separate", separate_stems, output=Separated, models=_separation),
    Stage("store", store_stems, output=Stored),
)

SEPARATE_KIND = JobKind(
    name=SEPARATE_JOB,
    request=SeparateJobRequest,
    stages=SEPARATION_STAGES,
    admit=admit_separation,
    inputs=frozenset({"file", "upload_id", "url"}),
    summary="Separate stems (HTDemucs): one presigned URL per stem in the result.",
)
