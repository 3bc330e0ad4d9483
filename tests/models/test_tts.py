"""StockTTS on hibari's real bundled voice: shapes, rates, durations, speed, voices, text splitting."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from models.tts import (
    SENTENCE_PAUSE_S,
    StockTTS,
    UnknownVoiceError,
    VoiceCatalogue,
    join_with_pauses,
    split_sentences,
)
from models.types import ModelLoadingError

SENTENCE = "The quick brown fox jumps over the lazy dog, and then it runs back into the forest."
RATE = 24000


def test_bundled_voice_is_listed() -> None:
    catalogue = VoiceCatalogue.bundled()
    assert catalogue.names() == ["heart"]
    voice = catalogue.get("heart")
    assert (voice.language, voice.sample_rate) == ("en-US", RATE)
    assert Path(voice.source).is_file()


def test_model_identity(stock_tts: StockTTS) -> None:
    assert stock_tts.voices.names() == ["heart"]
    assert (stock_tts.sample_rate, stock_tts.channels) == (RATE, 1)
    assert stock_tts.info.weights == "pretrained"
    assert stock_tts.info.model_id == "pkg://hibari-tts"


def test_synthesize_gives_mono_float32_speech_of_plausible_length(stock_tts: StockTTS) -> None:
    texts = [SENTENCE, "Hello there."]
    audios = stock_tts.synthesize(texts)
    assert len(audios) == 2
    for text, audio in zip(texts, audios, strict=True):
        assert audio.samples.shape == (1, audio.num_samples)
        assert audio.samples.dtype == np.float32
        assert audio.sample_rate == stock_tts.sample_rate == RATE
        assert np.isfinite(audio.samples).all()
        assert 0.05 < np.abs(audio.samples).max() <= 1.0
        words = len(text.split())
        # Read speech runs at about 2-4 words per second; hibari adds ~0.8 s of lead-in and tail.
        assert words / 5.0 < audio.duration_s < words / 1.5 + 1.0, audio.duration_s


def test_speed_changes_duration(stock_tts: StockTTS) -> None:
    normal, fast, slow = (stock_tts.synthesize([SENTENCE], speed=s)[0] for s in (1.0, 2.0, 0.5))
    assert fast.duration_s < 0.65 * normal.duration_s
    assert slow.duration_s > 1.6 * normal.duration_s


def test_same_seed_is_reproducible_whatever_the_batch(stock_tts: StockTTS) -> None:
    alone = stock_tts.synthesize(["Hello there."])[0]
    in_batch = stock_tts.synthesize([SENTENCE, "Hello there."])[1]
    np.testing.assert_array_equal(alone.samples, in_batch.samples)
    fresh = stock_tts.synthesize(["Hello there."], seed=None)[0]
    assert not np.array_equal(alone.samples, fresh.samples)


def test_long_text_is_joined_with_pauses(stock_tts: StockTTS) -> None:
    one = stock_tts.synthesize(["The rain stopped."])[0]
    three = stock_tts.synthesize(["The rain stopped. The sun came out. We went outside."])[0]
    assert 2.0 * one.duration_s < three.duration_s < 4.0 * one.duration_s


@pytest.mark.parametrize("bad", ["", "   ", "\n\t"])
def test_empty_text_is_rejected(stock_tts: StockTTS, bad: str) -> None:
    with pytest.raises(ValueError, match="text 1 is empty"):
        stock_tts.synthesize(["Fine.", bad])


def test_text_without_words_is_rejected(stock_tts: StockTTS) -> None:
    with pytest.raises(ValueError, match="text 0 has nothing to pronounce"):
        stock_tts.synthesize(["... !"])


@pytest.mark.parametrize("speed", [0.2, 4.5, 0.0, -1.0, float("nan")])
def test_speed_out_of_range_is_rejected(stock_tts: StockTTS, speed: float) -> None:
    with pytest.raises(ValueError, match="speed must be within"):
        stock_tts.synthesize(["Fine."], speed=speed)


def test_unknown_voice_names_the_known_ones(stock_tts: StockTTS) -> None:
    with pytest.raises(UnknownVoiceError, match="heart") as caught:
        stock_tts.synthesize(["Hello."], voice="nobody")
    assert isinstance(caught.value, KeyError)
    assert "nobody" in str(caught.value)


def test_voice_folder_with_manifest(tmp_path: Path) -> None:
    source = Path(VoiceCatalogue.bundled().get("heart").source)
    shutil.copy(source, tmp_path / "studio.onnx")
    manifest = {"studio": {"file": "studio.onnx", "language": "en-GB"}}
    (tmp_path / "voices.json").write_text(json.dumps(manifest))
    assert VoiceCatalogue.from_folder(tmp_path).get("studio").language == "en-GB"
    tts = StockTTS.from_pretrained(str(tmp_path))
    assert tts.voices.names() == ["heart", "studio"]
    audio = tts.synthesize(["Good morning."], voice="studio")[0]
    assert audio.num_samples > 0.3 * RATE


def test_voice_folder_verifies_checksums(tmp_path: Path) -> None:
    (tmp_path / "studio.onnx").write_bytes(b"not a model")
    manifest = {"studio": {"file": "studio.onnx", "language": "en-US", "sha256": "0" * 64}}
    (tmp_path / "voices.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelLoadingError, match="sha256"):
        VoiceCatalogue.from_folder(tmp_path)


def test_hibari_cache_layout_is_verified_against_its_registry(tmp_path: Path) -> None:
    # A file named like hibari's downloadable "emma" voice but holding other bytes.
    (tmp_path / "bf_emma.int8.onnx").write_bytes(b"corrupt download")
    with pytest.raises(ModelLoadingError, match="emma"):
        VoiceCatalogue.from_folder(tmp_path)


def test_empty_folder_and_bad_uris_raise(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadingError, match="no hibari voices"):
        VoiceCatalogue.from_folder(tmp_path)
    with pytest.raises(ModelLoadingError, match="pkg://hibari-tts"):
        StockTTS.from_pretrained("pkg://piper")
    with pytest.raises(ValueError, match="CPU only"):
        StockTTS.from_pretrained(device="cuda")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("One. Two! Three? Four", ["One.", "Two!", "Three?", "Four"]),
        (
            "Dr. Smith met J. K. Rowling. Then   they left.",
            ["Dr. Smith met J. K. Rowling.", "Then they left."],
        ),
        ("First line\nsecond line", ["First line", "second line"]),
        ("e.g. this stays whole.", ["e.g. this stays whole."]),
        ("", []),
        ("   \n ", []),
    ],
)
def test_split_sentences(text: str, expected: list[str]) -> None:
    assert split_sentences(text) == expected


def test_split_sentences_cuts_long_sentences_at_clauses_then_words() -> None:
    clauses = "alpha beta gamma, delta epsilon; zeta eta theta"
    assert split_sentences(clauses, max_chars=20) == ["alpha beta gamma,", "delta epsilon;", "zeta eta theta"]
    words = " ".join(["word"] * 30) + "."
    pieces = split_sentences(words, max_chars=24)
    assert all(len(p) <= 24 for p in pieces)
    assert " ".join(pieces) == words


def test_split_sentences_keeps_an_overlong_word_whole() -> None:
    assert split_sentences("a " + "x" * 12 + " b", max_chars=5) == ["a", "x" * 12, "b"]
    with pytest.raises(ValueError, match="max_chars"):
        split_sentences("text", max_chars=0)


def test_join_with_pauses_sets_exact_gaps() -> None:
    burst = np.concatenate([np.zeros(RATE), np.full(RATE, 0.5), np.zeros(RATE)]).astype(np.float32)
    short_tail = np.concatenate([np.full(RATE, 0.5), np.zeros(100)]).astype(np.float32)
    pause = int(SENTENCE_PAUSE_S * RATE)
    joined = join_with_pauses([burst, short_tail, burst], pause)
    loud = np.flatnonzero(np.abs(joined) > 0.1)
    gaps = np.diff(loud)[np.diff(loud) > 1] - 1
    assert gaps.tolist() == [pause, pause]
    assert loud[0] == RATE  # the first lead-in is kept
    assert joined.size - 1 - loud[-1] == RATE  # and the last tail
