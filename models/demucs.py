"""HTDemucs music source separation (demucs 4.1): load (debug / converted folder / bag of models),
separate, save, convert.

A bag of models (htdemucs_ft: four HTDemucs, each the best at one stem) is a folder whose `config.json`
has `model_type: htdemucs_bag`, the member folder names and demucs' per-stem weights, with one member
folder (itself an HTDemucs folder) per model; it runs through demucs' `BagOfModels`, as demucs does.

Weights are read from safetensors only. A released demucs `.th` checkpoint is a pickle: `convert_checkpoint`
turns it into a folder (`config.json` + `model.safetensors`) once, offline, and is the only code in the
project that unpickles. demucs' own audio helpers (julius, ffmpeg) are not used: resampling is
`infra.audio.resample` (soxr); nothing here needs torchaudio.
"""

from __future__ import annotations

import inspect
import json
import logging
from fractions import Fraction
from pathlib import Path
from typing import Any, cast, get_args

import numpy as np
import torch
from demucs.apply import BagOfModels, apply_model
from demucs.htdemucs import HTDemucs
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from infra.audio import Audio, resample, validate
from models.common import DEBUG_URI, resolve_device
from models.types import ModelInfo, ModelLoadingError, WeightsKind

logger = logging.getLogger(__name__)

STEMS_4 = ("drums", "bass", "other", "vocals")
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
MODEL_TYPE = "htdemucs"
BAG_MODEL_TYPE = "htdemucs_bag"
# Saved in config.json, so a saved debug model is still reported as debug-random when loaded back.
WEIGHTS_CONFIG_KEY = "soundstage_weights"
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


def build_htdemucs(kwargs: dict[str, Any]) -> HTDemucs:
    """An HTDemucs from complete constructor kwargs, in eval mode (a training forward mutates `segment`)."""
    return HTDemucs(**kwargs).eval()


def complete_kwargs(args: tuple[Any, ...], kwargs: dict[str, Any], *, origin: str) -> dict[str, Any]:
    """All HTDemucs constructor arguments, defaults filled in, so config.json pins the architecture.

    Keys the installed HTDemucs does not know are dropped with a warning, as `demucs.states.load_model` does.
    """
    signature = inspect.signature(HTDemucs)
    unknown = sorted(set(kwargs) - set(signature.parameters))
    if unknown:
        logger.warning(
            "dropping HTDemucs arguments unknown to demucs", extra={"origin": origin, "keys": unknown}
        )
    bound = signature.bind(*args, **{k: v for k, v in kwargs.items() if k not in unknown})
    bound.apply_defaults()
    return dict(bound.arguments)


def to_json(value: Any) -> Any:
    """JSON form of constructor kwargs; a `Fraction` (HTDemucs `segment`) is encoded as demucs.hf does."""
    if isinstance(value, Fraction):
        return {"_type": "fraction", "numerator": value.numerator, "denominator": value.denominator}
    if isinstance(value, dict):
        return {str(key): to_json(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [to_json(item) for item in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    raise TypeError(f"cannot store a {type(value).__name__} ({value!r}) in {CONFIG_FILE}")


def _from_json(value: Any) -> Any:
    if isinstance(value, dict):
        if value.get("_type") == "fraction":
            return Fraction(value["numerator"], value["denominator"])
        return {key: _from_json(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_from_json(item) for item in value]
    return value


def write_folder(
    path: Path,
    kwargs: dict[str, Any],
    state: dict[str, torch.Tensor],
    weights: WeightsKind,
    revision: str | None,
) -> None:
    """`config.json` (model type, weights kind, revision, constructor kwargs) + `model.safetensors`."""
    config = {"model_type": MODEL_TYPE, WEIGHTS_CONFIG_KEY: weights, "revision": revision, "kwargs": kwargs}
    text = json.dumps(to_json(config), indent=2)
    path.mkdir(parents=True, exist_ok=True)
    save_file({key: tensor.detach().cpu().contiguous() for key, tensor in state.items()}, path / WEIGHTS_FILE)
    (path / CONFIG_FILE).write_text(text + "\n")


def _read_config(folder: Path) -> dict[str, Any]:
    try:
        config = _from_json(json.loads((folder / CONFIG_FILE).read_text()))
    except (OSError, ValueError) as e:
        raise ModelLoadingError(f"could not read {folder / CONFIG_FILE}: {e}") from e
    if not isinstance(config, dict) or config.get("model_type") not in {MODEL_TYPE, BAG_MODEL_TYPE}:
        raise ModelLoadingError(
            f"{folder / CONFIG_FILE} does not describe an HTDemucs "
            f"(model_type {MODEL_TYPE!r} or {BAG_MODEL_TYPE!r})"
        )
    kind = config.get(WEIGHTS_CONFIG_KEY, "pretrained")
    if kind not in get_args(WeightsKind):
        raise ModelLoadingError(f"config {WEIGHTS_CONFIG_KEY}={kind!r} is not one of {get_args(WeightsKind)}")
    return {**config, WEIGHTS_CONFIG_KEY: kind}


def _load_folder(folder: Path) -> tuple[HTDemucs, dict[str, Any]]:
    """Model and config from a folder written by `save_pretrained` or `convert_checkpoint`."""
    config = _read_config(folder)
    if config["model_type"] != MODEL_TYPE:
        raise ModelLoadingError(f"{folder} holds a {config['model_type']}, not one HTDemucs")
    try:
        model = build_htdemucs(dict(config["kwargs"]))
        # Released checkpoints keep float16 tensors; load_state_dict casts them to the float32 parameters.
        model.load_state_dict(load_file(folder / WEIGHTS_FILE))
    except (OSError, KeyError, TypeError, ValueError, AssertionError, RuntimeError, SafetensorError) as e:
        raise ModelLoadingError(
            f"could not load HTDemucs from {folder} ({CONFIG_FILE} + {WEIGHTS_FILE}, safetensors only): {e}"
        ) from e
    return model, config


def write_bag_folder(
    path: Path, members: list[str], weights: list[list[float]], kind: WeightsKind, revision: str | None
) -> None:
    """The bag's `config.json` in `path`, which already holds one HTDemucs folder per name in `members`.

    `weights[i][s]`: how much member `i` contributes to stem `s` (demucs' bag `weights`; htdemucs_ft takes
    each stem from one member). Raises `ModelLoadingError` when the members do not form a bag.
    """
    _build_bag(path, members, weights)  # the bag must load as it is written
    config = {
        "model_type": BAG_MODEL_TYPE,
        WEIGHTS_CONFIG_KEY: kind,
        "revision": revision,
        "members": members,
        "weights": weights,
    }
    (path / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")


def _build_bag(folder: Path, members: list[str], weights: list[list[float]]) -> BagOfModels:
    if not members or any("/" in name or name.startswith(".") for name in members):
        raise ModelLoadingError(f"bag at {folder}: members must be plain folder names, got {members!r}")
    models = [_load_folder(folder / name)[0] for name in members]
    sources = models[0].sources
    if len(weights) != len(models) or any(len(row) != len(sources) for row in weights):
        raise ModelLoadingError(
            f"bag at {folder}: weights must be {len(models)} rows of {len(sources)} (one per stem), "
            f"got {weights!r}"
        )
    odd = [
        name
        for name, model in zip(members, models, strict=True)
        if (model.sources, model.samplerate, model.audio_channels)
        != (sources, models[0].samplerate, models[0].audio_channels)
    ]
    if odd:
        raise ModelLoadingError(
            f"bag at {folder}: members {odd} differ from {members[0]} in stems, sample rate or channels"
        )
    return BagOfModels(list[Any](models), weights).eval()


def _load_any(folder: Path) -> tuple[HTDemucs | BagOfModels, dict[str, Any]]:
    """A single HTDemucs folder or a bag folder (`model_type` says which)."""
    config = _read_config(folder)
    if config["model_type"] == MODEL_TYPE:
        return _load_folder(folder)
    members, weights = config.get("members"), config.get("weights")
    if not isinstance(members, list) or not isinstance(weights, list):
        raise ModelLoadingError(f"{folder / CONFIG_FILE}: a bag names its members and weights (lists)")
    return _build_bag(folder, [str(m) for m in members], weights), config


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
            model, config = _load_any(folder)
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
