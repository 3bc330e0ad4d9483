"""Registered voices over HTTP: validation of a reference clip, and the voice store's errors as 404s.
The profiles themselves live in S3 through `infra/voice_store.py`."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from deployments.http.audio_inputs import audio_api_error
from deployments.http.errors import ApiError
from infra import voice_store
from infra.audio import Audio, AudioError
from infra.storage import Storage
from infra.voice_store import VoiceNotFoundError, VoiceProfile
from models.types import VoiceReference

T = TypeVar("T")


def validated_reference(audio: Audio, transcript: str) -> VoiceReference:
    """A `VoiceReference`, or a 4xx `ApiError` (too short/long, silent, empty transcript)."""
    try:
        return VoiceReference(audio=audio, transcript=transcript)
    except AudioError as e:
        raise audio_api_error(e) from e


def _found(call: Callable[[], T]) -> T:
    try:
        return call()
    except VoiceNotFoundError as e:
        raise ApiError(404, e.code, str(e)) from None


def save_voice(
    storage: Storage, name: str, reference: VoiceReference, transcript_source: str
) -> VoiceProfile:
    return voice_store.save_voice(storage, name, reference.audio, reference.transcript, transcript_source)


def load_reference(storage: Storage, voice_id: str) -> VoiceReference:
    audio, transcript = _found(lambda: voice_store.load_voice(storage, voice_id))
    return VoiceReference(audio=audio, transcript=transcript)


def list_profiles(storage: Storage) -> list[VoiceProfile]:
    return voice_store.list_profiles(storage)


def delete_voice(storage: Storage, voice_id: str) -> None:
    _found(lambda: voice_store.delete_voice(storage, voice_id))
