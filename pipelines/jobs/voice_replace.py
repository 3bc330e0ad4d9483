"""Voice replacement jobs: decode → separate → diarize → transcribe → synthesize → remix → store.

One speaker's lines are re-spoken in another voice (a stock TTS voice or a registered `voice_id`),
time-fitted to the original lines (infra/dsp/time_fit.py) and mixed back in (infra/dsp/remix.py); every
other sample of the input is kept. Each stage commits its typed record, so a resumed job skips finished
stages. The model stages are in `pipelines/jobs/voice_replace_stages.py`; this module holds what is
checked before a job exists (`admit_voice_replace`), the store stage and the job kind.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from infra import voice_store
from infra.audio import Audio, decode
from infra.dsp.time_fit import MAX_RATE, MIN_RATE
from infra.storage import output_key
from infra.uploads import UploadNotFoundError, load_upload, upload_info
from infra.voice_store import VoiceNotFoundError
from pipelines.engine.clients import ModelClient, Models
from pipelines.engine.kinds import Admission, AdmissionError, JobKind
from pipelines.engine.outputs import store_audio, store_json
from pipelines.engine.stages import Stage, StageResult, Stored
from pipelines.jobs.voice_replace_stages import (
    Ctx,
    Decoded,
    Diarized,
    Remixed,
    Separated,
    Synthesized,
    Transcribed,
    analysed_source,
    decode_stage,
    diarize_stage,
    remix_stage,
    separate_stage,
    synthesize_stage,
    transcribe_stage,
    voice_client,
)
from pipelines.voice.lines import lines_to_srt
from pipelines.voice.report import debug_weights, transcript_body
from pipelines.voice.request import (
    SILENT_PEAK_DBFS,
    VOICE_ID,
    SilentInputError,
    VoiceReplaceJobRequest,
    check_audible,
    is_voice_id,
)

__all__ = [
    "SILENT_PEAK_DBFS",
    "VOICE_ID",
    "VOICE_REPLACE_JOB",
    "VOICE_REPLACE_KIND",
    "VOICE_REPLACE_STAGES",
    "VoiceReplaceJobRequest",
    "admit_voice_replace",
]

VOICE_REPLACE_JOB = "voice-replace"
SUMMARY = (
    "Re-speak one speaker's lines in another voice, time-fitted, everything else kept: the result\n"
    "audio, a transcript (JSON + SRT with speakers) and a per-line replacement report."
)


# admission ---------------------------------------------------------------------------------------


async def admit_voice_replace(
    request: VoiceReplaceJobRequest, admission: Admission
) -> VoiceReplaceJobRequest:
    """Refuse before the job exists: an unknown voice (422 `unknown_voice`), a missing upload (404
    `upload_not_found`), a silent input (422 `silent_input`)."""
    await _check_voice(request.voice, admission)
    audio = await asyncio.to_thread(_load_upload, admission, request.upload_id)
    try:
        check_audible(audio)
    except SilentInputError as e:
        raise AdmissionError(e.code, str(e)) from e
    return request


async def _check_voice(voice: str, admission: Admission) -> None:
    """`unknown_voice` unless `voice` is a stock voice of the TTS deployment or a voice_id registered by
    the job's tenant (another tenant's voice is answered exactly like one that does not exist)."""
    if is_voice_id(voice):
        try:
            await asyncio.to_thread(voice_store.load_profile, admission.storage, voice, admission.owner)
        except VoiceNotFoundError as e:
            raise AdmissionError("unknown_voice", str(e)) from e
        return
    stock = await admission.models.tts.voices()
    if voice not in stock:
        raise AdmissionError("unknown_voice", f"voice {voice!r} is neither one of {stock} nor a voice_id")


def _load_upload(admission: Admission, upload_id: str) -> Audio:
    try:
        upload_info(admission.storage, upload_id, admission.owner)
        return load_upload(admission.storage, upload_id, admission.settings)
    except UploadNotFoundError as e:
        raise AdmissionError(code="upload_not_found", message=str(e), status=404) from e


# 7. store ----------------------------------------------------------------------------------------


async def store_stage(ctx: Ctx) -> StageResult:
    """Publish the remix, the transcript (JSON and SRT) and the per-line report."""
    return await asyncio.to_thread(_store, ctx)


def _store(ctx: Ctx) -> StageResult:
    request, transcribed = ctx.request, ctx.output(Transcribed)
    srt_key = output_key(ctx.job.id, "transcript.srt", ctx.job.attempt)
    ctx.storage.put_bytes(srt_key, lines_to_srt(transcribed.lines).encode(), "application/x-subrip")
    transcript = transcript_body(transcribed.lines, transcribed.language, transcribed.model)
    models = used_models(ctx)
    result = {
        "audio": store_audio(ctx, "result", decode(ctx.object(Remixed, "result.wav")), request.format),
        "transcript": store_json(ctx, "transcript", transcript),
        "subtitles": {"key": srt_key, "media_type": "application/x-subrip"},
        "report": store_json(ctx, "report", _report(ctx, models)),
        "metadata": {
            "target_speaker": ctx.output(Diarized).target,
            "voice": request.voice,
            "lines_replaced": len(ctx.output(Synthesized).lines),
            "models": models,
            "debug_weights": debug_weights(models),
        },
    }
    return StageResult(record=Stored(result=result))


def used_models(ctx: Ctx) -> dict[str, dict[str, Any]]:
    """Model id, revision and weights kind of every deployment the job called, by deployment name."""
    diarized, transcribed = ctx.output(Diarized), ctx.output(Transcribed)
    synthesized, separated = ctx.output(Synthesized), ctx.output(Separated)
    models = {diarized.deployment: diarized.model, transcribed.deployment: transcribed.model}
    models[synthesized.deployment] = synthesized.model
    if separated.separated and separated.deployment is not None and separated.model is not None:
        models[separated.deployment] = separated.model
    return models


def _report(ctx: Ctx, models: dict[str, dict[str, Any]]) -> dict[str, Any]:
    entries, cuts = ctx.output(Synthesized).lines, ctx.output(Remixed).cut_s
    lines = [
        {**entry.model_dump(), "cut_s": round(cut_s, 3)} for entry, cut_s in zip(entries, cuts, strict=True)
    ]
    return {
        "target_speaker": ctx.output(Diarized).target,
        "voice": ctx.request.voice,
        "separate": ctx.request.separate,
        "analyzed": analysed_source(ctx),
        "stretch_bounds": [MIN_RATE, MAX_RATE],
        "duration_s": round(ctx.output(Decoded).duration_s, 6),
        "lines": lines,
        "models": models,
        "debug_weights": debug_weights(models),
    }


# the kind ----------------------------------------------------------------------------------------


def _separation(request: VoiceReplaceJobRequest, models: Models) -> Sequence[ModelClient]:
    return (models.separation,) if request.separate else ()


def _diarizer(request: VoiceReplaceJobRequest, models: Models) -> Sequence[ModelClient]:
    return (models.diarizer,)


def _asr(request: VoiceReplaceJobRequest, models: Models) -> Sequence[ModelClient]:
    return (models.asr,)


def _voice(request: VoiceReplaceJobRequest, models: Models) -> Sequence[ModelClient]:
    return (voice_client(request, models),)


VOICE_REPLACE_STAGES: tuple[Stage[VoiceReplaceJobRequest], ...] = (
    Stage("decode", decode_stage, output=Decoded),
    Stage("separate", separate_stage, output=Separated, models=_separation),
    Stage("diarize", diarize_stage, output=Diarized, models=_diarizer),
    Stage("transcribe", transcribe_stage, output=Transcribed, models=_asr),
    Stage("synthesize", synthesize_stage, output=Synthesized, models=_voice),
    Stage("remix", remix_stage, output=Remixed),
    Stage("store", store_stage, output=Stored),
)

VOICE_REPLACE_KIND = JobKind(
    name=VOICE_REPLACE_JOB,
    request=VoiceReplaceJobRequest,
    stages=VOICE_REPLACE_STAGES,
    admit=admit_voice_replace,
    inputs=frozenset({"file", "upload_id", "url"}),
    # 2: the stage records became typed (Diarized, Synthesized, … gained `deployment`), so checkpoints
    # committed before cannot be restored into them.
    version=2,
    summary=SUMMARY,
)
