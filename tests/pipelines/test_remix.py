"""The voice-replacement remix on synthetic signals (pure numpy)."""

from __future__ import annotations

import numpy as np
import pytest

from infra.audio import Audio
from infra.dsp.remix import CROSSFADE_S, Placement, match_layout, remix, seam_weights

RATE = 1000
SEAM = round(CROSSFADE_S * RATE)


def noise(samples: int, channels: int = 1, seed: int = 0) -> Audio:
    x = np.random.default_rng(seed).uniform(-0.5, 0.5, (channels, samples))
    return Audio(x.astype(np.float32), RATE)


def test_outside_the_regions_the_original_is_kept_sample_exact() -> None:
    original, line = noise(3000, 2), noise(400, 1, seed=1)
    out, cut = remix(original, [Placement(1000, 1500, line)])
    assert cut == [0.0]
    np.testing.assert_array_equal(out.samples[:, :1000], original.samples[:, :1000])
    np.testing.assert_array_equal(out.samples[:, 1500:], original.samples[:, 1500:])
    # Inside, away from the seams: the new line, then silence where it ended.
    np.testing.assert_allclose(
        out.samples[:, 1000 + SEAM : 1400], np.repeat(line.samples, 2, 0)[:, SEAM:], atol=1e-7
    )
    np.testing.assert_array_equal(out.samples[:, 1400 : 1500 - SEAM], 0.0)


def test_seams_crossfade_from_the_original_into_the_new_line() -> None:
    original = Audio(np.ones((1, 100), np.float32), RATE)
    line = Audio(np.full((1, 60), 3.0, np.float32), RATE)
    out, _ = remix(original, [Placement(20, 80, line)])
    ramp = seam_weights(60, SEAM)
    np.testing.assert_allclose(out.samples[0, 20:80], 1.0 - ramp + 3.0 * ramp, rtol=1e-6)
    assert 1.0 < out.samples[0, 20] < out.samples[0, 20 + SEAM] == pytest.approx(3.0)


def test_with_a_bed_the_region_holds_accompaniment_plus_line() -> None:
    original, bed, line = noise(2000), noise(2000, seed=2), noise(300, seed=3)
    out, _ = remix(original, [Placement(500, 800, line)], bed=bed)
    expected = bed.samples[:, 500 + SEAM : 800 - SEAM] + line.samples[:, SEAM : 300 - SEAM]
    np.testing.assert_allclose(out.samples[:, 500 + SEAM : 800 - SEAM], expected, atol=1e-6)
    np.testing.assert_array_equal(out.samples[:, :500], original.samples[:, :500])


def test_a_line_longer_than_its_region_keeps_its_tail() -> None:
    original, line = noise(1000), noise(300, seed=1)
    out, cut = remix(original, [Placement(100, 300, line)])
    tail = original.samples[:, 300:400] + line.samples[:, 200:300]
    np.testing.assert_allclose(out.samples[:, 300:400], tail, atol=1e-6)
    np.testing.assert_array_equal(out.samples[:, 400:], original.samples[:, 400:])
    _, cut = remix(original, [Placement(800, 900, line)])
    assert cut == [pytest.approx(0.1)]  # 200 tail samples, 100 fit before the end


def test_overlapping_or_outside_regions_are_refused() -> None:
    original, line = noise(1000), noise(100)
    with pytest.raises(ValueError, match="overlap"):
        remix(original, [Placement(100, 300, line), Placement(250, 400, line)])
    with pytest.raises(ValueError, match="within"):
        remix(original, [Placement(900, 1100, line)])


def test_match_layout_resamples_mixes_and_pads() -> None:
    stereo = noise(500, 2)
    out = match_layout(stereo, 2 * RATE, 1, 1200)
    assert (out.sample_rate, out.channels, out.num_samples) == (2 * RATE, 1, 1200)
    assert match_layout(noise(500), RATE, 2, 400).samples.shape == (2, 400)
