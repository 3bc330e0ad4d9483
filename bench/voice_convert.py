"""Voice-convert fan-out: one song's `POST /v1/jobs/voice-convert` with 1 and then 2 SVC replicas.

The song is made here, offline and seeded, at 48 kHz stereo: a "voice" singing random A-minor notes
(harmonics, 5 Hz vibrato) in 4 s phrases with 1 s rests, over a backing of a chord pad, a kick and a
noise hi-hat. The job runs the whole chain: split (debug HTDemucs, fanned out over the Separation
replicas), pitch (SwiftF0), convert (the vocals cut into the profile's segments, each on an SVC replica,
the profile's number in flight), store. The content encoder and the voice are `debug` random-init
weights (tiny HuBERT, small v2 synthesizer at 40 kHz: the real architecture and call path, not singing).

The stack is started twice with the local profile, every deployment pinned to one replica except SVC,
which gets `num_replicas` N (N = 1, then 2) in a copy of serve_config.yaml; each start runs a short
warm-up job first, then `--reps` timed jobs of the song. Printed side by side:
- wall seconds per job (client: submit → succeeded) for N = 1 and 2, and the fan-out gain
  (1-replica wall / 2-replica wall; > 1 means the second SVC replica made the job faster);
- per stage: duration and fan-out segments (from `GET /v1/jobs/{id}/report`).

On a 2-core machine the gain is capped by the cores: one SVC replica already takes two segments at once
(`max_ongoing_requests: 2`, each call in a thread of its own with one torch thread), which can use both
cores. Run from the repository root:
  .venv/bin/python bench/voice_convert.py [--song-s 120] [--reps 1] [--profile balanced]
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import numpy as np
import yaml
from machine_info import load_average, machine, start_quiet_stack, stop_stack
from stack_jobs import run_job, stage_seconds, stage_table, upload

from deployments.tools.local_stack import LocalStackOptions
from deployments.tools.serve_config import load_config
from infra.audio import Audio, encode
from infra.embedded_s3 import free_port
from pipelines.jobs.voice_convert import PROFILES

PACKAGES = ("ray", "torch", "transformers", "demucs", "onnxruntime", "numpy")
RATE = 48000
NOTE_S = 0.5
PHRASE_S, REST_S = 4.0, 1.0
A_MINOR_HZ = (220.0, 246.94, 261.63, 293.66, 329.63, 349.23, 392.0, 440.0)
CHORDS_HZ = ((110.0, 130.81, 164.81), (87.31, 110.0, 130.81), (130.81, 164.81, 196.0), (98.0, 123.47, 146.83))


def vocals(seconds: float, rng: np.random.Generator) -> np.ndarray:
    """`[T]`: random A-minor notes of `NOTE_S` with 3 harmonics and vibrato, sung in phrases."""
    t = np.arange(round(seconds * RATE)) / RATE
    notes = rng.choice(A_MINOR_HZ, size=math.ceil(seconds / NOTE_S) + 1)
    f0 = notes[(t // NOTE_S).astype(int)] * (1.0 + 0.01 * np.sin(2 * math.pi * 5.0 * t))
    phase = 2 * math.pi * np.cumsum(f0) / RATE
    voice = sum(np.sin(k * phase) / k for k in (1, 2, 3))
    in_note = t % NOTE_S
    envelope = np.clip(np.minimum(in_note / 0.02, (NOTE_S - in_note) / 0.05), 0.0, 1.0)
    sung = (t % (PHRASE_S + REST_S)) < PHRASE_S
    return np.asarray(0.25 * voice * envelope * sung)


def backing(seconds: float, rng: np.random.Generator) -> np.ndarray:
    """`[2, T]`: an Am-F-C-G pad (2 s per chord), a kick every beat (0.5 s), a noise hi-hat off the beat."""
    t = np.arange(round(seconds * RATE)) / RATE
    chord = np.array(CHORDS_HZ)[(t // 2.0).astype(int) % len(CHORDS_HZ)]
    pad = 0.05 * np.sin(2 * math.pi * chord * t[:, None]).sum(axis=1)
    beat = t % 0.5
    kick = 0.3 * np.sin(2 * math.pi * 55.0 * beat) * np.exp(-beat / 0.08)
    off = (t + 0.25) % 0.5
    hat = 0.04 * rng.uniform(-1.0, 1.0, t.size) * np.exp(-off / 0.02)
    mono = pad + kick + hat
    return np.stack([mono, np.roll(mono, 240)])  # 5 ms apart: a little width


def song(seconds: float, seed: int) -> bytes:
    """The song as a 16-bit WAV: the vocals in the middle over the backing."""
    rng = np.random.default_rng(seed)
    mix = backing(seconds, rng) + vocals(seconds, rng)[None]
    return encode(Audio(mix.astype(np.float32), RATE), "wav", bits=16)


def svc_config(replicas: int, folder: Path) -> Path:
    """serve_config.yaml with SVC at a fixed `replicas` (no autoscaling), written into `folder`."""
    config = load_config()
    for app in config["applications"]:
        for deployment in app.get("deployments", []):
            if deployment["name"] == "SVC":
                deployment.pop("autoscaling_config", None)
                deployment["num_replicas"] = replicas
    path = folder / f"serve_config_svc{replicas}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def measure(
    replicas: int, wavs: tuple[bytes, bytes], args: argparse.Namespace, folder: Path
) -> tuple[list[float], list[dict[str, Any]]]:
    """The warm-up song once, then the timed song `args.reps` times, on a stack with `replicas` SVC."""
    options = LocalStackOptions(
        port=free_port(), config_path=svc_config(replicas, folder), min_replicas=1, max_replicas=1
    )
    stack = start_quiet_stack(options)
    try:
        fields = {"voice_model": "debug", "profile": args.profile, "seed": str(args.seed)}
        warm_up = {**fields, "upload_id": upload(stack.base_url, wavs[0]), "segment_s": "5"}
        timed = {**fields, "upload_id": upload(stack.base_url, wavs[1], "song.wav")}
        run_job(stack.base_url, "voice-convert", form=warm_up)  # loads each model's lazy state
        runs = [run_job(stack.base_url, "voice-convert", form=timed) for _ in range(args.reps)]
    finally:
        stop_stack(stack)
    return [wall for wall, _ in runs], [report for _, report in runs]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--song-s", type=float, default=120.0, help="song length in seconds (120)")
    parser.add_argument("--reps", type=int, default=1, help="timed jobs per replica count (1)")
    parser.add_argument("--profile", choices=list(PROFILES), default="balanced", help="(balanced)")
    parser.add_argument("--seed", type=int, default=1234, help="song and job seed (1234)")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    print("\n".join(machine(PACKAGES)))
    settings = PROFILES[args.profile]
    print(
        f"work      voice-convert of a {args.song_s:g} s song (48 kHz stereo, synthesised), voice_model "
        f"debug (random-init encoder and voice: debug weights), profile {args.profile} "
        f"({settings.segment_s:g} s segments, {settings.concurrency} in flight), {args.reps} timed job(s)"
    )
    print(f"load avg  {load_average()} (1/5/15 min) at start")
    started = time.perf_counter()
    wavs = (song(12.0, args.seed), song(args.song_s, args.seed))
    walls: dict[int, list[float]] = {}
    reports: dict[int, list[dict[str, Any]]] = {}
    with TemporaryDirectory(prefix="voice-convert-bench-") as folder:
        for replicas in (1, 2):
            walls[replicas], reports[replicas] = measure(replicas, wavs, args, Path(folder))
            print(f"load avg  {load_average()} after the {replicas}-replica run")
    one, two = float(np.median(walls[1])), float(np.median(walls[2]))
    print(f"wall      1 SVC replica {one:.1f} s, 2 SVC replicas {two:.1f} s")
    print(f"gain      fan-out gain (1-replica wall / 2-replica wall) = {one / two:.2f}x")
    for replicas, runs in reports.items():
        wall = float(np.median(walls[replicas]))
        compute = float(np.median([stage_seconds(r) for r in runs]))
        print(
            f"realtime  {replicas} SVC replica(s): {wall / args.song_s:.2f} s of wall per song second; "
            f"wall / sum of stage durations = {wall / compute:.3f}"
        )
    print("\n".join(stage_table(reports, unit="SVC")))
    print(f"load avg  {load_average()} at end; total {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
