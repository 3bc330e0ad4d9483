"""The containers soundfile cannot read or write, through PyAV (FFmpeg's libraries, bundled in its wheels):
decoding MP4/M4A (AAC, ALAC), WebM/Matroska (Opus, Vorbis) and MPEG audio that libsndfile refuses;
encoding Opus (in Ogg) and AAC (ADTS).

`infra/audio.py` stays the one entry point (`decode`, `probe`): it hands a file here only when
libsndfile cannot open it, and the same limits apply. The header (sample rate, channels, the duration
the container declares) is checked before anything is decoded, and the decoded length is checked again
block by block, so a file that lies about its duration stops at the limit instead of filling memory.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any, BinaryIO, Literal, Protocol

import numpy as np

from infra.audio import (
    Audio,
    AudioHeader,
    AudioLimits,
    Block,
    EmptyAudioError,
    NonFiniteAudioError,
    TruncatedAudioError,
    UnsupportedAudioFormatError,
    check_header,
)

# FFmpeg demuxer names (as PyAV reports them) that are decoded here, and the container names we give them.
_CONTAINERS = {"mov,mp4,m4a,3gp,3g2,mj2": "MP4", "matroska,webm": "WEBM", "mp3": "MP3", "aac": "AAC"}
AVFormat = Literal["opus", "aac"]
MEDIA_TYPES: dict[AVFormat, str] = {"opus": "audio/ogg; codecs=opus", "aac": "audio/aac"}
# (container, codec); Opus runs at 48 kHz, AAC at the input's rate.
_ENCODERS: dict[AVFormat, tuple[str, str]] = {"opus": ("ogg", "libopus"), "aac": ("adts", "aac")}


class Sink(Protocol):
    def start(self, header: AudioHeader) -> None: ...

    def add(self, block: Block) -> None: ...


def stream_blocks(source: BinaryIO, limits: AudioLimits, sink: Sink) -> AudioHeader:
    """Decode `source` (a seekable file) with FFmpeg into `sink`, `[C, n]` float32 blocks; the header the
    container declares is checked first, then every block (finite, within the duration and sample
    limits). Raises `UnsupportedAudioFormatError` for anything that is not one audio stream in a known
    container, the other `AudioError`s as `infra.audio.decode`."""
    import av

    source.seek(0)
    try:
        container = av.open(source, mode="r")
    except (av.FFmpegError, ValueError) as e:
        raise UnsupportedAudioFormatError(
            "not a decodable audio file (supported: WAV, FLAC, OGG, MP3, M4A/MP4, WebM)"
        ) from e
    with container:
        name = _CONTAINERS.get(container.format.name)
        if name is None or not container.streams.audio:
            raise UnsupportedAudioFormatError(f"container {container.format.name!r} holds no audio we read")
        stream = container.streams.audio[0]
        header = AudioHeader(
            name, _declared_frames(container, stream), int(stream.rate), int(stream.channels)
        )
        check_header(header, limits)
        sink.start(header)
        decoded = 0
        for block in _blocks(container, stream):
            if not np.isfinite(block).all():
                raise NonFiniteAudioError(f"audio contains NaN or infinite samples (frames from {decoded})")
            decoded += block.shape[1]
            check_header(AudioHeader(name, decoded, header.sample_rate, header.channels), limits)
            sink.add(block)
    if decoded == 0:
        raise EmptyAudioError("audio has no samples")
    return AudioHeader(name, decoded, header.sample_rate, header.channels)


def _declared_frames(container: Any, stream: Any) -> int:
    """The frame count the container declares (an estimate, as an MP3's is); 1 when it declares none."""
    if stream.duration is not None and stream.time_base is not None:
        seconds = float(stream.duration * stream.time_base)
    elif container.duration is not None:
        seconds = container.duration / 1_000_000  # FFmpeg's AV_TIME_BASE
    else:
        seconds = 0.0
    return max(1, round(seconds * stream.rate))


def _blocks(container: Any, stream: Any) -> Iterator[Block]:
    import av

    try:
        for frame in container.decode(stream):
            planes = frame.to_ndarray()  # planar [C, n] or packed [1, n * C], in the codec's sample format
            block = planes.reshape(-1, stream.channels).T if not frame.format.is_planar else planes
            yield _as_float(block)
    except av.FFmpegError as e:
        raise TruncatedAudioError("audio data is corrupt or truncated") from e


def _as_float(block: np.ndarray[Any, Any]) -> Block:
    if np.issubdtype(block.dtype, np.integer):
        scale = float(np.iinfo(block.dtype).max) + 1.0
        return (block.astype(np.float32) / scale).astype(np.float32)
    return np.ascontiguousarray(block, dtype=np.float32)


def encode(audio: Audio, fmt: AVFormat) -> bytes:
    """`audio` as Opus in Ogg (resampled to 48 kHz, Opus's rate) or AAC in ADTS (at the input's rate)."""
    import av

    container_name, codec = _ENCODERS[fmt]
    rate = 48000 if fmt == "opus" else audio.sample_rate
    out = io.BytesIO()
    with av.open(out, mode="w", format=container_name) as container:
        layout = "mono" if audio.channels == 1 else "stereo"
        stream = container.add_stream(codec, rate=rate, layout=layout)
        assert isinstance(stream, av.AudioStream)
        resampler = av.AudioResampler(format=stream.format.name, layout=stream.layout.name, rate=rate)
        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(audio.samples[: 1 if layout == "mono" else 2], dtype=np.float32),
            format="fltp",
            layout=layout,
        )
        frame.sample_rate = audio.sample_rate
        for converted in [*resampler.resample(frame), *resampler.resample(None)]:
            for packet in stream.encode(converted):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return out.getvalue()
