"""Encode audio block by block into a stream of bytes, in constant memory, for outputs too long to hold.

`encode_stream(blocks, …)` yields encoded bytes as the blocks arrive. The total frame count is known in
advance, so every header is final before its first byte leaves:

- WAV (32-bit float, as `infra.audio.encode`) is written here: a RIFF header, or RF64 (EBU Tech 3306)
  when the data would pass RIFF's 4 GiB limit, then interleaved little-endian samples.
- FLAC (24-bit) and Ogg/Vorbis go through libsndfile, writing into `_StreamSink`. libsndfile seeks
  back at close to rewrite the header; the sink holds the header until it is complete, fills in what
  is known up front (FLAC STREAMINFO total samples) and drops the late rewrites of fields that FLAC
  allows to stay "unknown" (min/max frame size, MD5). Any other rewrite of bytes already sent fails.
- MP3 is refused: libsndfile writes its Xing/LAME frame (length and encoder delay, needed for an
  exact sample count) only at close, into bytes that have already left.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Callable, Iterable, Iterator

import numpy as np
import numpy.typing as npt
import soundfile as sf

from infra.audio import AudioFormat, UnsupportedAudioFormatError

STREAMABLE_FORMATS: tuple[AudioFormat, ...] = ("wav", "flac", "ogg")
_RIFF_LIMIT = 0xFFFFFFFF
_FLAC_STREAMINFO_END = 42  # "fLaC" + block header (4) + STREAMINFO (34)
_FLAC_UNKNOWN_OK = ((12, 18), (26, 42))  # min/max frame size, MD5: zero means "unknown"
_FLAC_TOTAL_SAMPLES = (21, 26)


class NotStreamableFormatError(UnsupportedAudioFormatError):
    code = "format_not_streamable"


class StreamEncodeError(RuntimeError):
    """The encoder tried to change bytes that have already been sent, or got the wrong frame count."""


def check_streamable(fmt: str) -> AudioFormat:
    """`fmt` if it can be encoded incrementally; else `NotStreamableFormatError` naming the choices."""
    if fmt not in STREAMABLE_FORMATS:
        why = " (its length header is only written at the end)" if fmt == "mp3" else ""
        raise NotStreamableFormatError(
            f"format {fmt!r} cannot be streamed{why}; choose one of {list(STREAMABLE_FORMATS)}"
        )
    return fmt


def encode_stream(
    blocks: Iterable[npt.NDArray[np.float32]],
    *,
    sample_rate: int,
    channels: int,
    total_frames: int,
    fmt: AudioFormat,
) -> Iterator[bytes]:
    """Encode `blocks` (float32 `[C, n]`, `total_frames` frames in all) as `fmt`, yielding bytes."""
    check_streamable(fmt)
    counted = _counted(blocks, channels, total_frames)
    if fmt == "wav":
        yield wav_header(total_frames, channels, sample_rate)
        for block in counted:
            yield np.ascontiguousarray(block.T, dtype="<f4").tobytes()
        return
    yield from _libsndfile_stream(counted, sample_rate, channels, total_frames, fmt)


def wav_header(frames: int, channels: int, sample_rate: int, *, rf64: bool | None = None) -> bytes:
    """The header of a 32-bit float WAV holding `frames` frames; RF64 when RIFF cannot hold it."""
    block_align = 4 * channels
    data_bytes = frames * block_align
    fmt_chunk = struct.pack(
        "<HHIIHHH", 3, channels, sample_rate, sample_rate * block_align, block_align, 32, 0
    )
    riff_bytes = 4 + (8 + len(fmt_chunk)) + (8 + 4) + (8 + data_bytes)
    if rf64 is None:
        rf64 = riff_bytes + 28 + 8 > _RIFF_LIMIT
    if not rf64:
        return b"".join(
            [
                b"RIFF" + struct.pack("<I", riff_bytes) + b"WAVE",
                b"fmt " + struct.pack("<I", len(fmt_chunk)) + fmt_chunk,
                b"fact" + struct.pack("<II", 4, frames),
                b"data" + struct.pack("<I", data_bytes),
            ]
        )
    ds64 = struct.pack("<QQQI", riff_bytes + 8 + 28, data_bytes, frames, 0)
    return b"".join(
        [
            b"RF64" + struct.pack("<I", _RIFF_LIMIT) + b"WAVE",
            b"ds64" + struct.pack("<I", len(ds64)) + ds64,
            b"fmt " + struct.pack("<I", len(fmt_chunk)) + fmt_chunk,
            b"fact" + struct.pack("<II", 4, min(frames, _RIFF_LIMIT)),
            b"data" + struct.pack("<I", _RIFF_LIMIT),
        ]
    )


def _counted(
    blocks: Iterable[npt.NDArray[np.float32]], channels: int, total_frames: int
) -> Iterator[npt.NDArray[np.float32]]:
    """Pass `blocks` through, checking their shape and that they add up to exactly `total_frames`."""
    seen = 0
    for block in blocks:
        if block.ndim != 2 or block.shape[0] != channels:
            raise StreamEncodeError(f"block of shape {block.shape}, expected [{channels}, n]")
        seen += block.shape[1]
        if seen > total_frames:
            raise StreamEncodeError(f"blocks exceed the announced {total_frames} frames")
        yield block
    if seen != total_frames:
        raise StreamEncodeError(f"blocks hold {seen} frames, {total_frames} were announced")


def _libsndfile_stream(
    blocks: Iterable[npt.NDArray[np.float32]], rate: int, channels: int, frames: int, fmt: AudioFormat
) -> Iterator[bytes]:
    container, subtype = {"flac": ("FLAC", "PCM_24"), "ogg": ("OGG", "VORBIS")}[fmt]
    sink = _flac_sink(frames) if fmt == "flac" else _StreamSink()
    out = sf.SoundFile(sink, "w", rate, channels, subtype, format=container)
    try:
        for block in blocks:
            # Integer and lossy encoders would wrap or distort out-of-range samples (as in `encode`).
            out.write(np.clip(block, -1.0, 1.0).T)
            yield sink.drain()
    except BaseException:
        sink.abandon()  # the stream is failing: let the encoder close without complaint
        out.close()
        raise
    out.close()
    sink.finish()
    yield sink.drain()


HeadFix = Callable[[bytearray], None]
LatePatch = Callable[[int, bytes, bytes], None]


def _no_late_patch(pos: int, new: bytes, sent: bytes) -> None:
    raise StreamEncodeError(f"encoder rewrote {len(new)} bytes at offset {pos}, already sent")


class _StreamSink(io.RawIOBase):
    """A write-only, seekable file for libsndfile that hands its bytes on as soon as they are final.

    The first `head_bytes` are held until complete and passed through `fix_head`; a later write into
    bytes already handed on goes to `late_patch` (which may accept it unchanged, ignore it, or raise).
    """

    def __init__(self, head_bytes: int = 0, fix_head: HeadFix | None = None, late: LatePatch | None = None):
        super().__init__()
        self._head_bytes = head_bytes
        self._fix_head = fix_head
        self._late = late or _no_late_patch
        self._held = bytearray()
        self._sent_head = b""
        self._out = bytearray()
        self._length = 0
        self._pos = 0
        self._head_released = head_bytes == 0
        self._abandoned = False

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readable(self) -> bool:
        return False

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._length}[whence]
        if not 0 <= base + offset <= self._length:
            raise StreamEncodeError(f"seek to {base + offset} outside 0..{self._length}")
        self._pos = base + offset
        return self._pos

    def write(self, data: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        chunk = bytes(data)
        if self._abandoned:
            return len(chunk)
        if self._pos == self._length:
            self._append(chunk)
        elif not self._head_released and self._pos + len(chunk) <= len(self._held):
            self._held[self._pos : self._pos + len(chunk)] = chunk
        elif self._head_released and self._pos + len(chunk) <= len(self._sent_head):
            self._late(self._pos, chunk, self._sent_head[self._pos : self._pos + len(chunk)])
        else:
            raise StreamEncodeError(f"encoder rewrote {len(chunk)} bytes at offset {self._pos}")
        self._pos += len(chunk)
        return len(chunk)

    def _append(self, chunk: bytes) -> None:
        self._length += len(chunk)
        if self._head_released:
            self._out += chunk
            return
        self._held += chunk
        if len(self._held) >= self._head_bytes:
            self._release_head()

    def _release_head(self) -> None:
        if self._fix_head is not None:
            self._fix_head(self._held)
        self._sent_head = bytes(self._held[: self._head_bytes])
        self._out += self._held
        self._held = bytearray()
        self._head_released = True

    def abandon(self) -> None:
        """Accept and drop whatever the encoder still writes (its output is being thrown away)."""
        self._abandoned = True
        self._out.clear()

    def drain(self) -> bytes:
        """The bytes that are final and not yet handed on."""
        out = bytes(self._out)
        self._out.clear()
        return out

    def finish(self) -> None:
        """After the encoder closed: hand on a head that never reached `head_bytes`."""
        if not self._head_released:
            self._release_head()


def _flac_sink(total_frames: int) -> _StreamSink:
    def fix_head(head: bytearray) -> None:
        if head[:4] != b"fLaC" or head[4] & 0x7F != 0:
            raise StreamEncodeError("FLAC stream does not start with STREAMINFO")
        head[21] = (head[21] & 0xF0) | ((total_frames >> 32) & 0x0F)
        head[22:26] = (total_frames & 0xFFFFFFFF).to_bytes(4, "big")

    def late(pos: int, new: bytes, sent: bytes) -> None:
        end = pos + len(new)
        if any(lo <= pos and end <= hi for lo, hi in _FLAC_UNKNOWN_OK):
            return  # left at zero: "unknown" in the FLAC format
        if (pos, end) == _FLAC_TOTAL_SAMPLES and new == sent:
            return
        _no_late_patch(pos, new, sent)

    return _StreamSink(_FLAC_STREAMINFO_END, fix_head, late)
