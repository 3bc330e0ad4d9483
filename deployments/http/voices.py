"""Registered voices (`/v1/voices`): register a reference clip (its transcript written by the ASR
deployment when not given), list stock and registered voices, delete one. The profiles live in S3
through `infra/voice_store.py`; its `VoiceNotFoundError` and invalid references map to 4xx. A voice
belongs to the tenant that registered it: another tenant's is absent from the list and 404 to delete or
use; an admin key sees all."""

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, UploadFile
from fastapi.responses import Response

from deployments.http.guards import EdgeRoute
from deployments.http.services import Authorized, CurrentTenant, Svc
from infra import voice_store
from infra.storage import Storage
from infra.uploads import decode_input
from infra.voice_store import VoiceProfile
from models.types import VoiceReference

router = APIRouter(route_class=EdgeRoute, tags=["voices"], dependencies=[Authorized])


def load_reference(storage: Storage, voice_id: str, owner: str | None = None) -> VoiceReference:
    """The registered voice as a cloning reference; another tenant's (`owner` given) is not found."""
    audio, transcript = voice_store.load_voice(storage, voice_id, owner)
    return VoiceReference(audio=audio, transcript=transcript)


@router.post("/v1/voices", status_code=201)
async def register_voice(
    svc: Svc,
    tenant: CurrentTenant,
    file: Annotated[UploadFile, File(description="A 5 to 30 s reference clip of the voice.")],
    name: Annotated[str, Form(min_length=1, max_length=100)] = "voice",
    transcript: Annotated[str | None, Form(max_length=2000)] = None,
) -> VoiceProfile:
    """Register a voice for cloning; without `transcript` the ASR deployment writes it."""
    audio = await asyncio.to_thread(decode_input, file.file, svc.settings)
    source = "given"
    if transcript is None or not transcript.strip():
        result = await svc.models.asr.transcribe(audio=audio)
        transcript, source = result.text, (await svc.models.asr.info()).model.model_id
    reference = VoiceReference(audio=audio, transcript=transcript or "")
    return await asyncio.to_thread(
        voice_store.save_voice,
        svc.storage,
        name,
        reference.audio,
        reference.transcript,
        source,
        tenant.id,
    )


@router.get("/v1/voices")
async def list_voices(svc: Svc, tenant: CurrentTenant) -> dict[str, Any]:
    """Stock voices (names) and the caller's registered voices (profiles; an admin key sees all)."""
    stock = await svc.models.tts.voices()
    registered = await asyncio.to_thread(voice_store.list_profiles, svc.storage, tenant.scope)
    return {"stock": stock, "registered": [p.model_dump() for p in registered]}


@router.delete("/v1/voices/{voice_id}", status_code=204)
async def delete_voice(voice_id: str, svc: Svc, tenant: CurrentTenant) -> Response:
    """Delete a registered voice of the caller's (another tenant's is 404 `voice_not_found`)."""
    await asyncio.to_thread(voice_store.delete_voice, svc.storage, voice_id, tenant.scope)
    return Response(status_code=204)
