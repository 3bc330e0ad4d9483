"""OpenAI's model catalogue: the model names the audio routes accept, listed by `GET /v1/models` in
OpenAI's list shape so that `client.models.list()` and `client.models.retrieve(id)` work.

Every name is an alias of the one model soundstage serves for the task: the stock TTS for speech,
the ASR deployment's Whisper for transcription. The real model (id, revision, weights kind) is in each
transcript's `model` field and in `GET /v1/deployments`.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from deployments.http.errors import ApiError
from deployments.http.guards import EdgeRoute
from deployments.http.services import Authorized

SPEECH_MODELS = ("tts-1", "tts-1-hd", "gpt-4o-mini-tts", "hibari")
TRANSCRIPTION_MODELS = ("whisper-1", "gpt-4o-transcribe", "gpt-4o-mini-transcribe")
OWNER = "soundstage"
# OpenAI's `created` is a Unix time; these aliases date from this table (2026-12-01), the same on every
# replica and restart.
CREATED = 1_796_083_200

router = APIRouter(route_class=EdgeRoute, tags=["openai"], dependencies=[Authorized])


def model_object(model_id: str) -> dict[str, Any]:
    return {"id": model_id, "object": "model", "created": CREATED, "owned_by": OWNER}


@router.get("/v1/models")
async def list_models() -> dict[str, Any]:
    """The model names the OpenAI-compatible audio routes accept: `{object: "list", data: [model]}`."""
    return {"object": "list", "data": [model_object(m) for m in (*SPEECH_MODELS, *TRANSCRIPTION_MODELS)]}


@router.get("/v1/models/{model}")
async def retrieve_model(model: str) -> dict[str, Any]:
    """One model object; 404 `model_not_found` for a name that is not served."""
    if model not in (*SPEECH_MODELS, *TRANSCRIPTION_MODELS):
        raise ApiError(404, "model_not_found", f"the model {model!r} does not exist", param="model")
    return model_object(model)
