"""tests/espeak.py: real espeak-ng speech, and a clear failure (not a skip) when espeak-ng is missing."""

from __future__ import annotations

import pytest

from infra.audio import decode
from tests.espeak import EspeakMissingError, Utterance, espeak_wav

HALLO = Utterance("de", "de", "Hallo Welt.")


def test_espeak_speaks_a_complete_wav() -> None:
    audio = decode(espeak_wav(HALLO))  # the strict decoder refuses a header whose sizes are wrong
    assert audio.sample_rate == 22050 and 0.5 < audio.duration_s < 3.0


def test_missing_espeak_fails_with_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(EspeakMissingError, match="apt-get install -y espeak-ng"):
        espeak_wav(HALLO)
