"""Pitch: F0 contours with SwiftF0 (ONNX, weights shipped in the `swift-f0` package) and DSP pitch shifts.

`PitchDetector.detect` turns `Audio` into a `PitchContour` (one frame every 16 ms). `shift_pitch` is a
model-free pitch shift that keeps the duration (phase vocoder + resampling) and, optionally, the spectral
envelope (formants); `time_stretch` is the same phase vocoder alone (duration changes, pitch stays).
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime
import swift_f0

from infra.audio import Audio, resample, to_mono, validate
from models.common import ModelInfo, ModelLoadingError

PKG_URI = "pkg://swift-f0"
MODEL_ID = "swift-f0"
MODEL_FILE = "model.onnx"
# The model's own constants: 16 kHz mono in, one frame per 256 samples, 95 log-spaced pitch steps.
SAMPLE_RATE: int = swift_f0.SAMPLE_RATE
HOP_S: float = swift_f0.FRAME_PERIOD
FMIN_HZ: float = swift_f0.FMIN
FMAX_HZ: float = swift_f0.FMAX
# SwiftF0's confidence is calibrated so that 0.5 separates voiced from unvoiced frames.
VOICED_THRESHOLD = 0.5
MAX_SEMITONES = 24.0
MIN_STRETCH_RATE, MAX_STRETCH_RATE = 0.25, 4.0

_CSV_HEADER = ("time_s", "f0_hz", "confidence", "voiced")
_DEVICES = ("cpu", "auto")
_ONNX_IO = ({"audio", "fmin", "fmax"}, {"pitch", "confidence"})
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
BoolArray = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class PitchContour:
    """An F0 contour, one value per frame; all arrays `[N]`.

    `times_s` are frame centres (s), `f0_hz` the fundamental (Hz) and **0.0 where the frame is unvoiced**
    (0, not NaN, so the contour stays plain JSON and CSV), `confidence` the model's voicing score in [0, 1],
    `voiced` whether `confidence >= threshold` of the `detect` call, `hop_s` the frame spacing (s), `model`
    the weights that produced it.
    """

    times_s: FloatArray
    f0_hz: FloatArray
    confidence: FloatArray
    voiced: BoolArray
    hop_s: float
    model: ModelInfo | None = None

    def __post_init__(self) -> None:
        arrays = (self.times_s, self.f0_hz, self.confidence, self.voiced)
        if any(a.ndim != 1 for a in arrays) or len({len(a) for a in arrays}) != 1:
            shapes = [a.shape for a in arrays]
            raise ValueError(f"PitchContour arrays must be 1-D of one length, got shapes {shapes}")
        if not self.hop_s > 0:
            raise ValueError(f"hop_s must be positive, got {self.hop_s}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict: the four arrays as lists, `hop_s`, and `model` (or None)."""
        return {
            "times_s": self.times_s.tolist(),
            "f0_hz": self.f0_hz.tolist(),
            "confidence": self.confidence.tolist(),
            "voiced": self.voiced.tolist(),
            "hop_s": self.hop_s,
            "model": None if self.model is None else self.model.as_dict(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PitchContour:
        """Inverse of `to_dict`."""
        model = data.get("model")
        return cls(
            times_s=np.asarray(data["times_s"], dtype=np.float64),
            f0_hz=np.asarray(data["f0_hz"], dtype=np.float64),
            confidence=np.asarray(data["confidence"], dtype=np.float64),
            voiced=np.asarray(data["voiced"], dtype=np.bool_),
            hop_s=float(data["hop_s"]),
            model=None if model is None else ModelInfo(**model),
        )

    def to_csv(self) -> str:
        """CSV text with header `time_s,f0_hz,confidence,voiced`; voiced is `true`/`false`."""
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(_CSV_HEADER)
        for t, f0, c, v in zip(self.times_s, self.f0_hz, self.confidence, self.voiced, strict=True):
            writer.writerow([f"{t:.6f}", f"{f0:.4f}", f"{c:.6f}", "true" if v else "false"])
        return buffer.getvalue()


class PitchDetector:
    """SwiftF0 F0 tracker: mono 16 kHz in, one pitch + confidence per 16 ms frame, 46.875-2093.75 Hz.

    Build it with `from_pretrained`; `detect` may be called from several threads at once.
    """

    def __init__(self, detector: swift_f0.SwiftF0, info: ModelInfo) -> None:
        self._detector = detector
        self._info = info

    @classmethod
    def from_pretrained(
        cls,
        uri: str = PKG_URI,
        *,
        device: str = "cpu",
        cache_dir: Path | None = None,
        threads: int | None = None,
    ) -> PitchDetector:
        """Load SwiftF0 from `pkg://swift-f0` (the ONNX file shipped in the package) or a local folder
        holding `model.onnx`.

        The model runs on ONNX Runtime's CPU provider only (it is ~14k parameters; a GPU would not help):
        `device` must be `cpu` or `auto`. `cache_dir` is unused (packaged weights need no cache).
        `threads` sizes the ONNX thread pool (default: one per physical core).
        """
        if device not in _DEVICES:
            raise ValueError(f"device {device!r} is not supported by swift-f0; choose one of {_DEVICES}")
        model_path = None if uri == PKG_URI else _local_model_file(uri)
        try:
            detector = swift_f0.SwiftF0(threads=threads, spin=False)  # no busy-waiting on shared replicas
        except Exception as e:  # onnxruntime raises its own non-exported exception types
            raise ModelLoadingError(f"the swift-f0 package's own {MODEL_FILE} does not load: {e}") from e
        if model_path is None:
            return cls(detector, ModelInfo(MODEL_ID, swift_f0.__version__, "pretrained"))
        # SwiftF0 always opens its packaged file; `detect` only uses its `session`, so swap that in.
        detector.session = _open_session(model_path, threads)
        return cls(detector, ModelInfo(MODEL_ID, f"sha256:{_sha256(model_path)[:12]}", "pretrained"))

    @property
    def info(self) -> ModelInfo:
        return self._info

    @property
    def sample_rate(self) -> int:
        """The rate the model reads (16000 Hz); `detect` resamples any other rate."""
        return SAMPLE_RATE

    @property
    def channels(self) -> int:
        """The model reads mono; `detect` averages the channels."""
        return 1

    def detect(
        self,
        audio: Audio,
        *,
        fmin_hz: float = FMIN_HZ,
        fmax_hz: float = FMAX_HZ,
        confidence_threshold: float = VOICED_THRESHOLD,
    ) -> PitchContour:
        """F0 contour of `audio` `[C, T]` (any rate, mixed to mono, resampled to 16 kHz).

        `fmin_hz`/`fmax_hz` limit the search band (default: the model's full 46.875-2093.75 Hz range); a
        frame whose best pitch lies outside gets confidence 0. A frame is voiced when its confidence is at
        least `confidence_threshold` (default 0.5, the model's calibrated threshold). The model does not
        normalise level: frames peaking below -60 dBFS count as silence, so scale very quiet input first.
        """
        _check_band(fmin_hz, fmax_hz)
        if not 0.0 <= confidence_threshold <= 1.0:
            raise ValueError(f"confidence_threshold must be in [0, 1], got {confidence_threshold}")
        mono = resample(to_mono(validate(audio)), SAMPLE_RATE)
        result = self._detector.detect(mono.samples[0], SAMPLE_RATE, fmin_hz, fmax_hz)
        voiced = result.confidence >= confidence_threshold
        return PitchContour(
            times_s=result.timestamps,
            f0_hz=np.where(voiced, result.pitch_hz, 0.0),
            confidence=result.confidence,
            voiced=voiced,
            hop_s=HOP_S,
            model=self._info,
        )


def _check_band(fmin_hz: float, fmax_hz: float) -> None:
    if not FMIN_HZ <= fmin_hz < fmax_hz <= FMAX_HZ:
        raise ValueError(
            f"need {FMIN_HZ} <= fmin_hz < fmax_hz <= {FMAX_HZ} Hz, got fmin_hz={fmin_hz}, fmax_hz={fmax_hz}"
        )


def _local_model_file(uri: str) -> Path:
    folder = Path(uri).expanduser()
    candidate = folder / MODEL_FILE
    if not candidate.is_file():
        raise ModelLoadingError(
            f"cannot load swift-f0 weights from {uri!r}: tried the packaged model ({PKG_URI}, only for that "
            f"exact URI) and the local file {candidate} (not found). There is no 'debug' variant: the real "
            "weights ship with the package."
        )
    return candidate


def _open_session(model_path: Path, threads: int | None) -> onnxruntime.InferenceSession:
    options = onnxruntime.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        session = onnxruntime.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own non-exported exception types
        raise ModelLoadingError(f"{model_path} is not a loadable ONNX model: {e}") from e
    names = ({i.name for i in session.get_inputs()}, {o.name for o in session.get_outputs()})
    if names != _ONNX_IO:
        raise ModelLoadingError(f"{model_path} has inputs/outputs {names}, not swift-f0's {_ONNX_IO}")
    return session


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


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
