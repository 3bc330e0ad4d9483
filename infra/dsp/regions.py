"""Time regions of audio that several rooms share: speech regions (VAD) and speaker turns (diarization)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SpeechRegion:
    """A stretch of speech, `start` <= `end`, in seconds from the start of the audio."""

    start: float
    end: float

    def __post_init__(self) -> None:
        if not 0.0 <= self.start <= self.end:
            raise ValueError(f"a speech region needs 0 <= start <= end, got [{self.start}, {self.end}]")

    @property
    def duration(self) -> float:
        return self.end - self.start


@dataclass(frozen=True)
class Turn:
    """One speaker's stretch of speech, in seconds; `speaker` is `SPEAKER_00`, `SPEAKER_01`, ..."""

    start: float
    end: float
    speaker: str

    @property
    def duration(self) -> float:
        return self.end - self.start
