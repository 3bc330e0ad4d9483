"""Segment planning, cutting and crossfaded joining, checked with processors whose output is known."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import numpy as np
import pytest

from infra.audio import Audio
from infra.dsp.segments import (
    DEFAULT_OVERLAP_S,
    DEFAULT_SEGMENT_S,
    Segment,
    crossfade_weights,
    cut,
    join,
    plan_segments,
)

RATE = 1000  # small rate: seconds map to readable sample counts
Processor = Callable[[Audio, Segment], Audio]


def identity_separator(piece: Audio, segment: Segment) -> Audio:
    """Test double: a "separator" whose single stem is its input."""
    return piece


def constant_gain(gain: float) -> Processor:
    """Test double: multiplies every piece by `gain`."""

    def process(piece: Audio, segment: Segment) -> Audio:
        return Audio(piece.samples * np.float32(gain), piece.sample_rate)

    return process


def constant_per_segment(piece: Audio, segment: Segment) -> Audio:
    """Test double: ignores its input and returns the constant `segment.index + 1` (so seams are steps)."""
    return Audio(np.full_like(piece.samples, segment.index + 1.0), piece.sample_rate)


def run_segmented(audio: Audio, process: Processor, segment_s: float, overlap_s: float) -> tuple[Audio, list]:
    segments = plan_segments(audio.num_samples, audio.sample_rate, segment_s=segment_s, overlap_s=overlap_s)
    pieces = [process(cut(audio, segment), segment) for segment in segments]
    return join(pieces, segments, audio.num_samples), segments


def noise(num_samples: int, channels: int = 2, seed: int = 0) -> Audio:
    samples = np.random.default_rng(seed).uniform(-1, 1, (channels, num_samples)).astype(np.float32)
    return Audio(samples, RATE)


def test_defaults_are_30_s_segments_overlapping_by_1_s() -> None:
    assert (DEFAULT_SEGMENT_S, DEFAULT_OVERLAP_S) == (30.0, 1.0)
    segments = plan_segments(90 * RATE, RATE)
    assert [(s.start, s.end) for s in segments] == [
        (0, 30_000),
        (29_000, 59_000),
        (58_000, 88_000),
        (87_000, 90_000),
    ]


def test_audio_that_fits_is_one_segment() -> None:
    assert plan_segments(10 * RATE, RATE, segment_s=10.0) == [Segment(0, 0, 10 * RATE)]


@pytest.mark.parametrize("num_samples", [1, 4 * RATE - 1, 4 * RATE, 11 * RATE, 3 * 3700 + 300, 23_457])
def test_segments_tile_the_input_with_the_asked_overlap(num_samples: int) -> None:
    segments = plan_segments(num_samples, RATE, segment_s=4.0, overlap_s=0.3)

    assert segments[0].start == 0 and segments[-1].end == num_samples
    assert [s.index for s in segments] == list(range(len(segments)))
    assert all(s.num_samples == 4000 for s in segments[:-1])
    for before, after in itertools.pairwise(segments):
        assert before.end - after.start == 300
    assert segments[-1].num_samples > (300 if len(segments) > 1 else 0)


@pytest.mark.parametrize("num_samples", [1, 2500, 4000, 3 * 3700 + 300, 12_000, 23_457])
def test_identity_separator_reconstructs_the_input(num_samples: int) -> None:
    audio = noise(num_samples, seed=num_samples)

    joined, _ = run_segmented(audio, identity_separator, segment_s=4.0, overlap_s=0.3)

    assert joined.samples.shape == audio.samples.shape and joined.sample_rate == RATE
    np.testing.assert_allclose(joined.samples, audio.samples, rtol=0, atol=1e-6)


def test_hard_cuts_without_overlap_also_reconstruct() -> None:
    audio = noise(10_500)
    joined, _ = run_segmented(audio, identity_separator, segment_s=2.0, overlap_s=0.0)
    np.testing.assert_array_equal(joined.samples, audio.samples)


def test_constant_gain_gives_gain_times_input() -> None:
    audio = noise(17_321, channels=1)
    joined, _ = run_segmented(audio, constant_gain(0.25), segment_s=3.0, overlap_s=0.5)
    np.testing.assert_allclose(joined.samples, 0.25 * audio.samples, rtol=0, atol=1e-6)


def test_seams_ramp_linearly_without_jumps() -> None:
    audio = noise(9_000, channels=1)
    joined, segments = run_segmented(audio, constant_per_segment, segment_s=3.0, overlap_s=0.5)
    out = joined.samples[0].astype(np.float64)
    overlap = 500
    step = 1.0 / (overlap + 1)  # the constants differ by 1 between neighbours
    rounding = 1e-6  # float32 output: a few ulps at values of 1 to 4

    # Continuous: no jump anywhere larger than one ramp step.
    assert np.abs(np.diff(out)).max() <= step + rounding
    for before, after in itertools.pairwise(segments):
        seam = out[after.start - 1 : before.end + 1]  # one sample either side of the overlap
        np.testing.assert_allclose(np.diff(seam), step, rtol=0, atol=rounding)  # a straight ramp ...
        assert (
            seam[0] == before.index + 1 and seam[-1] == after.index + 1
        )  # ... from one constant to the next


def test_crossfade_weights_sum_to_one_everywhere() -> None:
    num_samples = 11_111
    segments = plan_segments(num_samples, RATE, segment_s=2.5, overlap_s=0.7)
    total = np.zeros(num_samples)
    for segment, weight in zip(segments, crossfade_weights(segments), strict=True):
        assert weight.shape == (segment.num_samples,)
        assert ((weight > 0) & (weight <= 1)).all()
        total[segment.start : segment.end] += weight
    np.testing.assert_allclose(total, 1.0, rtol=0, atol=1e-12)


def test_cut_copies_the_segment_samples() -> None:
    audio = noise(5_000)
    piece = cut(audio, Segment(1, 1_200, 3_400))
    assert piece.samples.flags.c_contiguous and piece.sample_rate == RATE
    np.testing.assert_array_equal(piece.samples, audio.samples[:, 1_200:3_400])


@pytest.mark.parametrize(
    ("num_samples", "sample_rate", "segment_s", "overlap_s"),
    [
        (0, RATE, 30.0, 1.0),
        (1000, 0, 30.0, 1.0),
        (1000, RATE, 0.0, 0.0),
        (1000, RATE, -1.0, 0.0),
        (1000, RATE, 2.0, -0.1),
        (1000, RATE, 2.0, 2.0),
        (1000, RATE, 2.0, 1.5),  # more than half a segment: a sample would lie in three segments
        (1000, RATE, float("nan"), 1.0),
        (1000, RATE, 2.0, float("inf")),
    ],
)
def test_bad_plan_arguments_raise(
    num_samples: int, sample_rate: int, segment_s: float, overlap_s: float
) -> None:
    with pytest.raises(ValueError):
        plan_segments(num_samples, sample_rate, segment_s=segment_s, overlap_s=overlap_s)


def test_cut_outside_the_audio_raises() -> None:
    with pytest.raises(ValueError, match="within"):
        cut(noise(100), Segment(0, 50, 150))


def test_join_rejects_pieces_that_do_not_match_the_plan() -> None:
    audio = noise(5_000)
    segments = plan_segments(audio.num_samples, RATE, segment_s=2.0, overlap_s=0.2)
    pieces = [cut(audio, segment) for segment in segments]

    with pytest.raises(ValueError, match="pieces"):
        join(pieces[:-1], segments, audio.num_samples)
    with pytest.raises(ValueError, match="num_samples"):
        join(pieces, segments, audio.num_samples + 1)
    with pytest.raises(ValueError, match="samples"):
        join([*pieces[:-1], cut(audio, Segment(0, 0, 10))], segments, audio.num_samples)
    with pytest.raises(ValueError, match="sample rate"):
        join([*pieces[:-1], Audio(pieces[-1].samples, 2 * RATE)], segments, audio.num_samples)
    gap = [segments[0], Segment(1, segments[0].end + 1, segments[1].end), *segments[2:]]
    with pytest.raises(ValueError, match="gap"):
        join([cut(audio, segment) for segment in gap], gap, audio.num_samples)
