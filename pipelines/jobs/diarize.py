"""Diarization jobs for audio too long to answer synchronously: diarize → store turns JSON."""

from __future__ import annotations

import asyncio
from dataclasses import asdict

from pydantic import BaseModel, ConfigDict, Field

from infra.dsp.regions import Turn
from pipelines.engine.outputs import store_json
from pipelines.engine.stages import Stage, StageContext, StageResult
from pipelines.jobs.separation import load_input

DIARIZE_JOB = "diarize"


class DiarizeJobRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    upload_id: str = Field(pattern="^[0-9a-f]{32}$")
    num_speakers: int | None = Field(default=None, ge=1, le=8)


def turns_body(turns: list[Turn], model: dict[str, object]) -> dict[str, object]:
    return {
        "turns": [asdict(t) for t in turns],
        "num_speakers": len({t.speaker for t in turns}),
        "model": model,
    }


async def diarize_stage(ctx: StageContext) -> StageResult:
    request = DiarizeJobRequest.model_validate(ctx.request)
    audio = await asyncio.to_thread(load_input, ctx, request.upload_id)
    turns: list[Turn] = await ctx.handles["Diarizer"].diarize.remote(audio, request.num_speakers)
    model = await ctx.handles["Diarizer"].info.remote()
    return StageResult(facts={"body": turns_body(turns, model)})


async def store_turns(ctx: StageContext) -> StageResult:
    body = ctx.facts("diarize")["body"]
    entry = await asyncio.to_thread(store_json, ctx, "turns", body)
    return StageResult(facts={"result": {"turns": entry, "num_speakers": body["num_speakers"]}})


DIARIZE_STAGES = (Stage("diarize", diarize_stage, models=("Diarizer",)), Stage("store", store_turns))
