"""Diarization jobs for audio too long to answer synchronously: diarize → store turns JSON.

`POST /v1/diarize` answers short audio itself (with `turns_body`, the same JSON a job stores) and
submits this kind for long audio.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from infra.dsp.regions import Turn
from infra.uploads import load_upload
from pipelines.engine.clients import ModelClient, Models
from pipelines.engine.kinds import Admission, JobKind
from pipelines.engine.outputs import store_json
from pipelines.engine.stages import Stage, StageContext, StageOutput, StageResult, Stored
from pipelines.jobs.separation import UPLOAD_ID, admit_upload

DIARIZE_JOB = "diarize"


class DiarizeJobRequest(BaseModel):
    """A diarization job (submitted by `POST /v1/diarize` for long audio)."""

    model_config = ConfigDict(extra="forbid")

    upload_id: str = Field(pattern=UPLOAD_ID)
    num_speakers: int | None = Field(default=None, ge=1, le=8, description="If known; else estimated.")


class SpeakerTurns(StageOutput):
    """The `diarize` stage: who speaks when, and the diarizer's card (`info()` as a dict)."""

    turns: list[Turn]
    model: dict[str, Any]


def turns_body(turns: list[Turn], model: dict[str, object]) -> dict[str, object]:
    """The diarization JSON: `{turns: [{start, end, speaker}], num_speakers, model}`."""
    return {
        "turns": [asdict(t) for t in turns],
        "num_speakers": len({t.speaker for t in turns}),
        "model": model,
    }


async def admit_diarize(request: DiarizeJobRequest, admission: Admission) -> DiarizeJobRequest:
    """404 `upload_not_found` for an unknown upload."""
    await admit_upload(admission, request.upload_id)
    return request


async def diarize_stage(ctx: StageContext[DiarizeJobRequest]) -> StageResult:
    audio = await asyncio.to_thread(load_upload, ctx.storage, ctx.request.upload_id)
    diarizer = ctx.models.diarizer
    turns = await diarizer.diarize(audio=audio, num_speakers=ctx.request.num_speakers)
    card = await diarizer.info()
    return StageResult(record=SpeakerTurns(turns=list(turns), model=card.as_dict()))


async def store_turns(ctx: StageContext[DiarizeJobRequest]) -> StageResult:
    found = ctx.output(SpeakerTurns)
    body = turns_body(found.turns, found.model)
    entry = await asyncio.to_thread(store_json, ctx, "turns", body)
    return StageResult(record=Stored(result={"turns": entry, "num_speakers": body["num_speakers"]}))


def _diarizer(request: DiarizeJobRequest, models: Models) -> Sequence[ModelClient]:
    return (models.diarizer,)


DIARIZE_STAGES: tuple[Stage[DiarizeJobRequest], ...] = (
    Stage("diarize", diarize_stage, output=SpeakerTurns, models=_diarizer),
    Stage("store", store_turns, output=Stored),
)

DIARIZE_KIND = JobKind(
    name=DIARIZE_JOB,
    request=DiarizeJobRequest,
    stages=DIARIZE_STAGES,
    admit=admit_diarize,
    inputs=frozenset({"file", "upload_id"}),
    summary="Who speaks when, for audio too long to answer at once: the turns `[{start, end, speaker}]` "
    "as JSON (`POST /v1/diarize` submits this job for long audio).",
)
