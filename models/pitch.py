"""Pitch: F0 contours with SwiftF0 (ONNX, weights shipped in the `swift-f0` package).

`PitchDetector.detect` turns `Audio` into a `PitchContour` (one frame every 16 ms). The model-free pitch
shift and time stretch (a phase vocoder) live in `infra/dsp/vocoder.py`.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnxruntime
import swift_f0

from infra.audio import Audio, resample, to_mono, validate
from models.types import PITCH_CONFIDENCE_THRESHOLD, ModelInfo, ModelLoadingError, PitchContour

PKG_URI = "pkg://swift-f0"
MODEL_ID = "swift-f0"
MODEL_FILE = "model.onnx"
# The model's own constants: 16 kHz mono in, one frame per 256 samples, 95 log-spaced pitch steps.
SAMPLE_RATE: int = swift_f0.SAMPLE_RATE
HOP_S: float = swift_f0.FRAME_PERIOD
FMIN_HZ: float = swift_f0.FMIN
FMAX_HZ: float = swift_f0.FMAX
# SwiftF0 calls a frame voiced at confidence 0.5, but scores clean low tones 0.3-0.56 (a pure sine glide
# from 110 Hz to 440 Hz: 44 % of frames below 0.5). Frames between the threshold and CONFIDENT are voiced
# only if the signal repeats at the detected period (normalised autocorrelation, window PERIODICITY_S or
# two periods): tones and sung or spoken vowels reach 0.9+, noise and fricatives stay far below.
CONFIDENT = 0.5
MIN_PERIODICITY = 0.7
PERIODICITY_S = 0.04

_DEVICES = ("cpu", "auto")
_ONNX_IO = ({"audio", "fmin", "fmax"}, {"pitch", "confidence"})
FloatArray = npt.NDArray[np.float64]


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
        confidence_threshold: float = PITCH_CONFIDENCE_THRESHOLD,
    ) -> PitchContour:
        """F0 contour of `audio` `[C, T]` (any rate, mixed to mono, resampled to 16 kHz).

        `fmin_hz`/`fmax_hz` limit the search band (default: the model's full 46.875-2093.75 Hz range); a
        frame whose best pitch lies outside gets confidence 0. A frame is voiced when its confidence is at
        least `confidence_threshold` (default 0.2) and either at least 0.5 (the model's own threshold) or
        backed by a periodicity of at least 0.7 at the detected F0 (`voicing`); a threshold of 0.5 or more
        is the model's plain confidence test. The model does not
        normalise level: frames peaking below -60 dBFS count as silence, so scale very quiet input first.
        """
        _check_band(fmin_hz, fmax_hz)
        if not 0.0 <= confidence_threshold <= 1.0:
            raise ValueError(f"confidence_threshold must be in [0, 1], got {confidence_threshold}")
        mono = resample(to_mono(validate(audio)), SAMPLE_RATE)
        result = self._detector.detect(mono.samples[0], SAMPLE_RATE, fmin_hz, fmax_hz)
        voiced = voicing(
            mono.samples[0], result.timestamps, result.pitch_hz, result.confidence, confidence_threshold
        )
        return PitchContour(
            times_s=result.timestamps,
            f0_hz=np.where(voiced, result.pitch_hz, 0.0),
            confidence=result.confidence,
            voiced=voiced,
            hop_s=HOP_S,
            model=self._info,
        )


def voicing(
    samples: npt.NDArray[np.float32],
    times_s: FloatArray,
    f0_hz: FloatArray,
    confidence: FloatArray,
    threshold: float,
) -> npt.NDArray[np.bool_]:
    """Voiced frames `[N]` of 16 kHz mono `samples` `[T]` (frame centres `times_s`, s): confidence >=
    max(threshold, 0.5), or confidence >= threshold with a periodicity >= `MIN_PERIODICITY` at `f0_hz`."""
    voiced = confidence >= max(threshold, CONFIDENT)
    doubtful = np.flatnonzero((confidence >= threshold) & ~voiced)
    x = samples.astype(np.float64)
    for i in doubtful:
        voiced[i] = periodicity(x, float(times_s[i]), float(f0_hz[i])) >= MIN_PERIODICITY
    return voiced


def periodicity(x: FloatArray, centre_s: float, f0_hz: float) -> float:
    """Normalised autocorrelation in [-1, 1] of 16 kHz `x` `[T]` at lag 1/`f0_hz` (fractional, by linear
    interpolation) over a window of max(`PERIODICITY_S`, two periods) centred on `centre_s`; 0 where the
    window does not fit or is silent."""
    lag = SAMPLE_RATE / f0_hz
    whole, frac = int(lag), lag - int(lag)
    n = max(int(PERIODICITY_S * SAMPLE_RATE), int(2 * lag))
    start = max(0, round(centre_s * SAMPLE_RATE) - n // 2)
    if start + n + whole + 1 > len(x):
        return 0.0
    u = x[start : start + n]
    v = (1 - frac) * x[start + whole : start + whole + n] + frac * x[
        start + whole + 1 : start + whole + n + 1
    ]
    energy = float(np.sqrt((u @ u) * (v @ v)))
    return float(u @ v) / energy if energy > 0 else 0.0


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
