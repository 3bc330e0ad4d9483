"""Speaker embeddings with Resemblyzer's voice encoder (GE2E, 256-d; weights shipped in its wheel).

`SpeakerEncoder.embed` maps speech to one L2-normalised 256-d vector (cosine similarity compares voices);
`embed_windows` embeds fixed-length windows inside given speech regions, the input of diarization.

The network (a 3-layer LSTM over 40-band mel power frames, a linear layer, ReLU, L2 norm: Resemblyzer's
`VoiceEncoder`) is rebuilt here and only its weights come from the wheel, because the `resemblyzer`
package is not usable as a library:
- `import resemblyzer` fails: its `audio` module imports `webrtcvad`, whose 2.0.10 release imports
  `pkg_resources` (gone from current setuptools).
- its `preprocess_wav` trims silence with webrtcvad in aggressive mode (3), which drops speech frames
  and silently shortens the audio, so windows would no longer line up with the input's time axis.
  Finding speech is the VAD's job (`models.vad`); this module embeds exactly the audio it is given.
  Resemblyzer's volume normalisation (raise quiet input to -30 dBFS RMS, never lower it) is kept: the
  network reads mel power, not log-mel, so level matters.
- its loader `torch.load`s the checkpoint unrestricted and prints to stdout.
The front end (librosa's mel spectrogram as Resemblyzer calls it) is reimplemented in numpy (librosa
spends ~2 s in numba on its first call); the network runs in `torch.nn.LSTM`.
CPU threads: the LSTM is 151 small sequential steps per layer, each ending in a thread barrier. On a
busy 2-core host, 24 windows took 4-13 s with 2 intra-op threads and 0.15 s with one. The thread count
is process-wide state, so this wrapper leaves it alone: the process owner sets it (Ray sets
OMP_NUM_THREADS from a replica's `num_cpus`, 1 by default; tests set `torch.set_num_threads(1)`).
Weights: `pkg://resemblyzer` reads the wheel's `pretrained.pt` (verified against the wheel's RECORD
sha256) with `torch.load(weights_only=True)`, PyTorch's restricted unpickler that only rebuilds tensors
and plain containers; a local folder must hold `model.safetensors` with the same parameter names
(`lstm.*`, `linear.*`), the format for weights that come from storage (ARCHITECTURE.md, conventions).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from infra.audio import Audio, resample, to_mono, validate
from infra.dsp.regions import SpeechRegion
from models.common import resolve_device
from models.types import ModelInfo, ModelLoadingError
from models.vad import verified_package_file

PACKAGE_URI = "pkg://resemblyzer"
DISTRIBUTION = "Resemblyzer"
_PACKAGED_PATH = "resemblyzer/pretrained.pt"
SAFETENSORS_FILE = "model.safetensors"
SAMPLE_RATE = 16000
EMBEDDING_DIM = 256
# Resemblyzer's front end: 25 ms windows every 10 ms, 40 mel bands (power, not log).
_N_FFT, _HOP, _N_MELS = 400, 160, 40
_HIDDEN, _LAYERS = 256, 3
PARAMETER_SHAPES = {
    **{
        f"lstm.{kind}_l{layer}": shape
        for layer in range(_LAYERS)
        for kind, shape in (
            ("weight_ih", (4 * _HIDDEN, _N_MELS if layer == 0 else _HIDDEN)),
            ("weight_hh", (4 * _HIDDEN, _HIDDEN)),
            ("bias_ih", (4 * _HIDDEN,)),
            ("bias_hh", (4 * _HIDDEN,)),
        )
    },
    "linear.weight": (EMBEDDING_DIM, _HIDDEN),
    "linear.bias": (EMBEDDING_DIM,),
}
# Long audio is embedded as the mean of 1.6 s partials taken 1.3 times a second (Resemblyzer's
# `embed_utterance`; the network was trained on 1.6 s partials).
_PARTIAL_S = 1.6
_PARTIAL_RATE = 1.3
_TARGET_DBFS = -30.0
# The shortest window worth embedding: GE2E embeddings of less than ~0.5 s of speech are mostly noise.
MIN_WINDOW_S = 0.5
_DEVICES = ("auto", "cpu", "cuda")

FloatArray = npt.NDArray[np.float32]


class SpeakerEncoder:
    """Resemblyzer's voice encoder; any `Audio` in (mixed to mono, resampled to 16 kHz), `[256]` out.

    Stateless after loading: `embed` and `embed_windows` may be called from several threads at once.
    """

    def __init__(self, weights: Mapping[str, FloatArray], info: ModelInfo, device: str = "cpu") -> None:
        self._weights = dict(weights)
        self.info = info
        self.device = device
        self._network = _torch_network(self._weights, device)

    @classmethod
    def from_pretrained(
        cls, uri: str = PACKAGE_URI, *, device: str = "auto", cache_dir: Path | None = None
    ) -> SpeakerEncoder:
        """Load the encoder from `pkg://resemblyzer` (the wheel's weights) or a local folder holding
        `model.safetensors` (see the module docstring).

        device: `auto` (CUDA when visible), `cpu`, `cuda` or `cuda:N`. `cache_dir` is unused
        (nothing is downloaded). Raises `ModelLoadingError` naming what was tried.
        """
        if device not in _DEVICES and not device.startswith("cuda:"):
            raise ValueError(f"device {device!r} is not supported; choose one of {_DEVICES} or cuda:N")
        if uri == PACKAGE_URI:
            path, _ = verified_package_file(DISTRIBUTION, _PACKAGED_PATH)
            weights = _packaged_weights(path)
            info = ModelInfo("resemblyzer", importlib.metadata.version(DISTRIBUTION), "pretrained")
        else:
            path = Path(uri).expanduser() / SAFETENSORS_FILE
            if "://" in uri or not path.is_file():
                raise ModelLoadingError(
                    f"cannot load the Resemblyzer encoder from {uri!r}: tried the packaged weights "
                    f"({PACKAGE_URI}, only for that exact URI) and the local file {path} (not found)"
                )
            weights = _safetensors_weights(path)
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            info = ModelInfo("resemblyzer", f"sha256:{digest[:12]}", "pretrained")
        return cls(_checked(weights), info, resolve_device(device))

    @property
    def sample_rate(self) -> int:
        """The rate the network reads (16000 Hz); inputs at other rates are resampled."""
        return SAMPLE_RATE

    @property
    def channels(self) -> int:
        return 1

    @property
    def dim(self) -> int:
        """Embedding size: 256."""
        return EMBEDDING_DIM

    def weights(self) -> dict[str, FloatArray]:
        """A copy of the parameters by name (float32 numpy), e.g. for `safetensors.numpy.save_file`."""
        return {name: value.copy() for name, value in self._weights.items()}

    def embed(self, audio: Audio) -> FloatArray:
        """The `[256]` float32 L2-normalised embedding of `audio` `[C, T]`, all of it (give it speech).

        Audio up to 1.6 s is one pass of the network; longer audio is the normalised mean over 1.6 s
        partials taken 1.3 times a second, the last one ending at the end (Resemblyzer's utterance
        embedding, without its zero padding). Raises `AudioError` for empty or non-finite audio.
        """
        wav = _normalize_volume(resample(to_mono(validate(audio)), SAMPLE_RATE).samples[0])
        duration = wav.size / SAMPLE_RATE
        spans = _spans(0.0, duration, _PARTIAL_S, 1.0 / _PARTIAL_RATE) or [(0.0, duration)]
        partials = self._embed_segments([wav[_sample(s) : _sample(e)] for s, e in spans])
        return _unit(partials.mean(axis=0))

    def embed_windows(
        self,
        audio: Audio,
        regions: Sequence[SpeechRegion],
        *,
        window_s: float = 1.5,
        hop_s: float = 0.75,
    ) -> tuple[FloatArray, list[tuple[float, float]]]:
        """Embeddings `[N, 256]` of windows of `audio` lying inside `regions`, with their `(start, end)`
        times in seconds (in time order).

        Each region gets windows of `window_s` seconds (default 1.5) every `hop_s` (default 0.75), the
        last one ending at the region's end; a region shorter than `window_s` gets one window, itself,
        and one shorter than `MIN_WINDOW_S` (0.5 s) none. Regions are clipped to the audio. Each window
        is embedded on its own, as `embed` would embed it (volume normalised per window).
        """
        if not (window_s >= MIN_WINDOW_S and 0.0 < hop_s <= window_s):
            raise ValueError(
                f"need window_s >= {MIN_WINDOW_S} and 0 < hop_s <= window_s, got {window_s=}, {hop_s=}"
            )
        wav = resample(to_mono(validate(audio)), SAMPLE_RATE).samples[0]
        windows = [
            w
            for r in sorted(regions, key=lambda r: r.start)
            for w in _spans(r.start, min(r.end, audio.duration_s), window_s, hop_s)
        ]
        if not windows:
            return np.zeros((0, EMBEDDING_DIM), np.float32), []
        segments = [_normalize_volume(wav[_sample(s) : _sample(e)]) for s, e in windows]
        return self._embed_segments(segments), windows

    def _embed_segments(self, segments: Sequence[FloatArray]) -> FloatArray:
        """`[N, 256]` unit embeddings of 16 kHz waves, one network pass each (batched by length)."""
        mels = [_mel_frames(s) for s in segments]
        out = np.zeros((len(mels), EMBEDDING_DIM), np.float32)
        for length in {m.shape[0] for m in mels}:
            index = [i for i, m in enumerate(mels) if m.shape[0] == length]
            out[index] = self._forward(np.stack([mels[i] for i in index]))
        return out

    def _forward(self, mels: FloatArray) -> FloatArray:
        """`[B, frames, 40]` mel power -> `[B, 256]` unit embeddings."""
        import torch

        with torch.inference_mode():
            batch = torch.from_numpy(np.ascontiguousarray(mels, np.float32)).to(self.device)
            return np.asarray(self._network(batch).float().cpu().numpy(), np.float32)


def _torch_network(weights: Mapping[str, FloatArray], device: str) -> Any:
    import torch
    from torch import nn

    class VoiceEncoderNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lstm = nn.LSTM(_N_MELS, _HIDDEN, _LAYERS, batch_first=True)
            self.linear = nn.Linear(_HIDDEN, EMBEDDING_DIM)

        def forward(self, mels: torch.Tensor) -> torch.Tensor:
            _, (hidden, _) = self.lstm(mels)
            raw = torch.relu(self.linear(hidden[-1]))
            return raw / torch.linalg.vector_norm(raw, dim=1, keepdim=True).clamp_min(1e-12)

    network = VoiceEncoderNet()
    network.load_state_dict({name: torch.from_numpy(value) for name, value in weights.items()})
    return network.to(torch.device(device)).eval()


def _spans(start: float, end: float, window_s: float, hop_s: float) -> list[tuple[float, float]]:
    """Windows of `window_s` every `hop_s` over [start, end], the last one ending at `end`; the whole
    span when it is shorter than `window_s`; none when it is shorter than `MIN_WINDOW_S`."""
    length = end - start
    if length < MIN_WINDOW_S:
        return []
    if length <= window_s:
        return [(start, end)]
    count = math.ceil((length - window_s) / hop_s - 1e-9) + 1
    starts = [start + k * hop_s for k in range(count - 1)] + [end - window_s]
    return [(round(s, 4), round(s + window_s, 4)) for s in starts]


def _sample(seconds: float) -> int:
    return round(seconds * SAMPLE_RATE)


def _mel_frames(wav: FloatArray) -> FloatArray:
    """`[1 + T // 160, 40]` mel power spectrogram of 16 kHz `wav` `[T]`.

    librosa's `feature.melspectrogram` as Resemblyzer calls it (periodic Hann window of 400 samples,
    centred frames zero-padded at the ends, |STFT|^2, Slaney mel filters), in numpy: librosa spends
    seconds on its first call (numba) and is not otherwise needed.
    """
    padded = np.pad(wav.astype(np.float32), _N_FFT // 2)
    count = 1 + wav.size // _HOP
    frames = np.lib.stride_tricks.sliding_window_view(padded, _N_FFT)[::_HOP][:count]
    power = np.abs(np.fft.rfft(frames * _HANN, axis=1)) ** 2
    return np.ascontiguousarray(power @ _MEL_FILTERS.T, np.float32)


def _hz_to_mel(hz: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Slaney's mel scale: linear below 1 kHz (3 mels per 200 Hz), logarithmic above."""
    log_part = 15.0 + np.log(np.maximum(hz, 1e-9) / 1000.0) * 27.0 / np.log(6.4)
    return np.where(hz < 1000.0, hz * 3.0 / 200.0, log_part)


def _mel_to_hz(mel: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    return np.where(mel < 15.0, mel * 200.0 / 3.0, 1000.0 * np.exp((mel - 15.0) * np.log(6.4) / 27.0))


def _slaney_mel_filters() -> npt.NDArray[np.float64]:
    """`[40, 201]` triangular filters from 0 Hz to 8 kHz, each normalised to unit area (Slaney)."""
    bins = np.linspace(0.0, SAMPLE_RATE / 2, _N_FFT // 2 + 1)
    top = float(_hz_to_mel(np.array(SAMPLE_RATE / 2)))
    edges = _mel_to_hz(np.linspace(0.0, top, _N_MELS + 2))
    rising = (bins[None, :] - edges[:-2, None]) / np.diff(edges)[:-1, None]
    falling = (edges[2:, None] - bins[None, :]) / np.diff(edges)[1:, None]
    triangles = np.maximum(0.0, np.minimum(rising, falling))
    return np.asarray(triangles * (2.0 / (edges[2:] - edges[:-2]))[:, None])


_HANN = (0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(_N_FFT) / _N_FFT)).astype(np.float32)
_MEL_FILTERS = _slaney_mel_filters().astype(np.float32)


def _normalize_volume(wav: FloatArray) -> FloatArray:
    """Raise `wav` to -30 dBFS RMS if it is quieter (never lower it), as Resemblyzer does."""
    rms = float(np.sqrt(np.mean(np.square(wav, dtype=np.float64))))
    if rms == 0.0:
        return wav
    gain_db = _TARGET_DBFS - 20.0 * math.log10(rms)
    return wav if gain_db <= 0 else (wav * np.float32(10.0 ** (gain_db / 20.0))).astype(np.float32)


def _unit(v: FloatArray) -> FloatArray:
    return (v / np.linalg.norm(v)).astype(np.float32)


def _packaged_weights(path: Path) -> dict[str, FloatArray]:
    import torch

    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        state = checkpoint["model_state"]
        return {name: state[name].float().numpy() for name in PARAMETER_SHAPES if name in state}
    except Exception as e:  # a corrupt pickle fails in many ways; the file was RECORD-verified
        raise ModelLoadingError(f"cannot read Resemblyzer weights {path}: {e}") from e


def _safetensors_weights(path: Path) -> dict[str, FloatArray]:
    from safetensors.numpy import load_file

    try:
        return {name: value.astype(np.float32) for name, value in load_file(str(path)).items()}
    except Exception as e:  # safetensors raises its own SafetensorError for malformed files
        raise ModelLoadingError(f"cannot read {path} as safetensors: {e}") from e


def _checked(weights: Mapping[str, FloatArray]) -> dict[str, FloatArray]:
    """The voice encoder's parameters from `weights` (extra entries ignored); wrong ones raise."""
    missing = sorted(set(PARAMETER_SHAPES) - set(weights))
    if missing:
        raise ModelLoadingError(f"Resemblyzer weights lack parameters {missing}")
    wrong = {n: weights[n].shape for n, shape in PARAMETER_SHAPES.items() if weights[n].shape != shape}
    if wrong:
        raise ModelLoadingError(f"Resemblyzer weights have unexpected shapes {wrong}")
    return {name: np.ascontiguousarray(weights[name], np.float32) for name in PARAMETER_SHAPES}
