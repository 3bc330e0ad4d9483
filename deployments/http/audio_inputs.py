"""Audio inputs at the HTTP edge: validate uploads before anything else sees them, store and reload them.

Every input is decoded and validated here (container, size, duration, empty, NaN/Inf), so a corrupt
file never reaches a model. Uploads are kept as sent under `uploads/{id}/source` with `upload.json`.
"""

from __future__ import annotations

import hashlib
import json
import time

from pydantic import BaseModel

from deployments.http.errors import ApiError
from infra import audio as audio_io
from infra.audio import Audio, AudioError
from infra.settings import Settings
from infra.storage import InvalidKeyPartError, ObjectNotFoundError, Storage, upload_key

_STATUS = {
    audio_io.AudioTooLargeError: 413,
    audio_io.UnsupportedAudioFormatError: 415,
}


class UploadInfo(BaseModel):
    upload_id: str
    filename: str | None
    bytes: int
    duration_s: float
    sample_rate: int
    channels: int
    created_at: float


def audio_api_error(error: AudioError) -> ApiError:
    """The 4xx an invalid audio input maps to: 413 too large, 415 bad container, else 422."""
    return ApiError(_STATUS.get(type(error), 422), error.code, str(error))


def decode_input(data: bytes, settings: Settings) -> Audio:
    """Decode and validate request audio against the configured limits; 4xx `ApiError` if invalid."""
    try:
        return audio_io.decode(
            data, max_duration_s=settings.max_input_duration_s, max_bytes=settings.max_upload_bytes
        )
    except AudioError as e:
        raise audio_api_error(e) from e


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


def load_upload(storage: Storage, upload_id: str, settings: Settings) -> Audio:
    """The audio of an earlier upload; 404 `ApiError` if there is none."""
    try:
        data = storage.get_bytes(upload_key(upload_id, "source"))
    except (ObjectNotFoundError, InvalidKeyPartError):
        raise ApiError(404, "upload_not_found", f"no upload with id {upload_id!r}") from None
    return decode_input(data, settings)


def upload_info(storage: Storage, upload_id: str) -> UploadInfo:
    try:
        body = storage.get_bytes(upload_key(upload_id, "upload.json"))
    except (ObjectNotFoundError, InvalidKeyPartError):
        raise ApiError(404, "upload_not_found", f"no upload with id {upload_id!r}") from None
    return UploadInfo.model_validate(json.loads(body))
