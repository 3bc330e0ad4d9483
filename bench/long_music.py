"""Long-form music: wall time of `POST /v1/jobs/music` against `duration_s`, with the debug MusicGen.

A text-only MusicGen track longer than one 30 s window is made window by window
(`pipelines/jobs/generation_long.py`): the first 30 s from the prompt, then each window continues the
last 10 s of the track and adds up to 20 s, one after another, each checkpointed. So the windows, and
with them the wall time, should grow linearly with the duration: 30 s is 1 window (one ordinary call),
60 s 3, 120 s 6, 240 s 12. One stack (local profile, one replica of each deployment, debug MusicGen:
tiny random weights of the real architecture, one torch thread) runs a short warm-up job, then one job
per `--durations` entry, shortest first, the same prompt and seed, regeneration off
(`max_regenerations: 0`) so that each job makes its windows exactly once.

Printed per duration: windows (as planned: the job report's `segments` counts `ctx.map` fan-out, not
windows), job wall (client: submit → succeeded),
the generate stage's duration, wall seconds per audio second, and that per-second cost as a ratio to
the shortest duration's (1.00 everywhere means wall time exactly linear in duration).

Run from the repository root:
  .venv/bin/python bench/long_music.py [--durations 30 60 120 240]
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from machine_info import load_average, machine, start_quiet_stack, stop_stack
from stack_jobs import run_job

from deployments.tools.local_stack import LocalStackOptions
from infra.embedded_s3 import free_port
from pipelines.jobs.generation_long import planned_windows

PROMPT = "lo-fi hip hop beat with warm piano chords"
PACKAGES = ("ray", "torch", "transformers", "numpy")


def music(duration_s: float, seed: int) -> dict[str, Any]:
    return {"prompt": PROMPT, "duration_s": duration_s, "seed": seed, "max_regenerations": 0}


def stage(report: dict[str, Any], name: str) -> dict[str, Any]:
    return next(s for s in report["stages"] if s["name"] == name)


def table(durations: list[float], runs: list[tuple[float, dict[str, Any]]]) -> list[str]:
    """One row per duration: planned windows, wall, generate stage, wall per audio second, ratio to the
    first."""
    base = runs[0][0] / durations[0]
    lines = [
        f"{'duration s':>10}{'windows':>9}{'wall s':>9}{'generate s':>12}{'other s':>9}"
        f"{'wall s / audio s':>18}{'vs shortest':>13}"
    ]
    for duration, (wall, report) in zip(durations, runs, strict=True):
        generate = stage(report, "generate")
        per_s = wall / duration
        lines.append(
            f"{duration:>10g}{planned_windows(duration):>9}{wall:>9.1f}{generate['duration_s']:>12.1f}"
            f"{wall - generate['duration_s']:>9.1f}{per_s:>18.3f}{per_s / base:>12.2f}x"
        )
    return lines


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--durations",
        nargs="+",
        type=float,
        default=[30.0, 60.0, 120.0, 240.0],
        help="track lengths in seconds, each ≤ SOUNDSTAGE_MAX_LONG_MUSIC_S (30 60 120 240)",
    )
    parser.add_argument("--seed", type=int, default=1234)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    durations = sorted(args.durations)
    print("\n".join(machine(PACKAGES)))
    windows = ", ".join(f"{d:g} s → {planned_windows(d)}" for d in durations)
    print(
        f"work      music jobs, debug MusicGen (random weights, labelled), prompt {PROMPT!r}, "
        f"seed {args.seed}, max_regenerations 0; windows planned: {windows}"
    )
    print(f"load avg  {load_average()} (1/5/15 min) at start")
    started = time.perf_counter()
    stack = start_quiet_stack(LocalStackOptions(port=free_port(), min_replicas=1, max_replicas=1))
    print(f"startup   stack up in {time.perf_counter() - started:.1f} s")
    try:
        run_job(stack.base_url, "music", body=music(2.0, args.seed))  # warm-up
        runs = []
        for duration in durations:
            runs.append(run_job(stack.base_url, "music", body=music(duration, args.seed)))
            print(f"load avg  {load_average()} after {duration:g} s")
    finally:
        stop_stack(stack)
    print("\n".join(table(durations, runs)))
    print(f"load avg  {load_average()} at end; total {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
