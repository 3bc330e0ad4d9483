"""Voice replacement's remix (pure, no models): put new lines into the original at their slots.

Outside every replaced region the output is the original input, sample for sample. Inside a region the
output is the *bed* (the accompaniment when the input was separated, silence when it was speech only)
plus the new line, and the original fades out (and back in) over `CROSSFADE_S` at each of the region's
two seams, inside the region. A line longer than its region (an overlap, see infra/dsp/time_fit.py)
keeps its tail: the tail is added on top of the original after the region, never cut, except at the
very end of the input, where it fades out over the crossfade length (`cut_s` in its placement report).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from infra.audio import Audio, resample, to_mono

CROSSFADE_S = 0.01


@dataclass(frozen=True)
class Placement:
    """A new line `audio` `[1 or C, T]` starting at sample `start`, replacing `[start, end)` of the
    original (the region; `end` may lie before `start + T`: the rest is the overlap tail)."""

    start: int
    end: int
    audio: Audio


def match_layout(audio: Audio, sample_rate: int, channels: int, num_samples: int) -> Audio:
    """`audio` resampled to `sample_rate`, with `channels` channels (mixed to mono, then copied, unless
    it already has that many) and exactly `num_samples` samples (cut or zero-padded at the end)."""
    audio = resample(audio, sample_rate)
    samples = audio.samples if audio.channels == channels else np.repeat(to_mono(audio).samples, channels, 0)
    samples = samples[:, :num_samples]
    if samples.shape[1] < num_samples:
        samples = np.pad(samples, ((0, 0), (0, num_samples - samples.shape[1])))
    return Audio(np.ascontiguousarray(samples, dtype=np.float32), sample_rate)


def seam_weights(length: int, crossfade: int) -> npt.NDArray[np.float64]:
    """Weight `[length]` of the new material inside a region: rising linearly over the first
    `crossfade` samples, falling over the last (at most half the region each), 1 in between."""
    fade = min(crossfade, length // 2)
    weights = np.ones(length)
    if fade > 0:
        ramp = np.arange(1, fade + 1) / (fade + 1)
        weights[:fade] = ramp
        weights[length - fade :] = ramp[::-1]
    return weights


def remix(
    original: Audio,
    placements: Sequence[Placement],
    bed: Audio | None = None,
    crossfade_s: float = CROSSFADE_S,
) -> tuple[Audio, list[float]]:
    """The original `[C, T]` with each placement's region replaced (module docstring); `bed` `[C, T]` at
    the original's rate, or None for silence. Returns the remix `[C, T]` and, per placement, the seconds
    of its tail cut off at the end of the input. Raises `ValueError` for regions outside the input,
    overlapping regions, or a bed or line of another layout."""
    rate, channels, total = original.sample_rate, original.channels, original.num_samples
    if bed is not None and (bed.sample_rate, bed.channels, bed.num_samples) != (rate, channels, total):
        raise ValueError("the bed must have the original's sample rate, channels and length")
    _check_regions(placements, total)
    out = original.samples.astype(np.float64)
    crossfade = round(crossfade_s * rate)
    cut: list[float] = []
    for p in placements:
        if p.audio.sample_rate != rate or p.audio.channels not in (1, channels):
            raise ValueError(f"a line must be at {rate} Hz with 1 or {channels} channels")
        line = np.broadcast_to(p.audio.samples, (channels, p.audio.num_samples)).astype(np.float64)
        length = p.end - p.start
        inside = (
            np.zeros((channels, length))
            if bed is None
            else bed.samples[:, p.start : p.end].astype(np.float64)
        )
        inside[:, : min(length, line.shape[1])] += line[:, :length]
        weights = seam_weights(length, crossfade)
        out[:, p.start : p.end] = out[:, p.start : p.end] * (1.0 - weights) + inside * weights
        tail = line[:, length:]
        kept = min(tail.shape[1], total - p.end)
        if kept < tail.shape[1]:
            tail = tail[:, :kept] * seam_weights(2 * kept, crossfade)[kept:]
        out[:, p.end : p.end + kept] += tail[:, :kept]
        cut.append((line.shape[1] - length - kept) / rate if line.shape[1] > length else 0.0)
    return Audio(out.astype(np.float32), rate), cut


def _check_regions(placements: Sequence[Placement], total: int) -> None:
    ordered = sorted(placements, key=lambda p: p.start)
    for p in ordered:
        if not 0 <= p.start < p.end <= total:
            raise ValueError(f"region [{p.start}, {p.end}) does not lie within {total} samples")
    for before, after in itertools.pairwise(ordered):
        if after.start < before.end:
            raise ValueError(
                f"regions [{before.start}, {before.end}) and [{after.start}, {after.end}) overlap"
            )
