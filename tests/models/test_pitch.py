"""SwiftF0 pitch tracking (real packaged weights) and the DSP pitch shift, on synthetic signals."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
import swift_f0
from scipy import linalg, signal

from infra.audio import Audio
from infra.dsp.vocoder import shift_pitch
from models.pitch import PitchDetector
from models.types import ModelLoadingError, PitchContour

RATE = 22050  # not a multiple of the model's 16 kHz, so every test also exercises the resampling


@pytest.fixture(scope="module")
def detector() -> PitchDetector:
    return PitchDetector.from_pretrained("pkg://swift-f0", threads=2)


def tone(f0_hz: float, *, seconds: float = 1.5, rate: int = RATE, harmonics: int = 1) -> Audio:
    """`[1, T]` sum of `harmonics` sines at k * f0 with amplitudes 1/k, peak 0.5."""
    t = np.arange(int(seconds * rate)) / rate
    x = sum(np.sin(2 * np.pi * k * f0_hz * t) / k for k in range(1, harmonics + 1))
    return mono(0.5 * x / np.abs(x).max(), rate)


def mono(x: npt.NDArray[np.float64], rate: int) -> Audio:
    return Audio(x[None, :].astype(np.float32), rate)


def glide(rate: int = RATE) -> Audio:
    """110 Hz held 0.25 s, an exponential glide to 440 Hz over 2.5 s, 440 Hz held 0.25 s; 3 harmonics."""
    t = np.arange(int(3.0 * rate)) / rate
    f0 = 110.0 * 4.0 ** (np.clip(t - 0.25, 0.0, 2.5) / 2.5)
    phase = 2 * np.pi * np.cumsum(f0) / rate
    x = sum(np.sin(k * phase) / k for k in range(1, 4))
    return mono(0.5 * x / np.abs(x).max(), rate)


def vowel(f0_hz: float = 150.0, formant_hz: float = 1000.0, rate: int = 16000) -> Audio:
    """A band-limited 150 Hz pulse train through one resonance (Q 4) at `formant_hz`, 1.5 s."""
    t = np.arange(int(1.5 * rate)) / rate
    b, a = signal.iirpeak(formant_hz, 4.0, fs=rate)
    harmonics = np.arange(1, int((rate / 2 - 100) // f0_hz) + 1) * f0_hz
    _, response = signal.freqz(b, a, worN=harmonics, fs=rate)
    partials = zip(harmonics, response, strict=True)
    x = sum(np.abs(h) * np.cos(2 * np.pi * f * t + np.angle(h)) for f, h in partials)
    return mono(0.5 * x / np.abs(x).max(), rate)


def envelope_peak_hz(audio: Audio, order: int = 8) -> float:
    """Peak of an order-8 LPC spectral envelope (a different estimator from the shifter's cepstrum)."""
    x = audio.samples[0].astype(np.float64)
    x = x[len(x) // 6 : -len(x) // 6] * np.hanning(len(x) - 2 * (len(x) // 6))
    r = np.fft.irfft(np.abs(np.fft.rfft(x, 2 * len(x))) ** 2)[: order + 1]
    a = np.concatenate([[1.0], -linalg.solve_toeplitz(r[:-1], r[1:])])
    freqs, h = signal.freqz(1.0, a, worN=4096, fs=audio.sample_rate)
    magnitude = np.where(freqs > 300.0, np.abs(h), 0.0)
    return float(freqs[np.argmax(magnitude)])


def voiced_median_hz(contour: PitchContour) -> float:
    return float(np.median(contour.f0_hz[contour.voiced]))


# --- loading ---------------------------------------------------------------------------------------


def test_packaged_weights_are_identified(detector: PitchDetector) -> None:
    assert detector.info.model_id == "swift-f0"
    assert detector.info.revision == swift_f0.__version__
    assert detector.info.weights == "pretrained"
    assert (detector.sample_rate, detector.channels) == (16000, 1)


def test_local_folder_loads_the_same_model(detector: PitchDetector) -> None:
    folder = Path(swift_f0.__file__).parent
    local = PitchDetector.from_pretrained(str(folder), threads=1)
    assert local.info.revision is not None and local.info.revision.startswith("sha256:")
    audio = tone(220.0, harmonics=3)
    np.testing.assert_allclose(local.detect(audio).f0_hz, detector.detect(audio).f0_hz, rtol=1e-5)


@pytest.mark.parametrize("uri", ["hf://someone/swift-f0", "pkg://crepe", "debug", "relative/missing/dir"])
def test_unknown_uri_names_what_was_tried(uri: str) -> None:
    with pytest.raises(ModelLoadingError, match=r"pkg://swift-f0.*model\.onnx"):
        PitchDetector.from_pretrained(uri)


def test_broken_onnx_file_is_a_loading_error(tmp_path: Path) -> None:
    (tmp_path / "model.onnx").write_bytes(b"not an onnx graph")
    with pytest.raises(ModelLoadingError, match="not a loadable ONNX model"):
        PitchDetector.from_pretrained(str(tmp_path))


def test_gpu_device_is_rejected() -> None:
    with pytest.raises(ValueError, match="cuda"):
        PitchDetector.from_pretrained(device="cuda")


# --- detection -------------------------------------------------------------------------------------


def test_sine_220_hz(detector: PitchDetector) -> None:
    audio = tone(220.0)
    stereo = Audio(np.concatenate([audio.samples, 0.5 * audio.samples]), RATE)
    contour = detector.detect(stereo)
    assert contour.voiced.mean() > 0.8
    assert voiced_median_hz(contour) == pytest.approx(220.0, rel=0.01)
    assert len(contour.times_s) == int(audio.duration_s / contour.hop_s)
    np.testing.assert_allclose(np.diff(contour.times_s), 0.016)
    assert np.all(contour.f0_hz[~contour.voiced] == 0.0)
    assert contour.model == detector.info


def test_glide_is_tracked_monotonically(detector: PitchDetector) -> None:
    contour = detector.detect(glide())
    assert contour.voiced.mean() > 0.9
    f0 = contour.f0_hz[contour.voiced]
    # Over 5 frames (80 ms) the track never falls by more than 0.5 % (9 cents) of jitter on the holds.
    smoothed = signal.medfilt(f0, 5)[2:-2]  # medfilt zero-pads, so its two edge values are dropped
    assert np.all(np.diff(np.log(smoothed)) > -0.005)
    assert f0[0] == pytest.approx(110.0, rel=0.03)
    assert f0[-1] == pytest.approx(440.0, rel=0.03)
    times = contour.times_s[contour.voiced]
    truth = 110.0 * 4.0 ** (np.clip(times - 0.25, 0.0, 2.5) / 2.5)
    assert np.percentile(np.abs(f0 / truth - 1.0), 95) < 0.02


@pytest.mark.parametrize(
    "samples",
    [np.zeros(RATE * 2), 0.3 * np.random.default_rng(0).standard_normal(RATE * 2)],
    ids=["silence", "white-noise"],
)
def test_unpitched_input_is_unvoiced(detector: PitchDetector, samples: npt.NDArray[np.float64]) -> None:
    contour = detector.detect(mono(samples, RATE))
    assert contour.voiced.mean() <= 0.02
    assert np.all(contour.f0_hz[~contour.voiced] == 0.0)


def test_search_band_excludes_out_of_band_pitch(detector: PitchDetector) -> None:
    contour = detector.detect(tone(220.0, harmonics=3), fmin_hz=300.0, fmax_hz=1000.0)
    assert contour.voiced.mean() < 0.05


# --- pitch shift -----------------------------------------------------------------------------------


@pytest.mark.parametrize("preserve_formants", [True, False])
@pytest.mark.parametrize("semitones", [12.0, -5.0])
def test_shifted_sine_reads_the_new_pitch(
    detector: PitchDetector, semitones: float, preserve_formants: bool
) -> None:
    source = tone(220.0)
    shifted = shift_pitch(source, semitones, preserve_formants=preserve_formants)
    assert shifted.samples.shape == source.samples.shape
    contour = detector.detect(shifted)
    assert contour.voiced.mean() > 0.5
    assert voiced_median_hz(contour) == pytest.approx(220.0 * 2.0 ** (semitones / 12.0), rel=0.02)


@pytest.mark.parametrize("semitones", [-24.0, -0.5, 3.0, 24.0])
@pytest.mark.parametrize("num_samples", [1, 777, 20001])
def test_shift_keeps_length_channels_and_rate(semitones: float, num_samples: int) -> None:
    rng = np.random.default_rng(1)
    audio = Audio((0.1 * rng.standard_normal((2, num_samples))).astype(np.float32), 44100)
    shifted = shift_pitch(audio, semitones)
    assert shifted.samples.shape == (2, num_samples)
    assert shifted.sample_rate == 44100 and shifted.samples.dtype == np.float32
    assert np.isfinite(shifted.samples).all()


def test_zero_shift_is_identity() -> None:
    audio = tone(220.0, seconds=0.2)
    np.testing.assert_array_equal(shift_pitch(audio, 0.0).samples, audio.samples)


@pytest.mark.parametrize("semitones", [5.0, -5.0])
def test_formants_stay_put_only_when_preserved(detector: PitchDetector, semitones: float) -> None:
    source = vowel()
    assert envelope_peak_hz(source) == pytest.approx(1000.0, rel=0.05)
    kept = shift_pitch(source, semitones, preserve_formants=True)
    moved = shift_pitch(source, semitones, preserve_formants=False)
    ratio = 2.0 ** (semitones / 12.0)
    assert envelope_peak_hz(kept) == pytest.approx(1000.0, rel=0.08)
    assert envelope_peak_hz(moved) == pytest.approx(1000.0 * ratio, rel=0.08)
    # The envelope correction must not disturb the new pitch.
    assert voiced_median_hz(detector.detect(kept)) == pytest.approx(150.0 * ratio, rel=0.02)


# --- serialisation ---------------------------------------------------------------------------------


def test_dict_round_trips_through_json(detector: PitchDetector) -> None:
    contour = detector.detect(tone(330.0, seconds=0.5))
    restored = PitchContour.from_dict(json.loads(json.dumps(contour.to_dict(), allow_nan=False)))
    for name in ("times_s", "f0_hz", "confidence", "voiced"):
        np.testing.assert_array_equal(getattr(restored, name), getattr(contour, name))
    assert (restored.hop_s, restored.model) == (contour.hop_s, contour.model)


def test_csv_has_one_row_per_frame(detector: PitchDetector) -> None:
    contour = detector.detect(tone(330.0, seconds=0.5))
    rows = list(csv.DictReader(io.StringIO(contour.to_csv())))
    assert list(rows[0]) == ["time_s", "f0_hz", "confidence", "voiced"]
    assert len(rows) == len(contour.times_s)
    np.testing.assert_allclose([float(r["time_s"]) for r in rows], contour.times_s, atol=1e-6)
    np.testing.assert_allclose([float(r["f0_hz"]) for r in rows], contour.f0_hz, atol=1e-4)
    np.testing.assert_allclose([float(r["confidence"]) for r in rows], contour.confidence, atol=1e-6)
    assert [r["voiced"] == "true" for r in rows] == contour.voiced.tolist()


# --- bad inputs ------------------------------------------------------------------------------------


@pytest.mark.parametrize("semitones", [24.5, -25.0, math.nan, math.inf])
def test_shift_rejects_out_of_range_semitones(semitones: float) -> None:
    with pytest.raises(ValueError, match="semitones"):
        shift_pitch(tone(220.0, seconds=0.1), semitones)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"fmin_hz": 20.0}, "fmin_hz"),
        ({"fmax_hz": 4000.0}, "fmax_hz"),
        ({"fmin_hz": 500.0, "fmax_hz": 400.0}, "fmin_hz"),
        ({"fmin_hz": 400.0, "fmax_hz": 401.0}, "fmax"),
        ({"confidence_threshold": 1.5}, "confidence_threshold"),
    ],
)
def test_detect_rejects_bad_settings(detector: PitchDetector, kwargs: dict[str, float], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        detector.detect(tone(220.0, seconds=0.1), **kwargs)


@pytest.mark.parametrize(
    "samples",
    [np.zeros((1, 0), np.float32), np.full((1, 100), np.nan, np.float32)],
    ids=["empty", "nan"],
)
def test_bad_audio_is_rejected(detector: PitchDetector, samples: npt.NDArray[np.float32]) -> None:
    with pytest.raises(ValueError):
        detector.detect(Audio(samples, RATE))
    with pytest.raises(ValueError):
        shift_pitch(Audio(samples, RATE), 3.0)


def test_contour_rejects_mismatched_arrays() -> None:
    with pytest.raises(ValueError, match="one length"):
        PitchContour(np.zeros(3), np.zeros(2), np.zeros(3), np.zeros(3, bool), 0.016)
