"""A small HTTP client for the soundstage API (used by the CLI, tests and benchmarks)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

FINISHED = ("succeeded", "failed", "cancelled")
EVENTS_READ_TIMEOUT_S = 60.0  # the server sends a keep-alive comment every 15 s on a quiet stream


class ApiRequestError(RuntimeError):
    """The API answered with an error body `{error: {code, message}}`."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"HTTP {status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message


class JobFailedError(RuntimeError):
    """A waited-for job ended `failed` or `cancelled`."""

    def __init__(self, job: dict[str, Any]) -> None:
        error = job.get("error") or {}
        super().__init__(f"job {job['id']} {job['status']}: {error.get('stage')} {error.get('message', '')}")
        self.job = job


class SoundstageClient:
    def __init__(self, base_url: str, api_key: str | None = None, timeout_s: float = 60.0) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = httpx.Client(base_url=base_url.rstrip("/"), headers=headers, timeout=timeout_s)

    def close(self) -> None:
        self.http.close()

    def _json(self, response: httpx.Response) -> Any:
        if response.status_code >= 400:
            try:
                error = response.json()["error"]
            except (ValueError, KeyError, TypeError):
                error = {"code": "http_error", "message": response.text[:500]}
            raise ApiRequestError(response.status_code, error.get("code", "?"), error.get("message", ""))
        return response.json()

    def health(self) -> dict[str, Any]:
        return dict(self._json(self.http.get("/healthz")))

    def deployments(self) -> dict[str, Any]:
        """Each model deployment's status (`GET /v1/deployments`)."""
        return dict(self._json(self.http.get("/v1/deployments")))

    def submit(self, kind: str, body: dict[str, Any], idempotency_key: str | None = None) -> dict[str, Any]:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        return dict(self._json(self.http.post(f"/v1/jobs/{kind}", json=body, headers=headers)))

    def job(self, job_id: str) -> dict[str, Any]:
        return dict(self._json(self.http.get(f"/v1/jobs/{job_id}")))

    def cancel(self, job_id: str) -> dict[str, Any]:
        return dict(self._json(self.http.delete(f"/v1/jobs/{job_id}")))

    def jobs(self, status: str | None = None, limit: int = 50, after: str | None = None) -> dict[str, Any]:
        params: dict[str, Any] = {"limit": limit, **({"status": status} if status else {})}
        params |= {"after": after} if after else {}
        return dict(self._json(self.http.get("/v1/jobs", params=params)))

    def report(self, job_id: str) -> dict[str, Any]:
        """Where the job's time went (`GET /v1/jobs/{id}/report`)."""
        return dict(self._json(self.http.get(f"/v1/jobs/{job_id}/report")))

    def submit_form(
        self,
        kind: str,
        fields: dict[str, str],
        file: Path | None = None,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        """Submit a kind that takes audio as a multipart form: `fields` as form fields, `file` uploaded."""
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        return dict(self._json(self._post_form(f"/v1/jobs/{kind}", fields, file, headers)))

    def _post_form(
        self, path: str, fields: dict[str, str], file: Path | None, headers: dict[str, str] | None = None
    ) -> httpx.Response:
        if file is None:  # form-encoded: FastAPI's form fields read it as they read multipart
            return self.http.post(path, data=fields, headers=headers)
        with file.open("rb") as f:
            return self.http.post(path, data=fields, files={"file": (file.name, f)}, headers=headers)

    def transcribe(self, file: Path, fields: dict[str, str]) -> httpx.Response:
        """`POST /v1/audio/transcriptions`; the response as is (its body is JSON, text, SRT or VTT)."""
        response = self._post_form("/v1/audio/transcriptions", fields, file)
        if response.status_code >= 400:
            self._json(response)
        return response

    def speech(self, body: dict[str, Any], path: Path) -> int:
        """`POST /v1/audio/speech`, the audio streamed into `path`; return the byte count."""
        with self.http.stream("POST", "/v1/audio/speech", json=body) as response:
            if response.status_code >= 400:
                response.read()
                self._json(response)
            return _write_stream(response, path)

    def upload(self, file: Path) -> dict[str, Any]:
        """`POST /v1/uploads`: the file validated and stored; `{upload_id, duration_s, ...}`."""
        return dict(self._json(self._post_form("/v1/uploads", {}, file)))

    def voices(self) -> dict[str, Any]:
        return dict(self._json(self.http.get("/v1/voices")))

    def register_voice(self, file: Path, name: str, transcript: str | None = None) -> dict[str, Any]:
        fields = {"name": name, **({"transcript": transcript} if transcript else {})}
        return dict(self._json(self._post_form("/v1/voices", fields, file)))

    def delete_voice(self, voice_id: str) -> None:
        response = self.http.delete(f"/v1/voices/{voice_id}")
        if response.status_code >= 400:
            self._json(response)

    def events(self, job_id: str, last_event_id: str | None = None) -> Iterator[JobEvent | None]:
        """The job's Server-Sent Events (`GET /v1/jobs/{id}/events`) until the server closes the stream;
        None for each keep-alive comment (so a caller can check a deadline on a quiet stream)."""
        headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
        timeout = httpx.Timeout(self.http.timeout.connect, read=EVENTS_READ_TIMEOUT_S)
        with self.http.stream("GET", f"/v1/jobs/{job_id}/events", headers=headers, timeout=timeout) as r:
            if r.status_code >= 400:
                r.read()
                self._json(r)
            yield from parse_sse(r.iter_lines())

    def wait(
        self,
        job_id: str,
        timeout_s: float = 600.0,
        poll_s: float = 0.5,
        on_update: Callable[[dict[str, Any]], None] | None = None,
    ) -> dict[str, Any]:
        """Poll until the job finishes; return it if it succeeded, else raise `JobFailedError`."""
        deadline = time.monotonic() + timeout_s
        while True:
            job = self.job(job_id)
            if on_update:
                on_update(job)
            if job["status"] in FINISHED:
                if job["status"] != "succeeded":
                    raise JobFailedError(job)
                return job
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {job['status']} after {timeout_s:.0f} s")
            time.sleep(poll_s)


@dataclass(frozen=True)
class JobEvent:
    """One Server-Sent Event of a job: `event` (status, stage, progress, retry, result, error, end), its
    JSON `data` and its `id` (the record's update time in ms, what `Last-Event-ID` resumes from)."""

    event: str
    data: dict[str, Any]
    id: str | None = None


def parse_sse(lines: Iterator[str]) -> Iterator[JobEvent | None]:
    """Events from a `text/event-stream`, one per blank-line-terminated block; None for a comment line."""
    fields: dict[str, str] = {}
    for line in lines:
        if line.startswith(":"):
            yield None
        elif line:
            name, _, value = line.partition(":")
            fields[name] = value.removeprefix(" ")
        elif "data" in fields:
            yield JobEvent(fields.get("event", "message"), json.loads(fields["data"]), fields.get("id"))
            fields = {}


def _write_stream(response: httpx.Response, path: Path) -> int:
    written = 0
    with path.open("wb") as f:
        for chunk in response.iter_bytes():
            f.write(chunk)
            written += len(chunk)
    return written


def download(url: str, path: Path, timeout_s: float = 120.0) -> int:
    """Fetch a presigned URL with plain HTTP into `path`, streaming; return the byte count."""
    with httpx.stream("GET", url, timeout=timeout_s) as response:
        response.raise_for_status()
        return _write_stream(response, path)
