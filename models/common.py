"""What every model wrapper shares: its identity record, how it is loaded (debug / folder / hub id) and
the error when that fails, and its device choice."""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar, cast, get_args

from safetensors import SafetensorError

from models.types import ModelInfo, ModelLoadingError, WeightsKind

DEBUG_URI = "debug"

_Loaded = TypeVar("_Loaded")


def resolve_device(device: str = "auto") -> str:
    """`auto` picks `cuda` when a GPU is visible, else `cpu`; anything else is passed through."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


_TRUE_VALUES = {"1", "ON", "YES", "TRUE"}


def env_flag(name: str) -> bool:
    """An environment variable set to 1/on/yes/true (any case)."""
    return os.environ.get(name, "").upper() in _TRUE_VALUES


def hub_offline() -> bool:
    """`HF_HUB_OFFLINE` / `TRANSFORMERS_OFFLINE`, read now: huggingface_hub reads them once, at import, so a
    wrapper passes `local_files_only` itself and an offline process fails at once instead of retrying."""
    return env_flag("HF_HUB_OFFLINE") or env_flag("TRANSFORMERS_OFFLINE")


def folder_or_hub_id(uri: str) -> str:
    """`uri` itself for a hub id, the expanded path for an existing folder; a missing folder raises."""
    folder = Path(uri).expanduser()
    if folder.is_dir():
        return str(folder)
    if uri.startswith(("/", ".", "~")):
        raise ModelLoadingError(f"model folder {uri!r} does not exist (and it is no hub id)")
    return uri


def weights_kind(kind: object, key: str) -> WeightsKind:
    """`kind`, the value a saved config holds under `key`, checked to be a `WeightsKind`."""
    if kind not in get_args(WeightsKind):
        raise ModelLoadingError(f"config {key}={kind!r} is not one of {get_args(WeightsKind)}")
    return cast(WeightsKind, kind)


@contextmanager
def hub_loading(
    name: str,
    source: str,
    cache_dir: Path | None,
    revision: str | None,
    *,
    errors: tuple[type[BaseException], ...] = (),
) -> Iterator[dict[str, Any]]:
    """The `from_pretrained` options for `source` (`cache_dir`, `revision`, `local_files_only` when
    offline, read now); load failures in the block (OSError, ValueError, SafetensorError and `errors`)
    become a ModelLoadingError naming `name`, `source` and those options."""
    offline = hub_offline()
    caught: tuple[type[BaseException], ...] = (OSError, ValueError, SafetensorError, *errors)
    try:
        yield {"cache_dir": cache_dir, "revision": revision, "local_files_only": offline}
    except caught as e:
        raise ModelLoadingError(
            f"could not load {name} from {source!r} (revision={revision!r}, cache_dir={cache_dir}, "
            f"offline={offline}, safetensors only): {e}"
        ) from e


def load_or_debug(
    uri: str,
    revision: str | None,
    *,
    debug: Callable[[], _Loaded],
    load: Callable[[str], _Loaded],
    weights: Callable[[_Loaded], WeightsKind],
) -> tuple[_Loaded, ModelInfo]:
    """`debug()` for the "debug" uri, else `load(folder or hub id)`, with the `ModelInfo` that names it."""
    if uri == DEBUG_URI:
        return debug(), ModelInfo(model_id=DEBUG_URI, revision=None, weights="debug-random")
    loaded = load(folder_or_hub_id(uri))
    return loaded, ModelInfo(model_id=uri, revision=revision, weights=weights(loaded))


def log_loaded(logger: logging.Logger, name: str, info: ModelInfo, device: str) -> None:
    """Logs "loaded {name}" with the model id, weights kind and device as structured fields."""
    fields = {"model": info.model_id, "weights": info.weights, "device": device}
    logger.info("loaded %s", name, extra=fields)


def prompt_seeds(count: int, seed: int | None, seeds: Sequence[int] | None) -> list[int]:
    """One seed per prompt: `seeds` as given, `seed` for every prompt, or fresh random ones."""
    if seed is not None and seeds is not None:
        raise ValueError("pass either seed or seeds, not both")
    if seeds is not None:
        if len(seeds) != count:
            raise ValueError(f"got {len(seeds)} seeds for {count} prompts")
        return [int(s) for s in seeds]
    if seed is not None:
        return [int(seed)] * count
    return [secrets.randbits(63) for _ in range(count)]
