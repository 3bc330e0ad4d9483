"""The voicing decision of `PitchDetector.detect` (confidence + periodicity), calibrated on tones, noise,
TTS speech and "singing" (vibrato tones, pitch-shifted speech) that the project makes offline."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from infra.audio import Audio
from infra.dsp.vocoder import shift_pitch
from models.pitch import CONFIDENT, SAMPLE_RATE, PitchDetector, periodicity
from models.types import PITCH_CONFIDENCE_THRESHOLD, PitchContour

RATE = 16000


@pytest.fixture(scope="module")
def detector() -> PitchDetector:
    return PitchDetector.from_pretrained("pkg://swift-f0", threads=2)


@pytest.fixture(scope="module")
def speech() -> Audio:
    from models.tts import StockTTS

    text = "The quick brown fox jumps over the lazy dog. She sells sea shells by the sea shore."
    return StockTTS.from_pretrained().synthesize([text])[0]


def mono(x: npt.NDArray[np.float64], rate: int = RATE) -> Audio:
    return Audio(x[None, :].astype(np.float32), rate)


def from_f0(f0_hz: npt.NDArray[np.float64], harmonics: int = 1) -> Audio:
    """A tone following `f0_hz` `[T]` (one value per sample at 16 kHz), partials 1/k^1.5, peak 0.5."""
    phase = 2 * np.pi * np.cumsum(f0_hz) / RATE
    x = sum(np.sin(k * phase) / k**1.5 for k in range(1, harmonics + 1))
    return mono(0.5 * x / np.abs(x).max())


def sine_glide(seconds: float = 4.0) -> tuple[Audio, npt.NDArray[np.float64]]:
    """A pure sine gliding exponentially from 110 Hz to 440 Hz; also its F0 per sample."""
    t = np.arange(int(seconds * RATE)) / RATE
    f0 = 110.0 * 4.0 ** (t / seconds)
    return from_f0(f0), f0


def vibrato(centre_hz: float, seconds: float = 3.0) -> tuple[Audio, npt.NDArray[np.float64]]:
    """A sung-like tone: 7 partials, ±0.5 semitone vibrato at 5.5 Hz around `centre_hz`."""
    t = np.arange(int(seconds * RATE)) / RATE
    f0 = centre_hz * 2.0 ** (0.5 / 12 * np.sin(2 * np.pi * 5.5 * t))
    return from_f0(f0, harmonics=7), f0


def cents_off(contour: PitchContour, f0_per_sample: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """|error| in cents of every voiced frame against the true F0 at the frame centre."""
    index = np.minimum((contour.times_s * RATE).astype(int), len(f0_per_sample) - 1)
    truth = f0_per_sample[index][contour.voiced]
    return np.abs(1200 * np.log2(contour.f0_hz[contour.voiced] / truth))


def test_default_is_stated_once() -> None:
    import inspect

    default = inspect.signature(PitchDetector.detect).parameters["confidence_threshold"].default
    assert default == PITCH_CONFIDENCE_THRESHOLD < CONFIDENT


def test_sine_glide_is_voiced_and_accurate(detector: PitchDetector) -> None:
    audio, f0 = sine_glide()
    plain = detector.detect(audio, confidence_threshold=CONFIDENT)
    contour = detector.detect(audio)
    assert plain.voiced.mean() < 0.7  # SwiftF0's own 0.5 threshold: 0.56 measured
    assert contour.voiced.mean() >= 0.9  # 0.98 measured
    assert np.percentile(cents_off(contour, f0), 95) < 35


@pytest.mark.parametrize("centre_hz", [130.0, 220.0, 392.0])
def test_vibrato_singing_is_voiced_and_accurate(detector: PitchDetector, centre_hz: float) -> None:
    audio, f0 = vibrato(centre_hz)
    contour = detector.detect(audio)
    assert contour.voiced.mean() >= 0.9
    assert np.percentile(cents_off(contour, f0), 95) < 35


@pytest.mark.parametrize(
    "samples",
    [
        np.zeros(RATE * 3),
        0.3 * np.random.default_rng(0).standard_normal(RATE * 3),
        0.01 * np.random.default_rng(1).standard_normal(RATE * 3),
        np.cumsum(np.random.default_rng(2).standard_normal(RATE * 3)) / 300,
    ],
    ids=["silence", "white-noise", "quiet-white-noise", "brown-noise"],
)
def test_silence_and_noise_stay_unvoiced(detector: PitchDetector, samples: npt.NDArray[np.float64]) -> None:
    contour = detector.detect(mono(samples))
    assert contour.voiced.mean() <= 0.05
    assert np.all(contour.f0_hz[~contour.voiced] == 0.0)


def test_a_threshold_from_half_up_is_the_plain_confidence_test(detector: PitchDetector) -> None:
    audio, _ = sine_glide()
    for threshold in (0.5, 0.7):
        contour = detector.detect(audio, confidence_threshold=threshold)
        np.testing.assert_array_equal(contour.voiced, contour.confidence >= threshold)


def test_speech_frames_added_by_periodicity_follow_the_confident_ones(
    detector: PitchDetector, speech: Audio
) -> None:
    contour = detector.detect(speech)
    plain = detector.detect(speech, confidence_threshold=CONFIDENT)
    added = np.flatnonzero(contour.voiced & ~plain.voiced)
    confident = np.flatnonzero(plain.voiced)
    assert contour.voiced.mean() - plain.voiced.mean() < 0.1  # few frames gained: 0.372 → 0.397 measured
    nearest = confident[np.abs(confident[None, :] - added[:, None]).argmin(axis=1)]
    jump = np.abs(1200 * np.log2(contour.f0_hz[added] / contour.f0_hz[nearest]))
    assert np.median(jump) < 100  # within a semitone of the nearest confident frame (40 cents measured)


@pytest.mark.parametrize("semitones", [-5.0, 4.0])
def test_shifted_speech_reads_the_shift(detector: PitchDetector, speech: Audio, semitones: float) -> None:
    """Speech "sung" higher or lower: on frames voiced in both, F0 moves by the shift (±3 %)."""
    before = detector.detect(speech)
    after = detector.detect(shift_pitch(speech, semitones))
    n = min(len(before.voiced), len(after.voiced))
    both = before.voiced[:n] & after.voiced[:n]
    assert both.mean() > 0.25
    ratio = np.median(after.f0_hz[:n][both] / before.f0_hz[:n][both])
    assert ratio == pytest.approx(2 ** (semitones / 12), rel=0.03)


def test_periodicity_tells_tones_from_noise() -> None:
    t = np.arange(RATE) / RATE
    assert SAMPLE_RATE == RATE
    assert periodicity(np.sin(2 * np.pi * 123.4 * t), 0.5, 123.4) > 0.99
    assert periodicity(np.sin(2 * np.pi * 1800.0 * t), 0.5, 1800.0) > 0.99  # fractional lag of 8.9 samples
    noise = np.random.default_rng(0).standard_normal(RATE)
    assert abs(periodicity(noise, 0.5, 200.0)) < 0.3
    assert periodicity(np.zeros(RATE), 0.5, 200.0) == 0.0
    assert periodicity(noise, 0.999, 60.0) == 0.0  # the window runs past the end
