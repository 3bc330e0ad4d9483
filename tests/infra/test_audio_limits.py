"""infra/audio.py's edge limits: a decompression bomb is refused from its header before any sample is
decoded; a container whose header disagrees with the file is refused, never read as a shorter clip."""

from __future__ import annotations

import io
import struct
import tracemalloc

import numpy as np
import pytest
import soundfile as sf

from infra import audio as audio_io
from infra.audio import (
    Audio,
    AudioChannelsError,
    AudioLimits,
    AudioSampleRateError,
    AudioTooLargeError,
    NonFiniteAudioError,
    TruncatedAudioError,
    decode,
    encode,
    probe,
)


def silent(seconds: float, rate: int, channels: int, fmt: str = "FLAC", subtype: str = "PCM_16") -> bytes:
    buffer = io.BytesIO()
    frames = int(seconds * rate)
    sf.write(buffer, np.zeros((frames, channels), dtype=np.int16), rate, format=fmt, subtype=subtype)
    return buffer.getvalue()


def tone_wav(seconds: float = 1.0, rate: int = 8000) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    return encode(Audio(np.sin(2 * np.pi * 440 * t)[None].astype(np.float32) * 0.5, rate), "wav")


def test_bomb_is_refused_from_the_header_before_any_allocation() -> None:
    bomb = silent(20.0, 192_000, 8)  # 30.7 M samples: 123 MB once decoded, under 40 KB as FLAC
    assert len(bomb) < 40_000
    tracemalloc.start()
    with pytest.raises(AudioTooLargeError, match="limit of 1000000 samples"):
        decode(bomb, limits=AudioLimits(max_samples=1_000_000))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 2 * 1024 * 1024, f"refusing the bomb allocated {peak} bytes"


def test_sample_rate_and_channels_are_capped_from_the_header() -> None:
    with pytest.raises(AudioSampleRateError, match="384000 Hz is above the limit of 192000 Hz"):
        decode(silent(0.1, 384_000, 1, "WAV"))
    with pytest.raises(AudioChannelsError, match="9 channels, more than the limit of 8"):
        decode(silent(0.1, 8000, 9, "WAV"))
    assert AudioSampleRateError.code == "audio_sample_rate_unsupported"


def test_probe_validates_a_long_file_in_constant_memory() -> None:
    data = silent(60.0, 48_000, 2)  # 23 MB decoded
    tracemalloc.start()
    header = probe(io.BytesIO(data), AudioLimits())
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert (header.frames, header.sample_rate, header.channels) == (60 * 48_000, 48_000, 2)
    assert peak < 4 * 1024 * 1024, f"probing allocated {peak} bytes"


def test_truncated_wav_is_refused_naming_what_is_wrong() -> None:
    data = tone_wav()
    with pytest.raises(TruncatedAudioError, match="data chunk declares 32000 bytes") as error:
        decode(data[: len(data) // 2])
    assert error.value.code == "invalid_audio"


def test_wav_claiming_four_gigabytes_is_refused() -> None:
    data = bytearray(tone_wav(seconds=1.0, rate=8000))
    at = data.find(b"data")
    data[at + 4 : at + 8] = struct.pack("<I", 0xFFFFFF00)
    with pytest.raises(TruncatedAudioError, match="declares 4294967040 bytes"):
        decode(bytes(data))


def test_streamed_wav_with_unknown_sizes_is_read_to_its_end() -> None:
    header = (
        b"RIFF"
        + struct.pack("<I", 0xFFFFFFFF)
        + b"WAVEfmt "
        + struct.pack("<IHHIIHH", 16, 1, 1, 8000, 16000, 2, 16)
        + b"data"
        + struct.pack("<I", 0xFFFFFFFF)
    )
    audio = decode(header + np.full(800, 1000, dtype="<i2").tobytes())
    assert audio.num_samples == 800 and audio.sample_rate == 8000


def test_truncated_flac_is_refused() -> None:
    data = encode(
        Audio(np.random.default_rng(0).uniform(-0.5, 0.5, (1, 48_000)).astype(np.float32), 16_000), "flac"
    )
    with pytest.raises(TruncatedAudioError, match="48000 frames its header declares"):
        decode(data[: len(data) // 2])


def test_non_finite_sample_stops_the_decode() -> None:
    samples = np.zeros((1, 200_000), dtype=np.float32)
    samples[0, 70_000] = np.nan
    with pytest.raises(NonFiniteAudioError, match="frames from 65536"):
        decode(encode(Audio(samples, 8000), "wav"))


def test_decode_from_a_file_equals_decode_from_bytes() -> None:
    data = tone_wav()
    from_bytes, from_file = decode(data), decode(io.BytesIO(data))
    assert np.array_equal(from_bytes.samples, from_file.samples)
    assert from_bytes.samples.flags.c_contiguous and from_bytes.samples.shape == (1, 8000)
    assert audio_io.MAX_CHANNELS == 8
