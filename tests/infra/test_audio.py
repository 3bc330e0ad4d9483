"""infra/audio.py: decode/encode round trips, validation errors, resampling and loudness."""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile as sf

from infra import audio as A
from infra.audio import Audio


def sine(
    freq: float = 440.0, seconds: float = 1.0, rate: int = 16000, channels: int = 1, amp: float = 0.5
) -> Audio:
    t = np.arange(int(seconds * rate)) / rate
    wave = (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    return Audio(np.tile(wave, (channels, 1)), rate)


@pytest.mark.parametrize("fmt", ["wav", "flac", "ogg", "mp3"])
def test_encode_decode_round_trip(fmt: A.AudioFormat) -> None:
    original = sine(channels=2, rate=44100)
    decoded = A.decode(A.encode(original, fmt))
    assert decoded.sample_rate == 44100
    assert decoded.channels == 2
    assert decoded.samples.dtype == np.float32
    # Lossy codecs add encoder delay/padding; lossless ones are exact in length.
    if fmt in ("wav", "flac"):
        assert decoded.num_samples == original.num_samples
        np.testing.assert_allclose(decoded.samples, original.samples, atol=1e-5)
    else:
        assert abs(decoded.duration_s - original.duration_s) < 0.1


def test_audio_record_rejects_wrong_shapes() -> None:
    with pytest.raises(ValueError, match=r"\[C, T\]"):
        Audio(np.zeros(10, dtype=np.float32), 16000)
    with pytest.raises(ValueError, match="float32"):
        Audio(np.zeros((1, 10), dtype=np.float64), 16000)


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"", A.EmptyAudioError),
        (b"definitely not audio" * 10, A.UnsupportedAudioFormatError),
    ],
)
def test_decode_rejects_bad_bytes(data: bytes, error: type[Exception]) -> None:
    with pytest.raises(error):
        A.decode(data)


def test_decode_rejects_nan_zero_length_and_limits() -> None:
    nan = sine()
    nan.samples[0, 100] = np.nan
    with pytest.raises(A.NonFiniteAudioError):
        A.decode(A.encode(nan, "wav"))
    buffer = io.BytesIO()
    sf.write(buffer, np.zeros((0, 1), dtype=np.float32), 16000, format="WAV", subtype="FLOAT")
    with pytest.raises(A.EmptyAudioError):
        A.decode(buffer.getvalue())
    wav = A.encode(sine(seconds=2.0), "wav")
    with pytest.raises(A.AudioTooLongError, match="limit of 1 s"):
        A.decode(wav, max_duration_s=1.0)
    with pytest.raises(A.AudioTooLargeError):
        A.decode(wav, max_bytes=100)
    assert all(issubclass(e, ValueError) for e in (A.EmptyAudioError, A.AudioTooLongError))


def test_encode_rejects_unknown_format() -> None:
    with pytest.raises(A.UnsupportedAudioFormatError):
        A.encode(sine(), "aiff")  # type: ignore[arg-type]


def test_resample_keeps_frequency_and_duration() -> None:
    resampled = A.resample(sine(freq=1000.0, rate=44100), 16000)
    assert resampled.sample_rate == 16000
    assert abs(resampled.num_samples - 16000) <= 1
    spectrum = np.abs(np.fft.rfft(resampled.samples[0]))
    peak_hz = np.argmax(spectrum) * 16000 / resampled.num_samples
    assert abs(peak_hz - 1000.0) < 2.0


def test_normalize_loudness_hits_target_without_clipping() -> None:
    quiet = sine(amp=0.01, seconds=3.0, rate=44100)
    louder = A.normalize_loudness(quiet, target_lufs=-14.0)
    assert abs(A.loudness_lufs(louder) - (-14.0)) < 0.5
    # A target the peak limit cannot allow: the gain stops at the limit instead of clipping.
    limited = A.normalize_loudness(quiet, target_lufs=0.0, peak_limit_dbfs=-1.0)
    assert A.peak_dbfs(limited) == pytest.approx(-1.0, abs=0.01)
    assert A.loudness_lufs(limited) < 0.0


def test_loudness_of_silence_and_short_clips() -> None:
    silence = Audio(np.zeros((1, 16000), dtype=np.float32), 16000)
    assert A.loudness_lufs(silence) == float("-inf")
    assert A.normalize_loudness(silence) is silence
    assert A.loudness_lufs(sine(seconds=0.1)) == float("-inf")


@pytest.mark.parametrize("fmt", ["wav", "flac"])
def test_lossless_encoding_is_byte_identical(fmt: A.AudioFormat) -> None:
    import time

    first = A.encode(sine(), fmt)
    time.sleep(1.1)  # a wall-clock stamp in the header (libsndfile's PEAK chunk) would differ now
    assert A.encode(sine(), fmt) == first
