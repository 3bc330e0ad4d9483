"""OpenAI-compatible audio routes: `/v1/audio/transcriptions` (plus `diarize=true`) and `/v1/audio/speech`."""

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import APIRouter, Form
from fastapi.responses import Response, StreamingResponse

from deployments.http.analysis_routes import check_model_name, render_transcript, speakers, transcribe
from deployments.http.errors import ApiError
from deployments.http.guards import EdgeRoute
from deployments.http.inputs import FileField, UploadIdField, input_audio
from deployments.http.services import Authorized, CurrentTenant, Services, Svc
from deployments.http.speech import MEDIA_TYPES, SPEECH_MODELS, SpeechRequest, encoded_stream, sentences_audio
from deployments.http.transcripts import Granularity, ResponseFormat
from deployments.http.voices import load_reference
from infra.audio import Audio
from infra.tenancy import Tenant
from pipelines.jobs.voice_replace import VOICE_ID

logger = logging.getLogger(__name__)
router = APIRouter(route_class=EdgeRoute, tags=["audio"], dependencies=[Authorized])


@router.post("/v1/audio/transcriptions")
async def create_transcription(
    svc: Svc,
    tenant: CurrentTenant,
    file: FileField = None,
    upload_id: UploadIdField = None,
    model: Annotated[str, Form()] = "whisper-1",
    language: Annotated[str | None, Form(pattern="^[a-z]{2,3}$")] = None,
    prompt: Annotated[str | None, Form(description="Accepted for compatibility; not used.")] = None,
    response_format: Annotated[ResponseFormat, Form()] = "json",
    temperature: Annotated[float, Form(ge=0.0, le=1.0)] = 0.0,
    timestamp_granularities: Annotated[
        list[Granularity] | None, Form(alias="timestamp_granularities[]")
    ] = None,
    diarize: Annotated[bool, Form(description="Attribute segments and words to speakers.")] = False,
) -> Response:
    """OpenAI-compatible transcription (`/v1/audio/transcriptions`), plus `diarize=true`."""
    card = await svc.models.asr.info()
    check_model_name(model, card.model.model_id)
    audio = await input_audio(svc, tenant, file, upload_id)
    transcript = await transcribe(svc.models.asr, audio, language)
    who = await speakers(svc.models.diarizer, audio, transcript) if diarize else None
    granularities = timestamp_granularities or ["segment"]
    return render_transcript(transcript, response_format, granularities, card.as_dict(), who)


@router.post("/v1/audio/speech")
async def create_speech(body: SpeechRequest, svc: Svc, tenant: CurrentTenant) -> StreamingResponse:
    """OpenAI-compatible text to speech in a stock voice or a registered `voice_id`, streamed sentence
    by sentence (WAV, PCM; MP3 and FLAC when complete)."""
    if body.model not in SPEECH_MODELS:
        raise ApiError(422, "unknown_model", f"model {body.model!r}; use one of {sorted(SPEECH_MODELS)}")
    stream = sentences_audio(await _voice(svc, body, tenant), body.input)
    try:
        first = await anext(stream)  # bad input fails here, before the response starts
    except (ValueError, StopAsyncIteration) as e:
        # The model's own words stay in the log: through Ray they carry replica names, pids, paths.
        logger.info("speech refused: %s", type(e).__name__, exc_info=e)
        raise ApiError(422, "invalid_input", "`input` has nothing the voice can speak") from e
    return StreamingResponse(
        encoded_stream(body, first, stream), media_type=MEDIA_TYPES[body.response_format]
    )


async def _voice(svc: Services, body: SpeechRequest, tenant: Tenant) -> Callable[[str], Awaitable[Audio]]:
    """How to speak one sentence in `body.voice`: a registered (cloned) voice of the caller's tenant
    (another tenant's is 404 `voice_not_found`) or a stock one."""
    if VOICE_ID.match(body.voice):
        if body.speed != 1.0:
            raise ApiError(422, "invalid_input", "speed is only supported for stock voices")
        reference = await asyncio.to_thread(load_reference, svc.storage, body.voice, tenant.scope)
        return lambda piece: svc.models.voice_clone.synthesize(text=piece, reference=reference)
    stock = await svc.models.tts.voices()
    if body.voice not in stock:
        raise ApiError(422, "unknown_voice", f"voice {body.voice!r} is neither one of {stock} nor a voice_id")
    return lambda piece: svc.models.tts.synthesize(text=piece, voice=body.voice, speed=body.speed)
