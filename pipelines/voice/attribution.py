"""Speaker attribution: join a transcript's words and segments with diarization turns (pure, no models)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol


class TimedSpeaker(Protocol):
    @property
    def start(self) -> float: ...
    @property
    def end(self) -> float: ...
    @property
    def speaker(self) -> str: ...


class TimedWord(Protocol):
    @property
    def start(self) -> float: ...
    @property
    def end(self) -> float: ...


class TimedSegment(Protocol):
    @property
    def start(self) -> float: ...
    @property
    def end(self) -> float: ...
    @property
    def words(self) -> Sequence[TimedWord]: ...


def _overlap(a_start: float, a_end: float, b_start: float, b_end: float) -> float:
    return max(0.0, min(a_end, b_end) - max(a_start, b_start))


def speaker_at(start: float, end: float, turns: Sequence[TimedSpeaker]) -> str | None:
    """The speaker overlapping [start, end] the longest; else the nearest turn's speaker; None if no turns."""
    if not turns:
        return None
    best = max(turns, key=lambda t: _overlap(start, end, t.start, t.end))
    if _overlap(start, end, best.start, best.end) > 0:
        return best.speaker
    middle = (start + end) / 2
    nearest = min(turns, key=lambda t: min(abs(middle - t.start), abs(middle - t.end)))
    return nearest.speaker


def assign_word_speakers(
    segments: Sequence[TimedSegment], turns: Sequence[TimedSpeaker]
) -> tuple[list[str | None], list[list[str | None]]]:
    """Per segment and per word, who spoke it. A segment's speaker is the majority over its words'
    durations (its own span when it has no words)."""
    word_speakers = [[speaker_at(w.start, w.end, turns) for w in s.words] for s in segments]
    segment_speakers: list[str | None] = []
    for segment, speakers in zip(segments, word_speakers, strict=True):
        spoken: dict[str, float] = {}
        for word, speaker in zip(segment.words, speakers, strict=True):
            if speaker is not None:
                spoken[speaker] = spoken.get(speaker, 0.0) + max(word.end - word.start, 1e-3)
        segment_speakers.append(
            max(spoken, key=spoken.__getitem__) if spoken else speaker_at(segment.start, segment.end, turns)
        )
    return segment_speakers, word_speakers
