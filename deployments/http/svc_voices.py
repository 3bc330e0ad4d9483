"""Registered singing-voice models (`/v1/svc-voices`) for `POST /v1/jobs/voice-convert`: register one by
model URI (`s3://`, `hf://`, `debug`) or by uploading a converted folder (`config` = config.json,
`weights` = model.safetensors, from `soundstage models convert svc`), list them, delete one. Records
live in S3 through `infra/svc_voice_store.py`; as with `/v1/voices`, another tenant's is absent."""

import asyncio
import shutil
import tempfile
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, UploadFile
from fastapi.responses import Response

from deployments.http.errors import ApiError
from deployments.http.guards import EdgeRoute
from deployments.http.services import Authorized, CurrentTenant, Svc
from infra import svc_voice_store as store
from infra.model_store import push_model
from infra.settings import Settings
from infra.storage import Storage
from infra.svc_voice_store import InvalidVoiceModelError, SvcVoice

router = APIRouter(route_class=EdgeRoute, tags=["voices"], dependencies=[Authorized])


@router.post("/v1/svc-voices", status_code=201)
async def register_svc_voice(
    svc: Svc,
    tenant: CurrentTenant,
    name: Annotated[str, Form(min_length=1, max_length=100)] = "voice",
    uri: Annotated[
        str | None, Form(max_length=1000, description="s3://, hf://org/name[@rev] or debug")
    ] = None,
    config: Annotated[UploadFile | None, File(description="config.json of a converted voice")] = None,
    weights: Annotated[UploadFile | None, File(description="model.safetensors of a converted voice")] = None,
) -> SvcVoice:
    """Register a voice model: either `uri`, or the two files of a converted folder (pushed to the store)."""
    uploaded = config is not None and weights is not None
    if (uri is None) == (not uploaded) or (config is None) != (weights is None):
        raise ApiError(422, "invalid_request", "give either uri, or both config and weights")
    try:
        if uri is not None:
            return await asyncio.to_thread(store.save_svc_voice, svc.storage, name, uri, "uri", tenant.id)
        assert config is not None and weights is not None
        return await asyncio.to_thread(
            _register_upload, svc.settings, svc.storage, name, config, weights, tenant.id
        )
    except InvalidVoiceModelError as e:
        raise ApiError(422, e.code, str(e)) from e


def _register_upload(
    settings: Settings,
    storage: Storage,
    name: str,
    config: UploadFile,
    weights: UploadFile,
    owner: str | None,
) -> SvcVoice:
    """Check the folder, push it to `s3://{bucket}/svc-voices/{id}/model/`, then write the record."""
    voice_model_id = store.new_voice_model_id()
    with tempfile.TemporaryDirectory(prefix="svc-voice-") as tmp:
        folder = Path(tmp)
        for upload, filename in ((config, "config.json"), (weights, "model.safetensors")):
            with (folder / filename).open("wb") as out:
                shutil.copyfileobj(upload.file, out)
        store.check_folder(folder)
        uri = store.uploaded_model_uri(settings.s3_bucket, voice_model_id)
        push_model(folder, uri, settings)
    return store.save_svc_voice(storage, name, uri, "upload", owner, voice_model_id)


@router.get("/v1/svc-voices")
async def list_svc_voices(svc: Svc, tenant: CurrentTenant) -> dict[str, Any]:
    """The caller's registered voice models (an admin key sees all)."""
    records = await asyncio.to_thread(store.list_svc_voices, svc.storage, tenant.scope)
    return {"voice_models": [r.model_dump() for r in records]}


@router.delete("/v1/svc-voices/{voice_model_id}", status_code=204)
async def delete_svc_voice(voice_model_id: str, svc: Svc, tenant: CurrentTenant) -> Response:
    """Delete a voice model of the caller's (another tenant's is 404 `voice_model_not_found`)."""
    await asyncio.to_thread(store.delete_svc_voice, svc.storage, voice_model_id, tenant.scope)
    return Response(status_code=204)
