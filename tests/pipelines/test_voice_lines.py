"""Voice replacement's transcript joins on synthetic words and turns (pure, no models)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from infra.dsp.regions import Turn
from pipelines.voice.lines import (
    SpeakerWord,
    UnknownSpeakerError,
    attribute_words,
    group_lines,
    lines_to_srt,
    plan_chunks,
    resolve_target,
    room_after,
)

TURNS = [Turn(0.0, 3.0, "SPEAKER_00"), Turn(3.5, 9.0, "SPEAKER_01"), Turn(9.5, 11.0, "SPEAKER_00")]


@dataclass(frozen=True)
class W:
    start: float
    end: float
    text: str


@dataclass(frozen=True)
class S:
    start: float
    end: float
    words: tuple[W, ...]


def test_auto_target_is_the_speaker_with_most_speech() -> None:
    assert resolve_target(TURNS, "auto") == "SPEAKER_01"
    assert resolve_target(TURNS, "SPEAKER_00") == "SPEAKER_00"


def test_unknown_target_names_the_labels_that_exist() -> None:
    with pytest.raises(UnknownSpeakerError, match=r"\['SPEAKER_00', 'SPEAKER_01'\]"):
        resolve_target(TURNS, "SPEAKER_05")
    with pytest.raises(ValueError, match="must be 'auto'"):
        resolve_target(TURNS, "bob")


def test_words_are_attributed_and_grouped_into_lines_per_turn() -> None:
    segments = [
        S(
            0.2,
            8.8,
            (W(0.2, 0.6, " Hello"), W(0.7, 2.8, " there."), W(3.6, 4.0, " Hi"), W(4.1, 8.8, " you.")),
        ),
        S(9.6, 10.9, (W(9.6, 10.0, " Bye"), W(10.1, 10.9, " now."))),
    ]
    lines = group_lines(attribute_words(segments, TURNS), TURNS)
    assert [(line.speaker, line.text) for line in lines] == [
        ("SPEAKER_00", "Hello there."),
        ("SPEAKER_01", "Hi you."),
        ("SPEAKER_00", "Bye now."),
    ]
    # Slots widen to the turn edges (the VAD's) but never into the neighbouring line.
    assert (lines[0].slot_start, lines[0].slot_end) == (0.0, 3.0)
    assert (lines[1].slot_start, lines[1].slot_end) == (3.5, 9.0)
    assert (lines[2].slot_start, lines[2].slot_end) == (9.5, 11.0)
    assert room_after(lines, 0, 11.0) == pytest.approx(0.5)
    assert room_after(lines, 2, 12.0) == pytest.approx(1.0)


def test_a_turn_with_two_speakers_words_splits_into_lines_that_do_not_overlap() -> None:
    turns = [Turn(0.0, 4.0, "SPEAKER_00"), Turn(3.0, 6.0, "SPEAKER_01")]
    words = [
        SpeakerWord(0.1, 1.0, "one", "SPEAKER_00", 0),
        SpeakerWord(1.2, 2.0, "two", "SPEAKER_00", 0),
        SpeakerWord(3.3, 4.5, "three", "SPEAKER_01", 1),
        SpeakerWord(4.6, 5.5, "four", "SPEAKER_01", 1),
    ]
    first, second = group_lines(words, turns)
    assert first.text == "one two" and second.text == "three four"
    assert first.slot_end <= second.slot_start
    assert (first.slot_start, first.slot_end) == (0.0, pytest.approx(3.15))
    assert (second.slot_start, second.slot_end) == (pytest.approx(3.15), 6.0)


def test_chunks_join_consecutive_turns_up_to_the_limit() -> None:
    turns = [Turn(0.0, 10.0, "A"), Turn(11.0, 20.0, "B"), Turn(21.0, 35.0, "A"), Turn(36.0, 40.0, "B")]
    assert plan_chunks(turns, 40.0, max_chunk_s=28.0) == [(0.0, 20.2), (20.8, 40.0)]
    assert plan_chunks(turns[:1], 10.0, max_chunk_s=5.0) == [(0.0, 10.0)]


def test_srt_has_one_cue_per_line_with_its_speaker() -> None:
    lines = group_lines([SpeakerWord(61.5, 62.25, "Hello", "SPEAKER_01", 1)], TURNS)
    assert lines_to_srt(lines) == "1\n00:01:01,500 --> 00:01:02,250\n[SPEAKER_01] Hello\n"
