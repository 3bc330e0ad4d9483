"""infra/dsp/quality.py on synthetic signals: sines, clipped sines, silence, white noise."""

from __future__ import annotations

import numpy as np
import pytest

from infra.audio import Audio
from infra.dsp.quality import (
    CLIPPING_MAX_RATIO,
    HF_NOISE_MAX_RATIO,
    NOISE_LIKE_MIN_FLATNESS,
    assess_quality,
    clipping_ratio,
    rms_dbfs,
)


def sine(
    frequency: float = 440.0, amplitude: float = 0.5, sample_rate: int = 32000, seconds: float = 2.0
) -> Audio:
    t = np.arange(int(sample_rate * seconds)) / sample_rate
    return Audio((amplitude * np.sin(2 * np.pi * frequency * t))[None].astype(np.float32), sample_rate)


def white_noise(sample_rate: int, seconds: float = 2.0, level: float = 0.2) -> Audio:
    noise = level * np.random.default_rng(0).standard_normal(int(sample_rate * seconds))
    return Audio(noise[None].astype(np.float32), sample_rate)


def test_clean_sine_passes() -> None:
    report = assess_quality(sine())
    assert report.passed and report.issues == []
    assert report.score > 0.95
    assert report.clipping_ratio == 0.0
    assert report.rms_dbfs == pytest.approx(20 * np.log10(0.5 / np.sqrt(2)), abs=0.05)
    assert report.spectral_flatness < 0.01


def test_clipped_sine_fails_with_clipping() -> None:
    overdriven = sine(amplitude=3.0)
    clipped = Audio(np.clip(overdriven.samples, -1.0, 1.0), overdriven.sample_rate)
    report = assess_quality(clipped)
    assert not report.passed and report.issues == ["clipping"]
    assert report.clipping_ratio > 0.5 > CLIPPING_MAX_RATIO
    assert report.score < assess_quality(sine()).score


def test_silence_fails() -> None:
    report = assess_quality(Audio(np.zeros((2, 32000), dtype=np.float32), 32000))
    assert report.issues == ["silent"] and report.score == 0.0
    quiet = assess_quality(sine(amplitude=1e-4))  # -83 dBFS: a tone, but inaudible
    assert "silent" in quiet.issues


def test_white_noise_fails_noise_like_and_hf_noise() -> None:
    report = assess_quality(white_noise(44100))
    assert set(report.issues) == {"noise_like", "hf_noise"}
    assert report.spectral_flatness == pytest.approx(0.56, abs=0.03)  # e^-gamma for a periodogram
    assert report.spectral_flatness > NOISE_LIKE_MIN_FLATNESS
    assert report.hf_ratio is not None and report.hf_ratio > HF_NOISE_MAX_RATIO
    assert report.hf_ratio == pytest.approx((22050 - 14000) / 22050, abs=0.02)  # flat spectrum


def test_hf_band_is_not_measured_at_or_below_28_khz() -> None:
    report = assess_quality(white_noise(16000))
    assert report.hf_ratio is None and report.issues == ["noise_like"]
    assert assess_quality(white_noise(32000)).hf_ratio is not None  # 14-16 kHz exists at 32 kHz


def test_a_bright_tone_above_14_khz_is_hf_noise_but_not_noise_like() -> None:
    report = assess_quality(sine(frequency=18000.0, sample_rate=44100))
    assert report.issues == ["hf_noise"]


def test_score_ranks_two_issues_below_one() -> None:
    noise = white_noise(44100, level=0.6)
    clipped_noise = Audio(np.clip(noise.samples * 3, -1.0, 1.0), noise.sample_rate)
    assert set(assess_quality(clipped_noise).issues) >= {"clipping", "noise_like"}
    assert assess_quality(clipped_noise).score <= assess_quality(noise).score


def test_metric_helpers() -> None:
    samples = np.array([[0.0, 1.0, -1.0, 0.5]], dtype=np.float32)
    assert clipping_ratio(samples) == 0.5
    assert rms_dbfs(np.zeros((1, 10), dtype=np.float32)) == float("-inf")
    assert assess_quality(sine()).as_dict()["issues"] == []
