"""A model-free phase vocoder: `shift_pitch` keeps the duration (phase vocoder + resampling) and,
optionally, the spectral envelope (formants); `time_stretch` is the phase vocoder alone (duration
changes, pitch stays)."""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import numpy.typing as npt

from infra.audio import Audio, resample, validate

MAX_SEMITONES = 24.0
MIN_STRETCH_RATE, MAX_STRETCH_RATE = 0.25, 4.0
# STFT frame of about 46 ms (2048 samples at 44.1/48 kHz): resolves harmonics of voices down to ~60 Hz.
_STFT_FRAME_S = 0.046
# Envelope lifter: half the F0 period found by cepstral peak picking within 1-16 ms (60-1000 Hz), kept
# within 0.75-2 ms: detailed enough for formants, smooth enough to pass over the harmonics.
_PERIOD_RANGE_S = (0.001, 0.016)
_LIFTER_RANGE_S = (0.00075, 0.002)
_LOUD_FRAME_RANGE = math.log(10.0**2)  # nepers, = 40 dB below the loudest frame's mean log level
_ENVELOPE_FLOOR = 1e-4  # relative to the spectrogram's peak: -80 dB
_TRUE_ENVELOPE_ITERATIONS = 12
_TRUE_ENVELOPE_TOLERANCE = 0.23  # nepers, = 2 dB: how far a harmonic peak may stick out of the envelope
# The envelope gain stays within +-24 dB: the 'envelope' of a pure tone is the tone itself, and an
# unbounded correction would cancel it and leave only the phase vocoder's residue.
_MAX_ENVELOPE_GAIN = 10.0 ** (24.0 / 20.0)

FloatArray = npt.NDArray[np.float64]
ComplexArray = npt.NDArray[np.complex128]


def shift_pitch(audio: Audio, semitones: float, *, preserve_formants: bool = True) -> Audio:
    """Shift the pitch of `audio` `[C, T]` by `semitones` (in [-24, 24]) keeping its duration.

    A phase vocoder with identity phase locking stretches each channel by the pitch ratio r, then soxr
    resamples it back to the original length, which moves every frequency f to r * f. With
    `preserve_formants` each STFT frame is first re-weighted by E(r * f) / E(f), E being the frame's
    'true envelope' (iterated cepstral smoothing), so the shifted harmonics land under the input's
    envelope and a voice keeps its vowels and timbre. Returns `[C, T]` float32 at the same rate; nothing
    is clipped. Channels are shifted independently.
    """
    if not (math.isfinite(semitones) and abs(semitones) <= MAX_SEMITONES):
        raise ValueError(f"semitones must be within [-{MAX_SEMITONES:g}, {MAX_SEMITONES:g}], got {semitones}")
    validate(audio)
    if semitones == 0:
        return Audio(audio.samples.copy(), audio.sample_rate)
    samples = audio.samples.astype(np.float64)
    channels = [_shift_channel(x, audio.sample_rate, semitones, preserve_formants) for x in samples]
    return Audio(np.stack(channels).astype(np.float32), audio.sample_rate)


def time_stretch(audio: Audio, rate: float) -> Audio:
    """Play `audio` `[C, T]` `rate` times as fast (in [0.25, 4]; > 1 is shorter) without changing its pitch.

    The phase vocoder of `shift_pitch` (identity phase locking, ~46 ms Hann frames, 75 % overlap) without
    the resampling step. Returns `[C, round(T / rate)]` float32 at the same rate; `rate == 1` returns a
    copy. Channels are stretched independently.
    """
    if not (math.isfinite(rate) and MIN_STRETCH_RATE <= rate <= MAX_STRETCH_RATE):
        raise ValueError(f"rate must be within [{MIN_STRETCH_RATE:g}, {MAX_STRETCH_RATE:g}], got {rate}")
    validate(audio)
    if rate == 1.0:
        return Audio(audio.samples.copy(), audio.sample_rate)
    n_fft = _n_fft(audio.sample_rate)
    length = max(1, round(audio.num_samples / rate))
    channels = [
        _overlap_add(_stretched_frames(_stft(x, n_fft, n_fft // 4), 1.0 / rate), n_fft, n_fft // 4, length)
        for x in audio.samples.astype(np.float64)
    ]
    return Audio(np.stack(channels).astype(np.float32), audio.sample_rate)


def _n_fft(sample_rate: int) -> int:
    return int(2 ** round(math.log2(_STFT_FRAME_S * sample_rate)))


def _shift_channel(x: FloatArray, sample_rate: int, semitones: float, formants: bool) -> FloatArray:
    """One channel `[T]` shifted; `[T]` out."""
    n_fft = _n_fft(sample_rate)
    hop = n_fft // 4
    # Playing `stretched_rate` samples per second at `sample_rate` multiplies every frequency by their
    # ratio; rounding the rate to an integer errs by at most 0.5 / sample_rate (< 0.1 cent).
    stretched_rate = round(sample_rate * 2.0 ** (semitones / 12.0))
    ratio = stretched_rate / sample_rate
    spec = _stft(x, n_fft, hop)
    if formants:
        spec = spec * _formant_gain(spec, ratio, sample_rate)
    stretched = _overlap_add(_stretched_frames(spec, ratio), n_fft, hop, round(len(x) * ratio))
    back = resample(Audio(stretched[None, :].astype(np.float32), stretched_rate), sample_rate).samples[0]
    return _fit_length(back.astype(np.float64), len(x))


def _fit_length(x: FloatArray, length: int) -> FloatArray:
    return x[:length] if len(x) >= length else np.pad(x, (0, length - len(x)))


def _stft(x: FloatArray, n_fft: int, hop: int) -> ComplexArray:
    """Centred Hann STFT of `[T]`: `[n_fft // 2 + 1, frames]`."""
    padded = np.pad(x, (n_fft // 2, n_fft // 2 + hop))
    frames = np.lib.stride_tricks.sliding_window_view(padded, n_fft)[::hop]
    return np.fft.rfft(frames * np.hanning(n_fft + 1)[:-1], axis=1).T


def _overlap_add(spectra: Iterator[ComplexArray], n_fft: int, hop: int, length: int) -> FloatArray:
    """Inverse of `_stft` (weighted overlap-add) for a stream of frames `[F]`: `[length]` samples out."""
    window = np.hanning(n_fft + 1)[:-1]
    out, norm = np.zeros(length + 2 * n_fft), np.zeros(length + 2 * n_fft)
    for start in range(0, length + n_fft, hop):  # later frames only touch samples past `length`
        frame = next(spectra, None)
        if frame is None:
            break
        out[start : start + n_fft] += np.fft.irfft(frame, n=n_fft) * window
        norm[start : start + n_fft] += window**2
    return (out / np.maximum(norm, 1e-8))[n_fft // 2 : n_fft // 2 + length]


def _stretched_frames(spec: ComplexArray, stretch: float) -> Iterator[ComplexArray]:
    """Phase-vocoder time stretch of `spec` `[F, N]` by `stretch` (>1 longer), frame `[F]` by frame, with
    identity phase locking (Laroche & Dolson 1999): each bin keeps its analysis phase offset to the
    nearest spectral peak, which avoids the 'phasy' sound of a plain phase vocoder."""
    n_bins, n_frames = spec.shape
    expected = np.pi * np.arange(n_bins) / 2.0  # phase advance per hop of a bin-centred sine, hop = n_fft/4
    spec = np.pad(spec, ((0, 0), (0, 1)))
    magnitude, phase = np.abs(spec), np.angle(spec)
    accumulated = phase[:, 0].copy()
    for step in np.arange(0.0, n_frames, 1.0 / stretch):
        i, frac = int(step), step - int(step)
        locked = _lock_to_peaks(accumulated, phase[:, i], magnitude[:, i])
        yield ((1.0 - frac) * magnitude[:, i] + frac * magnitude[:, i + 1]) * np.exp(1j * locked)
        deviation = phase[:, i + 1] - phase[:, i] - expected
        accumulated = locked + expected + (deviation - 2.0 * np.pi * np.round(deviation / (2.0 * np.pi)))


def _lock_to_peaks(synth_phase: FloatArray, analysis_phase: FloatArray, magnitude: FloatArray) -> FloatArray:
    """Phases `[F]` where every bin follows the synthesis phase of its nearest magnitude peak."""
    inner = magnitude[1:-1]
    peaks = 1 + np.flatnonzero((inner > magnitude[:-2]) & (inner >= magnitude[2:]))
    if len(peaks) == 0:
        return synth_phase
    owner = peaks[np.searchsorted((peaks[:-1] + peaks[1:]) / 2.0, np.arange(len(magnitude)))]
    return synth_phase[owner] + analysis_phase - analysis_phase[owner]


def _formant_gain(spec: ComplexArray, ratio: float, rate: int) -> FloatArray:
    """Per-bin gain `[F, N]` for `spec` `[F, N]` such that, once every frequency f has moved to
    `ratio * f`, each frame keeps its spectral envelope E: gain(f) = E(ratio * f) / E(f), within +-24 dB."""
    floor = _ENVELOPE_FLOOR * max(float(np.abs(spec).max()), 1e-12)
    log_env = _log_envelope(np.log(np.maximum(np.abs(spec), floor)), rate)
    target = np.minimum(np.arange(spec.shape[0]) * ratio, spec.shape[0] - 1.0)
    low = np.minimum(target.astype(int), spec.shape[0] - 2)
    frac = (target - low)[:, None]
    moved = (1.0 - frac) * log_env[low] + frac * log_env[low + 1]
    return np.clip(np.exp(moved - log_env), 1.0 / _MAX_ENVELOPE_GAIN, _MAX_ENVELOPE_GAIN)


def _log_envelope(log_magnitude: FloatArray, rate: int) -> FloatArray:
    """'True envelope' (Roebel & Rodet 2005) of each frame of `log_magnitude` `[F, N]`: the cepstrally
    smoothed log magnitude, raised iteratively until it rides on the harmonic peaks instead of averaging
    them with the valleys between. Returns the log-magnitude envelope `[F, N]`."""
    frames = np.ascontiguousarray(log_magnitude.T)  # FFTs along the last, contiguous axis are faster
    lifter = _lifter_length(frames, rate)
    envelope = _cepstral_smooth(frames, lifter)
    for _ in range(_TRUE_ENVELOPE_ITERATIONS):
        if (frames - envelope).max() < _TRUE_ENVELOPE_TOLERANCE:
            break
        envelope = _cepstral_smooth(np.maximum(frames, envelope), lifter)
    return envelope.T


def _lifter_length(frames: FloatArray, rate: int) -> int:
    """Cepstral lifter (samples) for `frames` `[N, F]` of log magnitude: half the typical F0 period
    (Roebel's order sr / (2 F0)), so the harmonics of high voices stay out of the envelope while low
    voices keep a detailed one. The period is the median cepstral peak of the louder frames: one value
    for the whole signal, as a lifter that changes from frame to frame would modulate the output."""
    n_fft = 2 * (frames.shape[1] - 1)
    cepstrum = np.fft.irfft(frames, n=n_fft, axis=1)
    shortest, longest = (min(int(p * rate), n_fft // 2) for p in _PERIOD_RANGE_S)
    periods = shortest + np.argmax(cepstrum[:, shortest:longest], axis=1)
    level = frames.mean(axis=1)
    loud = level >= level.max() - _LOUD_FRAME_RANGE
    low, high = (max(1, int(q * rate)) for q in _LIFTER_RANGE_S)
    return int(np.clip(np.median(periods[loud]) // 2, low, high))


def _cepstral_smooth(frames: FloatArray, lifter: int) -> FloatArray:
    """`frames` `[N, F]` of log magnitude without their quefrencies from `lifter` samples up."""
    n_fft = 2 * (frames.shape[1] - 1)
    cepstrum = np.fft.irfft(frames, n=n_fft, axis=1)
    cepstrum[:, lifter : n_fft - lifter + 1] = 0.0
    return np.fft.rfft(cepstrum, axis=1).real
