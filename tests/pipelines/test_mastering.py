"""infra/dsp/mastering.py: loudness target, true-peak ceiling, inter-sample peaks, seamless loops."""

from __future__ import annotations

import numpy as np
import pytest

from infra.audio import Audio, loudness_lufs
from infra.dsp.mastering import make_loopable, master, true_peak_dbtp


def sine(
    frequency: float, amplitude: float, sample_rate: int = 48000, seconds: float = 3.0, phase: float = 0.0
) -> Audio:
    t = np.arange(int(sample_rate * seconds)) / sample_rate
    wave = amplitude * np.sin(2 * np.pi * frequency * t + phase)
    return Audio(wave[None].astype(np.float32), sample_rate)


def clicks(sample_rate: int = 48000, seconds: float = 3.0) -> Audio:
    """Sparse full-scale clicks over a quiet tone: low loudness, high peaks."""
    audio = sine(1000.0, 0.01, sample_rate, seconds).samples.copy()
    audio[0, :: sample_rate // 4] = 0.9
    return Audio(audio, sample_rate)


@pytest.mark.parametrize("target", [-14.0, -23.0])
def test_loudness_hits_target(target: float) -> None:
    out, report = master(sine(997.0, 0.05), target_lufs=target)
    assert loudness_lufs(out) == pytest.approx(target, abs=0.5)
    assert report.loudness_after_lufs == pytest.approx(target, abs=0.5)
    assert report.loudness_before_lufs == pytest.approx(loudness_lufs(sine(997.0, 0.05)), abs=1e-6)
    assert not report.limited_by_true_peak and report.true_peak_after_dbtp <= -1.0


def test_true_peak_ceiling_caps_the_gain() -> None:
    out, report = master(clicks(), target_lufs=-14.0, true_peak_db=-1.0)
    assert report.limited_by_true_peak
    assert true_peak_dbtp(out) <= -1.0
    assert report.true_peak_after_dbtp <= -1.0
    assert report.loudness_after_lufs < -14.0  # the ceiling won over the target, and it says so
    assert report.as_dict()["limited_by_true_peak"] is True


def test_true_peak_sees_inter_sample_peaks() -> None:
    # A quarter-sample-rate sine at 45° phase: every sample sits at ±0.707, the waveform peaks at 1.0.
    audio = sine(12000.0, 1.0, phase=np.pi / 4)
    assert float(np.max(np.abs(audio.samples))) == pytest.approx(np.sqrt(0.5), abs=1e-3)
    assert true_peak_dbtp(audio) == pytest.approx(0.0, abs=0.2)


def test_no_target_keeps_the_level_under_the_ceiling() -> None:
    quiet = sine(440.0, 0.1)
    out, report = master(quiet, target_lufs=None)
    assert np.array_equal(out.samples, quiet.samples) and report.gain_db == 0.0
    hot, hot_report = master(sine(440.0, 1.2), target_lufs=None)
    assert hot_report.limited_by_true_peak and true_peak_dbtp(hot) <= -1.0


def test_silence_is_left_alone() -> None:
    silence = Audio(np.zeros((1, 48000), dtype=np.float32), 48000)
    out, report = master(silence)
    assert np.array_equal(out.samples, silence.samples)
    assert report.as_dict()["loudness_before_lufs"] is None


def test_loopable_end_flows_into_start() -> None:
    # 440.3 Hz does not fit a whole number of periods in 2 s: looped as is, the seam would jump.
    audio = sine(440.3, 0.5, sample_rate=32000, seconds=2.0)
    naive_jump = abs(float(audio.samples[0, -1] - audio.samples[0, 0]))
    looped = make_loopable(audio, 0.25)
    assert looped.num_samples == audio.num_samples - 8000
    steps = np.abs(np.diff(looped.samples[0]))
    seam = abs(float(looped.samples[0, -1] - looped.samples[0, 0]))
    assert seam <= 1.5 * float(np.percentile(steps, 99))
    assert naive_jump > 5 * float(np.median(steps))


def test_loopable_in_master_keeps_the_ceiling() -> None:
    out, report = master(sine(440.3, 0.5, seconds=2.0), loop_crossfade_s=0.5)
    assert out.num_samples == 96000 - 24000 and report.loop_crossfade_s == 0.5
    assert true_peak_dbtp(out) <= -1.0


def test_crossfade_longer_than_half_the_clip_is_invalid() -> None:
    with pytest.raises(ValueError, match="at least twice"):
        make_loopable(sine(440.0, 0.5, seconds=1.0), 0.6)
