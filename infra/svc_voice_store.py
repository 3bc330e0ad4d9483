"""Registered singing-voice models in S3: a name and the model URI the SVC replicas load.

Key: `svc-voices/{voice_model_id}/voice.json`. A voice model is registered by URI (`s3://bucket/prefix`
of the model store, `hf://org/name[@revision]`, or `debug`) or by uploading a converted folder
(`config.json` + `model.safetensors`), which the ingress pushes to the model store under
`s3://{bucket}/svc-voices/{voice_model_id}/model/` first. As voices are, a record belongs to the tenant
that registered it (`owner`): a read given an `owner` treats another tenant's as absent.
"""

from __future__ import annotations

import json
import re
import secrets
import time
from pathlib import Path
from typing import Literal

from pydantic import BaseModel
from safetensors import SafetensorError, safe_open

from infra.model_store import MANIFEST
from infra.storage import InvalidKeyPartError, ObjectNotFoundError, Storage, check_id
from infra.voice_store import VoiceNotFoundError

PREFIX = "svc-voices/"
VOICE_MODEL_TYPE = "rvc-v2-nsf"  # `model_type` in a converted folder's config.json (models/svc.py)
MODEL_FILES = ("config.json", "model.safetensors")
_URI = re.compile(r"^(debug|s3://[a-z0-9][a-z0-9.\-]{1,62}/\S+|hf://[\w.\-]+/[\w.\-]+(@[\w.\-]+)?)$")


class VoiceModelNotFoundError(VoiceNotFoundError):
    """No registered voice model with that id (or it belongs to another tenant)."""

    code = "voice_model_not_found"

    def __str__(self) -> str:
        return f"no registered voice model {self.args[0]!r}"


class InvalidVoiceModelError(ValueError):
    """A voice model URI or an uploaded folder that cannot be a converted RVC voice."""

    code = "invalid_voice_model"


class SvcVoice(BaseModel):
    voice_model_id: str
    name: str
    uri: str
    source: Literal["uri", "upload"]
    created_at: float
    owner: str | None = None


def new_voice_model_id() -> str:
    return secrets.token_hex(16)


def check_uri(uri: str) -> str:
    """`uri` if it is `debug`, `s3://bucket/prefix` or `hf://org/name[@rev]`; local paths are refused."""
    if not _URI.match(uri):
        raise InvalidVoiceModelError(
            f"voice model uri {uri!r} is not one of debug, s3://bucket/prefix, hf://org/name[@revision]"
        )
    return uri


def check_folder(folder: Path) -> None:
    """The uploaded folder holds a voice model's config.json and a readable safetensors file."""
    try:
        config = json.loads((folder / "config.json").read_text())
        with safe_open(folder / "model.safetensors", framework="numpy") as weights:
            names = list(weights.keys())
    except (OSError, ValueError, SafetensorError) as e:
        raise InvalidVoiceModelError(
            f"not a converted voice model (config.json + model.safetensors): {e}"
        ) from e
    if not isinstance(config, dict) or config.get("model_type") != VOICE_MODEL_TYPE or not names:
        raise InvalidVoiceModelError(
            f"config.json must describe a {VOICE_MODEL_TYPE!r} model (convert the RVC .pth with "
            "`soundstage models convert svc`) and model.safetensors must hold its weights"
        )


def _key(voice_model_id: str) -> str:
    return f"{PREFIX}{check_id(voice_model_id)}/voice.json"


def save_svc_voice(
    storage: Storage,
    name: str,
    uri: str,
    source: Literal["uri", "upload"],
    owner: str | None = None,
    voice_model_id: str | None = None,
) -> SvcVoice:
    record = SvcVoice(
        voice_model_id=voice_model_id or new_voice_model_id(),
        name=name,
        uri=check_uri(uri),
        source=source,
        created_at=time.time(),
        owner=owner,
    )
    storage.put_bytes(_key(record.voice_model_id), record.model_dump_json().encode(), "application/json")
    return record


def load_svc_voice(storage: Storage, voice_model_id: str, owner: str | None = None) -> SvcVoice:
    """The record; `VoiceModelNotFoundError` if there is none, or if `owner` is given and it is another's."""
    try:
        record = SvcVoice.model_validate(json.loads(storage.get_bytes(_key(voice_model_id))))
    except (ObjectNotFoundError, InvalidKeyPartError):
        raise VoiceModelNotFoundError(voice_model_id) from None
    if owner is not None and record.owner != owner:
        raise VoiceModelNotFoundError(voice_model_id)
    return record


def list_svc_voices(storage: Storage, owner: str | None = None) -> list[SvcVoice]:
    """Every registered voice model, or with `owner` only that tenant's."""
    records = []
    for prefix in storage.list_prefixes(PREFIX):
        try:
            records.append(load_svc_voice(storage, prefix.split("/")[1], owner))
        except VoiceModelNotFoundError:  # another tenant's, or an emptied prefix
            continue
    return records


def uploaded_model_uri(bucket: str, voice_model_id: str) -> str:
    """Where an uploaded voice model is pushed in the model store (`push_model` writes its manifest)."""
    return f"s3://{bucket}/{PREFIX}{check_id(voice_model_id)}/model/"


def delete_svc_voice(storage: Storage, voice_model_id: str, owner: str | None = None) -> None:
    """Delete the record, and an uploaded model's files with it (a URI's model is not ours to delete)."""
    record = load_svc_voice(storage, voice_model_id, owner)
    if record.source == "upload":
        for name in (*MODEL_FILES, MANIFEST):
            storage.delete(f"{PREFIX}{voice_model_id}/model/{name}")
    storage.delete(_key(voice_model_id))
