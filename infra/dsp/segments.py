"""Cut long audio into overlapping segments and join the processed pieces with linear crossfades.

Used to fan a long input out over several model replicas (ARCHITECTURE.md). Model-free, numpy only.

Defaults: segments of `DEFAULT_SEGMENT_S` = 30 s, consecutive segments overlapping by
`DEFAULT_OVERLAP_S` = 1 s; the last segment takes the remainder (shorter, but always longer than the
overlap); audio that fits in one segment is one segment. The overlap may be at most half a segment, so a
sample lies in at most two segments.

The crossfade is linear (equal gain): across an overlap of L samples the incoming piece's weight rises
(k + 1) / (L + 1), k = 0..L-1, and the outgoing piece's weight is exactly 1 minus that, so the weights
sum to 1 at every sample and an identity processor gives back its input up to float rounding. Equal
gain, not equal power, because the two pieces of an overlap are processed from the same source samples
and are therefore strongly correlated: equal-power weights (cos/sin, summing to 1 in power) would lift
correlated material by up to 3 dB in the middle of every seam.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from infra.audio import Audio

DEFAULT_SEGMENT_S = 30.0
DEFAULT_OVERLAP_S = 1.0


@dataclass(frozen=True)
class Segment:
    """Samples `[start, end)` of the source, the `index`-th segment of a plan."""

    index: int
    start: int
    end: int

    @property
    def num_samples(self) -> int:
        return self.end - self.start


def plan_segments(
    num_samples: int,
    sample_rate: int,
    *,
    segment_s: float = DEFAULT_SEGMENT_S,
    overlap_s: float = DEFAULT_OVERLAP_S,
) -> list[Segment]:
    """Segments covering `num_samples` samples at `sample_rate` Hz: `segment_s` seconds long (default 30),
    consecutive ones overlapping by `overlap_s` seconds (default 1; 0 means hard cuts), both rounded to
    whole samples. Raises `ValueError` for a non-positive length or rate, a non-positive segment, a negative
    overlap, or an overlap longer than half a segment."""
    if num_samples < 1 or sample_rate < 1:
        raise ValueError(f"num_samples and sample_rate must be positive, got {num_samples}, {sample_rate}")
    if not (math.isfinite(segment_s) and math.isfinite(overlap_s)):
        raise ValueError(f"segment_s and overlap_s must be finite, got {segment_s!r}, {overlap_s!r}")
    segment_len = round(segment_s * sample_rate)
    overlap_len = round(overlap_s * sample_rate)
    if segment_len < 1 or overlap_len < 0:
        raise ValueError(
            f"need segment_s > 0 and overlap_s >= 0 (in whole samples), got {segment_s}, {overlap_s}"
        )
    if 2 * overlap_len > segment_len:
        raise ValueError(f"overlap_s={overlap_s} must be at most half of segment_s={segment_s}")
    if num_samples <= segment_len:
        return [Segment(0, 0, num_samples)]
    hop = segment_len - overlap_len
    count = 1 + math.ceil((num_samples - segment_len) / hop)
    return [Segment(i, i * hop, min(i * hop + segment_len, num_samples)) for i in range(count)]


def cut(audio: Audio, segment: Segment) -> Audio:
    """The samples of `segment`, `[C, segment.num_samples]`, as a contiguous copy (to send to a replica)."""
    if not 0 <= segment.start < segment.end <= audio.num_samples:
        raise ValueError(f"{segment} does not lie within {audio.num_samples} samples")
    return Audio(np.ascontiguousarray(audio.samples[:, segment.start : segment.end]), audio.sample_rate)


def crossfade_weights(segments: Sequence[Segment]) -> list[npt.NDArray[np.float64]]:
    """One weight per sample of each segment `[segment.num_samples]`: 1, except linear ramps over the
    overlaps with its neighbours, where the two segments' weights sum to exactly 1 (up to float rounding)."""
    _check_plan(segments)
    weights = [np.ones(segment.num_samples) for segment in segments]
    for i in range(1, len(segments)):
        overlap = segments[i - 1].end - segments[i].start
        fade_in = np.arange(1, overlap + 1) / (overlap + 1)
        weights[i][:overlap] = fade_in
        weights[i - 1][weights[i - 1].size - overlap :] = 1.0 - fade_in
    return weights


def join(pieces: Sequence[Audio], segments: Sequence[Segment], num_samples: int) -> Audio:
    """Overlap-add the processed `pieces` (one per segment, each `[C, segment.num_samples]`, one sample
    rate) into `[C, num_samples]` with the linear crossfades of `crossfade_weights`. Raises `ValueError`
    when the pieces do not match the segments or the segments do not tile `[0, num_samples)`."""
    if len(pieces) != len(segments) or not pieces:
        raise ValueError(
            f"got {len(pieces)} pieces for {len(segments)} segments (need one each, at least one)"
        )
    if segments[-1].end != num_samples:
        raise ValueError(f"the last segment ends at {segments[-1].end}, not at num_samples={num_samples}")
    first = pieces[0]
    for piece, segment in zip(pieces, segments, strict=True):
        if piece.sample_rate != first.sample_rate or piece.channels != first.channels:
            raise ValueError("pieces differ in sample rate or channels")
        if piece.num_samples != segment.num_samples:
            raise ValueError(
                f"piece for {segment} has {piece.num_samples} samples, not {segment.num_samples}"
            )
    out = np.zeros((first.channels, num_samples))  # float64 sum, so rounding happens once
    for piece, segment, weight in zip(pieces, segments, crossfade_weights(segments), strict=True):
        out[:, segment.start : segment.end] += piece.samples * weight
    return Audio(out.astype(np.float32), first.sample_rate)


def _check_plan(segments: Sequence[Segment]) -> None:
    """Segments numbered in order, starting at 0, each overlapping only its neighbours, leaving no gap."""
    if not segments or segments[0].start != 0:
        raise ValueError("segments must start at sample 0")
    for i, segment in enumerate(segments):
        if segment.index != i or segment.num_samples < 1:
            raise ValueError(f"segment {i} is {segment}: indexes must count from 0 and segments be non-empty")
    for before, after in itertools.pairwise(segments):
        overlap = before.end - after.start
        if overlap < 0 or after.start <= before.start or after.end <= before.end:
            raise ValueError(f"{before} and {after} leave a gap or are out of order")
    for before, after in zip(segments, segments[2:], strict=False):
        if after.start < before.end:
            raise ValueError(f"{before} overlaps {after}: a sample may lie in at most two segments")
