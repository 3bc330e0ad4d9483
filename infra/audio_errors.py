"""Audio's light records: the typed errors every decode raises, the limits a decode checks, the header a
validated file has. No numpy or codec here: an HTTP edge can name them without loading a decoder.
`infra/audio.py` re-exports every name, which is where callers import them from."""

from __future__ import annotations

from dataclasses import dataclass

# Limits every decode checks from the header, before any sample is decoded (defaults: `AudioLimits`).
MAX_SAMPLE_RATE = 192_000
MAX_CHANNELS = 8


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


class AudioSampleRateError(AudioError):
    code = "audio_sample_rate_unsupported"


class AudioChannelsError(AudioError):
    code = "audio_too_many_channels"


class TruncatedAudioError(AudioError):
    """The container's header does not agree with the file (truncated, or sizes that were forged)."""

    code = "invalid_audio"


@dataclass(frozen=True)
class AudioLimits:
    """What a decode accepts, checked from the header before decoding. `max_samples` counts decoded
    samples (frames x channels; 4 bytes each once decoded), so it bounds the memory a decode takes."""

    max_duration_s: float | None = None
    max_bytes: int | None = None
    max_sample_rate: int = MAX_SAMPLE_RATE
    max_channels: int = MAX_CHANNELS
    max_samples: int | None = None


@dataclass(frozen=True)
class AudioHeader:
    """What a validated file holds: `frames` per channel at `sample_rate` Hz, in `container`."""

    container: str
    frames: int
    sample_rate: int
    channels: int

    @property
    def duration_s(self) -> float:
        return self.frames / self.sample_rate
