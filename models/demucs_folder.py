"""HTDemucs weights on disk: a folder of `config.json` (model type, weights kind, revision, every
constructor argument) + `model.safetensors`, or a bag folder whose `config.json` names its member folders
and demucs' per-stem weights. Written by `Demucs.save_pretrained` and the offline converter, read back by
`Demucs.from_pretrained`; safetensors only.
"""

from __future__ import annotations

import inspect
import json
import logging
from fractions import Fraction
from pathlib import Path
from typing import Any, get_args

import torch
from demucs.apply import BagOfModels
from demucs.htdemucs import HTDemucs
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from models.types import ModelLoadingError, WeightsKind

logger = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
MODEL_TYPE = "htdemucs"
BAG_MODEL_TYPE = "htdemucs_bag"
# Saved in config.json, so a saved debug model is still reported as debug-random when loaded back.
WEIGHTS_CONFIG_KEY = "soundstage_weights"


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


def load_any(folder: Path) -> tuple[HTDemucs | BagOfModels, dict[str, Any]]:
    """A single HTDemucs folder or a bag folder (`model_type` says which)."""
    config = _read_config(folder)
    if config["model_type"] == MODEL_TYPE:
        return _load_folder(folder)
    members, weights = config.get("members"), config.get("weights")
    if not isinstance(members, list) or not isinstance(weights, list):
        raise ModelLoadingError(f"{folder / CONFIG_FILE}: a bag names its members and weights (lists)")
    return _build_bag(folder, [str(m) for m in members], weights), config
