"""Registered voices in S3: a reference clip and its transcript, kept as a voice profile.

Keys: `voices/{voice_id}/reference.wav` and `voices/{voice_id}/voice.json`. Used by the ingress
(register, list, delete, speak) and by pipelines (voice replacement in a registered voice).
A profile belongs to the tenant that registered it (`owner`): every read given an `owner` treats
another tenant's voice as one that does not exist; `owner=None` (an admin, or the open API) sees all.
"""

from __future__ import annotations

import json
import secrets
import time

from pydantic import BaseModel

from infra.audio import Audio, decode, encode
from infra.storage import InvalidKeyPartError, ObjectNotFoundError, Storage, check_id, check_name


class VoiceNotFoundError(KeyError):
    """No registered voice with that id (or it belongs to another tenant)."""

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
    owner: str | None = None  # the tenant that registered it (None: registered without tenancy)


def _key(voice_id: str, name: str) -> str:
    return f"voices/{check_id(voice_id)}/{check_name(name)}"


def save_voice(
    storage: Storage,
    name: str,
    audio: Audio,
    transcript: str,
    transcript_source: str,
    owner: str | None = None,
) -> VoiceProfile:
    profile = VoiceProfile(
        voice_id=secrets.token_hex(16),
        name=name,
        transcript=transcript,
        transcript_source=transcript_source,
        duration_s=round(audio.duration_s, 3),
        created_at=time.time(),
        owner=owner,
    )
    storage.put_bytes(_key(profile.voice_id, "reference.wav"), encode(audio, "wav"), "audio/wav")
    storage.put_bytes(_key(profile.voice_id, "voice.json"), profile.model_dump_json().encode())
    return profile


def load_profile(storage: Storage, voice_id: str, owner: str | None = None) -> VoiceProfile:
    """The profile; `VoiceNotFoundError` if there is none, or if `owner` is given and it is another's."""
    try:
        body = storage.get_bytes(_key(voice_id, "voice.json"))
    except (ObjectNotFoundError, InvalidKeyPartError):
        raise VoiceNotFoundError(voice_id) from None
    profile = VoiceProfile.model_validate(json.loads(body))
    if owner is not None and profile.owner != owner:
        raise VoiceNotFoundError(voice_id)
    return profile


def load_voice(storage: Storage, voice_id: str, owner: str | None = None) -> tuple[Audio, str]:
    """The reference clip and its transcript (`owner` as in `load_profile`)."""
    profile = load_profile(storage, voice_id, owner)
    try:
        audio = decode(storage.get_bytes(_key(voice_id, "reference.wav")))
    except ObjectNotFoundError:
        raise VoiceNotFoundError(voice_id) from None
    return audio, profile.transcript


def list_profiles(storage: Storage, owner: str | None = None) -> list[VoiceProfile]:
    """Every registered profile, or with `owner` only that tenant's."""
    ids = [prefix.split("/")[1] for prefix in storage.list_prefixes("voices/")]
    profiles = []
    for voice_id in ids:
        try:
            profiles.append(load_profile(storage, voice_id, owner))
        except VoiceNotFoundError:  # another tenant's, or deleted (a store may list an emptied prefix)
            continue
    return profiles


def delete_voice(storage: Storage, voice_id: str, owner: str | None = None) -> None:
    """Delete the voice (`owner` as in `load_profile`: another tenant's is not found)."""
    load_profile(storage, voice_id, owner)
    for name in ("reference.wav", "voice.json"):
        storage.delete(_key(voice_id, name))
