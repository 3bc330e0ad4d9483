"""Audio in memory and on the wire: the `Audio` record, decode/encode, resampling and loudness.

Pure numpy + soundfile + soxr + pyloudnorm, so `models/` may import it (ARCHITECTURE.md, conventions).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt
import pyloudnorm
import soundfile as sf
import soxr

AudioFormat = Literal["wav", "flac", "mp3", "ogg"]
AUDIO_FORMATS: tuple[AudioFormat, ...] = ("wav", "flac", "mp3", "ogg")
MEDIA_TYPES: dict[AudioFormat, str] = {
    "wav": "audio/wav",
    "flac": "audio/flac",
    "mp3": "audio/mpeg",
    "ogg": "audio/ogg",
}
_SOUNDFILE_FORMATS: dict[AudioFormat, tuple[str, str | None]] = {
    "wav": ("WAV", "FLOAT"),
    "flac": ("FLAC", "PCM_24"),
    "mp3": ("MP3", "MPEG_LAYER_III"),
    "ogg": ("OGG", "VORBIS"),
}
_DECODABLE_CONTAINERS = {"WAV", "WAVEX", "FLAC", "OGG", "MP3", "AIFF"}
_SFC_SET_ADD_PEAK_CHUNK = 0x1050  # libsndfile command id (sndfile.h)
# The loudness gate of BS.1770 needs at least one 400 ms block.
_MIN_LOUDNESS_SECONDS = 0.4


class AudioError(ValueError):
    """Invalid audio input. `code` is a stable machine-readable reason (mapped to HTTP 4xx)."""

    code = "invalid_audio"


class EmptyAudioError(AudioError):
    code = "audio_empty"


class NonFiniteAudioError(AudioError):
    code = "audio_not_finite"


class AudioTooLongError(AudioError):
    code = "audio_too_long"


class AudioTooLargeError(AudioError):
    code = "audio_too_large"


class UnsupportedAudioFormatError(AudioError):
    code = "audio_format_unsupported"


@dataclass(frozen=True)
class Audio:
    """Float32 samples `[C, T]` with their sample rate (Hz)."""

    samples: npt.NDArray[np.float32]
    sample_rate: int

    def __post_init__(self) -> None:
        if self.samples.ndim != 2:
            raise ValueError(f"Audio.samples must be [C, T], got shape {self.samples.shape}")
        if self.samples.dtype != np.float32:
            raise ValueError(f"Audio.samples must be float32, got {self.samples.dtype}")
        if self.sample_rate <= 0:
            raise ValueError(f"sample_rate must be positive, got {self.sample_rate}")

    @property
    def channels(self) -> int:
        return int(self.samples.shape[0])

    @property
    def num_samples(self) -> int:
        return int(self.samples.shape[1])

    @property
    def duration_s(self) -> float:
        return self.num_samples / self.sample_rate


def validate(audio: Audio, *, max_duration_s: float | None = None) -> Audio:
    """Raise a typed `AudioError` if `audio` is empty, non-finite or longer than `max_duration_s`."""
    if audio.num_samples == 0 or audio.channels == 0:
        raise EmptyAudioError("audio has no samples")
    if not np.isfinite(audio.samples).all():
        raise NonFiniteAudioError("audio contains NaN or infinite samples")
    if max_duration_s is not None and audio.duration_s > max_duration_s:
        raise AudioTooLongError(
            f"audio lasts {audio.duration_s:.2f} s, more than the limit of {max_duration_s:g} s"
        )
    return audio


def decode(data: bytes, *, max_duration_s: float | None = None, max_bytes: int | None = None) -> Audio:
    """Decode WAV/FLAC/OGG/MP3 bytes into a validated `Audio`; every failure is an `AudioError`."""
    if max_bytes is not None and len(data) > max_bytes:
        raise AudioTooLargeError(f"audio file is {len(data)} bytes, more than the limit of {max_bytes}")
    if not data:
        raise EmptyAudioError("audio file is empty (0 bytes)")
    try:
        with sf.SoundFile(io.BytesIO(data)) as f:
            if f.format not in _DECODABLE_CONTAINERS:
                raise UnsupportedAudioFormatError(
                    f"container {f.format!r} is not supported; use one of WAV, FLAC, OGG, MP3"
                )
            if max_duration_s is not None and f.frames > max_duration_s * f.samplerate:
                raise AudioTooLongError(
                    f"audio lasts {f.frames / f.samplerate:.2f} s, "
                    f"more than the limit of {max_duration_s:g} s"
                )
            frames = f.read(dtype="float32", always_2d=True)
            sample_rate = int(f.samplerate)
    except sf.LibsndfileError as e:
        raise UnsupportedAudioFormatError(
            f"not a decodable audio file (supported: WAV, FLAC, OGG/Vorbis, MP3): {e}"
        ) from e
    audio = Audio(np.ascontiguousarray(frames.T), sample_rate)
    return validate(audio, max_duration_s=max_duration_s)


def encode(audio: Audio, fmt: AudioFormat = "wav") -> bytes:
    """Encode `audio` as `fmt`. WAV is 32-bit float (lossless); FLAC is 24-bit."""
    if fmt not in _SOUNDFILE_FORMATS:
        raise UnsupportedAudioFormatError(f"unknown output format {fmt!r}; choose one of {AUDIO_FORMATS}")
    container, subtype = _SOUNDFILE_FORMATS[fmt]
    buffer = io.BytesIO()
    # Lossy and integer encoders would wrap or distort out-of-range samples: clamp to full scale.
    samples = audio.samples if fmt == "wav" else np.clip(audio.samples, -1.0, 1.0)
    with sf.SoundFile(buffer, "w", audio.sample_rate, audio.channels, subtype, format=container) as f:
        # libsndfile stamps float WAVs with a PEAK chunk holding the wall-clock time; without it the
        # same audio always encodes to the same bytes (stage checkpoints compare SHA-256 digests).
        sf._snd.sf_command(f._file, _SFC_SET_ADD_PEAK_CHUNK, sf._ffi.NULL, 0)
        f.write(samples.T)
    return buffer.getvalue()


def resample(audio: Audio, sample_rate: int) -> Audio:
    """Resample with soxr (high quality) to `sample_rate` Hz."""
    if sample_rate == audio.sample_rate:
        return audio
    out = soxr.resample(audio.samples.T, audio.sample_rate, sample_rate, quality="HQ")
    return Audio(np.ascontiguousarray(out.T, dtype=np.float32), sample_rate)


def to_mono(audio: Audio) -> Audio:
    """Average the channels into one `[1, T]`."""
    return Audio(audio.samples.mean(axis=0, keepdims=True, dtype=np.float32), audio.sample_rate)


def loudness_lufs(audio: Audio) -> float:
    """Integrated loudness (ITU-R BS.1770-4) in LUFS; `-inf` for silence or audio under 0.4 s."""
    if audio.duration_s < _MIN_LOUDNESS_SECONDS:
        return float("-inf")
    meter = pyloudnorm.Meter(audio.sample_rate)
    return float(meter.integrated_loudness(audio.samples.T.astype(np.float64)))


def peak_dbfs(audio: Audio) -> float:
    """Sample peak in dBFS (`-inf` for silence)."""
    peak = float(np.max(np.abs(audio.samples))) if audio.num_samples else 0.0
    return 20.0 * float(np.log10(peak)) if peak > 0 else float("-inf")


def normalize_loudness(audio: Audio, target_lufs: float = -14.0, peak_limit_dbfs: float = -1.0) -> Audio:
    """Gain `audio` to `target_lufs`, but never past `peak_limit_dbfs` (the gain is lowered instead).

    Silence and clips too short to measure are returned unchanged.
    """
    current = loudness_lufs(audio)
    if not np.isfinite(current):
        return audio
    gain_db = min(target_lufs - current, peak_limit_dbfs - peak_dbfs(audio))
    gain = np.float32(10.0 ** (gain_db / 20.0))
    return Audio(audio.samples * gain, audio.sample_rate)
