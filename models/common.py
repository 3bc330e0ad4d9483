"""What every model wrapper shares: its identity record, its loading error and device choice."""

from __future__ import annotations

from dataclasses import asdict, dataclass
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
