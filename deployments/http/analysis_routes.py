"""The ingress's audio and analysis logic: reading request audio, transcription, speakers, rendering.

The routes themselves are methods of `Ingress` (deployments/ingress.py): Serve binds `self` only for
routes defined on the decorated class. Every input is decoded and validated before any model sees it.
"""

import asyncio
from typing import Any

from fastapi import UploadFile
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from ray.serve.handle import DeploymentHandle

from deployments.http.audio_inputs import decode_input, load_upload
from deployments.http.errors import ApiError
from deployments.http.transcripts import Granularity, ResponseFormat, to_srt, to_verbose_json, to_vtt
from infra.audio import Audio
from infra.settings import Settings
from infra.storage import Storage
from models.types import Transcript
from pipelines.voice.attribution import assign_word_speakers

OPENAI_MODEL_ALIASES = {"whisper-1", "default"}


async def input_audio(
    storage: Storage, settings: Settings, file: UploadFile | None, upload_id: str | None
) -> Audio:
    """The request's audio: a direct file or an earlier upload (exactly one of them)."""
    if (file is None) == (upload_id is None):
        raise ApiError(422, "input_required", "send exactly one of `file` (multipart) or `upload_id`")
    if upload_id is not None:
        return await asyncio.to_thread(load_upload, storage, upload_id, settings)
    assert file is not None
    data = await file.read()
    return await asyncio.to_thread(decode_input, data, settings)


def check_model_name(model: str, info: dict[str, Any]) -> None:
    if model not in OPENAI_MODEL_ALIASES | {info["model_id"]}:
        raise ApiError(422, "unknown_model", f"model {model!r} is not served; use 'whisper-1'")


async def transcribe(asr: DeploymentHandle, audio: Audio, language: str | None) -> Transcript:
    try:
        transcript: Transcript = await asr.transcribe.remote(audio, language, True)
    except ValueError as e:
        raise ApiError(422, "unsupported_language", str(e)) from e
    return transcript


async def speakers(
    diarizer: DeploymentHandle, audio: Audio, transcript: Transcript
) -> tuple[list[str | None], list[list[str | None]]]:
    """Who spoke each segment and word, from the diarizer's turns."""
    turns = await diarizer.diarize.remote(audio, None)
    return assign_word_speakers(transcript.segments, turns)


def render_transcript(
    transcript: Transcript,
    response_format: ResponseFormat,
    granularities: list[Granularity],
    model: dict[str, Any],
    speakers: tuple[list[str | None], list[list[str | None]]] | None,
) -> Response:
    segment_speakers, word_speakers = speakers if speakers else (None, None)
    if response_format == "text":
        return PlainTextResponse(transcript.text)
    if response_format == "srt":
        return PlainTextResponse(to_srt(transcript, segment_speakers))
    if response_format == "vtt":
        return PlainTextResponse(to_vtt(transcript, segment_speakers), media_type="text/vtt")
    if response_format == "verbose_json":
        body = to_verbose_json(transcript, granularities, model, segment_speakers, word_speakers)
        return JSONResponse(body)
    return JSONResponse({"text": transcript.text})
