"""What every model deployment does the same way: resolve the URI, pick the device, cap VRAM, load, report."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

from deployments.families.gpu import assigned_gpu_share, cap_gpu_memory, check_device
from deployments.metrics import install_ray_metrics
from infra.model_store import resolve_model_uri
from infra.settings import load_settings
from models.common import resolve_device

logger = logging.getLogger(__name__)
M = TypeVar("M")


class ModelHost:
    """Mixin for a Serve deployment class that owns one model wrapper in `self.model`."""

    model: Any
    device: str

    def load_model(self, loader: Callable[..., M], uri: str, device: str = "auto", **options: Any) -> M:
        """Resolve `uri` (infra/model_store.py) and call the wrapper's `from_pretrained` with it."""
        install_ray_metrics()
        settings = load_settings()
        self.device = resolve_device(device)
        cap_gpu_memory(self.device)
        resolved = resolve_model_uri(uri, settings)
        if resolved.revision:
            options["revision"] = resolved.revision
        model = loader(resolved.source, device=self.device, cache_dir=settings.model_cache_dir, **options)
        logger.info("model loaded", extra={"uri": uri, "device": self.device})
        return model

    def info(self) -> dict[str, Any]:
        """Model id, revision, weights kind, sample rate, device and GPU share of this replica."""
        return {
            **self.model.info.as_dict(),
            "sample_rate": self.model.sample_rate,
            "device": self.device,
            "gpu_share": assigned_gpu_share(),
        }

    def check_health(self) -> None:
        check_device(self.device)
