"""The voice-replace job's request, and the two rules its admission and its stages share, stated once:
what a registered voice id looks like (`VOICE_ID`) and how quiet an input may be (`SILENT_PEAK_DBFS`)."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from infra.audio import Audio, AudioFormat, peak_dbfs
from pipelines.voice.lines import TARGET_PATTERN

VOICE_ID = re.compile(r"^[0-9a-f]{32}$")
SILENT_PEAK_DBFS = -70.0  # an input whose loudest sample is quieter than this has nothing to replace


class SilentInputError(ValueError):
    code = "silent_input"


def is_voice_id(voice: str) -> bool:
    """A registered voice's id (spoken by VoiceClone), not a stock voice name (spoken by TTS)."""
    return VOICE_ID.match(voice) is not None


def check_audible(audio: Audio) -> None:
    """`SilentInputError` when the loudest sample of `audio` is below `SILENT_PEAK_DBFS`."""
    if peak_dbfs(audio) < SILENT_PEAK_DBFS:
        raise SilentInputError(
            f"the input is silent (peak below {SILENT_PEAK_DBFS:g} dBFS): no voice to replace"
        )


class VoiceReplaceJobRequest(BaseModel):
    """`POST /v1/jobs/voice-replace` (the HTTP layer turned a direct file or a URL into an upload)."""

    model_config = ConfigDict(extra="forbid")

    upload_id: str = Field(pattern="^[0-9a-f]{32}$")
    voice: str = Field(min_length=1, max_length=64, description="Stock voice or voice_id.")
    target_speaker: str = Field(
        default="auto", pattern=TARGET_PATTERN, description="`auto` (most speech) or e.g. `SPEAKER_01`."
    )
    separate: bool = Field(default=False, description="Split vocals from accompaniment first.")
    analyze: Literal["vocals", "input"] = Field(
        default="vocals",
        description="With `separate`: diarize and transcribe the separated vocals or the input mix.",
    )
    num_speakers: int | None = Field(default=None, ge=1, le=8)
    format: AudioFormat = "wav"
