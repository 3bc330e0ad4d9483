"""How many `GET /v1/jobs/{id}/events` listeners one ingress process holds.

The HTTP app (`build_http_app`, the real embedded S3 store, model doubles) runs under uvicorn in a child
process, as one ingress replica would; this process opens N concurrent event streams on one job (httpx,
asyncio), waits until every stream has its first event, then writes a progress change into the job
record and times until every listener has seen it (the one poller per job reads the record every
`events_poll_s` = 0.5 s and wakes all listeners). Printed per N: connect time, fan-out latency (median
and slowest), the server's resident memory and its thread count (flat: no thread per listener).

    .venv/bin/python bench/events_listeners.py [--listeners 250 500 1000 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from machine_info import machine

from infra.embedded_s3 import EmbeddedS3, free_port
from infra.jobs import JobRecord, JobStore, SegmentProgress
from infra.settings import Settings
from infra.storage import Storage


def serve(settings: Settings, port: int) -> None:
    import uvicorn

    from deployments.http.api import build_http_app
    from deployments.http.services import Services
    from tests.deployments.http.conftest import RecordingRunner
    from tests.pipelines.test_stages import models_with

    storage = Storage(settings)
    services = Services(settings, storage, JobStore(storage), models_with(), RecordingRunner())
    uvicorn.run(build_http_app(services), host="127.0.0.1", port=port, log_level="warning", backlog=4096)


def proc_status(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {k: v.strip() for k, _, v in (line.partition(":") for line in lines)}


async def listen(
    client: httpx.AsyncClient,
    url: str,
    first: asyncio.Event,
    seen: dict[int, float],
    i: int,
    ready: list[int],
    target: int,
) -> None:
    async with client.stream("GET", url) as response:
        async for line in response.aiter_lines():
            if line.startswith("event: status") and i not in ready:
                ready.append(i)
                if len(ready) == target:
                    first.set()
            if line.startswith("data:") and '"done":1' in line and i not in seen:
                seen[i] = time.perf_counter()
                return


async def level(base: str, jobs: JobStore, n: int, pid: int) -> dict[str, Any]:
    record, _ = jobs.create("separate", {"upload_id": "x"})
    claimed = jobs.claim(record.id, "bench", 600)
    assert claimed is not None
    limits = httpx.Limits(max_connections=n + 10, max_keepalive_connections=0)
    async with httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(120, pool=120)) as client:
        first = asyncio.Event()
        seen: dict[int, float] = {}
        ready: list[int] = []
        url = f"{base}/v1/jobs/{record.id}/events"
        started = time.perf_counter()
        tasks = [asyncio.create_task(listen(client, url, first, seen, i, ready, n)) for i in range(n)]
        await asyncio.wait_for(first.wait(), 300)
        connected_s = time.perf_counter() - started
        status = proc_status(pid)

        def step(r: JobRecord) -> None:
            r.stage, r.segments, r.progress = (
                "separate_stems",
                SegmentProgress(stage="s", done=1, total=2),
                0.5,
            )

        written = time.perf_counter()
        await asyncio.to_thread(jobs.update, record.id, step, attempt=claimed.attempt)
        await asyncio.wait_for(asyncio.gather(*tasks), 120)
        lags = sorted(t - written for t in seen.values())
    return {
        "n": n,
        "connected_s": connected_s,
        "p50_ms": statistics.median(lags) * 1000,
        "max_ms": lags[-1] * 1000,
        "rss_mb": int(status["VmRSS"].split()[0]) / 1024,
        "threads": status["Threads"],
    }


async def main(levels: list[int]) -> None:
    with tempfile.TemporaryDirectory() as data_dir, EmbeddedS3(Settings(), data_dir=Path(data_dir)) as s3:
        settings = s3.settings
        port = free_port()
        server = multiprocessing.get_context("spawn").Process(
            target=serve, args=(settings, port), daemon=True
        )
        server.start()
        base = f"http://127.0.0.1:{port}"
        for _ in range(200):
            try:
                httpx.get(f"{base}/healthz", timeout=1)
                break
            except httpx.HTTPError:
                await asyncio.sleep(0.1)
        assert server.pid is not None
        idle = proc_status(server.pid)
        print("\n".join(machine(["uvicorn", "fastapi", "httpx"])))
        print(f"server idle: {int(idle['VmRSS'].split()[0]) / 1024:.0f} MB RSS, {idle['Threads']} threads")
        header = ("listeners", "connect s", "fan-out p50 ms", "max ms", "RSS MB", "threads")
        print(" ".join(f"{h:>{w}}" for h, w in zip(header, (9, 9, 14, 7, 7, 7), strict=True)))
        jobs = JobStore(Storage(settings))
        for n in levels:
            row = await level(base, jobs, n, server.pid)
            print(
                f"{row['n']:>9} {row['connected_s']:>9.2f} {row['p50_ms']:>14.0f} {row['max_ms']:>7.0f} "
                f"{row['rss_mb']:>7.0f} {row['threads']:>7}",
                flush=True,
            )
        server.terminate()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listeners", type=int, nargs="+", default=[250, 500, 1000, 2000])
    asyncio.run(main(parser.parse_args().listeners))
