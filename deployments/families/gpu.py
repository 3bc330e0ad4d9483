"""GPU share helpers for model deployments: Ray places fractional GPUs but does not isolate their memory."""

from __future__ import annotations

import logging

import ray

logger = logging.getLogger(__name__)


def assigned_gpu_share() -> float:
    """The `num_gpus` this replica was placed with (0 on CPU-only replicas)."""
    return float(ray.get_runtime_context().get_assigned_resources().get("GPU", 0.0))


def cap_gpu_memory(device: str) -> float:
    """On CUDA, cap this process's VRAM to its GPU share; return the cap (1.0 = whole GPU, 0 = no GPU)."""
    if not device.startswith("cuda"):
        return 0.0
    import torch

    share = assigned_gpu_share()
    if 0.0 < share < 1.0:
        torch.cuda.set_per_process_memory_fraction(share)
        logger.info("VRAM capped to the replica's GPU share", extra={"share": share})
        return share
    return 1.0


def check_device(device: str) -> None:
    """Raise if the replica's CUDA device stopped working (a lost or faulted GPU)."""
    if not device.startswith("cuda"):
        return
    import torch

    torch.cuda.synchronize()
    torch.zeros(1, device=device).add_(1).item()
