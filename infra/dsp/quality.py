"""Automatic quality check of a generated clip: clipping, silence, high-frequency noise, noise-likeness.

Pure numpy. `assess_quality(audio)` measures four things and names every threshold it crosses:

- `clipping`: fraction of samples at full scale (|x| ≥ 0.999).
- `silent`: RMS level in dBFS.
- `hf_noise`: share of the power above 14 kHz. Only measured when the sample rate exceeds 28 kHz; at
  28 kHz and below the band does not exist (Nyquist ≤ 14 kHz), so the metric is `None` and not scored —
  e.g. AudioGen's 16 kHz and MusicGen's 32 kHz output differ here: 32 kHz keeps the 14-16 kHz band.
- `noise_like`: spectral flatness (geometric over arithmetic mean of each frame's power spectrum,
  averaged over the frames that are not silent): 0 for a pure tone, about 0.56 (e^-gamma) for white noise.

Each metric maps to a sub-score in [0, 1] that is 1 far from its threshold, 0.5 exactly at it and 0 far
past it; the clip's `score` is their product, so a clip with two problems ranks below a clip with one.
`passed` means no issue was named.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from infra.audio import Audio

FULL_SCALE = 0.999  # a sample this close to ±1 is at (or was cut at) full scale
CLIPPING_MAX_RATIO = 1e-3  # more than 0.1 % of samples at full scale is audible distortion
SILENT_MAX_DBFS = -60.0  # below -60 dBFS RMS a clip is inaudible at normal listening levels
HF_BAND_HZ = 14_000.0  # content above this is mostly hiss and aliasing in generated audio
HF_NOISE_MAX_RATIO = 0.08  # bright masters keep a few % of power above 14 kHz; broadband noise far more
NOISE_LIKE_MIN_FLATNESS = 0.3  # music and effects sit well under 0.2; white noise is about 0.56
FRAME_SIZE = 2048  # analysis frame (samples) for the spectral metrics
HOP_SIZE = 1024
_FRAME_FLOOR_DBFS = -70.0  # frames quieter than this are left out of the flatness average (0/0 there)
_EPS = 1e-20


@dataclass(frozen=True)
class QualityReport:
    """Measurements of one clip, the issues they name and a score in [0, 1] (higher is better)."""

    clipping_ratio: float
    rms_dbfs: float
    hf_ratio: float | None
    spectral_flatness: float
    score: float
    issues: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.issues

    def as_dict(self) -> dict[str, Any]:
        """JSON-able record (floats rounded) for stage facts and metadata."""
        return {
            "score": round(self.score, 4),
            "passed": self.passed,
            "issues": list(self.issues),
            "clipping_ratio": round(self.clipping_ratio, 6),
            "rms_dbfs": round(self.rms_dbfs, 2) if np.isfinite(self.rms_dbfs) else None,
            "hf_ratio": None if self.hf_ratio is None else round(self.hf_ratio, 4),
            "spectral_flatness": round(self.spectral_flatness, 4),
        }


def clipping_ratio(samples: npt.NDArray[np.float32]) -> float:
    """Fraction of samples `[C, T]` with |x| ≥ `FULL_SCALE`."""
    return float(np.mean(np.abs(samples) >= FULL_SCALE)) if samples.size else 0.0


def rms_dbfs(samples: npt.NDArray[np.float32]) -> float:
    """RMS level of all samples `[C, T]` in dBFS (`-inf` for digital silence)."""
    rms = float(np.sqrt(np.mean(np.square(samples, dtype=np.float64)))) if samples.size else 0.0
    return 20.0 * float(np.log10(rms)) if rms > 0 else float("-inf")


def frames(mono: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
    """Overlapping frames `[n, FRAME_SIZE]` (hop `HOP_SIZE`) of a mono signal `[T]`, zero-padded if short."""
    if mono.size < FRAME_SIZE:
        mono = np.pad(mono, (0, FRAME_SIZE - mono.size))
    starts = np.arange(0, mono.size - FRAME_SIZE + 1, HOP_SIZE)
    return np.stack([mono[s : s + FRAME_SIZE] for s in starts]).astype(np.float64)


def power_spectra(framed: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Hann-windowed power spectra `[n, FRAME_SIZE // 2 + 1]` of frames `[n, FRAME_SIZE]`."""
    return np.square(np.abs(np.fft.rfft(framed * np.hanning(FRAME_SIZE), axis=1)))


def hf_ratio(power: npt.NDArray[np.float64], sample_rate: int) -> float | None:
    """Share of power above `HF_BAND_HZ`; `None` when the sample rate is ≤ 2 x `HF_BAND_HZ` (no such band)."""
    if sample_rate <= 2 * HF_BAND_HZ:
        return None
    freqs = np.fft.rfftfreq(FRAME_SIZE, 1.0 / sample_rate)
    total = float(power.sum())
    return float(power[:, freqs > HF_BAND_HZ].sum()) / total if total > 0 else 0.0


def spectral_flatness(power: npt.NDArray[np.float64], loud: npt.NDArray[np.bool_]) -> float:
    """Mean over the `loud` frames of geometric / arithmetic mean of the power spectrum (0 if none)."""
    if not loud.any():
        return 0.0
    kept = power[loud] + _EPS
    geometric = np.exp(np.mean(np.log(kept), axis=1))
    return float(np.mean(geometric / kept.mean(axis=1)))


def assess_quality(audio: Audio) -> QualityReport:
    """Measure `audio` (any channels, any rate) and name the issues; see the module docstring."""
    framed = frames(audio.samples.mean(axis=0))
    power = power_spectra(framed)
    loud = 10.0 * np.log10(np.mean(np.square(framed), axis=1) + _EPS) > _FRAME_FLOOR_DBFS
    clipped = clipping_ratio(audio.samples)
    level = rms_dbfs(audio.samples)
    hf = hf_ratio(power, audio.sample_rate)
    flatness = spectral_flatness(power, loud)
    checks = {  # issue name -> (crossed its threshold, sub-score)
        "clipping": (clipped > CLIPPING_MAX_RATIO, _under(clipped, CLIPPING_MAX_RATIO)),
        "silent": (level < SILENT_MAX_DBFS, _above(level, SILENT_MAX_DBFS, span_db=20.0)),
        "hf_noise": (hf is not None and hf > HF_NOISE_MAX_RATIO, _under(hf or 0.0, HF_NOISE_MAX_RATIO)),
        "noise_like": (flatness > NOISE_LIKE_MIN_FLATNESS, _under(flatness, NOISE_LIKE_MIN_FLATNESS)),
    }
    return QualityReport(
        clipping_ratio=clipped,
        rms_dbfs=level,
        hf_ratio=hf,
        spectral_flatness=flatness,
        score=float(np.prod([sub for _, sub in checks.values()])),
        issues=[name for name, (crossed, _) in checks.items() if crossed],
    )


def _under(value: float, limit: float) -> float:
    """Sub-score of a metric that should stay under `limit`: 1 at 0, 0.5 at the limit, 0 at twice it."""
    return float(np.clip(1.0 - 0.5 * value / limit, 0.0, 1.0))


def _above(value_db: float, limit_db: float, *, span_db: float) -> float:
    """Sub-score of a level that should stay above `limit_db`: 0.5 at the limit, ±`span_db` to 1 / 0."""
    if not np.isfinite(value_db):
        return 0.0
    return float(np.clip(0.5 + 0.5 * (value_db - limit_db) / span_db, 0.0, 1.0))
