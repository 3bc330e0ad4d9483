"""Conversion of released demucs `.th` checkpoints (pickles) into the safetensors folders `Demucs` loads.

The only place in the project that unpickles; run offline and once, by `soundstage models convert`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, cast

import torch
from demucs.htdemucs import HTDemucs

from models.demucs_folder import build_htdemucs, complete_kwargs, to_json, write_bag_folder, write_folder
from models.types import ModelLoadingError

logger = logging.getLogger(__name__)


def convert_checkpoint(checkpoint: Path, out_dir: Path) -> Path:
    """Convert a released demucs `.th` checkpoint of one HTDemucs into `out_dir` (`config.json` +
    `model.safetensors`, loadable by `Demucs.from_pretrained(str(out_dir))`); returns `out_dir`.

    SECURITY: a `.th` file is a pickle, and unpickling runs arbitrary code. This is the only place in the
    project that unpickles (`torch.load(weights_only=False)`). Run it only on trusted files (the checksummed
    releases from dl.fbaipublicfiles.com/demucs), once, offline (`soundstage models convert`); never on
    uploads or at serve time.

    The package is the dict written by `demucs.states.serialize_model` (`klass`, `args`, `kwargs`, `state`,
    ...). Only single HTDemucs models are supported here (a bag, e.g. htdemucs_ft: `convert_bag`);
    Demucs v2/v3 (HDemucs) and diffq-quantized checkpoints raise `ModelLoadingError`. Float16 tensors are
    kept as stored (loading casts them). The checkpoint's file stem (demucs' `sig-checksum`) is recorded
    as the revision.
    """
    if checkpoint.suffix in {".yaml", ".yml"}:
        raise ModelLoadingError(
            f"{checkpoint} is a bag of models: convert its .th checkpoints together (`convert_bag`, "
            "`soundstage models fetch htdemucs_ft`)"
        )
    package = _unpickle_trusted(checkpoint)
    kwargs, state = _htdemucs_from_package(package, origin=str(checkpoint))
    try:
        build_htdemucs(kwargs).load_state_dict(state)  # the checkpoint must fit the architecture it names
    except (TypeError, ValueError, AssertionError, RuntimeError) as e:
        raise ModelLoadingError(f"{checkpoint} does not load into HTDemucs: {e}") from e
    write_folder(out_dir, kwargs, state, "pretrained", revision=checkpoint.stem)
    logger.info("converted demucs checkpoint", extra={"checkpoint": str(checkpoint), "out_dir": str(out_dir)})
    return out_dir


def convert_bag(
    checkpoints: list[Path], weights: list[list[float]], out_dir: Path, *, revision: str | None = None
) -> Path:
    """Convert the released `.th` checkpoints of a bag of HTDemucs (e.g. htdemucs_ft's four) into one
    folder `Demucs.from_pretrained` loads as demucs' `BagOfModels`: one converted folder per checkpoint
    (named by its `SIG-CHECKSUM` stem) and the bag's `config.json` with `weights` (one row per checkpoint,
    one column per stem, as in demucs' bag `.yaml`). Same trust rules as `convert_checkpoint`.
    """
    members = [checkpoint.stem for checkpoint in checkpoints]
    if len(set(members)) != len(members):
        raise ModelLoadingError(f"a bag's checkpoints must differ, got {members}")
    for checkpoint in checkpoints:
        convert_checkpoint(checkpoint, out_dir / checkpoint.stem)
    write_bag_folder(out_dir, members, weights, "pretrained", revision or "+".join(members))
    logger.info("converted demucs bag", extra={"members": members, "out_dir": str(out_dir)})
    return out_dir


def _unpickle_trusted(checkpoint: Path) -> Any:
    """`torch.load` with full unpickling: trusted, offline conversion only (see `convert_checkpoint`)."""
    try:
        return torch.load(checkpoint, map_location="cpu", weights_only=False)
    except Exception as e:  # unpickling can raise anything; report it as a loading failure
        raise ModelLoadingError(f"could not unpickle demucs checkpoint {checkpoint}: {e}") from e


def _htdemucs_from_package(package: Any, *, origin: str) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Complete constructor kwargs and state dict from a demucs model package; unsupported content raises."""
    if not isinstance(package, dict) or not {"klass", "args", "kwargs", "state"} <= package.keys():
        raise ModelLoadingError(f"{origin} is not a demucs model package (klass, args, kwargs, state)")
    klass = package["klass"]
    if klass is not HTDemucs:
        raise ModelLoadingError(
            f"{origin} holds a {getattr(klass, '__name__', klass)!r}; only HTDemucs is supported"
        )
    state = package["state"]
    if state.get("__quantized"):
        raise ModelLoadingError(f"{origin} is diffq-quantized; only unquantized HTDemucs is supported")
    kwargs = complete_kwargs(tuple(package["args"]), dict(package["kwargs"]), origin=origin)
    try:
        to_json(kwargs)
    except TypeError as e:
        raise ModelLoadingError(f"{origin}: HTDemucs arguments cannot be written as JSON: {e}") from e
    return kwargs, cast(dict[str, torch.Tensor], state)
