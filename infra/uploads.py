"""Uploads in the object store: validate an audio file, keep it as sent, describe and reload it.

Every input is decoded and validated here (container, size, sample rate, channels, decoded size,
duration, empty, NaN/Inf, a header that agrees with the file), so a corrupt file never reaches a model.
Uploads are kept as sent under `uploads/{id}/source` with `upload.json`. A stored upload is validated by
streaming through it block by block and copied to S3 from its (spooled) file: the memory one upload takes
does not grow with its size.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
from typing import BinaryIO

from pydantic import BaseModel

from infra import audio as audio_io
from infra.audio import Audio, AudioLimits
from infra.settings import Settings
from infra.storage import InvalidKeyPartError, ObjectNotFoundError, Storage, upload_key

_HASH_BLOCK = 1024 * 1024


class UploadNotFoundError(KeyError):
    """No upload with this id (or the id is malformed, or it belongs to another tenant)."""

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
    owner: str | None = None  # the tenant that stored it (None: stored without tenancy)


def input_limits(settings: Settings) -> AudioLimits:
    """The limits every input is held to, from the settings."""
    return AudioLimits(
        max_duration_s=settings.max_input_duration_s,
        max_bytes=settings.max_upload_bytes,
        max_sample_rate=settings.max_sample_rate,
        max_channels=settings.max_channels,
        max_samples=settings.max_decoded_samples,
    )


def decode_input(data: bytes | BinaryIO, settings: Settings) -> Audio:
    """Decode and validate audio against the configured limits; a typed `AudioError` if invalid."""
    return audio_io.decode(data, limits=input_limits(settings))


def upload_id_of(source: BinaryIO, owner: str | None = None) -> str:
    """Content-addressed, per tenant: the same file from the same tenant is the same upload (so a
    resubmitted job is idempotent), and one tenant's id says nothing about another's files."""
    digest = hashlib.sha256() if owner is None else hashlib.sha256(f"{owner}\0".encode())
    source.seek(0)
    while block := source.read(_HASH_BLOCK):
        digest.update(block)
    source.seek(0)
    return digest.hexdigest()[:32]


def store_upload(
    storage: Storage,
    data: bytes | BinaryIO,
    filename: str | None,
    settings: Settings,
    owner: str | None = None,
) -> UploadInfo:
    """Validate (streaming, keeping no samples), then keep the file as sent; returns what the client
    needs to refer to it. `data`: bytes or a seekable binary file (a spooled upload)."""
    source = io.BytesIO(data) if isinstance(data, bytes | bytearray) else data
    header = audio_io.probe(source, input_limits(settings))
    size = source.seek(0, io.SEEK_END)
    info = UploadInfo(
        upload_id=upload_id_of(source, owner),
        filename=filename,
        bytes=size,
        duration_s=round(header.duration_s, 6),
        sample_rate=header.sample_rate,
        channels=header.channels,
        created_at=time.time(),
        owner=owner,
    )
    source.seek(0)
    key = upload_key(info.upload_id, "source")
    if size <= settings.multipart_chunk_bytes:
        storage.put_bytes(key, source.read())
    else:  # one part in memory at a time
        storage.upload_stream(key, iter(lambda: source.read(_HASH_BLOCK), b""), expected_bytes=size)
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


def upload_info(storage: Storage, upload_id: str, owner: str | None = None) -> UploadInfo:
    """The description written when the upload was stored; `UploadNotFoundError` if there is none, or
    if `owner` is given and the upload is another tenant's."""
    try:
        body = storage.get_bytes(upload_key(upload_id, "upload.json"))
    except (ObjectNotFoundError, InvalidKeyPartError):
        raise UploadNotFoundError(upload_id) from None
    info = UploadInfo.model_validate(json.loads(body))
    if owner is not None and info.owner != owner:
        raise UploadNotFoundError(upload_id)
    return info
