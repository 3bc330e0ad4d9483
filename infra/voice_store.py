"""Registered voices in S3: a reference clip and its transcript, kept as a voice profile.

Keys: `voices/{voice_id}/reference.wav` and `voices/{voice_id}/voice.json`. Used by the ingress
(register, list, delete, speak) and by pipelines (voice replacement in a registered voice).
"""

from __future__ import annotations

import json
import secrets
import time

from pydantic import BaseModel

from infra.audio import Audio, decode, encode
from infra.storage import InvalidKeyPartError, ObjectNotFoundError, Storage, check_id, check_name


class VoiceNotFoundError(KeyError):
    """No registered voice with that id."""

    code = "voice_not_found"

    def __str__(self) -> str:
        return f"no registered voice {self.args[0]!r}"


class VoiceProfile(BaseModel):
    voice_id: str
    name: str
    transcript: str
    transcript_source: str  # "given" or the ASR model id that wrote it
    duration_s: float
    created_at: float


def _key(voice_id: str, name: str) -> str:
    return f"voices/{check_id(voice_id)}/{check_name(name)}"


def save_voice(
    storage: Storage, name: str, audio: Audio, transcript: str, transcript_source: str
) -> VoiceProfile:
    profile = VoiceProfile(
        voice_id=secrets.token_hex(16),
        name=name,
        transcript=transcript,
        transcript_source=transcript_source,
        duration_s=round(audio.duration_s, 3),
        created_at=time.time(),
    )
    storage.put_bytes(_key(profile.voice_id, "reference.wav"), encode(audio, "wav"), "audio/wav")
    storage.put_bytes(_key(profile.voice_id, "voice.json"), profile.model_dump_json().encode())
    return profile


def load_profile(storage: Storage, voice_id: str) -> VoiceProfile:
    try:
        return VoiceProfile.model_validate(json.loads(storage.get_bytes(_key(voice_id, "voice.json"))))
    except (ObjectNotFoundError, InvalidKeyPartError):
        raise VoiceNotFoundError(voice_id) from None


def load_voice(storage: Storage, voice_id: str) -> tuple[Audio, str]:
    """The reference clip and its transcript."""
    profile = load_profile(storage, voice_id)
    try:
        audio = decode(storage.get_bytes(_key(voice_id, "reference.wav")))
    except ObjectNotFoundError:
        raise VoiceNotFoundError(voice_id) from None
    return audio, profile.transcript


def list_profiles(storage: Storage) -> list[VoiceProfile]:
    ids = [prefix.split("/")[1] for prefix in storage.list_prefixes("voices/")]
    return [load_profile(storage, voice_id) for voice_id in ids]


def delete_voice(storage: Storage, voice_id: str) -> None:
    load_profile(storage, voice_id)
    for name in ("reference.wav", "voice.json"):
        storage.delete(_key(voice_id, name))
