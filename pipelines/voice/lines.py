"""Voice replacement's transcript joins (pure, no models): pick the target speaker, cut the turns into
transcription chunks, group attributed words into lines, and render the lines as SRT.

A *line* is one speaker's consecutive words within one diarization turn. Its *slot* is the stretch of
the input it replaces: from its first word to its last, widened to the turn's edges where the line
opens or closes the turn (the turn edges come from the VAD and hold the breath and the word tails that
Whisper's word timestamps miss), and never into a neighbouring line.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace

from infra.dsp.regions import Turn
from pipelines.voice.attribution import TimedSegment, assign_word_speakers

AUTO_TARGET = "auto"
TARGET_PATTERN = r"^(auto|SPEAKER_\d{2})$"
# Transcription chunks: consecutive turns up to this long go to one ASR call (Whisper reads 30 s).
MAX_CHUNK_S = 28.0
CHUNK_PAD_S = 0.2  # audio kept around a chunk's turns, so word edges are not clipped


class UnknownSpeakerError(ValueError):
    """The requested target speaker is not among the diarization's labels."""

    code = "unknown_speaker"


@dataclass(frozen=True)
class SpeakerWord:
    """A transcribed word with its speaker and the index of the diarization turn it lies in (seconds)."""

    start: float
    end: float
    text: str
    speaker: str
    turn: int


@dataclass(frozen=True)
class Line:
    """One speaker's consecutive words within one turn; times in seconds."""

    speaker: str
    turn: int
    start: float  # first word's start
    end: float  # last word's end
    slot_start: float
    slot_end: float
    text: str

    @property
    def slot_s(self) -> float:
        return self.slot_end - self.slot_start


def resolve_target(turns: Sequence[Turn], requested: str) -> str:
    """`requested` if some turn has that label; for `auto`, the speaker with the most speech time.
    Raises `UnknownSpeakerError` naming the labels that exist (or `ValueError` for no turns)."""
    if not re.match(TARGET_PATTERN, requested):
        raise ValueError(f"target_speaker {requested!r} must be 'auto' or a label like 'SPEAKER_00'")
    speech: dict[str, float] = {}
    for turn in turns:
        speech[turn.speaker] = speech.get(turn.speaker, 0.0) + turn.duration
    if not speech:
        raise ValueError("no speaker turns to choose a target from")
    if requested == AUTO_TARGET:
        return max(sorted(speech), key=speech.__getitem__)
    if requested not in speech:
        raise UnknownSpeakerError(
            f"target_speaker {requested!r} was not found; diarization found {sorted(speech)}"
        )
    return requested


def plan_chunks(
    turns: Sequence[Turn], duration_s: float, max_chunk_s: float = MAX_CHUNK_S
) -> list[tuple[float, float]]:
    """Spans `(start, end)` in seconds to transcribe separately: consecutive turns (in time order) joined
    while the span stays within `max_chunk_s`, padded by `CHUNK_PAD_S` within `[0, duration_s]`. A turn
    longer than `max_chunk_s` is one chunk of its own (the ASR model windows it itself)."""
    spans: list[tuple[float, float]] = []
    for turn in sorted(turns, key=lambda t: t.start):
        if spans and turn.end - spans[-1][0] <= max_chunk_s:
            spans[-1] = (spans[-1][0], max(spans[-1][1], turn.end))
        else:
            spans.append((turn.start, turn.end))
    return [(max(0.0, s - CHUNK_PAD_S), min(duration_s, e + CHUNK_PAD_S)) for s, e in spans]


def turn_of(start: float, end: float, turns: Sequence[Turn]) -> int:
    """Index of the turn overlapping `[start, end]` the longest, else of the nearest turn."""

    def overlap(t: Turn) -> float:
        return max(0.0, min(end, t.end) - max(start, t.start))

    best = max(range(len(turns)), key=lambda i: overlap(turns[i]))
    if overlap(turns[best]) > 0:
        return best
    middle = (start + end) / 2
    return min(range(len(turns)), key=lambda i: min(abs(middle - turns[i].start), abs(middle - turns[i].end)))


def attribute_words(segments: Sequence[TimedSegment], turns: Sequence[Turn]) -> list[SpeakerWord]:
    """Every word of `segments` (whose words have `.text`) with its speaker and turn, in time order."""
    if not turns:
        raise ValueError("attributing words needs at least one turn")
    _, word_speakers = assign_word_speakers(segments, turns)
    words = [
        SpeakerWord(
            w.start, w.end, str(getattr(w, "text", "")).strip(), speaker or "", turn_of(w.start, w.end, turns)
        )
        for segment, speakers in zip(segments, word_speakers, strict=True)
        for w, speaker in zip(segment.words, speakers, strict=True)
    ]
    return sorted((w for w in words if w.text), key=lambda w: w.start)


def group_lines(words: Sequence[SpeakerWord], turns: Sequence[Turn]) -> list[Line]:
    """Lines (module docstring) of `words` (in time order), with their slots."""
    groups: list[list[SpeakerWord]] = []
    for word in words:
        if groups and (groups[-1][-1].speaker, groups[-1][-1].turn) == (word.speaker, word.turn):
            groups[-1].append(word)
        else:
            groups.append([word])
    lines: list[Line] = []
    for i, group in enumerate(groups):
        turn = turns[group[0].turn]
        opens = i == 0 or groups[i - 1][-1].turn != group[0].turn
        closes = i + 1 == len(groups) or groups[i + 1][0].turn != group[0].turn
        start, end = group[0].start, group[-1].end
        slot_start = min(start, turn.start) if opens else start
        slot_end = max(end, turn.end) if closes else end
        if i > 0:
            slot_start = max(slot_start, groups[i - 1][-1].end)
        if i + 1 < len(groups):
            slot_end = min(slot_end, groups[i + 1][0].start)
        text = " ".join(w.text for w in group)
        lines.append(Line(group[0].speaker, group[0].turn, start, end, slot_start, slot_end, text))
    return _without_overlaps(lines)


def _without_overlaps(lines: list[Line]) -> list[Line]:
    """Where overlapping turns made two neighbouring slots overlap, both end at the middle of the
    overlap (kept between the first line's last word and the second line's first)."""
    for i in range(len(lines) - 1):
        before, after = lines[i], lines[i + 1]
        if before.slot_end > after.slot_start:
            middle = (before.slot_end + after.slot_start) / 2
            border = min(max(middle, before.end), after.start)
            lines[i], lines[i + 1] = replace(before, slot_end=border), replace(after, slot_start=border)
    return lines


def room_after(lines: Sequence[Line], index: int, duration_s: float) -> float:
    """Silence (s) after line `index`'s slot before the next line's slot (or the end of the input)."""
    following = lines[index + 1].slot_start if index + 1 < len(lines) else duration_s
    return max(0.0, following - lines[index].slot_end)


def lines_to_srt(lines: Sequence[Line]) -> str:
    """SubRip cues, one per line, prefixed `[SPEAKER_00]`."""
    cues = [
        f"{i}\n{_timestamp(line.start)} --> {_timestamp(line.end)}\n[{line.speaker}] {line.text}\n"
        for i, line in enumerate(lines, start=1)
    ]
    return "\n".join(cues)


def _timestamp(seconds: float) -> str:
    millis = max(0, round(seconds * 1000))
    hours, rest = divmod(millis, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs, millis = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d},{millis:03d}"
