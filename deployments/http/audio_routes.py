"""OpenAI-compatible audio routes: `/v1/audio/transcriptions` (plus `diarize=true`), `/v1/audio/speech`,
and (from `openai_models`) the model list `/v1/models`."""

import asyncio
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Annotated, Literal

from fastapi import APIRouter, Form
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.background import BackgroundTask

from deployments.http import openai_models
from deployments.http.analysis_routes import check_model_name, render_transcript, speakers, transcribe
from deployments.http.errors import ApiError
from deployments.http.guards import EdgeRoute
from deployments.http.inputs import FileField, UploadIdField, input_audio
from deployments.http.openai_models import SPEECH_MODELS
from deployments.http.quotas import SpeechCharge
from deployments.http.services import Authorized, CurrentTenant, Services, Svc
from deployments.http.speech import MEDIA_TYPES, SpeechRequest, encoded_stream, sentences_audio, sse_events
from deployments.http.transcripts import Granularity, ResponseFormat, text_events, word_logprobs
from deployments.http.voices import load_reference
from infra.audio import Audio
from infra.tenancy import Tenant
from models.types import ModelInputError, Transcript
from pipelines.engine.clients import ASRClient
from pipelines.jobs.voice_replace import VOICE_ID

logger = logging.getLogger(__name__)
# Whisper reads at most 224 prompt tokens; 4 characters a token is generous.
MAX_PROMPT_CHARS = 896
router = APIRouter(route_class=EdgeRoute, tags=["audio"], dependencies=[Authorized])
router.include_router(openai_models.router)  # `/v1/models`: the names these routes accept


@router.post("/v1/audio/transcriptions")
async def create_transcription(
    svc: Svc,
    tenant: CurrentTenant,
    file: FileField = None,
    upload_id: UploadIdField = None,
    model: Annotated[str, Form()] = "whisper-1",
    language: Annotated[str | None, Form(pattern="^[a-z]{2,3}$")] = None,
    prompt: Annotated[
        str | None, Form(max_length=MAX_PROMPT_CHARS, description="Conditions the decoder (initial prompt).")
    ] = None,
    response_format: Annotated[ResponseFormat, Form()] = "json",
    temperature: Annotated[
        float, Form(ge=0.0, le=1.0, description="0: decoding with temperature fallback; above: sampling.")
    ] = 0.0,
    timestamp_granularities: Annotated[
        list[Granularity] | None, Form(alias="timestamp_granularities[]")
    ] = None,
    stream: Annotated[
        bool,
        Form(
            description="`transcript.text.delta` events as segments are decoded, then `transcript.text.done`."
        ),
    ] = False,
    include: Annotated[
        list[Literal["logprobs"]] | None,
        Form(alias="include[]", description="`logprobs`: per-word log probabilities (json format)."),
    ] = None,
    diarize: Annotated[bool, Form(description="Attribute segments and words to speakers.")] = False,
) -> Response:
    """OpenAI-compatible transcription (`/v1/audio/transcriptions`), plus `diarize=true`."""
    card = await svc.models.asr.info()
    check_model_name(model, card.model.model_id)
    audio = await input_audio(svc, tenant, file, upload_id)
    if stream:
        return await _text_stream(svc.models.asr, audio, language, temperature, prompt)
    transcript = await transcribe(svc.models.asr, audio, language, temperature, prompt)
    if include and response_format == "json":
        return JSONResponse({"text": transcript.text, "logprobs": word_logprobs(transcript)})
    who = await speakers(svc.models.diarizer, audio, transcript) if diarize else None
    granularities = timestamp_granularities or ["segment"]
    return render_transcript(transcript, response_format, granularities, card.as_dict(), who)


async def _text_stream(
    asr: ASRClient, audio: Audio, language: str | None, temperature: float, prompt: str | None
) -> StreamingResponse:
    """`stream=true`: `transcript.text.delta` events as the ASR decodes segments. Its first piece (the
    detected language) is awaited before the response starts, so an unsupported language is still a 400."""
    pieces = asr.transcribe_stream(audio=audio, language=language, temperature=temperature, prompt=prompt)
    try:
        head = await anext(pieces)
    except ValueError as e:
        await pieces.aclose()
        message = f"language {language!r} is not supported"
        raise ApiError(422, "unsupported_language", message, param="language") from e
    return StreamingResponse(text_events(_after(head, pieces)), media_type="text/event-stream")


async def _after(
    head: Transcript, rest: AsyncGenerator[Transcript, None]
) -> AsyncGenerator[Transcript, None]:
    """`head`, then `rest`; `rest` is closed (its replica stream cancelled) when the client goes away."""
    try:
        yield head
        async for piece in rest:
            yield piece
    finally:
        await rest.aclose()


@router.post("/v1/audio/translations")
async def create_translation(
    svc: Svc,
    tenant: CurrentTenant,
    file: FileField = None,
    upload_id: UploadIdField = None,
    model: Annotated[str, Form()] = "whisper-1",
    prompt: Annotated[
        str | None, Form(max_length=MAX_PROMPT_CHARS, description="Conditions the decoder (in English).")
    ] = None,
    response_format: Annotated[ResponseFormat, Form()] = "json",
    temperature: Annotated[float, Form(ge=0.0, le=1.0)] = 0.0,
) -> Response:
    """OpenAI-compatible translation into English (`/v1/audio/translations`): Whisper's `translate` task
    on the spoken language it detects. An English-only model (tiny.en) writes English speech only."""
    card = await svc.models.asr.info()
    check_model_name(model, card.model.model_id)
    audio = await input_audio(svc, tenant, file, upload_id)
    transcript = await transcribe(svc.models.asr, audio, None, temperature, prompt, task="translate")
    return render_transcript(transcript, response_format, ["segment"], card.as_dict(), None, task="translate")


@router.post("/v1/audio/speech")
async def create_speech(body: SpeechRequest, svc: Svc, tenant: CurrentTenant) -> StreamingResponse:
    """OpenAI-compatible text to speech in a stock voice or a registered `voice_id`, streamed sentence
    by sentence (WAV, PCM; MP3 and FLAC when complete)."""
    if body.model not in SPEECH_MODELS:
        message = f"model {body.model!r} is not served; use one of {SPEECH_MODELS}"
        raise ApiError(404, "model_not_found", message, param="model")
    speak = await _voice(svc, body, tenant)
    charge = await SpeechCharge.reserve(svc.quotas, svc.settings, tenant, len(body.input), body.speed)
    stream = charge.counted(sentences_audio(speak, body.input))
    try:
        first = await anext(stream)  # bad input fails here, before the response starts
    except BaseException as e:
        await charge.settle()
        if isinstance(e, ModelInputError):  # the model's clean words (a typed fault, not Ray's text)
            raise ApiError(422, e.code, e.message, param=e.field or "input") from e
        if not isinstance(e, ValueError | StopAsyncIteration):
            raise
        # The model's own words stay in the log: through Ray they carry replica names, pids, paths.
        logger.info("speech refused: %s", type(e).__name__, exc_info=e)
        raise ApiError(422, "invalid_input", "`input` has nothing the voice can speak", param="input") from e
    encoded = encoded_stream(body, first, stream)
    settle = BackgroundTask(charge.settle)  # after the last byte, or once the client has gone
    if body.stream_format == "sse":
        events = sse_events(encoded, len(body.input))
        return StreamingResponse(events, media_type="text/event-stream", background=settle)
    return StreamingResponse(encoded, media_type=MEDIA_TYPES[body.response_format], background=settle)


async def _voice(svc: Services, body: SpeechRequest, tenant: Tenant) -> Callable[[str], Awaitable[Audio]]:
    """How to speak one sentence in `body.voice`: a registered (cloned) voice of the caller's tenant
    (another tenant's is 404 `voice_not_found`) or a stock one."""
    if VOICE_ID.match(body.voice):
        if body.speed != 1.0:
            raise ApiError(422, "invalid_input", "speed is only supported for stock voices", param="speed")
        reference = await asyncio.to_thread(load_reference, svc.storage, body.voice, tenant.scope)
        return lambda piece: svc.models.voice_clone.synthesize(text=piece, reference=reference)
    stock = await svc.models.tts.voices()
    # A stock name wins over the OpenAI table, so a stock voice named like an OpenAI one stays reachable.
    voice = body.voice if body.voice in stock else svc.settings.openai_voices.get(body.voice, body.voice)
    if voice not in stock:
        known = sorted({*stock, *svc.settings.openai_voices})
        message = f"voice {body.voice!r} is neither one of {known} nor a voice_id"
        raise ApiError(422, "unknown_voice", message, param="voice")
    return lambda piece: svc.models.tts.synthesize(text=piece, voice=voice, speed=body.speed)
