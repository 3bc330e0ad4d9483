"""Find a seamless loop in a clip: where playback can jump from `end` back to `start` unnoticed.

Method (pure numpy, on the mono mix):

1. Features: a short-time spectrum (2048-point Hann window, hop 512) summed into 24 log-spaced bands
   (40 Hz to 16 kHz), as log energy floored 60 dB under the loudest band (so hiss is not an event).
2. Onset strength: the rise of each band's log energy from one frame to the next, summed over bands
   (the first frame rises from the floor, so a clip that starts loud has an onset at 0).
3. Beat period: the autocorrelation of the onset strength over lags of 0.25 to 1.5 s (40 to 240 BPM).
   Its highest peak, refined by a parabola, is the period if its normalised height reaches 0.3 (the
   strongest repetition of the onsets: the beat, or a multiple of it such as a kick-snare cycle);
   otherwise the clip has no beat and only similarity decides (steps 5 and 6 still apply).
4. Loop start: the first frame whose onset strength reaches 30 % of the largest one (the first
   event after any silence); the start lands about half a window before that event's peak.
5. Candidate ends: with a beat, every `start + k * period` (each moved to the best frame within
   ±2 frames); without one, the local maxima of the spectral similarity. The spectral similarity of
   a candidate is the cosine between the band features of the 0.5 s after it and after the start.
6. Fine alignment: around the best candidates, within ±1 hop, the sample whose next 2048 samples
   best match the 2048 after the start (normalised cross-correlation), less a penalty for the
   sample jump `|x[start] - x[end]|` a hard cut would make. Score = mean of the spectral and
   waveform similarities minus that penalty.
7. The longest candidate scoring within 0.02 of the best wins: longer loops repeat less audibly.

Every candidate leaves `crossfade` samples after `end` (the renderer crossfades from the audio
after `end` into the audio after `start`) and is at least `min_loop_s` long.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from infra.audio import Audio, to_mono

N_FFT = 2048
HOP = 512
BANDS = 24
FLOOR_DB = 60.0
BEAT_LAGS_S = (0.25, 1.5)
BEAT_MIN_STRENGTH = 0.3
ONSET_FRACTION = 0.3
SPECTRAL_WINDOW_S = 0.5
FINE_WINDOW = 2048
FINE_CANDIDATES = 8
TIE_MARGIN = 0.02
JUMP_PENALTY = 0.25

Floats = npt.NDArray[np.float64]


class SourceTooShortError(ValueError):
    code = "source_too_short"


@dataclass(frozen=True)
class LoopPoints:
    """A loop in samples at `sample_rate`: play `[0, end)`, then `[start, end)` over and over."""

    start: int
    end: int
    sample_rate: int
    method: Literal["beat", "similarity"]
    beat_period_s: float | None
    score: float

    @property
    def length(self) -> int:
        return self.end - self.start

    def facts(self) -> dict[str, Any]:
        rate = self.sample_rate
        return {
            "start": self.start,
            "end": self.end,
            "start_s": round(self.start / rate, 6),
            "end_s": round(self.end / rate, 6),
            "loop_s": round(self.length / rate, 6),
            "sample_rate": rate,
            "method": self.method,
            "beat_period_s": None if self.beat_period_s is None else round(self.beat_period_s, 6),
            "bpm": None if self.beat_period_s is None else round(60.0 / self.beat_period_s, 2),
            "score": round(self.score, 4),
        }


def find_loop_points(audio: Audio, *, crossfade: int, min_loop_s: float = 1.0) -> LoopPoints:
    """The best loop in `audio` ([C, T]) leaving `crossfade` samples after its end; see the module doc."""
    mono = to_mono(audio).samples[0].astype(np.float64)
    rate = audio.sample_rate
    features = band_features(mono, rate)
    onset = onset_strength(features)
    period = beat_period_frames(onset, rate)
    start = loop_start_frame(onset) * HOP
    window = max(1, round(SPECTRAL_WINDOW_S * rate / HOP))
    min_end = start + max(round(min_loop_s * rate), 4 * crossfade, FINE_WINDOW)
    max_end = len(mono) - max(crossfade, FINE_WINDOW, window * HOP + N_FFT) - HOP
    if max_end < min_end and start > 0:
        start, min_end = 0, min_end - start
    if max_end < min_end:
        raise SourceTooShortError(
            f"source of {len(mono) / rate:.2f} s is too short for a loop of at least {min_loop_s:g} s "
            f"with a {crossfade / rate:g} s crossfade"
        )
    similarity = spectral_similarity(features, start // HOP, window)
    frames = np.arange(-(-min_end // HOP), max_end // HOP + 1)
    if not len(frames):  # both bounds inside one hop
        frames = np.array([min_end // HOP])
    if period is None:
        coarse = _similarity_candidates(similarity, frames)
    else:
        coarse = _beat_candidates(similarity, frames, start, period)
    scored = [_fine(audio, mono, start, c * HOP, float(similarity[c]), (min_end, max_end)) for c in coarse]
    best = max(score for _, score in scored)
    end, score = max((s for s in scored if s[1] >= best - TIE_MARGIN), key=lambda s: s[0])
    return LoopPoints(
        start=start,
        end=end,
        sample_rate=rate,
        method="similarity" if period is None else "beat",
        beat_period_s=None if period is None else period * HOP / rate,
        score=score,
    )


def band_features(mono: Floats, rate: int) -> Floats:
    """Log band energies `[frames, BANDS]`, floored `FLOOR_DB` under the loudest, minus that floor."""
    padded = np.concatenate([mono, np.zeros(N_FFT)])
    count = max(1, (len(mono) + HOP - 1) // HOP)
    edges = np.geomspace(40.0, min(16000.0, rate / 2), BANDS + 1) * N_FFT / rate
    bins = np.clip(np.round(edges).astype(int), 1, N_FFT // 2)
    bins = np.maximum(bins, np.arange(BANDS + 1) + 1)  # every band at least one bin wide
    bands = np.empty((count, BANDS))
    window = np.hanning(N_FFT)
    for first in range(0, count, 4096):  # bounded memory for long sources
        idx = np.arange(first, min(count, first + 4096))[:, None] * HOP + np.arange(N_FFT)
        power = np.abs(np.fft.rfft(padded[idx] * window, axis=1)) ** 2
        cumulative = np.concatenate([np.zeros((len(idx), 1)), np.cumsum(power, axis=1)], axis=1)
        bands[first : first + len(idx)] = cumulative[:, bins[1:]] - cumulative[:, bins[:-1]]
    log = 10.0 * np.log10(bands + 1e-12)
    return np.maximum(log - (log.max() - FLOOR_DB), 0.0)


def onset_strength(features: Floats) -> Floats:
    """Summed positive rise of the band features per frame `[frames]`; frame 0 rises from the floor."""
    rise = np.diff(features, axis=0, prepend=np.zeros((1, features.shape[1])))
    return np.maximum(rise, 0.0).sum(axis=1)


def beat_period_frames(onset: Floats, rate: int) -> float | None:
    """The beat period in frames (fractional) from the onset autocorrelation, or None if no beat."""
    lo, hi = (round(s * rate / HOP) for s in BEAT_LAGS_S)
    signal = onset[1:] - onset[1:].mean()
    hi = min(hi, len(signal) // 2)
    if hi <= lo + 1 or not np.any(signal):
        return None
    spectrum = np.fft.rfft(signal, 2 * len(signal))
    acf = np.fft.irfft(np.abs(spectrum) ** 2)[: len(signal)]
    acf /= acf[0] * (1.0 - np.arange(len(signal)) / len(signal))  # unbiased, 1 at lag 0
    lag = lo + int(np.argmax(acf[lo : hi + 1]))
    if acf[lag] < BEAT_MIN_STRENGTH:
        return None
    a, b, c = acf[lag - 1], acf[lag], acf[lag + 1]
    shift = 0.5 * (a - c) / (a - 2 * b + c) if a - 2 * b + c < 0 else 0.0
    return lag + float(np.clip(shift, -0.5, 0.5))


def loop_start_frame(onset: Floats) -> int:
    """The first frame whose onset strength reaches `ONSET_FRACTION` of the strongest."""
    peak = float(onset.max())
    return int(np.argmax(onset >= ONSET_FRACTION * peak)) if peak > 0 else 0


def spectral_similarity(features: Floats, start: int, window: int) -> Floats:
    """Cosine between the `window` frames after each frame and after `start` `[frames]` (0 past the end)."""
    frames = len(features) - window + 1
    out = np.zeros(len(features))
    if frames <= start:
        return out
    ref = features[start : start + window]
    numerator = sum(np.correlate(features[:, b], ref[:, b], "valid") for b in range(features.shape[1]))
    energy = np.concatenate([[0.0], np.cumsum((features**2).sum(axis=1))])
    norms = np.sqrt((energy[window:] - energy[:-window]) * float((ref**2).sum()))
    out[:frames] = np.where(norms > 0, numerator / np.maximum(norms, 1e-12), 0.0)
    return out


def _beat_candidates(
    similarity: Floats, frames: npt.NDArray[np.int64], start: int, period: float
) -> list[int]:
    """Frames near `start + k * period`, each moved to its best neighbour within ±2 frames."""
    first, last = int(frames[0]), int(frames[-1])
    out = []
    k_first = max(1, int(np.ceil((first - 2 - start / HOP) / period)))
    for k in range(k_first, int((last + 2 - start / HOP) / period) + 1):
        centre = round(start / HOP + k * period)
        near = np.arange(max(first, centre - 2), min(last, centre + 2) + 1)
        if len(near):
            out.append(int(near[np.argmax(similarity[near])]))
    return _top(similarity, out) if out else _similarity_candidates(similarity, frames)


def _similarity_candidates(similarity: Floats, frames: npt.NDArray[np.int64]) -> list[int]:
    """The local maxima of the similarity among `frames` (all frames when there are none)."""
    values = similarity[frames]
    peaks = [int(f) for i, f in enumerate(frames) if _is_peak(values, i)]
    return _top(similarity, peaks or [int(f) for f in frames])


def _is_peak(values: Floats, i: int) -> bool:
    left = values[i - 1] if i > 0 else -np.inf
    right = values[i + 1] if i + 1 < len(values) else -np.inf
    return bool(values[i] >= left and values[i] >= right)


def _top(similarity: Floats, frames: list[int]) -> list[int]:
    return sorted(set(frames), key=lambda f: -similarity[f])[:FINE_CANDIDATES]


def _fine(
    audio: Audio, mono: Floats, start: int, guess: int, spectral: float, bounds: tuple[int, int]
) -> tuple[int, float]:
    """The sample within ±HOP of `guess` whose waveform best continues like `start`; (end, score)."""
    lo, hi = max(bounds[0], guess - HOP), min(bounds[1], guess + HOP)
    if hi < lo:
        lo = hi = min(max(guess, bounds[0]), bounds[1])
    ref = mono[start : start + FINE_WINDOW]
    segment = mono[lo : hi + FINE_WINDOW]
    numerator = np.correlate(segment, ref, "valid")
    energy = np.concatenate([[0.0], np.cumsum(segment**2)])
    norms = np.sqrt((energy[FINE_WINDOW:] - energy[:-FINE_WINDOW]) * float(ref @ ref))
    ncc = np.where(norms > 0, numerator / np.maximum(norms, 1e-12), 0.0)
    samples = audio.samples
    peak = float(np.abs(samples).max()) or 1.0
    jumps = np.abs(samples[:, lo : hi + 1] - samples[:, start : start + 1]).max(axis=0) / (2 * peak)
    scores = 0.5 * (spectral + ncc) - JUMP_PENALTY * jumps
    best = int(np.argmax(scores))
    return lo + best, float(scores[best])
