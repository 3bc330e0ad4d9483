"""Voice activity detection with Silero VAD (ONNX, weights shipped in the `silero-vad` wheel).

`VoiceActivityDetector.detect` turns `Audio` into `SpeechRegion`s (seconds). The model scores one 32 ms
frame (512 samples at 16 kHz) at a time; regions come from those scores by hysteresis (enter at
`threshold`, leave below `threshold - 0.15` held for `min_silence_s`), as in silero's own
`get_speech_timestamps`.

We run the wheel's `silero_vad_16k_sequence.onnx` (the same network exported to score a block of frames
per call: bit-exact with the streaming model, a handful of calls instead of one per frame) directly on
onnxruntime, and never import the `silero_vad` package: its `__init__` imports torch and calls
`torch.set_num_threads(1)` for the whole process. The file is located through the wheel's metadata and
verified against the sha256 in its RECORD.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import math
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnxruntime

from infra.audio import Audio, resample, to_mono, validate
from infra.dsp.regions import SpeechRegion
from models.types import ModelInfo, ModelLoadingError

PACKAGE_URI = "pkg://silero-vad"
DISTRIBUTION = "silero-vad"
MODEL_FILE = "silero_vad_16k_sequence.onnx"
_PACKAGED_PATH = f"silero_vad/data/{MODEL_FILE}"
SAMPLE_RATE = 16000
FRAME_SAMPLES = 512  # 32 ms: the model's frame at 16 kHz
_CONTEXT_SAMPLES = 64  # each frame is scored with the previous frame's last 4 ms in front of it
_BLOCK_FRAMES = 512  # frames per ONNX call (~16 s of audio)
_STATE_SHAPE = (1, 1, 128)
_ONNX_IO = ({"input", "h", "c"}, {"speech_probs", "hn", "cn"})
# Silero's hysteresis: speech continues until the score drops this far below the entry threshold.
_EXIT_MARGIN = 0.15
_DEVICES = ("cpu", "auto")


def verified_package_file(distribution: str, relative_path: str) -> tuple[Path, str]:
    """The installed file `relative_path` of pip distribution `distribution` and its sha256 (hex).

    The package is not imported. The digest is checked against the wheel's RECORD; a missing package,
    file or record entry, or a digest mismatch, raises `ModelLoadingError`.
    """
    try:
        dist = importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError as e:
        raise ModelLoadingError(f"the pip package {distribution!r} is not installed") from e
    entry = next((f for f in dist.files or () if f.as_posix() == relative_path), None)
    if entry is None or entry.hash is None or entry.hash.mode != "sha256":
        raise ModelLoadingError(f"{distribution} {dist.version}: no sha256 RECORD entry for {relative_path}")
    path = Path(str(dist.locate_file(entry)))
    if not path.is_file():
        raise ModelLoadingError(f"{distribution} {dist.version}: {path} is listed but missing")
    digest = hashlib.sha256(path.read_bytes()).digest()
    expected = base64.urlsafe_b64decode(entry.hash.value + "=" * (-len(entry.hash.value) % 4))
    if digest != expected:
        raise ModelLoadingError(f"{distribution} {dist.version}: {path} does not match its RECORD sha256")
    return path, digest.hex()


class VoiceActivityDetector:
    """Silero VAD on onnxruntime's CPU provider; `detect` may be called from several threads at once."""

    def __init__(self, session: onnxruntime.InferenceSession, info: ModelInfo) -> None:
        self._session = session
        self.info = info

    @classmethod
    def from_pretrained(
        cls, uri: str = PACKAGE_URI, *, device: str = "cpu", cache_dir: Path | None = None
    ) -> VoiceActivityDetector:
        """Load Silero VAD from `pkg://silero-vad` (the wheel's own ONNX file) or a local folder holding
        `silero_vad_16k_sequence.onnx`.

        The model (~300k parameters) runs on ONNX Runtime's CPU provider: `device` must be `cpu` or
        `auto`. `cache_dir` is unused (packaged weights need no cache). Nothing is downloaded.
        """
        if device not in _DEVICES:
            raise ValueError(f"device {device!r} is not supported by silero-vad; choose one of {_DEVICES}")
        if uri == PACKAGE_URI:
            path, _ = verified_package_file(DISTRIBUTION, _PACKAGED_PATH)
            info = ModelInfo("silero-vad", importlib.metadata.version(DISTRIBUTION), "pretrained")
        else:
            path = Path(uri).expanduser() / MODEL_FILE
            if "://" in uri or not path.is_file():
                raise ModelLoadingError(
                    f"cannot load Silero VAD from {uri!r}: tried the packaged model ({PACKAGE_URI}, only "
                    f"for that exact URI) and the local file {path} (not found)"
                )
            info = ModelInfo(
                "silero-vad", f"sha256:{hashlib.sha256(path.read_bytes()).hexdigest()[:12]}", "pretrained"
            )
        return cls(_open_session(path), info)

    @property
    def sample_rate(self) -> int:
        """The rate the model reads (16000 Hz); `detect` resamples any other rate."""
        return SAMPLE_RATE

    @property
    def channels(self) -> int:
        """The model reads mono; `detect` averages the channels."""
        return 1

    def speech_probabilities(self, audio: Audio) -> npt.NDArray[np.float32]:
        """The model's speech score in [0, 1] for each 32 ms frame of `audio` `[C, T]`: `[ceil(T16 / 512)]`
        where T16 is the length at 16 kHz (the last frame is zero-padded)."""
        samples = resample(to_mono(validate(audio)), SAMPLE_RATE).samples[0]
        h = np.zeros(_STATE_SHAPE, np.float32)
        c = np.zeros(_STATE_SHAPE, np.float32)
        scores = []
        for block in _frame_blocks(samples):
            probs, h, c = self._session.run(["speech_probs", "hn", "cn"], {"input": block, "h": h, "c": c})
            scores.append(probs.reshape(-1))
        return np.concatenate(scores).astype(np.float32)

    def detect(
        self,
        audio: Audio,
        *,
        threshold: float = 0.5,
        min_speech_s: float = 0.25,
        min_silence_s: float = 0.3,
        pad_s: float = 0.05,
    ) -> list[SpeechRegion]:
        """Speech regions of `audio` `[C, T]` (any rate, mixed to mono, resampled to 16 kHz), in order.

        threshold: a frame scoring at least this (in (0, 1), default 0.5) starts speech; speech ends where
            the score stays below `threshold - 0.15` for `min_silence_s` seconds (default 0.3); shorter
            dips do not split a region.
        min_speech_s: regions shorter than this (seconds, default 0.25, before padding) are dropped.
        pad_s: each region is widened by this much on both sides (seconds, default 0.05), within the
            audio; where two padded regions would overlap, the gap between them is split in half.
        Times have the model's 32 ms resolution.
        """
        _check_settings(threshold, min_speech_s, min_silence_s, pad_s)
        duration = audio.duration_s
        frame_s = FRAME_SAMPLES / SAMPLE_RATE
        spans = _hysteresis(self.speech_probabilities(audio), threshold, math.ceil(min_silence_s / frame_s))
        raw = [(i * frame_s, min(j * frame_s, duration)) for i, j in spans]
        kept = [(s, e) for s, e in raw if e - s >= min_speech_s]
        return _pad(kept, pad_s, duration)


def _check_settings(threshold: float, min_speech_s: float, min_silence_s: float, pad_s: float) -> None:
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold must be within (0, 1), got {threshold}")
    for name, value in (("min_speech_s", min_speech_s), ("min_silence_s", min_silence_s), ("pad_s", pad_s)):
        if not (math.isfinite(value) and value >= 0.0):
            raise ValueError(f"{name} must be a finite number of seconds >= 0, got {value}")


def _hysteresis(
    scores: npt.NDArray[np.float32], threshold: float, min_silence_frames: int
) -> list[tuple[int, int]]:
    """Frame spans `[start, end)` of speech: enter at `threshold`, leave after `min_silence_frames`
    consecutive frames below `threshold - 0.15` (the end is the first of those frames)."""
    exit_below = max(threshold - _EXIT_MARGIN, 0.01)
    spans: list[tuple[int, int]] = []
    start: int | None = None
    quiet_since: int | None = None
    for i, score in enumerate(scores):
        if start is None:
            if score >= threshold:
                start, quiet_since = i, None
            continue
        if score >= threshold:
            quiet_since = None
        elif score < exit_below:
            quiet_since = i if quiet_since is None else quiet_since
            if i + 1 - quiet_since >= max(min_silence_frames, 1):
                spans.append((start, quiet_since))
                start = quiet_since = None
    if start is not None:
        spans.append((start, len(scores) if quiet_since is None else quiet_since))
    return spans


def _pad(spans: list[tuple[float, float]], pad_s: float, duration: float) -> list[SpeechRegion]:
    """Widen each span by `pad_s` within [0, duration]; neighbours closer than 2 * pad_s meet halfway."""
    regions = []
    for k, (start, end) in enumerate(spans):
        lo = max(0.0, start - pad_s) if k == 0 else max(start - pad_s, (spans[k - 1][1] + start) / 2)
        hi = (
            min(duration, end + pad_s)
            if k == len(spans) - 1
            else min(end + pad_s, (end + spans[k + 1][0]) / 2)
        )
        regions.append(SpeechRegion(round(lo, 4), round(hi, 4)))
    return regions


def _frame_blocks(samples: npt.NDArray[np.float32]) -> list[npt.NDArray[np.float32]]:
    """`[F, 64 + 512]` blocks of at most `_BLOCK_FRAMES` frames, each frame with its left context."""
    count = max(1, math.ceil(samples.size / FRAME_SAMPLES))
    frames = np.zeros((count, FRAME_SAMPLES), np.float32)
    frames.reshape(-1)[: samples.size] = samples
    context = np.zeros((count, _CONTEXT_SAMPLES), np.float32)
    context[1:] = frames[:-1, -_CONTEXT_SAMPLES:]
    framed = np.concatenate([context, frames], axis=1)
    return [framed[i : i + _BLOCK_FRAMES] for i in range(0, count, _BLOCK_FRAMES)]


def _open_session(path: Path) -> onnxruntime.InferenceSession:
    options = onnxruntime.SessionOptions()
    # The network is tiny and sequential: one thread per call; concurrency comes from callers.
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own non-exported exception types
        raise ModelLoadingError(f"{path} is not a loadable ONNX model: {e}") from e
    names = ({i.name for i in session.get_inputs()}, {o.name for o in session.get_outputs()})
    if names != _ONNX_IO:
        raise ModelLoadingError(f"{path} has inputs/outputs {names}, not silero-vad sequence's {_ONNX_IO}")
    return session
