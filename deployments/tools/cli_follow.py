"""Following a job from the CLI: a progress bar fed by the job's Server-Sent Events, then the result's
objects downloaded through their presigned URLs."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from tqdm import tqdm

from infra.client import ApiRequestError, JobEvent, JobFailedError, SoundstageClient, download

RECONNECTS = 5  # a dropped stream is resumed with Last-Event-ID this many times in a row


@dataclass
class JobFollower:
    """Reads a job's events until `end`; `job` is the job as `GET /v1/jobs/{id}` last showed it."""

    client: SoundstageClient
    job_id: str
    bar: tqdm[Any] | None = None
    state: dict[str, Any] = field(default_factory=dict)
    last_event_id: str | None = None

    def run(self, timeout_s: float) -> dict[str, Any]:
        """The finished job if it succeeded; `JobFailedError` if it failed or was cancelled,
        `TimeoutError` after `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        drops = 0
        while "end" not in self.state:
            seen = self.last_event_id
            try:
                self._read(deadline)
            except httpx.TransportError:
                if drops >= RECONNECTS:
                    raise
            if "end" in self.state:
                break
            # The stream closed or broke before `end`: resume after the last event, backing off while
            # reconnections bring nothing new.
            drops = 0 if self.last_event_id != seen else drops + 1
            self._check(deadline)
            time.sleep(min(2.0**drops, 10.0))
        job = self.client.job(self.job_id)  # the record as stored, with fresh URLs
        if job["status"] != "succeeded":
            raise JobFailedError(job)
        return job

    def _read(self, deadline: float) -> None:
        for event in self.client.events(self.job_id, self.last_event_id):
            self._check(deadline)
            if event is not None:
                self._apply(event)
            if "end" in self.state:
                return

    def _check(self, deadline: float) -> None:
        if time.monotonic() > deadline:
            raise TimeoutError(f"job {self.job_id} still {self.state.get('status')} at --timeout")

    def _apply(self, event: JobEvent) -> None:
        self.last_event_id = event.id or self.last_event_id
        self.state.update({k: v for k, v in event.data.items() if k != "id"})
        if event.event == "end":
            self.state["end"] = True
        if self.bar is not None:
            self._draw(self.bar)

    def _draw(self, bar: tqdm[Any]) -> None:
        progress = 1.0 if self.state.get("status") == "succeeded" else float(self.state.get("progress") or 0)
        bar.n = round(progress * 100)
        parts = [str(self.state.get("status") or ""), str(self.state.get("stage") or "")]
        segments = self.state.get("segments")
        if segments:
            parts.append(f"{segments['done']}/{segments['total']} segments")
        if self.state.get("retries"):
            parts.append(f"{self.state['retries']} retries")
        bar.set_postfix_str(" ".join(p for p in parts if p))
        bar.refresh()


def follow(client: SoundstageClient, job_id: str, timeout_s: float, show_progress: bool) -> dict[str, Any]:
    """Follow the job to its end (a bar on stderr when `show_progress`)."""
    if not show_progress:
        return JobFollower(client, job_id).run(timeout_s)
    with tqdm(total=100, desc=f"job {job_id[:8]}", unit="%", bar_format="{l_bar}{bar}| {postfix}") as bar:
        return JobFollower(client, job_id, bar).run(timeout_s)


def download_results(job: dict[str, Any], output_dir: Path) -> dict[str, Path]:
    """Every object of the result (those with a `url`) saved as `{job_id}-{file name}` in `output_dir`."""
    output_dir.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}
    for name, item in (job.get("result") or {}).items():
        if isinstance(item, dict) and "url" in item:
            path = output_dir / f"{job['id']}-{item['key'].rsplit('/', 1)[-1]}"
            try:
                download(item["url"], path)
            except httpx.HTTPStatusError as e:
                raise ApiRequestError(e.response.status_code, "download_failed", f"{name}: {e}") from e
            files[name] = path
    return files


def result_lines(job: dict[str, Any], files: dict[str, Path]) -> list[str]:
    """What a person reads about a finished job: where each file went, and the model and its weights
    (random-init `debug` weights said so)."""
    lines = [f"{name}: {path} ({path.stat().st_size} bytes)" for name, path in files.items()]
    metadata = (job.get("result") or {}).get("metadata") or {}
    model = metadata.get("model") or {}
    weights = metadata.get("weights")
    if model or weights:
        note = " (random-init debug model: its output is noise)" if weights == "debug-random" else ""
        lines.append(f"model {model.get('model_id')}, weights {weights}{note}, seed {metadata.get('seed')}")
    return lines
