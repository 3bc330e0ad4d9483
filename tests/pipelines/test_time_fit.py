"""Time-fitting synthesized lines into slots (pure DSP on synthetic tones)."""

from __future__ import annotations

import numpy as np
import pytest

from infra.audio import Audio
from infra.dsp.time_fit import MAX_RATE, MIN_RATE, fit_line, fit_rate, trim_silence
from infra.dsp.vocoder import time_stretch

RATE = 16000


def tone(seconds: float, hz: float = 220.0, lead_s: float = 0.0, tail_s: float = 0.0) -> Audio:
    t = np.arange(round(seconds * RATE)) / RATE
    x = 0.5 * np.sin(2 * np.pi * hz * t)
    x = np.concatenate([np.zeros(round(lead_s * RATE)), x, np.zeros(round(tail_s * RATE))])
    return Audio(x[None].astype(np.float32), RATE)


def dominant_hz(audio: Audio) -> float:
    spectrum = np.abs(np.fft.rfft(audio.samples[0] * np.hanning(audio.num_samples)))
    return float(np.argmax(spectrum) * RATE / audio.num_samples)


def test_time_stretch_changes_duration_not_pitch() -> None:
    clip = tone(1.0, 440.0)
    for rate in (0.8, 1.25):
        stretched = time_stretch(clip, rate)
        assert stretched.num_samples == round(RATE / rate)
        assert dominant_hz(stretched) == pytest.approx(440.0, rel=0.01)
    with pytest.raises(ValueError, match="rate"):
        time_stretch(clip, 0.0)


def test_trim_silence_keeps_a_short_margin() -> None:
    trimmed = trim_silence(tone(1.0, lead_s=0.3, tail_s=0.5))
    assert trimmed.duration_s == pytest.approx(1.02, abs=0.002)
    with pytest.raises(ValueError, match="silent"):
        trim_silence(Audio(np.zeros((1, 100), np.float32), RATE))


def test_rate_stays_within_bounds() -> None:
    assert fit_rate(1.0, 0.9) == pytest.approx(1.0 / 0.9)
    assert fit_rate(3.0, 1.0) == MAX_RATE
    assert fit_rate(0.5, 1.0) == MIN_RATE
    assert fit_rate(1.0, 1.0004) == 1.0


def test_a_clip_near_the_slot_length_is_stretched_to_fit_exactly() -> None:
    fitted = fit_line(tone(0.98, lead_s=0.2), slot_s=0.9, room_s=0.0)
    assert fitted.duration_s == pytest.approx(0.9, abs=1e-3)
    assert fitted.overrun_s == pytest.approx(0.0, abs=1e-3) and fitted.overlap_s == 0.0


def test_a_long_clip_overruns_into_the_room_then_overlaps() -> None:
    fitted = fit_line(tone(1.98, lead_s=0.1, tail_s=0.1), slot_s=1.0, room_s=0.5)
    assert fitted.rate == MAX_RATE
    assert fitted.duration_s == pytest.approx(2.0 / MAX_RATE, abs=1e-3)  # never cut
    assert fitted.overrun_s == pytest.approx(0.6, abs=1e-3)
    assert fitted.overlap_s == pytest.approx(0.1, abs=1e-3)


def test_a_short_clip_is_slowed_at_most_to_the_bound() -> None:
    fitted = fit_line(tone(0.48, lead_s=0.1, tail_s=0.1), slot_s=1.0, room_s=0.0)
    assert fitted.rate == MIN_RATE and fitted.duration_s == pytest.approx(0.5 / MIN_RATE, abs=1e-3)
    assert fitted.overrun_s == 0.0
