"""Registered voices: a reference clip + its transcript kept in S3 as a voice profile, usable wherever a
voice is accepted (`voice_id`). Keys: `voices/{voice_id}/reference.wav` and `voices/{voice_id}/voice.json`."""

from __future__ import annotations

import json
import secrets
import time

from pydantic import BaseModel

from deployments.audio_inputs import audio_api_error
from deployments.http_errors import ApiError
from infra.audio import Audio, AudioError, decode, encode
from infra.storage import InvalidKeyPartError, ObjectNotFoundError, Storage, check_id, check_name
from models.voice_clone import VoiceReference


class VoiceProfile(BaseModel):
    voice_id: str
    name: str
    transcript: str
    transcript_source: str  # "given" or the ASR model id that wrote it
    duration_s: float
    created_at: float


def _key(voice_id: str, name: str) -> str:
    return f"voices/{check_id(voice_id)}/{check_name(name)}"


def validated_reference(audio: Audio, transcript: str) -> VoiceReference:
    """A `VoiceReference`, or a 4xx `ApiError` (too short/long, silent, empty transcript)."""
    try:
        return VoiceReference(audio=audio, transcript=transcript)
    except AudioError as e:
        raise audio_api_error(e) from e


def save_voice(
    storage: Storage, name: str, reference: VoiceReference, transcript_source: str
) -> VoiceProfile:
    profile = VoiceProfile(
        voice_id=secrets.token_hex(16),
        name=name,
        transcript=reference.transcript,
        transcript_source=transcript_source,
        duration_s=round(reference.audio.duration_s, 3),
        created_at=time.time(),
    )
    storage.put_bytes(_key(profile.voice_id, "reference.wav"), encode(reference.audio, "wav"), "audio/wav")
    storage.put_bytes(_key(profile.voice_id, "voice.json"), profile.model_dump_json().encode())
    return profile


def load_profile(storage: Storage, voice_id: str) -> VoiceProfile:
    try:
        return VoiceProfile.model_validate(json.loads(storage.get_bytes(_key(voice_id, "voice.json"))))
    except (ObjectNotFoundError, InvalidKeyPartError):
        raise ApiError(404, "voice_not_found", f"no registered voice {voice_id!r}") from None


def load_reference(storage: Storage, voice_id: str) -> VoiceReference:
    profile = load_profile(storage, voice_id)
    audio = decode(storage.get_bytes(_key(voice_id, "reference.wav")))
    return VoiceReference(audio=audio, transcript=profile.transcript)


def list_profiles(storage: Storage) -> list[VoiceProfile]:
    ids = [prefix.split("/")[1] for prefix in storage.list_prefixes("voices/")]
    return [load_profile(storage, voice_id) for voice_id in ids]


def delete_voice(storage: Storage, voice_id: str) -> None:
    load_profile(storage, voice_id)
    for name in ("reference.wav", "voice.json"):
        storage.delete(_key(voice_id, name))
