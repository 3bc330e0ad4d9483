"""Ingress memory under concurrent large uploads: peak RSS of the HTTP app vs the number of uploads in
flight and vs their size, and how many `/healthz` requests per second it answers meanwhile.

The app is the real one (`build_http_app`, the real `POST /v1/uploads`: spooled, validated block by block,
copied to S3 from the spool) served by uvicorn in a child process of its own, over the embedded S3 store.
For every (N, size) the server is started fresh, so that its peak RSS (`VmHWM`) is that run's; the
idle RSS just before the uploads is subtracted. One more thread polls `/healthz` throughout.

    .venv/bin/python bench/ingress_memory.py        # sizes 8/32/128 MB at N=4; N 1/2/4/8 at 32 MB
    .venv/bin/python bench/ingress_memory.py --sizes-mb 16 --ns 1 4
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import soundfile as sf
from machine_info import load_average, machine

from infra.embedded_s3 import EmbeddedS3, free_port
from infra.settings import Settings


def serve(port: int) -> None:
    """The child: the HTTP app over the store named by the environment, without model deployments."""
    import uvicorn

    from deployments.http.api import build_http_app
    from deployments.http.services import Services
    from infra.jobs import JobStore
    from infra.settings import load_settings
    from infra.storage import Storage
    from pipelines.engine.clients import Models

    settings = load_settings()
    storage = Storage(settings)
    no_client: Any = None  # uploads and /healthz call no model
    models = Models(**dict.fromkeys(Models.__dataclass_fields__, no_client))
    services = Services(settings, storage, JobStore(storage), models, runner=None)
    uvicorn.run(build_http_app(services), host="127.0.0.1", port=port, log_level="warning")


def rss_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} for pid {pid}")


def make_wav(path: Path, size_mb: int) -> None:
    """A 48 kHz stereo 16-bit WAV of about `size_mb` MB (a quiet sine, written in blocks)."""
    frames = size_mb * 1_000_000 // 4
    block = 48_000 * 10
    with sf.SoundFile(path, "w", samplerate=48_000, channels=2, subtype="PCM_16", format="WAV") as out:
        for start in range(0, frames, block):
            n = min(block, frames - start)
            t = (np.arange(start, start + n) / 48_000.0).astype(np.float32)
            tone = 0.1 * np.sin(2 * np.pi * 440 * t)
            out.write(np.stack([tone, tone], axis=1))


def run_one(s3: EmbeddedS3, wav: Path, n: int) -> dict[str, float]:
    port = free_port()
    env = os.environ | s3.env | {"SOUNDSTAGE_MAX_INPUT_DURATION_S": "3600"}
    server = subprocess.Popen([sys.executable, __file__, "--serve", str(port)], env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        idle = rss_kb(server.pid, "VmRSS")
        done = threading.Event()
        health: list[float] = []

        def poll() -> None:
            with httpx.Client(base_url=base, timeout=30) as client:
                while not done.is_set():
                    started = time.perf_counter()
                    client.get("/healthz").raise_for_status()
                    health.append(time.perf_counter() - started)

        statuses: list[int] = []

        def upload() -> None:
            with httpx.Client(base_url=base, timeout=600) as client, wav.open("rb") as f:
                statuses.append(client.post("/v1/uploads", files={"file": ("in.wav", f)}).status_code)

        poller = threading.Thread(target=poll)
        poller.start()
        started = time.perf_counter()
        uploaders = [threading.Thread(target=upload) for _ in range(n)]
        for thread in uploaders:
            thread.start()
        for thread in uploaders:
            thread.join()
        wall = time.perf_counter() - started
        done.set()
        poller.join()
        peak = rss_kb(server.pid, "VmHWM")
        assert statuses == [201] * n, statuses
    finally:
        server.terminate()
        server.wait(timeout=30)
    return {
        "idle_mb": idle / 1024,
        "peak_mb": peak / 1024,
        "growth_mb": (peak - idle) / 1024,
        "wall_s": wall,
        "health_rps": len(health) / wall,
        "health_max_ms": 1000 * max(health, default=0.0),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--sizes-mb", type=int, nargs="+", default=[8, 32, 128])
    parser.add_argument("--size-n", type=int, default=4, help="N for the size sweep")
    parser.add_argument("--ns", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--n-size-mb", type=int, default=32, help="size for the N sweep")
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
        return
    print("\n".join(machine(["fastapi", "starlette", "uvicorn", "httpx", "soundfile"])))
    print(f"load      {load_average()}")
    runs = [(args.size_n, size) for size in args.sizes_mb] + [(n, args.n_size_mb) for n in args.ns]
    with tempfile.TemporaryDirectory() as tmp:
        s3 = EmbeddedS3(Settings(), data_dir=Path(tmp) / "s3").start()
        try:
            wavs: dict[int, Path] = {}
            header = f"{'N':>3} {'size MB':>8} {'idle MB':>8} {'peak MB':>8} {'growth MB':>10} "
            print(header + f"{'wall s':>7} {'/healthz rps':>13} {'max ms':>7}")
            for n, size in runs:
                if size not in wavs:
                    wavs[size] = Path(tmp) / f"{size}.wav"
                    make_wav(wavs[size], size)
                r = run_one(s3, wavs[size], n)
                print(
                    f"{n:>3} {size:>8} {r['idle_mb']:>8.0f} {r['peak_mb']:>8.0f} {r['growth_mb']:>10.1f} "
                    f"{r['wall_s']:>7.1f} {r['health_rps']:>13.0f} {r['health_max_ms']:>7.0f}",
                    flush=True,
                )
        finally:
            s3.stop()
    print(f"load      {load_average()}")


if __name__ == "__main__":
    main()
