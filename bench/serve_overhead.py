"""Serving overhead: the same tiny MusicGen call in-process, through a DeploymentHandle, and over HTTP.

The work is fixed: the `debug` MusicGen (tiny random weights, CPU, one torch thread) generating
`--duration-s` seconds from one prompt with one seed. Paths, measured round-robin after a warm-up so
that background load hits them alike:

  in-process  `MusicGen.from_pretrained("debug").generate(...)` in this process
  handle      `serve.get_deployment_handle("MusicGen", app_name="soundstage").generate.remote(...)`
  http        POST /bench/generate on a bench-only Serve app (defined here) that awaits the same
              MusicGen deployment and returns the WAV bytes: the synchronous HTTP path
  job         POST /v1/jobs/music, then poll GET /v1/jobs/{id} until it succeeded (the real API;
              adds the job record, S3 writes and polling), reported separately

Run from the repository root:  .venv/bin/python bench/serve_overhead.py [--reps 30] [--batch-wait-s 0.05]

(No `from __future__ import annotations`: FastAPI must see real annotations on the bench ingress.)
"""

import argparse
import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np
import torch
from machine_info import load_average, machine, stop_stack, timed
from pydantic import BaseModel

from deployments.tools.local_stack import LocalStack, LocalStackOptions, enable_ray_token_auth
from deployments.tools.serve_config import APP_NAME
from infra.audio import Audio, decode, encode
from infra.client import SoundstageClient
from infra.embedded_s3 import free_port
from models.musicgen import MusicGen

BENCH_APP = "serve-overhead-bench"
BENCH_ROUTE = "/bench"
PROMPT = "lo-fi beat with warm piano"
PACKAGES = ("ray", "torch", "transformers", "fastapi", "httpx", "numpy")


class GenerateRequest(BaseModel):
    """Body of the bench app's POST /generate."""

    prompt: str
    duration_s: float
    seed: int


@dataclass(frozen=True)
class Work:
    """The one call every path makes."""

    prompt: str
    duration_s: float
    seed: int


def build_sync_app() -> Any:
    """A bench-only Serve app: POST /generate awaits the soundstage MusicGen deployment, returns WAV."""
    from fastapi import FastAPI
    from fastapi.responses import Response
    from ray import serve

    http = FastAPI(title="soundstage serve-overhead bench")

    class SyncGenerate:
        def __init__(self) -> None:
            self.music = serve.get_deployment_handle("MusicGen", app_name=APP_NAME)

        @http.post("/generate")
        async def generate(self, body: GenerateRequest) -> Response:
            generated = await self.music.generate.remote(body.prompt, body.duration_s, body.seed)
            wav = await asyncio.to_thread(encode, generated.audio, "wav")
            return Response(content=wav, media_type="audio/wav")

    # Decorators applied as calls: mypy cannot see a class decorator turn the class into a Deployment.
    deployment = serve.deployment(name="SyncGenerate", ray_actor_options={"num_cpus": 0.1})
    return deployment(serve.ingress(http)(SyncGenerate)).bind()


class Paths:
    """One callable per path, each returning the generated `Audio` (the job path returns None)."""

    def __init__(self, stack: LocalStack, model: MusicGen, work: Work) -> None:
        from ray import serve

        self.work = work
        self.model = model
        self.handle = serve.get_deployment_handle("MusicGen", app_name=APP_NAME)
        self.http = httpx.Client(base_url=stack.base_url, timeout=120.0)
        self.client = SoundstageClient(stack.base_url, timeout_s=120.0)

    def close(self) -> None:
        self.http.close()
        self.client.close()

    def in_process(self) -> Audio:
        w = self.work
        (audio,) = self.model.generate([w.prompt], duration_s=w.duration_s, seed=w.seed)
        return audio

    def handle_call(self) -> Audio:
        w = self.work
        generated = self.handle.generate.remote(w.prompt, w.duration_s, w.seed).result()
        audio: Audio = generated.audio
        return audio

    def http_sync(self) -> Audio:
        w = self.work
        body = {"prompt": w.prompt, "duration_s": w.duration_s, "seed": w.seed}
        response = self.http.post(f"{BENCH_ROUTE}/generate", json=body)
        response.raise_for_status()
        return decode(response.content)

    def job(self) -> None:
        w = self.work
        job = self.client.submit("music", {"prompt": w.prompt, "duration_s": w.duration_s, "seed": w.seed})
        self.client.wait(job["id"], timeout_s=120.0, poll_s=0.05)


def measure(calls: dict[str, Callable[[], object]], reps: int, warmup: int) -> dict[str, list[float]]:
    """Seconds per call; the paths take turns so that drifting background load hits them alike."""
    for _ in range(warmup):
        for call in calls.values():
            call()
    samples: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(reps):
        for name, call in calls.items():
            samples[name].append(timed(call))
    return samples


def same_audio(paths: Paths) -> str:
    """Whether the three synchronous paths produced the same samples (they must: same work)."""
    reference = paths.in_process().samples
    others = [paths.handle_call().samples, paths.http_sync().samples]
    if all(np.array_equal(reference, other) for other in others):
        return "identical samples on all three paths"
    worst = max(float(np.max(np.abs(reference - other))) for other in others)
    return f"samples differ between paths (max |diff| {worst:.3g})"


def report(samples: dict[str, list[float]], labels: dict[str, str]) -> list[str]:
    base = float(np.median(samples["in-process"]))
    lines = [f"{'path':<46}{'n':>4}{'median ms':>11}{'p90 ms':>9}{'x in-proc':>11}{'+ms':>8}"]
    for name, times in samples.items():
        median, p90 = float(np.median(times)), float(np.percentile(times, 90))
        extra = f"{(median - base) * 1000:+8.1f}" if name != "in-process" else f"{'':>8}"
        lines.append(
            f"{labels[name]:<46}{len(times):>4}{median * 1000:>11.1f}{p90 * 1000:>9.1f}"
            f"{median / base:>10.2f}x{extra}"
        )
    return lines


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--reps", type=int, default=30, help="timed calls per synchronous path (default 30)")
    parser.add_argument("--job-reps", type=int, default=5, help="timed music jobs (default 5)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed calls per path first (default 3)")
    parser.add_argument("--duration-s", type=float, default=0.25, help="clip length in seconds (0.25)")
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument(
        "--batch-wait-s",
        type=float,
        default=0.0,
        help="MusicGen batch_wait_timeout_s (default 0: transport overhead only; serve_config.yaml "
        "uses 0.05, which a lone request waits in full)",
    )
    return parser.parse_args()


def start_stack(batch_wait_s: float) -> LocalStack:
    """Ray (logs kept off this console), the embedded S3, the soundstage app, and the bench app."""
    enable_ray_token_auth()  # Ray reads RAY_AUTH_MODE when it is first imported
    import ray
    from ray import serve

    # Started here, not by LocalStack, only to keep replica logs off the table (log_to_driver=False).
    ray.init(include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    options = LocalStackOptions(
        port=free_port(), user_configs={"MusicGen": {"batch_wait_timeout_s": batch_wait_s}}
    )
    stack = LocalStack(options)
    try:
        stack.start()
        serve.run(build_sync_app(), name=BENCH_APP, route_prefix=BENCH_ROUTE)
    except BaseException:
        stop_stack(stack)
        raise
    return stack


def run(args: argparse.Namespace, stack: LocalStack, model: MusicGen) -> list[str]:
    work = Work(PROMPT, args.duration_s, args.seed)
    paths = Paths(stack, model, work)
    try:
        check = same_audio(paths)
        sync = measure(
            {"in-process": paths.in_process, "handle": paths.handle_call, "http": paths.http_sync},
            args.reps,
            args.warmup,
        )
        jobs = measure({"job": paths.job}, args.job_reps, 1)
    finally:
        paths.close()
    labels = {
        "in-process": "in-process MusicGen.generate",
        "handle": "DeploymentHandle .generate.remote",
        "http": f"HTTP POST {BENCH_ROUTE}/generate (sync, WAV)",
        "job": "job end-to-end (POST /v1/jobs/music, poll)",
    }
    return [check, "", *report({**sync, **jobs}, labels)]


def main() -> None:
    args = parse_args()
    torch.set_num_threads(1)  # Ray gives each replica OMP_NUM_THREADS=1 (num_cpus < 1): match it here
    print("\n".join(machine(PACKAGES)))
    print(f"work      debug MusicGen, {args.duration_s:g} s clip, seed {args.seed}, 1 torch thread")
    print(f"config    batch_wait_timeout_s {args.batch_wait_s:g}; reps {args.reps}, jobs {args.job_reps}")
    print(f"load avg  {load_average()} (1/5/15 min) at start")
    started = time.perf_counter()
    model = MusicGen.from_pretrained("debug", device="cpu")
    stack = start_stack(args.batch_wait_s)
    print(f"startup   model + stack up in {time.perf_counter() - started:.1f} s on {stack.base_url}")
    try:
        lines = run(args, stack, model)
    finally:
        stop_stack(stack)
    print("\n".join(lines))
    print(f"load avg  {load_average()} at end; total {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
