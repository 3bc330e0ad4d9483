"""Render a loop block by block: the intro, then the loop body again and again, crossfaded at each seam.

Output sample `n` of the loop of `[start, end)`:
- for `n < end` it is the source's sample `n` (the intro plays the clip up to the loop end);
- after that, every pass of the body is `end - start` samples long. Its first `crossfade` samples mix
  the audio that follows `end` in the source (raised-cosine fade out) with the audio that follows
  `start` (fade in), so at the seam the wave goes on from `x[end - 1]` to `x[end]` as in the source
  and glides into `x[start + crossfade]`; the rest of the pass is `x[start + crossfade : end]`.
- The output ends at exactly `total` samples with a raised-cosine fade-out over the last
  `fade_out` samples (the target duration rarely falls on a loop point; a hard cut would click).

Only the blocks in flight and the crossfade (`[C, crossfade]`) are held besides the source clip.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import numpy.typing as npt

from infra.audio import Audio
from infra.dsp.loop_points import LoopPoints

BLOCK_FRAMES = 65536
FADE_OUT_S = 1.0

Block = npt.NDArray[np.float32]


def raised_cosine(n: int) -> npt.NDArray[np.float32]:
    """A fade-in ramp of `n` samples from 0 (exclusive) to 1 (exclusive), with zero slope at both ends."""
    phase = (np.arange(n) + 0.5) / max(n, 1)
    return (0.5 - 0.5 * np.cos(np.pi * phase)).astype(np.float32)


def seam_crossfade(audio: Audio, points: LoopPoints, crossfade: int) -> Block:
    """The first `crossfade` samples of every pass `[C, crossfade]`: after-`end` fading into after-`start`."""
    if points.end + crossfade > audio.num_samples:
        raise ValueError(f"loop end {points.end} leaves fewer than {crossfade} samples for the crossfade")
    fade_in = raised_cosine(crossfade)
    tail = audio.samples[:, points.end : points.end + crossfade]
    head = audio.samples[:, points.start : points.start + crossfade]
    return (tail * (1.0 - fade_in) + head * fade_in).astype(np.float32)


def fade_out_samples(total: int, sample_rate: int) -> int:
    """Length of the closing fade: `FADE_OUT_S`, but at most half of the output."""
    return min(round(FADE_OUT_S * sample_rate), total // 2)


def _tape(audio: Audio, points: LoopPoints, crossfade: int) -> Iterator[Block]:
    """The output as an endless sequence of views (and the one crossfade array)."""
    if not (points.start >= 0 and points.start + crossfade < points.end <= audio.num_samples):
        raise ValueError(f"loop [{points.start}, {points.end}) does not fit a {crossfade}-sample crossfade")
    seam = seam_crossfade(audio, points, crossfade)
    body = audio.samples[:, points.start + crossfade : points.end]
    yield audio.samples[:, : points.end]
    while True:
        yield seam
        yield body


def render_blocks(
    audio: Audio, points: LoopPoints, *, crossfade: int, total: int, block_frames: int = BLOCK_FRAMES
) -> Iterator[Block]:
    """The looped output as float32 blocks `[C, ≤ block_frames]`, `total` samples in all."""
    fade = fade_out_samples(total, audio.sample_rate)
    ramp = raised_cosine(fade)[::-1]
    pieces = _tape(audio, points, crossfade)
    piece, offset, written = next(pieces), 0, 0
    while written < total:
        block = np.empty((audio.channels, min(block_frames, total - written)), dtype=np.float32)
        filled = 0
        while filled < block.shape[1]:
            if offset == piece.shape[1]:
                piece, offset = next(pieces), 0
                continue
            take = min(block.shape[1] - filled, piece.shape[1] - offset)
            block[:, filled : filled + take] = piece[:, offset : offset + take]
            filled, offset = filled + take, offset + take
        _apply_fade_out(block, written, total - fade, ramp)
        written += block.shape[1]
        yield block


def _apply_fade_out(block: Block, first: int, fade_start: int, ramp: npt.NDArray[np.float32]) -> None:
    """Multiply the part of `block` (starting at output sample `first`) that lies in the fade by the ramp."""
    lo = max(fade_start, first)
    hi = min(fade_start + len(ramp), first + block.shape[1])
    if lo < hi:
        block[:, lo - first : hi - first] *= ramp[lo - fade_start : hi - fade_start]
