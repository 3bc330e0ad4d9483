"""Mastering a generated clip: loudness normalisation under a true-peak ceiling, and seamless loops.

Loudness is integrated loudness (ITU-R BS.1770, pyloudnorm) in LUFS; true peak is the peak of the signal
oversampled 4x (soxr), in dBTP, so peaks between samples count. The ceiling is a gain cap, not a limiter:
when reaching the target would push the true peak over the ceiling, the gain stops at the ceiling and the
clip lands under the target (the report says so). A cap never distorts; a limiter would trade loudness
for distortion of transients, which is the listener's call, not ours.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from infra.audio import Audio, loudness_lufs, resample

TRUE_PEAK_OVERSAMPLING = 4  # BS.1770-4 Annex 2: 4x oversampling resolves inter-sample peaks to < 0.5 dB
TRUE_PEAK_MARGIN_DB = 0.01  # head-room for float32 rounding, so a capped clip measures ≤ the ceiling


@dataclass(frozen=True)
class MasteringReport:
    """What mastering did: loudness (LUFS) and true peak (dBTP) before and after, the gain applied."""

    target_lufs: float | None
    true_peak_ceiling_db: float
    loudness_before_lufs: float
    loudness_after_lufs: float
    true_peak_before_dbtp: float
    true_peak_after_dbtp: float
    gain_db: float
    limited_by_true_peak: bool
    loop_crossfade_s: float | None

    def as_dict(self) -> dict[str, Any]:
        """JSON-able record; unmeasurable levels (silence, clips under 0.4 s) become `None`."""
        return {name: _json_number(value) for name, value in self.__dict__.items()}


def true_peak_dbtp(audio: Audio) -> float:
    """True peak of `audio` in dBTP: the sample peak of the 4x oversampled signal (`-inf` for silence)."""
    if audio.num_samples == 0:
        return float("-inf")
    oversampled = resample(audio, audio.sample_rate * TRUE_PEAK_OVERSAMPLING).samples
    peak = max(float(np.max(np.abs(oversampled))), float(np.max(np.abs(audio.samples))))
    return 20.0 * float(np.log10(peak)) if peak > 0 else float("-inf")


def apply_gain(audio: Audio, gain_db: float) -> Audio:
    """`audio` scaled by `gain_db` decibels."""
    gain = np.float32(10.0 ** (gain_db / 20.0))
    return Audio(audio.samples * gain, audio.sample_rate)


def capped_gain_db(wanted_db: float, true_peak: float, ceiling_db: float) -> float:
    """`wanted_db`, lowered so that a clip at `true_peak` dBTP ends up at or under `ceiling_db`."""
    if not np.isfinite(true_peak):
        return wanted_db
    return min(wanted_db, ceiling_db - TRUE_PEAK_MARGIN_DB - true_peak)


def make_loopable(audio: Audio, crossfade_s: float) -> Audio:
    """Crossfade the tail into the head so that the clip loops seamlessly: `[C, T]` → `[C, T - F]`.

    With F = `crossfade_s` x rate samples, the first F samples become an equal-power blend that starts on
    the tail (sample T - F) and ends on the head (sample F - 1); the tail is then dropped. The result's
    last sample (T - F - 1) is followed, when looped, by its first (≈ T - F): original neighbours.
    Raises `ValueError` unless 0 < F ≤ T / 2 (the faded head and tail must not overlap).
    """
    fade = round(crossfade_s * audio.sample_rate)
    if not 0 < fade <= audio.num_samples // 2:
        raise ValueError(
            f"loop crossfade of {crossfade_s:g} s needs a clip of at least twice that; "
            f"the clip lasts {audio.duration_s:.3f} s"
        )
    position = (np.arange(fade, dtype=np.float64) + 0.5) / fade
    fade_in = np.sin(0.5 * np.pi * position).astype(np.float32)
    fade_out = np.cos(0.5 * np.pi * position).astype(np.float32)
    head, tail = audio.samples[:, :fade], audio.samples[:, -fade:]
    blended = head * fade_in + tail * fade_out
    looped = np.concatenate([blended, audio.samples[:, fade:-fade]], axis=1)
    return Audio(np.ascontiguousarray(looped, dtype=np.float32), audio.sample_rate)


def master(
    audio: Audio,
    *,
    target_lufs: float | None = -14.0,
    true_peak_db: float = -1.0,
    loop_crossfade_s: float | None = None,
) -> tuple[Audio, MasteringReport]:
    """Normalise to `target_lufs` (None: keep the level) under the `true_peak_db` ceiling, then loop.

    The ceiling holds even without a loudness target (the gain only ever drops then), so nothing is
    clipped silently when the clip is encoded. A loop crossfade can raise peaks (correlated head and
    tail add up), so the ceiling is checked again after it. Silence and clips under 0.4 s have no
    measurable loudness: they only get the ceiling.
    """
    before_lufs, before_peak = loudness_lufs(audio), true_peak_dbtp(audio)
    wanted = 0.0
    if target_lufs is not None and np.isfinite(before_lufs):
        wanted = target_lufs - before_lufs
    gain = capped_gain_db(wanted, before_peak, true_peak_db)
    out = apply_gain(audio, gain)
    limited = gain < wanted
    if loop_crossfade_s is not None:
        out = make_loopable(out, loop_crossfade_s)
        extra = capped_gain_db(0.0, true_peak_dbtp(out), true_peak_db)
        out, gain, limited = apply_gain(out, extra), gain + extra, limited or extra < 0
    report = MasteringReport(
        target_lufs=target_lufs,
        true_peak_ceiling_db=true_peak_db,
        loudness_before_lufs=before_lufs,
        loudness_after_lufs=loudness_lufs(out),
        true_peak_before_dbtp=before_peak,
        true_peak_after_dbtp=true_peak_dbtp(out),
        gain_db=gain,
        limited_by_true_peak=limited,
        loop_crossfade_s=loop_crossfade_s,
    )
    return out, report


def _json_number(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 3) if np.isfinite(value) else None
    return value
