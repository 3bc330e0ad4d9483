"""Uploads in the object store: validate an audio file, keep it as sent, describe and reload it.

Every input is decoded and validated here (container, size, duration, empty, NaN/Inf), so a corrupt
file never reaches a model. Uploads are kept as sent under `uploads/{id}/source` with `upload.json`.
"""

from __future__ import annotations

import hashlib
import json
import time

from pydantic import BaseModel

from infra import audio as audio_io
from infra.audio import Audio
from infra.settings import Settings
from infra.storage import InvalidKeyPartError, ObjectNotFoundError, Storage, upload_key


class UploadNotFoundError(KeyError):
    """No upload with this id (or the id is malformed)."""

    code = "upload_not_found"

    def __init__(self, upload_id: str) -> None:
        super().__init__(upload_id)
        self.message = f"no upload with id {upload_id!r}"

    def __str__(self) -> str:
        return self.message


class UploadInfo(BaseModel):
    upload_id: str
    filename: str | None
    bytes: int
    duration_s: float
    sample_rate: int
    channels: int
    created_at: float


def decode_input(data: bytes, settings: Settings) -> Audio:
    """Decode and validate audio against the configured limits; a typed `AudioError` if invalid."""
    return audio_io.decode(
        data, max_duration_s=settings.max_input_duration_s, max_bytes=settings.max_upload_bytes
    )


def store_upload(storage: Storage, data: bytes, filename: str | None, settings: Settings) -> UploadInfo:
    """Validate, then keep the file as sent; returns what the client needs to refer to it."""
    audio = decode_input(data, settings)
    info = UploadInfo(
        # Content-addressed: the same file is the same upload (so resubmitting a job is idempotent).
        upload_id=hashlib.sha256(data).hexdigest()[:32],
        filename=filename,
        bytes=len(data),
        duration_s=round(audio.duration_s, 6),
        sample_rate=audio.sample_rate,
        channels=audio.channels,
        created_at=time.time(),
    )
    storage.put_bytes(upload_key(info.upload_id, "source"), data)
    storage.put_bytes(upload_key(info.upload_id, "upload.json"), info.model_dump_json().encode())
    return info


def load_upload(storage: Storage, upload_id: str, settings: Settings | None = None) -> Audio:
    """The audio of an earlier upload (validated against `settings`' limits, or the store's own);
    `UploadNotFoundError` if there is none."""
    try:
        data = storage.get_bytes(upload_key(upload_id, "source"))
    except (ObjectNotFoundError, InvalidKeyPartError):
        raise UploadNotFoundError(upload_id) from None
    return decode_input(data, settings or storage.settings)


def upload_info(storage: Storage, upload_id: str) -> UploadInfo:
    """The description written when the upload was stored; `UploadNotFoundError` if there is none."""
    try:
        body = storage.get_bytes(upload_key(upload_id, "upload.json"))
    except (ObjectNotFoundError, InvalidKeyPartError):
        raise UploadNotFoundError(upload_id) from None
    return UploadInfo.model_validate(json.loads(body))
