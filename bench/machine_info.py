"""What every benchmark prints about where it ran, and the small helpers they share (timing, teardown)."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported lazily below: bench/generation.py --device-only must run without Ray or boto3
    from deployments.tools.local_stack import LocalStack, LocalStackOptions


def machine(packages: Sequence[str]) -> list[str]:
    """Date, CPU model and count, OS, Python and the versions of `packages`, one line each."""
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    names = [line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")]
    versions = ", ".join(f"{p} {importlib.metadata.version(p)}" for p in packages)
    return [
        f"date      {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        f"machine   {os.cpu_count()} CPUs ({len(os.sched_getaffinity(0))} usable), "
        f"{names[0] if names else platform.processor() or 'unknown CPU'}",
        f"system    {platform.platform()}, Python {platform.python_version()}",
        f"versions  {versions}",
    ]


def load_average() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


def timed(call: Callable[[], object]) -> float:
    """Wall seconds of one call."""
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def start_quiet_stack(options: LocalStackOptions) -> LocalStack:
    """Ray with replica logs kept off the console (they would break up the tables), the embedded S3
    and the soundstage app; everything is torn down again if the start fails."""
    from deployments.tools.local_stack import LocalStack, enable_ray_token_auth

    enable_ray_token_auth()  # Ray reads RAY_AUTH_MODE when it is first imported
    import logging

    import ray

    ray.init(include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    stack = LocalStack(options)
    try:
        stack.start()
    except BaseException:
        stop_stack(stack)
        raise
    return stack


def stop_stack(stack: LocalStack) -> None:
    """Tear down the local stack and the Ray the benchmark started itself."""
    import ray

    stack.stop()
    ray.shutdown()
