"""Fit a synthesized line into the slot of the line it replaces (pure DSP, no models).

The clip is first trimmed of leading/trailing silence, then time-stretched (phase vocoder,
`infra.dsp.vocoder.time_stretch`) to the slot's length, but never beyond the playback-rate bounds
`MIN_RATE`..`MAX_RATE` (0.8x to 1.25x: past that a voice audibly drags or rushes). Words are never cut:
a clip still too long at 1.25x runs on past its slot, first into the silence that follows
(`overrun_s`), and, when that silence is too short too, over whatever follows it (`overlap_s`). A clip
still too short at 0.8x starts at the slot's start and leaves the rest of the slot silent.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from infra.audio import Audio
from infra.dsp.vocoder import time_stretch

MIN_RATE = 0.8  # slowest playback rate applied to a synthesized line
MAX_RATE = 1.25  # fastest
TRIM_FLOOR_DB = -40.0  # below the clip's peak: silence to trim
TRIM_MARGIN_S = 0.01  # kept before the first and after the last loud sample
_SAME_LENGTH_RATE = 1e-3  # rates this close to 1 are not worth a phase-vocoder pass


@dataclass(frozen=True)
class FittedLine:
    """`audio` `[C, T]` to place at the slot's start; durations in seconds; `rate` the playback rate
    applied (> 1 faster); `overrun_s` the part past the slot, `overlap_s` the part of it past the
    following silence."""

    audio: Audio
    natural_s: float
    rate: float
    overrun_s: float
    overlap_s: float

    @property
    def duration_s(self) -> float:
        return self.audio.duration_s


def trim_silence(audio: Audio, floor_db: float = TRIM_FLOOR_DB, margin_s: float = TRIM_MARGIN_S) -> Audio:
    """`audio` `[C, T]` without the leading/trailing stretches quieter than `floor_db` below its peak
    (keeping `margin_s` around the loud part). Raises `ValueError` for an all-silent clip."""
    level = np.abs(audio.samples).max(axis=0)
    peak = float(level.max()) if level.size else 0.0
    if peak <= 0.0:
        raise ValueError("the synthesized clip is silent")
    loud = np.flatnonzero(level >= peak * 10.0 ** (floor_db / 20.0))
    margin = round(margin_s * audio.sample_rate)
    start, end = max(0, int(loud[0]) - margin), min(audio.num_samples, int(loud[-1]) + 1 + margin)
    return Audio(np.ascontiguousarray(audio.samples[:, start:end]), audio.sample_rate)


def fit_rate(natural_s: float, slot_s: float) -> float:
    """The playback rate that makes `natural_s` last `slot_s`, within `MIN_RATE`..`MAX_RATE`."""
    if natural_s <= 0 or slot_s <= 0:
        raise ValueError(f"durations must be positive, got natural_s={natural_s}, slot_s={slot_s}")
    rate = min(MAX_RATE, max(MIN_RATE, natural_s / slot_s))
    return 1.0 if abs(rate - 1.0) < _SAME_LENGTH_RATE else rate


def fit_line(clip: Audio, slot_s: float, room_s: float) -> FittedLine:
    """Trim `clip` `[C, T]`, stretch it towards `slot_s` seconds within the rate bounds, and account for
    what runs past the slot given `room_s` seconds of silence after it (module docstring)."""
    if room_s < 0:
        raise ValueError(f"room_s must not be negative, got {room_s}")
    trimmed = trim_silence(clip)
    rate = fit_rate(trimmed.duration_s, slot_s)
    fitted = time_stretch(trimmed, rate) if rate != 1.0 else trimmed
    overrun = max(0.0, fitted.duration_s - slot_s)
    return FittedLine(fitted, trimmed.duration_s, rate, overrun, max(0.0, overrun - room_s))
