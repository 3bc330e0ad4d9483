"""HTDemucs music source separation (demucs 4.1): load (debug / converted folder / bag of models),
separate, save, convert. The folder format (one model or a bag) is `demucs_folder.py`'s.

A bag of models (htdemucs_ft: four HTDemucs, each the best at one stem) is a folder whose `config.json`
has `model_type: htdemucs_bag`, the member folder names and demucs' per-stem weights, with one member
folder (itself an HTDemucs folder) per model; it runs through demucs' `BagOfModels`, as demucs does.

Weights are read from safetensors only. A released demucs `.th` checkpoint is a pickle: `convert_checkpoint`
turns it into a folder (`config.json` + `model.safetensors`) once, offline, and is the only code in the
project that unpickles. demucs' own audio helpers (julius, ffmpeg) are not used: resampling is
`infra.audio.resample` (soxr); nothing here needs torchaudio.
"""

from __future__ import annotations

import logging
from fractions import Fraction
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from demucs.apply import BagOfModels, apply_model
from demucs.htdemucs import HTDemucs

from infra.audio import Audio, resample, validate
from models.common import DEBUG_URI, resolve_device
from models.demucs_folder import (
    CONFIG_FILE,
    WEIGHTS_CONFIG_KEY,
    WEIGHTS_FILE,
    build_htdemucs,
    complete_kwargs,
    load_any,
    write_bag_folder,
    write_folder,
)
from models.types import ModelInfo, ModelLoadingError

logger = logging.getLogger(__name__)

STEMS_4 = ("drums", "bass", "other", "vocals")
# demucs' own default (`apply_model`, the `demucs` CLI): neighbouring chunks overlap by a quarter chunk.
SPLIT_OVERLAP = 0.25
_DEBUG_TORCH_SEED = 0
_STD_FLOOR = 1e-8  # as demucs.api: keeps silence finite when the input is standardised


def _debug_kwargs() -> dict[str, Any]:
    """A tiny HTDemucs (0.38 M parameters): 8 channels (released: 48), one self- and one
    cross-attention layer (released: 5), 44.1 kHz stereo, 4 stems; a 2 s training segment (released:
    7.8 s), so a few seconds of audio already takes `apply_model`'s split-and-overlap path."""
    return {
        "sources": list(STEMS_4),
        "audio_channels": 2,
        "samplerate": 44100,
        "segment": Fraction(2),
        "channels": 8,
        "dconv_comp": 4,  # the default 8 would leave the residual branch of 8 channels with 1 channel
        "t_layers": 2,
        "t_heads": 2,
        "t_hidden_scale": 1.0,
    }


def _build_debug() -> HTDemucs:
    """Random-init debug model, the same weights on every call (fixed seed, global RNG left untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_DEBUG_TORCH_SEED)
        return build_htdemucs(_debug_kwargs())


def _to_model_layout(audio: Audio, sample_rate: int, channels: int) -> torch.Tensor:
    """`[channels, T']` float32 at `sample_rate`: resampled (soxr), then channels matched like demucs'
    `convert_audio_channels`: mono is copied to every channel, extra channels are dropped (the first
    `channels` kept, i.e. front left/right), several channels are averaged for a mono model."""
    samples = resample(audio, sample_rate).samples
    if samples.shape[0] == channels:
        matched = samples
    elif channels == 1:
        matched = samples.mean(axis=0, keepdims=True)
    elif samples.shape[0] == 1:
        matched = np.repeat(samples, channels, axis=0)
    elif samples.shape[0] > channels:
        matched = samples[:channels]
    else:
        raise ValueError(f"cannot map {samples.shape[0]} channels onto a {channels}-channel model")
    return torch.from_numpy(np.ascontiguousarray(matched, dtype=np.float32))


class Demucs:
    """Source separation with HTDemucs: one `Audio` `[C, T]` per stem at `sample_rate` Hz."""

    def __init__(self, model: HTDemucs | BagOfModels, info: ModelInfo, device: str) -> None:
        self._model = model.to(device).eval()
        self._info = info
        self.device = device

    @classmethod
    def from_pretrained(cls, uri: str, *, device: str = "auto", cache_dir: Path | None = None) -> Demucs:
        """Load `uri`: "debug" (tiny random HTDemucs, no files), a local folder holding `config.json` +
        `model.safetensors` (from `save_pretrained` or `convert_checkpoint`), or a bag folder (from
        `convert_bag`: a bag `config.json` + one such folder per member).

        `cache_dir` is accepted for the common wrapper interface and unused: hub and S3 URIs are resolved
        into a local folder by the infra resolver. Weights stay float32 on every device (the STFT and the
        Wiener/mask step are not half-precision safe). Raises `ModelLoadingError` naming what was tried.
        """
        device = resolve_device(device)
        model: HTDemucs | BagOfModels
        if uri == DEBUG_URI:
            model = _build_debug()
            info = ModelInfo(model_id=DEBUG_URI, revision=None, weights="debug-random")
        else:
            folder = Path(uri).expanduser()
            if not (folder / CONFIG_FILE).is_file():
                raise ModelLoadingError(
                    f"no HTDemucs at {uri!r}: tried {DEBUG_URI!r} and a local folder with {CONFIG_FILE} + "
                    f"{WEIGHTS_FILE} ({folder / CONFIG_FILE} missing); a released demucs .th checkpoint must "
                    "first be converted with `soundstage models convert` (models/convert/demucs.py)"
                )
            model, config = load_any(folder)
            info = ModelInfo(
                model_id=uri, revision=config.get("revision"), weights=config[WEIGHTS_CONFIG_KEY]
            )
        logger.info(
            "loaded HTDemucs", extra={"model": info.model_id, "weights": info.weights, "device": device}
        )
        return cls(model, info, device)

    @property
    def sample_rate(self) -> int:
        """Input and stem sample rate in Hz (44100 for the released checkpoints)."""
        return int(self._model.samplerate)

    @property
    def channels(self) -> int:
        """Stem channels (2: the released checkpoints are stereo)."""
        return int(self._model.audio_channels)

    @property
    def sources(self) -> tuple[str, ...]:
        """Stem names in model order, e.g. `STEMS_4` = ("drums", "bass", "other", "vocals")."""
        return tuple(self._model.sources)

    @property
    def segment_s(self) -> float:
        """The training segment in seconds (7.8 for released htdemucs, 2.0 for debug): the chunk length
        `separate` runs the model on; longer audio is split into overlapping chunks of this length (a bag:
        the shortest member's, as demucs' `apply_model` chunks a bag)."""
        if isinstance(self._model, BagOfModels):
            return float(self._model.max_allowed_segment)
        return float(self._model.segment)

    @property
    def info(self) -> ModelInfo:
        return self._info

    def separate(self, audio: Audio, *, shifts: int = 0) -> dict[str, Audio]:
        """Stems keyed by name (model order), each `[channels, T']` float32 at `sample_rate` Hz, where T' is
        the input's length after resampling to `sample_rate`.

        The input is resampled (soxr) and matched to the model's channels: mono is copied to both channels,
        so mono in gives stereo stems, exactly those of the duplicated stereo mix (downmix them with
        `infra.audio.to_mono` if mono is wanted); channels beyond the model's are dropped. As in
        `demucs.api`, the mix is standardised by its mono mean/std before the model and the stems scaled
        back after. `demucs.apply.apply_model` runs on the whole clip with `split=True`: chunks of
        `segment_s` overlapping by `SPLIT_OVERLAP`, blended with triangular weights. `shifts` > 0 averages
        that many random time shifts of up to 0.5 s (the demucs "shift trick", drawn from Python's
        `random`, so not bit-reproducible); 0 (default) is deterministic.
        Raises `AudioError` for empty or non-finite audio, `ValueError` for negative `shifts`.
        """
        if shifts < 0:
            raise ValueError(f"shifts must be >= 0, got {shifts!r}")
        mix = _to_model_layout(validate(audio), self.sample_rate, self.channels)
        reference = mix.mean(dim=0)
        mean = reference.mean()
        std = (reference.std() if reference.numel() > 1 else torch.zeros(())) + _STD_FLOOR
        with torch.inference_mode():
            estimates = apply_model(
                self._model,
                ((mix - mean) / std)[None],
                shifts=shifts,
                split=True,
                overlap=SPLIT_OVERLAP,
                device=self.device,
            )
        stems = (estimates[0] * std + mean).cpu().numpy()
        return {
            name: Audio(np.ascontiguousarray(stems[index], dtype=np.float32), self.sample_rate)
            for index, name in enumerate(self.sources)
        }

    def save_pretrained(self, path: Path) -> None:
        """Write `config.json` (kwargs, weights kind, revision) and `model.safetensors` into `path`; a bag
        writes one such folder per member and the bag's `config.json`."""
        if isinstance(self._model, BagOfModels):
            names = [f"member-{i}" for i in range(len(self._model.models))]
            for name, member in zip(names, self._model.models, strict=True):
                _save_htdemucs(cast(HTDemucs, member), path / name, self._info)
            write_bag_folder(path, names, self._model.weights, self._info.weights, self._info.revision)
            return
        _save_htdemucs(self._model, path, self._info)


def _save_htdemucs(model: HTDemucs, path: Path, info: ModelInfo) -> None:
    # Recorded by demucs' `capture_init`; nn.Module.__getattr__ hides its type from mypy.
    args, kwargs = cast(tuple[tuple[Any, ...], dict[str, Any]], model._init_args_kwargs)
    complete = complete_kwargs(tuple(args), dict(kwargs), origin=str(path))
    write_folder(path, complete, model.state_dict(), info.weights, info.revision)
