"""infra/dsp/spectrogram.py: mel filterbank, dB scale, colour map and the PNG."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from infra.audio import Audio
from infra.dsp.spectrogram import (
    BACKGROUND,
    DB_RANGE,
    HEIGHT,
    N_MELS,
    WIDTH,
    colour_map,
    hz_to_mel,
    mel_filterbank,
    mel_spectrogram_db,
    mel_to_hz,
    render_png,
)


def tone(frequency: float, sample_rate: int = 32000, seconds: float = 2.0) -> Audio:
    t = np.arange(int(sample_rate * seconds)) / sample_rate
    return Audio((0.5 * np.sin(2 * np.pi * frequency * t))[None].astype(np.float32), sample_rate)


def test_png_is_valid_sized_and_not_constant() -> None:
    png = render_png(tone(1000.0))
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    Image.open(io.BytesIO(png)).verify()
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG" and image.size == (WIDTH, HEIGHT) and image.mode == "RGB"
    pixels = np.asarray(image, dtype=np.float64)
    assert pixels.std() > 10.0
    assert tuple(pixels[0, 0].astype(int)) == BACKGROUND  # dark theme: the frame is the background
    assert pixels.mean() < 128


def test_custom_size() -> None:
    assert Image.open(io.BytesIO(render_png(tone(440.0), width=400, height=200))).size == (400, 200)
    with pytest.raises(ValueError, match="no room"):
        render_png(tone(440.0), width=40, height=20)


def test_tone_lands_in_its_mel_band() -> None:
    db = mel_spectrogram_db(tone(1000.0))
    assert db.shape[0] == N_MELS and db.max() == 0.0 and db.min() >= -DB_RANGE
    peak_band = int(np.argmax(db.mean(axis=1)))
    centres = mel_to_hz(np.linspace(0.0, hz_to_mel(16000.0), N_MELS + 2))[1:-1]
    assert abs(centres[peak_band] - 1000.0) < 60.0


def test_filterbank_triangles_cover_the_spectrum() -> None:
    bank = mel_filterbank(32000)
    assert bank.shape == (N_MELS, 1025) and bank.min() >= 0.0 and bank.max() <= 1.0
    assert (bank.sum(axis=0)[1:-1] > 0).all()  # every bin between DC and Nyquist feeds some band
    assert float(mel_to_hz(hz_to_mel(1234.0))) == pytest.approx(1234.0)


def test_colour_map_gets_lighter() -> None:
    lut = colour_map()
    lightness = lut @ np.array([0.2126, 0.7152, 0.0722])
    assert lut.shape == (256, 3) and lut.dtype == np.uint8
    assert np.all(np.diff(lightness) > 0)  # monotonic: no false contours from a dip in lightness
