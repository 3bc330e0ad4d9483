"""Fan-out scaling: a long voice replacement with 1 and then 2 replicas of every model deployment.

The input is the two-speaker dialog of the test suite (hibari "heart" and the same voice pitched
down), repeated `--repeat` times, so the job has many speech regions and lines to fan out over the
Diarizer/VAD, ASR and TTS replicas. The job: `POST /v1/jobs/voice-replace` with `separate=false`,
`target_speaker=auto`, `voice=heart`. The stack is started twice, with every deployment pinned to
`min = max = N` replicas (N = 1, then 2); each run does a warm-up job first, then `--reps` timed jobs.

Printed side by side:
- wall seconds per job (client: submit → succeeded) for N = 1 and N = 2, and their ratio
  (> 1 means the second replica made the job faster);
- per stage: duration and fan-out segments (from `GET /v1/jobs/{id}/report`), so one sees which
  stages gained;
- wall / sum of stage durations: how much of the job is outside its stages (claim, commits, polling).

On a 2-core machine the gain is capped by the cores, not by Serve: each replica runs with one torch
thread, so two replicas can at best use both cores. Run from the repository root:
  .venv/bin/python bench/fanout_scaling.py [--repeat 3] [--reps 2]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from machine_info import load_average, machine, start_quiet_stack, stop_stack
from stack_jobs import run_job, stage_seconds, stage_table, upload

from deployments.tools.local_stack import LocalStackOptions
from infra.audio import encode
from infra.embedded_s3 import free_port
from models.tts import StockTTS

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the test suite's dialog builder
from tests.dialog import build_dialog

PACKAGES = ("ray", "torch", "onnxruntime", "faster-whisper", "hibari-tts", "numpy")


def long_dialog(repeat: int) -> tuple[bytes, float]:
    dialog = build_dialog(StockTTS.from_pretrained())
    audio = dialog.audio
    tiled = type(audio)(np.tile(audio.samples, (1, repeat)), audio.sample_rate)
    return encode(tiled, "wav"), tiled.duration_s


def measure(replicas: int, wav: bytes, reps: int) -> tuple[list[float], list[dict[str, Any]]]:
    options = LocalStackOptions(port=free_port(), min_replicas=replicas, max_replicas=replicas)
    stack = start_quiet_stack(options)
    try:
        fields = {
            "upload_id": upload(stack.base_url, wav, "dialog.wav"),
            "voice": "heart",
            "target_speaker": "auto",
            "separate": "false",
        }
        run_job(stack.base_url, "voice-replace", form=fields)  # warm-up: lazily initialised state
        runs = [run_job(stack.base_url, "voice-replace", form=fields) for _ in range(reps)]
    finally:
        stop_stack(stack)
    return [wall for wall, _ in runs], [report for _, report in runs]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=3, help="dialog repetitions in the input (3)")
    parser.add_argument("--reps", type=int, default=2, help="timed jobs per replica count (2)")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    print("\n".join(machine(PACKAGES)))
    print(f"load avg  {load_average()} (1/5/15 min) at start")
    started = time.perf_counter()
    wav, duration_s = long_dialog(args.repeat)
    print(f"work      voice replacement of a {duration_s:.1f} s two-speaker dialog, {args.reps} timed jobs")
    walls: dict[int, list[float]] = {}
    reports: dict[int, list[dict[str, Any]]] = {}
    for replicas in (1, 2):
        walls[replicas], reports[replicas] = measure(replicas, wav, args.reps)
    one, two = float(np.median(walls[1])), float(np.median(walls[2]))
    print(f"wall      1 replica {one:.1f} s, 2 replicas {two:.1f} s: 2 replicas are {one / two:.2f}x faster")
    for replicas, runs in reports.items():
        compute = float(np.median([stage_seconds(r) for r in runs]))
        wall = float(np.median(walls[replicas]))
        print(f"overhead  {replicas} replica(s): wall / sum of stage durations = {wall / compute:.3f}")
    print("\n".join(stage_table(reports)))
    print(f"load avg  {load_average()} at end; total {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
