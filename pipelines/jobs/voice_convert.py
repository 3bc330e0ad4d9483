"""`POST /v1/jobs/voice-convert`: a song sung again by a registered voice model (RVC v2 family).

split (vocals separated by HTDemucs, or given apart with `instrumental_upload_id`) → pitch (SwiftF0 on the
vocals, transposed by `semitones`) → convert (overlapping segments fanned out over the SVC replicas, each
retried on its own, joined with crossfades, kept only where the input sings) → store (the converted
vocals over the untouched instrumental). The stages are in `voice_convert_stages.py`.
"""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from infra.svc_voice_store import VoiceModelNotFoundError, load_svc_voice
from pipelines.engine.kinds import Admission, AdmissionError, JobKind
from pipelines.jobs.separation import UPLOAD_ID, admit_upload
from pipelines.jobs.voice_convert_stages import VOICE_CONVERT_STAGES

VOICE_CONVERT_JOB = "voice-convert"
DEBUG_VOICE = "debug"
VOICE_MODEL = rf"^([0-9a-f]{{32}}|{DEBUG_VOICE})$"
Profile = Literal["fast", "balanced", "quality"]


@dataclass(frozen=True)
class ProfileSettings:
    """What a profile sets: segment length (s), SVC calls in flight at once, and the output encoding."""

    segment_s: float
    concurrency: int
    container: Literal["wav", "flac"]
    sample_rate: int
    bits: Literal[16, 24]


PROFILES: dict[str, ProfileSettings] = {
    "fast": ProfileSettings(20.0, 8, "wav", 44100, 16),
    "balanced": ProfileSettings(30.0, 4, "wav", 48000, 16),
    "quality": ProfileSettings(45.0, 2, "flac", 48000, 24),
}


class VoiceConvertJobRequest(BaseModel):
    """`POST /v1/jobs/voice-convert` (the HTTP layer turns a `file` or `url` into the `upload_id`)."""

    model_config = ConfigDict(extra="forbid")

    upload_id: str = Field(pattern=UPLOAD_ID, description="The song (or, with an instrumental, its vocals).")
    voice_model: str = Field(
        pattern=VOICE_MODEL,
        description="A voice_model_id from POST /v1/svc-voices, or `debug` (random weights, labelled).",
    )
    semitones: float = Field(default=0.0, ge=-24.0, le=24.0, description="F0 transpose, in semitones.")
    speaker: int = Field(default=0, ge=0, le=1023, description="Speaker index of a multi-speaker model.")
    profile: Profile = Field(
        default="balanced",
        description="fast: 20 s segments, 8 at once, 44.1 kHz 16-bit WAV; balanced: 30 s, 4, 48 kHz 16-bit "
        "WAV; quality: 45 s, 2, 48 kHz 24-bit FLAC.",
    )
    segment_s: float | None = Field(default=None, ge=5.0, le=120.0, description="Overrides the profile's.")
    overlap_s: float = Field(default=0.5, ge=0.0, le=5.0, description="Crossfaded overlap of segments.")
    instrumental_upload_id: str | None = Field(
        default=None,
        pattern=UPLOAD_ID,
        description="An upload of the instrumental: the song is then its vocals and is not separated.",
    )
    seed: int | None = Field(default=None, ge=0, lt=2**31, description="Fixed at admission when absent.")
    voice_uri: str | None = Field(default=None, description="Set by the service from `voice_model`.")

    @property
    def settings(self) -> ProfileSettings:
        return PROFILES[self.profile]

    @property
    def segment_length_s(self) -> float:
        return self.segment_s if self.segment_s is not None else self.settings.segment_s


async def admit_voice_convert(
    request: VoiceConvertJobRequest, admission: Admission
) -> VoiceConvertJobRequest:
    """404 for an unknown upload or voice model (another tenant's is unknown), 422 for an overlap over half
    a segment or an instrumental whose length differs from the vocals' by more than 0.1 s. Completes
    the request with the voice model's URI (always from the registry) and a seed."""
    if 2 * request.overlap_s > request.segment_length_s:
        raise AdmissionError("invalid_request", "overlap_s may be at most half of the segment length")
    song = await admit_upload(admission, request.upload_id)
    if request.instrumental_upload_id is not None:
        instrumental = await admit_upload(admission, request.instrumental_upload_id)
        if abs(instrumental.duration_s - song.duration_s) > 0.1:
            raise AdmissionError(
                "invalid_request",
                f"the instrumental lasts {instrumental.duration_s:.2f} s, the vocals {song.duration_s:.2f} s",
            )
    uri = DEBUG_VOICE if request.voice_model == DEBUG_VOICE else await _voice_uri(request, admission)
    seed = request.seed if request.seed is not None else secrets.randbelow(2**31)
    return request.model_copy(update={"voice_uri": uri, "seed": seed})


async def _voice_uri(request: VoiceConvertJobRequest, admission: Admission) -> str:
    try:
        record = await asyncio.to_thread(
            load_svc_voice, admission.storage, request.voice_model, admission.owner
        )
    except VoiceModelNotFoundError as e:
        raise AdmissionError(e.code, str(e), status=404) from e
    return record.uri


VOICE_CONVERT_KIND = JobKind(
    name=VOICE_CONVERT_JOB,
    request=VoiceConvertJobRequest,
    stages=VOICE_CONVERT_STAGES,
    admit=admit_voice_convert,
    inputs=frozenset({"file", "upload_id", "url"}),
    summary="Singing voice conversion (RVC v2 voices): the song's vocals re-sung over its instrumental.",
)
