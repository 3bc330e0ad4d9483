"""Synchronous analysis routes (pitch, speech regions, speakers) and the transcription helpers they share
with the OpenAI transcription route. Every input is decoded and validated before any model sees it."""

import asyncio
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Form, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from deployments.http.errors import ApiError
from deployments.http.guards import EdgeRoute
from deployments.http.inputs import FileField, UploadIdField, input_audio, require_one, stored_input
from deployments.http.jobs import submit
from deployments.http.openai_models import TRANSCRIPTION_MODELS
from deployments.http.services import Authorized, CurrentTenant, Svc
from deployments.http.transcripts import Granularity, ResponseFormat, to_srt, to_verbose_json, to_vtt
from infra.audio import Audio
from infra.uploads import load_upload
from models.types import PITCH_CONFIDENCE_THRESHOLD, Transcript
from pipelines.engine.clients import ASRClient, DiarizerClient
from pipelines.jobs.diarize import DIARIZE_KIND, DiarizeJobRequest, turns_body
from pipelines.voice.attribution import assign_word_speakers

router = APIRouter(route_class=EdgeRoute, tags=["audio"], dependencies=[Authorized])


@router.post("/v1/pitch")
async def detect_pitch(
    svc: Svc,
    tenant: CurrentTenant,
    file: FileField = None,
    upload_id: UploadIdField = None,
    fmin_hz: Annotated[float, Form(ge=46.875, le=2093.75)] = 46.875,
    fmax_hz: Annotated[float, Form(ge=46.875, le=2093.75)] = 2093.75,
    confidence_threshold: Annotated[float, Form(ge=0.0, le=1.0)] = PITCH_CONFIDENCE_THRESHOLD,
    format: Annotated[Literal["json", "csv"], Form()] = "json",
) -> Response:
    """F0 contour (16 ms frames): time, f0 (0 where unvoiced), confidence, voiced; JSON or CSV."""
    if fmin_hz >= fmax_hz:
        raise ApiError(422, "invalid_request", "fmin_hz must be below fmax_hz")
    audio = await input_audio(svc, tenant, file, upload_id)
    contour = await svc.models.pitch.detect(
        audio=audio, fmin_hz=fmin_hz, fmax_hz=fmax_hz, confidence_threshold=confidence_threshold
    )
    if format == "csv":
        return PlainTextResponse(contour.to_csv(), media_type="text/csv")
    return JSONResponse(contour.to_dict())


@router.post("/v1/vad")
async def detect_speech(
    svc: Svc,
    tenant: CurrentTenant,
    file: FileField = None,
    upload_id: UploadIdField = None,
    threshold: Annotated[float, Form(gt=0.0, lt=1.0)] = 0.5,
    min_speech_s: Annotated[float, Form(ge=0.0, le=10.0)] = 0.25,
    min_silence_s: Annotated[float, Form(ge=0.0, le=10.0)] = 0.3,
    pad_s: Annotated[float, Form(ge=0.0, le=2.0)] = 0.05,
) -> dict[str, Any]:
    """Speech regions `[{start, end}]` in seconds (silero-vad)."""
    audio = await input_audio(svc, tenant, file, upload_id)
    regions = await svc.models.vad.detect(
        audio=audio, threshold=threshold, min_speech_s=min_speech_s, min_silence_s=min_silence_s, pad_s=pad_s
    )
    return {"regions": [{"start": r.start, "end": r.end} for r in regions]}


@router.post("/v1/diarize")
async def diarize(
    request: Request,
    svc: Svc,
    tenant: CurrentTenant,
    file: FileField = None,
    upload_id: UploadIdField = None,
    num_speakers: Annotated[int | None, Form(ge=1, le=8)] = None,
) -> JSONResponse:
    """Who speaks when: `{turns: [{start, end, speaker}]}` for short audio; a job (202) for long audio."""
    require_one({"file": file, "upload_id": upload_id}, "`file` (multipart) or `upload_id`")
    source = await stored_input(svc, tenant, file, upload_id, None)
    audio = await asyncio.to_thread(load_upload, svc.storage, source, svc.settings)
    if audio.duration_s > svc.settings.max_sync_audio_s:
        body = DiarizeJobRequest(upload_id=source, num_speakers=num_speakers)
        return await submit(svc, DIARIZE_KIND, body, None, request)
    turns = await svc.models.diarizer.diarize(audio=audio, num_speakers=num_speakers)
    card = await svc.models.diarizer.info()
    return JSONResponse(turns_body(turns, card.as_dict()))


def check_model_name(model: str, model_id: str) -> None:
    if model not in {*TRANSCRIPTION_MODELS, "default", model_id}:
        raise ApiError(
            404,
            "model_not_found",
            f"model {model!r} is not served; use one of {TRANSCRIPTION_MODELS}",
            param="model",
        )


async def transcribe(
    asr: ASRClient,
    audio: Audio,
    language: str | None,
    temperature: float = 0.0,
    prompt: str | None = None,
    task: Literal["transcribe", "translate"] = "transcribe",
) -> Transcript:
    try:
        return await asr.transcribe(
            audio=audio,
            language=language,
            word_timestamps=True,
            temperature=temperature,
            prompt=prompt,
            task=task,
        )
    except ValueError as e:
        message = f"language {language!r} is not supported"
        raise ApiError(422, "unsupported_language", message, param="language") from e


async def speakers(
    diarizer: DiarizerClient, audio: Audio, transcript: Transcript
) -> tuple[list[str | None], list[list[str | None]]]:
    """Who spoke each segment and word, from the diarizer's turns."""
    turns = await diarizer.diarize(audio=audio)
    return assign_word_speakers(transcript.segments, turns)


def render_transcript(
    transcript: Transcript,
    response_format: ResponseFormat,
    granularities: list[Granularity],
    model: dict[str, Any],
    speakers: tuple[list[str | None], list[list[str | None]]] | None,
    task: Literal["transcribe", "translate"] = "transcribe",
) -> Response:
    segment_speakers, word_speakers = speakers if speakers else (None, None)
    if response_format == "text":
        return PlainTextResponse(transcript.text)
    if response_format == "srt":
        return PlainTextResponse(to_srt(transcript, segment_speakers))
    if response_format == "vtt":
        return PlainTextResponse(to_vtt(transcript, segment_speakers), media_type="text/vtt")
    if response_format == "verbose_json":
        body = to_verbose_json(transcript, granularities, model, segment_speakers, word_speakers, task)
        return JSONResponse(body)
    return JSONResponse({"text": transcript.text})
