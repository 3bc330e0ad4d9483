"""Separation: the service's segmented job over HTTP vs the same segments on the bare model; peak memory.

The model is the `debug` HTDemucs (tiny random weights, same architecture, CPU) on both sides, and the
input is one generated stereo music-like clip at 44.1 kHz (kick, hi-hat, bass, chord pad, lead; seeded).

  time    service  POST /v1/jobs/separate (multipart WAV, `--segment-s`, `--overlap-s`), then poll
                   GET /v1/jobs/{id} until it succeeded: upload, fan-out of the segments over the
                   `Separation` replicas, crossfaded join, four WAV stems stored in S3
          bare     the same segment plan (`infra.dsp.segments.plan_segments`) in this process:
                   `Demucs.separate` on each cut (`demucs.apply.apply_model`, split=True, plus the mono
                   mean/std standardisation) one after another, joined with `infra.dsp.segments.join`
          The two take turns after a warm-up; the stems of the first job are checked against the bare ones;
          the service's time is split into phases with the stage durations from the job record.
  memory  peak RSS (VmHWM) of a fresh Python process running the bare path on `--memory-durations`
          seconds of input (default 60 and 600), one process per duration so the peaks do not mix;
          plus the peak RSS of the service's Separation and JobRunner replica processes, before the
          first job and after the last, and how much of their RSS is Ray's shared object store.

Run from the repository root:  .venv/bin/python bench/separation.py [--duration-s 60] [--segment-s 10]
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import numpy.typing as npt
import soundfile as sf
import torch
from machine_info import load_average, machine, start_quiet_stack, stop_stack, timed

from deployments.tools.local_stack import LocalStack, LocalStackOptions
from deployments.tools.serve_config import APP_NAME
from infra.audio import Audio, encode
from infra.client import SoundstageClient
from infra.dsp.segments import Segment, cut, join, plan_segments
from infra.embedded_s3 import free_port
from models.demucs import Demucs

SAMPLE_RATE = 44100
PACKAGES = ("ray", "torch", "demucs", "numpy", "httpx")
_BPM = 120.0
_CHORDS_HZ = ((220.0, 261.6, 329.6), (174.6, 220.0, 261.6), (261.6, 329.6, 392.0), (196.0, 246.9, 293.7))
_LEAD_SCALE_HZ = (440.0, 493.9, 523.3, 587.3, 659.3, 784.0, 880.0)


@dataclass(frozen=True)
class Plan:
    """The work both paths do: `duration_s` of input cut into `segment_s` pieces overlapping `overlap_s`."""

    duration_s: float
    segment_s: float
    overlap_s: float

    def segments(self) -> list[Segment]:
        num_samples = round(self.duration_s * SAMPLE_RATE)
        return plan_segments(num_samples, SAMPLE_RATE, segment_s=self.segment_s, overlap_s=self.overlap_s)


def music_loop(sample_rate: int = SAMPLE_RATE, seed: int = 0) -> npt.NDArray[np.float32]:
    """Four bars at 120 bpm (8 s), stereo `[2, T]`: Am-F-C-G pad, bass on the beat, kick, off-beat hi-hat
    and a lead of random A-minor notes with vibrato; instruments panned differently, peak below full scale."""
    rng = np.random.default_rng(seed)
    beat = 60.0 / _BPM
    t = np.arange(round(16 * beat * sample_rate)) / sample_rate
    bar = np.minimum((t // (4 * beat)).astype(int), 3)
    in_beat = t % beat
    pad = sum(np.sin(2 * np.pi * np.take([c[i] for c in _CHORDS_HZ], bar) * t) for i in range(3)) * 0.06
    root = np.take([c[0] / 2 for c in _CHORDS_HZ], bar)
    bass = (np.sin(2 * np.pi * root * t) + 0.3 * np.sin(4 * np.pi * root * t)) * np.exp(-in_beat / 0.3) * 0.25
    sweep = 45.0 * in_beat + 55.0 * 0.03 * (1.0 - np.exp(-in_beat / 0.03))  # 100 Hz falling to 45 Hz
    kick = np.sin(2 * np.pi * sweep) * np.exp(-in_beat / 0.12) * 0.5
    noise = np.diff(rng.standard_normal(t.size + 1))  # differenced: a crude high-pass
    hat = noise * np.exp(-((t - beat / 2) % beat) / 0.02) * 0.04
    note = beat / 2
    notes = rng.choice(_LEAD_SCALE_HZ, size=math.ceil(t[-1] / note) + 1)[(t // note).astype(int)]
    phase = 2 * np.pi * np.cumsum(notes * (1 + 0.01 * np.sin(2 * np.pi * 5 * t))) / sample_rate
    in_note = t % note
    lead = (np.sin(phase) + 0.4 * np.sin(2 * phase)) * np.minimum(1, in_note / 0.01) * np.exp(-in_note / 0.4)
    left = pad + bass + kick + 0.3 * hat + 0.12 * lead
    right = pad + bass + kick + 0.7 * hat + 0.05 * lead
    return np.stack([left, right]).astype(np.float32)


def music_clip(duration_s: float, seed: int = 0) -> Audio:
    """`duration_s` seconds `[2, T]` at 44.1 kHz: `music_loop` repeated in place (no big temporaries)."""
    loop = music_loop(SAMPLE_RATE, seed)
    samples = np.empty((2, round(duration_s * SAMPLE_RATE)), dtype=np.float32)
    for start in range(0, samples.shape[1], loop.shape[1]):
        stop = min(start + loop.shape[1], samples.shape[1])
        samples[:, start:stop] = loop[:, : stop - start]
    return Audio(samples, SAMPLE_RATE)


def separate_in_segments(model: Demucs, audio: Audio, segments: Sequence[Segment]) -> dict[str, Audio]:
    """The service's separate stage without the service: each segment separated in turn, then joined."""
    pieces = [model.separate(cut(audio, segment)) for segment in segments]
    return {name: join([p[name] for p in pieces], segments, audio.num_samples) for name in pieces[0]}


class SeparationService:
    """Separation jobs over HTTP against the running local stack."""

    def __init__(self, base_url: str, plan: Plan) -> None:
        self.plan = plan
        self.http = httpx.Client(base_url=base_url, timeout=600.0)
        self.client = SoundstageClient(base_url, timeout_s=600.0)
        self.phases: list[dict[str, float]] = []  # seconds per phase of each job run

    def close(self) -> None:
        self.http.close()
        self.client.close()

    def run_job(self, wav: bytes) -> dict[str, Any]:
        """Submit the WAV as a separation job and wait for it; the finished job record. Where the time
        went is appended to `phases` (the stage durations are the job record's own)."""
        fields = {"segment_s": str(self.plan.segment_s), "overlap_s": str(self.plan.overlap_s)}
        start = time.perf_counter()
        response = self.http.post(
            "/v1/jobs/separate", files={"file": ("mix.wav", wav, "audio/wav")}, data=fields
        )
        if response.status_code != 202:
            raise RuntimeError(f"POST /v1/jobs/separate: HTTP {response.status_code} {response.text[:300]}")
        submitted = time.perf_counter()
        job = self.client.wait(response.json()["id"], timeout_s=600.0, poll_s=0.1)
        phases = {"submit": submitted - start, "queued": job["started_at"] - job["created_at"]}
        phases |= {stage["name"]: stage["duration_s"] for stage in job["stages"]}
        phases["other"] = time.perf_counter() - start - sum(phases.values())
        self.phases.append(phases)
        return job

    def stems(self, job: dict[str, Any], names: Sequence[str]) -> dict[str, Audio]:
        """The job's stems, fetched from their presigned URLs (float WAV: lossless)."""
        out = {}
        for name in names:
            wav = self.http.get(job["result"][name]["url"]).content
            data, rate = sf.read(io.BytesIO(wav), dtype="float32")
            out[name] = Audio(np.ascontiguousarray(data.T), rate)
        return out


def compare_stems(ours: dict[str, Audio], theirs: dict[str, Audio]) -> str:
    worst = max(float(np.max(np.abs(ours[n].samples - theirs[n].samples))) for n in ours)
    if worst == 0.0:
        return "service stems identical to the bare path's (all 4 stems, every sample)"
    return f"service stems differ from the bare path's by at most {worst:.3g} (float rounding order)"


def measure_time(model: Demucs, service: SeparationService, reps: int) -> tuple[dict[str, list[float]], str]:
    """Seconds per run of each path (taking turns, after one untimed run each) and the stem check."""
    plan = service.plan
    audio = music_clip(plan.duration_s)
    wav = encode(audio, "wav")
    segments = plan.segments()
    bare = separate_in_segments(model, audio, segments)
    job = service.run_job(wav)
    check = compare_stems(bare, service.stems(job, list(bare)))
    used = job["result"]["metadata"]["segments"]
    if used != len(segments):
        raise RuntimeError(f"the service used {used} segments, the bare path {len(segments)}")
    paths: dict[str, Callable[[], object]] = {
        "bare": lambda: separate_in_segments(model, audio, segments),
        "service": lambda: service.run_job(wav),
    }
    samples: dict[str, list[float]] = {name: [] for name in paths}
    service.phases.clear()  # keep the timed jobs only
    for _ in range(reps):
        for name, call in paths.items():
            samples[name].append(timed(call))
    return samples, check


def time_report(samples: dict[str, list[float]], plan: Plan) -> list[str]:
    labels = {
        "bare": "bare: Demucs.separate per segment + join",
        "service": "service: POST /v1/jobs/separate .. succeeded",
    }
    base = float(np.median(samples["bare"]))
    lines = [f"{'path':<46}{'n':>3}{'median s':>10}{'min s':>8}{'x realtime':>12}{'x bare':>8}"]
    for name, times in samples.items():
        median = float(np.median(times))
        lines.append(
            f"{labels[name]:<46}{len(times):>3}{median:>10.2f}{min(times):>8.2f}"
            f"{plan.duration_s / median:>12.1f}{median / base:>7.2f}x"
        )
    return lines


def phase_report(phases: list[dict[str, float]]) -> str:
    """Median seconds of each phase of the timed jobs."""
    labels = {
        "submit": "upload + submit",
        "queued": "queued",
        "separate": "separate stage",
        "store": "store stage",
        "other": "polling, finish",
    }
    medians = {name: float(np.median([p[name] for p in phases])) for name in phases[0]}
    return "service job, median s: " + ", ".join(f"{labels.get(k, k)} {v:.2f}" for k, v in medians.items())


def proc_status_kb(pid: int | str, field: str) -> int:
    """A `kB` field of /proc/PID/status (VmHWM: peak resident set, VmRSS: current)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise KeyError(f"{field} not in /proc/{pid}/status")


def _descends_from(pid: int, ancestor: int) -> bool:
    while pid > 1:
        if pid == ancestor:
            return True
        try:
            pid = proc_status_kb(pid, "PPid")
        except (OSError, KeyError):
            return False
    return False


def replica_memory_mb(deployment: str) -> dict[int, dict[str, float]]:
    """By pid, for each `deployment` replica process of this benchmark's own Ray cluster (its workers
    descend from this process; other Ray clusters on the machine are skipped): peak RSS (VmHWM) and the
    current RSS split into private (RssAnon) and shared memory (RssShmem: pages of Ray's object store
    that the process touched), in MB."""
    marker = f"ServeReplica:{APP_NAME}:{deployment}".encode()
    found = {}
    for proc in Path("/proc").iterdir():
        try:
            mine = proc.name.isdigit() and marker in (proc / "cmdline").read_bytes()
            if mine and _descends_from(int(proc.name), os.getpid()):
                fields = {"peak": "VmHWM", "anon": "RssAnon", "shmem": "RssShmem"}
                found[int(proc.name)] = {k: proc_status_kb(proc.name, f) / 1024 for k, f in fields.items()}
        except (OSError, KeyError):
            continue  # the process ended while we looked
    return found


def replica_report(
    deployment: str, before: dict[int, dict[str, float]], after: dict[int, dict[str, float]]
) -> list[str]:
    """Each replica's peak RSS before the first job (if it existed then) -> after the last."""
    lines = []
    for pid, mb in sorted(after.items()):
        start = f"{before[pid]['peak']:>5.0f} ->" if pid in before else "  new ->"
        lines.append(
            f"  {deployment:<11}{start}{mb['peak']:>6.0f} MB peak  (at the end {mb['anon']:.0f} MB private, "
            f"{mb['shmem']:.0f} MB object store)"
        )
    return lines


def child_peak_rss(duration_s: float, segment_s: float, overlap_s: float) -> dict[str, float]:
    """In this (fresh) process: load the model, then run the bare path on `duration_s` of input."""
    model = Demucs.from_pretrained("debug", device="cpu")
    baseline_kb = proc_status_kb("self", "VmHWM")
    plan = Plan(duration_s, segment_s, overlap_s)
    start = time.perf_counter()
    separate_in_segments(model, music_clip(duration_s), plan.segments())
    return {
        "duration_s": duration_s,
        "segments": len(plan.segments()),
        "wall_s": time.perf_counter() - start,
        "baseline_mb": baseline_kb / 1024,
        "peak_mb": proc_status_kb("self", "VmHWM") / 1024,
    }


def measure_memory(args: argparse.Namespace) -> list[dict[str, float]]:
    """One fresh child process per duration, run one after another."""
    results = []
    for duration in args.memory_durations:
        command = [sys.executable, str(Path(__file__).resolve()), "--child-peak-rss", str(duration)]
        command += ["--segment-s", str(args.segment_s), "--overlap-s", str(args.overlap_s)]
        command += ["--threads", str(args.threads)]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"memory child for {duration} s failed:\n{done.stderr[-2000:]}")
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
    return results


def memory_report(results: list[dict[str, float]]) -> list[str]:
    lines = [f"{'input s':>8}{'segments':>10}{'wall s':>8}{'baseline MB':>13}{'peak MB':>9}{'above MB':>10}"]
    for r in results:
        above = r["peak_mb"] - r["baseline_mb"]
        lines.append(
            f"{r['duration_s']:>8g}{r['segments']:>10g}{r['wall_s']:>8.1f}{r['baseline_mb']:>13.0f}"
            f"{r['peak_mb']:>9.0f}{above:>10.0f}"
        )
    if len(results) >= 2:
        first, last = results[0], results[-1]
        grow = (last["peak_mb"] - last["baseline_mb"]) / (first["peak_mb"] - first["baseline_mb"])
        lines.append(
            f"ratio {last['duration_s']:g} s / {first['duration_s']:g} s: peak "
            f"{last['peak_mb'] / first['peak_mb']:.2f}x, above baseline {grow:.2f}x "
            f"(input {last['duration_s'] / first['duration_s']:.0f}x longer)"
        )
    return lines


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration-s", type=float, default=60.0, help="input of the timed runs (60)")
    parser.add_argument("--segment-s", type=float, default=10.0, help="segment length, s (10; API >= 5)")
    parser.add_argument("--overlap-s", type=float, default=1.0, help="crossfaded overlap, s (1)")
    parser.add_argument("--reps", type=int, default=3, help="timed runs per path (default 3)")
    parser.add_argument(
        "--memory-durations",
        type=float,
        nargs="*",
        default=[60.0, 600.0],
        help="input lengths, s, for the peak-memory children (default 60 600; none to skip)",
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads in-process (1, as a replica)")
    parser.add_argument("--max-replicas", type=int, default=2, help="Separation replicas at most (2)")
    parser.add_argument("--child-peak-rss", type=float, help=argparse.SUPPRESS)  # internal: one child
    return parser.parse_args()


def start_stack(max_replicas: int) -> LocalStack:
    return start_quiet_stack(LocalStackOptions(port=free_port(), max_replicas=max_replicas))


def run_service(args: argparse.Namespace, model: Demucs, plan: Plan) -> list[str]:
    started = time.perf_counter()
    stack = start_stack(args.max_replicas)
    lines = [f"startup   stack up in {time.perf_counter() - started:.1f} s on {stack.base_url}"]
    deployments = ("Separation", "JobRunner")
    try:
        before = {name: replica_memory_mb(name) for name in deployments}
        service = SeparationService(stack.base_url, plan)
        try:
            samples, check = measure_time(model, service, args.reps)
        finally:
            service.close()
        after = {name: replica_memory_mb(name) for name in deployments}
    finally:
        stop_stack(stack)
    return [
        *lines,
        check,
        "",
        *time_report(samples, plan),
        phase_report(service.phases),
        "",
        "service replica processes: peak RSS (VmHWM) before the first job -> after the last (Ray worker,",
        "app imports and model included; JobRunner cuts the input and joins the stems):",
        *(line for name in deployments for line in replica_report(name, before[name], after[name])),
    ]


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)  # Ray gives each replica OMP_NUM_THREADS=1 (num_cpus < 1)
    if args.child_peak_rss is not None:
        print(json.dumps(child_peak_rss(args.child_peak_rss, args.segment_s, args.overlap_s)))
        return
    plan = Plan(args.duration_s, args.segment_s, args.overlap_s)
    print("\n".join(machine(PACKAGES)))
    print(
        f"work      debug HTDemucs (random weights), generated stereo music at 44.1 kHz; timed input "
        f"{plan.duration_s:g} s in {len(plan.segments())} segments of {plan.segment_s:g} s, overlap "
        f"{plan.overlap_s:g} s; {args.threads} torch thread(s) in-process; reps {args.reps}"
    )
    print(f"load avg  {load_average()} (1/5/15 min) at start")
    started = time.perf_counter()
    if args.memory_durations:
        print("\nmemory: peak RSS (VmHWM) of a fresh process running the bare path (baseline: after imports")
        print("and model load; above: peak minus baseline)")
        print("\n".join(memory_report(measure_memory(args))))
    print("\ntime: one separation of the timed input")
    model = Demucs.from_pretrained("debug", device="cpu")
    print("\n".join(run_service(args, model, plan)))
    print(f"load avg  {load_average()} at end; total {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
