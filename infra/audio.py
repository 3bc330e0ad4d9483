"""Audio in memory and on the wire: the `Audio` record, decode/encode, resampling and loudness.

Pure numpy + soundfile + soxr + pyloudnorm, so `models/` may import it (ARCHITECTURE.md, conventions).
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass
from typing import BinaryIO, Literal

import numpy as np
import numpy.typing as npt
import pyloudnorm
import soundfile as sf
import soxr

# Re-exported (callers import audio's errors, limits and header from here) or used here.
from infra.audio_errors import MAX_CHANNELS as MAX_CHANNELS
from infra.audio_errors import MAX_SAMPLE_RATE as MAX_SAMPLE_RATE
from infra.audio_errors import (
    AudioChannelsError,
    AudioHeader,
    AudioLimits,
    AudioSampleRateError,
    AudioTooLargeError,
    AudioTooLongError,
    EmptyAudioError,
    NonFiniteAudioError,
    TruncatedAudioError,
    UnsupportedAudioFormatError,
)
from infra.audio_errors import AudioError as AudioError

Block = npt.NDArray[np.float32]  # decoded samples [C, n]
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
# libsndfile's containers, then those decoded by PyAV (`infra/av_codec.py`) when libsndfile cannot.
_DECODABLE_CONTAINERS = {"WAV", "WAVEX", "FLAC", "OGG", "MP3", "AIFF", "MP4", "WEBM", "AAC"}
_SFC_SET_ADD_PEAK_CHUNK = 0x1050  # libsndfile command id (sndfile.h)
# The loudness gate of BS.1770 needs at least one 400 ms block.
_MIN_LOUDNESS_SECONDS = 0.4
# Frames decoded per block: validation runs block by block, so a bad sample stops the decode early and
# no full-size temporary (such as an `isfinite` mask of the whole clip) is ever made.
_BLOCK_FRAMES = 65_536
_WAV_UNKNOWN_SIZE = 0xFFFFFFFF  # what streamed WAVs (sizes not known yet) put in RIFF and data sizes


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


def decode(
    data: bytes | BinaryIO,
    *,
    max_duration_s: float | None = None,
    max_bytes: int | None = None,
    limits: AudioLimits | None = None,
) -> Audio:
    """Decode WAV/FLAC/OGG/MP3 (soundfile) or M4A/MP4/WebM/AAC (PyAV, `infra/av_codec.py`) from bytes or a
    seekable binary file into a validated `Audio`; every failure
    is an `AudioError`. The header is checked against `limits` before anything is decoded, then the file
    is decoded block by block into one `[C, T]` array, each block validated as it arrives."""
    buffer = _SampleBuffer()
    header = _stream_blocks(data, _limits(limits, max_duration_s, max_bytes), buffer)
    return Audio(buffer.samples(header.frames), header.sample_rate)


class _SampleBuffer:
    """Where `decode` puts the blocks: one `[C, frames]` array allocated from the header (which passed
    every limit), plus the overflow of an MP3 whose frame count was an underestimate."""

    def __init__(self) -> None:
        self._array: Block | None = None
        self._extra: list[Block] = []
        self._at = 0

    def start(self, header: AudioHeader) -> None:
        self._array = np.empty((header.channels, header.frames), dtype=np.float32)

    def add(self, block: Block) -> None:
        assert self._array is not None
        room = min(block.shape[1], self._array.shape[1] - self._at)
        self._array[:, self._at : self._at + room] = block[:, :room]
        if room < block.shape[1]:
            self._extra.append(block[:, room:])
        self._at += room

    def samples(self, frames: int) -> Block:
        assert self._array is not None
        if not self._extra and frames == self._array.shape[1]:
            return self._array
        return np.ascontiguousarray(np.concatenate([self._array[:, : self._at], *self._extra], axis=1))


class _Discard:
    """`probe`'s sink: validates and keeps nothing."""

    def start(self, header: AudioHeader) -> None:
        pass

    def add(self, block: Block) -> None:
        pass


def probe(data: bytes | BinaryIO, limits: AudioLimits) -> AudioHeader:
    """Validate a whole file as `decode` does (container, header limits, every sample finite), keeping no
    samples: memory stays at one block whatever the file's size."""
    return _stream_blocks(data, limits, _Discard())


def _limits(limits: AudioLimits | None, max_duration_s: float | None, max_bytes: int | None) -> AudioLimits:
    limits = limits or AudioLimits()
    if max_duration_s is not None or max_bytes is not None:
        limits = AudioLimits(
            max_duration_s=max_duration_s if max_duration_s is not None else limits.max_duration_s,
            max_bytes=max_bytes if max_bytes is not None else limits.max_bytes,
            max_sample_rate=limits.max_sample_rate,
            max_channels=limits.max_channels,
            max_samples=limits.max_samples,
        )
    return limits


def _stream_blocks(
    data: bytes | BinaryIO,
    limits: AudioLimits,
    sink: _SampleBuffer | _Discard,
) -> AudioHeader:
    """Check the file and its header, then hand each decoded, validated block `[C, n]` to `sink`."""
    source = io.BytesIO(data) if isinstance(data, bytes | bytearray) else data
    size = source.seek(0, io.SEEK_END)
    source.seek(0)
    if limits.max_bytes is not None and size > limits.max_bytes:
        raise AudioTooLargeError(f"audio file is {size} bytes, more than the limit of {limits.max_bytes}")
    if size == 0:
        raise EmptyAudioError("audio file is empty (0 bytes)")
    _check_wav_sizes(source, size)
    try:
        with sf.SoundFile(source) as f:
            header = AudioHeader(str(f.format), int(f.frames), int(f.samplerate), int(f.channels))
            check_header(header, limits)
            sink.start(header)
            decoded = _read_blocks(f, header, sink)
    except sf.LibsndfileError:
        from infra import av_codec  # lazily: PyAV loads FFmpeg's libraries

        return av_codec.stream_blocks(source, limits, sink)
    if decoded == 0:
        raise EmptyAudioError("audio has no samples")
    found = AudioHeader(header.container, decoded, header.sample_rate, header.channels)
    if found.frames > header.frames:  # only an MP3's estimate can be exceeded: check the real length
        check_header(found, limits)
    return found


def check_header(header: AudioHeader, limits: AudioLimits) -> None:
    """Every limit that the header alone can decide, before a sample is decoded."""
    if header.container not in _DECODABLE_CONTAINERS:
        raise UnsupportedAudioFormatError(
            f"container {header.container!r} is not supported; use one of WAV, FLAC, OGG, MP3, M4A/MP4, WebM"
        )
    if header.sample_rate > limits.max_sample_rate:
        raise AudioSampleRateError(
            f"sample rate {header.sample_rate} Hz is above the limit of {limits.max_sample_rate} Hz"
        )
    if header.channels > limits.max_channels:
        raise AudioChannelsError(
            f"audio has {header.channels} channels, more than the limit of {limits.max_channels}"
        )
    if limits.max_duration_s is not None and header.frames > limits.max_duration_s * header.sample_rate:
        raise AudioTooLongError(
            f"audio lasts {header.duration_s:.2f} s, more than the limit of {limits.max_duration_s:g} s"
        )
    if limits.max_samples is not None and header.frames * header.channels > limits.max_samples:
        raise AudioTooLargeError(
            f"audio decodes to {header.frames * header.channels} samples ({header.frames} frames x "
            f"{header.channels} channels), more than the limit of {limits.max_samples} samples"
        )


def _check_wav_sizes(source: BinaryIO, size: int) -> None:
    """Refuse a WAV whose RIFF or `data` chunk size claims more bytes than the file holds (libsndfile
    would quietly read what is there). Streamed WAVs, whose two sizes are both 0xFFFFFFFF, are read to
    the end of the file."""
    head = source.read(12)
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        source.seek(0)
        return  # not a RIFF WAV (RIFX, RF64, another container): libsndfile's own checks apply
    riff_size = struct.unpack("<I", head[4:8])[0]
    offset = 12
    while offset + 8 <= size:
        source.seek(offset)
        chunk_id, chunk_size = struct.unpack("<4sI", source.read(8))
        if chunk_id == b"data":
            streamed = riff_size == _WAV_UNKNOWN_SIZE and chunk_size == _WAV_UNKNOWN_SIZE
            if not streamed and offset + 8 + chunk_size > size:
                raise TruncatedAudioError(
                    f"WAV data chunk declares {chunk_size} bytes but the file holds "
                    f"{size - offset - 8} after its header (truncated or inconsistent file)"
                )
            break
        offset += 8 + chunk_size + (chunk_size & 1)
    if riff_size != _WAV_UNKNOWN_SIZE and riff_size + 8 > size:
        raise TruncatedAudioError(
            f"WAV header declares {riff_size + 8} bytes but the file holds {size} (truncated file)"
        )
    source.seek(0)


def _read_blocks(f: sf.SoundFile, header: AudioHeader, sink: _SampleBuffer | _Discard) -> int:
    """Decode `f` block by block, validating each; returns the frames decoded."""
    decoded = 0
    exact = header.container != "MP3"  # MP3 frame counts are estimates; every other container's is exact
    while True:
        try:
            block = f.read(_BLOCK_FRAMES, dtype="float32", always_2d=True)
        except sf.LibsndfileError as e:
            raise TruncatedAudioError(
                f"{header.container} data is corrupt or truncated after {decoded} of the "
                f"{header.frames} frames its header declares"
            ) from e
        if block.shape[0] == 0:
            break
        if not np.isfinite(block).all():
            raise NonFiniteAudioError(f"audio contains NaN or infinite samples (frames from {decoded})")
        decoded += block.shape[0]
        if decoded > header.frames and (exact or decoded > header.frames * 2):
            raise TruncatedAudioError(f"audio holds more frames than its header's {header.frames}")
        sink.add(block.T)
    if exact and decoded != header.frames:
        raise TruncatedAudioError(
            f"{header.container} header declares {header.frames} frames but the file holds {decoded} "
            "(truncated or inconsistent file)"
        )
    return decoded


def encode(audio: Audio, fmt: AudioFormat = "wav", *, bits: Literal[16, 24] | None = None) -> bytes:
    """Encode `audio` as `fmt`. WAV is 32-bit float (lossless); FLAC is 24-bit; `bits` makes WAV or FLAC
    integer PCM of 16 or 24 bits."""
    if fmt not in _SOUNDFILE_FORMATS:
        raise UnsupportedAudioFormatError(f"unknown output format {fmt!r}; choose one of {AUDIO_FORMATS}")
    if bits is not None and fmt not in {"wav", "flac"}:
        raise UnsupportedAudioFormatError(f"bits={bits} applies to wav and flac, not {fmt!r}")
    container, subtype = _SOUNDFILE_FORMATS[fmt]
    subtype = subtype if bits is None else f"PCM_{bits}"
    buffer = io.BytesIO()
    # Lossy and integer encoders would wrap or distort out-of-range samples: clamp to full scale.
    samples = audio.samples if subtype == "FLOAT" else np.clip(audio.samples, -1.0, 1.0)
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
