"""What every model wrapper shares: its identity record, its loading error and device choice."""

from __future__ import annotations

import os
import secrets
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from infra.audio import Audio

WeightsKind = Literal["pretrained", "debug-random"]
DEBUG_URI = "debug"


class ModelLoadingError(RuntimeError):
    """Weights could not be loaded; the message names every location that was tried."""


@dataclass(frozen=True)
class ModelInfo:
    """Which weights produced a result. `weights` is `debug-random` for the tiny test models."""

    model_id: str
    revision: str | None
    weights: WeightsKind

    def as_dict(self) -> dict[str, str | None]:
        return asdict(self)


def resolve_device(device: str = "auto") -> str:
    """`auto` picks `cuda` when a GPU is visible, else `cpu`; anything else is passed through."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


@dataclass(frozen=True)
class GeneratedAudio:
    """One generated clip with the seed that reproduces it and the model that made it."""

    audio: Audio
    seed: int
    model: ModelInfo


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
