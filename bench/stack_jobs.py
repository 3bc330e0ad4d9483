"""Jobs through the stack's HTTP API as the end-to-end benchmarks time them: upload an input, submit a
job, wait for it on the client's clock, read its report; and the per-stage table they print."""

from __future__ import annotations

import time
from typing import Any

import httpx
import numpy as np

from infra.client import SoundstageClient


def upload(base_url: str, data: bytes, name: str = "input.wav") -> str:
    """`POST /v1/uploads` of a WAV; its `upload_id`."""
    response = httpx.post(f"{base_url}/v1/uploads", files={"file": (name, data, "audio/wav")}, timeout=120)
    response.raise_for_status()
    return str(response.json()["upload_id"])


def run_job(
    base_url: str,
    kind: str,
    *,
    form: dict[str, str] | None = None,
    body: dict[str, Any] | None = None,
    timeout_s: float = 1800.0,
) -> tuple[float, dict[str, Any]]:
    """Seconds from `POST /v1/jobs/{kind}` (form fields or a JSON body) to `succeeded`, polled every 0.1 s,
    and the job's `GET /v1/jobs/{id}/report`. Raises if the job ends otherwise."""
    client = SoundstageClient(base_url, timeout_s=600.0)
    try:
        started = time.perf_counter()
        response = httpx.post(f"{base_url}/v1/jobs/{kind}", data=form, json=body, timeout=120)
        response.raise_for_status()
        job = client.wait(response.json()["id"], timeout_s=timeout_s, poll_s=0.1)
        wall = time.perf_counter() - started
        if job["status"] != "succeeded":
            raise RuntimeError(f"{kind} job {job['id']} ended {job['status']}: {job['error']}")
        report = httpx.get(f"{base_url}/v1/jobs/{job['id']}/report", timeout=60)
        report.raise_for_status()
    finally:
        client.close()
    return wall, report.json()


def stage_seconds(report: dict[str, Any]) -> float:
    """The sum of the job's stage durations (s)."""
    return float(sum(stage["duration_s"] for stage in report["stages"]))


def stage_table(reports: dict[int, list[dict[str, Any]]], unit: str = "replica(s)") -> list[str]:
    """One row per stage: its fan-out segments (first run) and its median duration (s) per column key."""
    first = next(iter(reports.values()))[0]["stages"]
    lines = [f"{'stage':<14}{'segments':>9}" + "".join(f"{f'{n} {unit} s':>18}" for n in reports)]
    for i, stage in enumerate(first):
        medians = [
            float(np.median([r["stages"][i]["duration_s"] for r in runs])) for runs in reports.values()
        ]
        lines.append(f"{stage['name']:<14}{stage['segments']:>9}" + "".join(f"{m:>18.2f}" for m in medians))
    return lines
