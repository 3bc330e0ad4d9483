"""A small HTTP client for the soundstage API (used by the CLI, tests and benchmarks)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

FINISHED = ("succeeded", "failed", "cancelled")


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

    def jobs(self, status: str | None = None, limit: int = 50) -> dict[str, Any]:
        params: dict[str, Any] = {"limit": limit, **({"status": status} if status else {})}
        return dict(self._json(self.http.get("/v1/jobs", params=params)))

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


def download(url: str, path: Path, timeout_s: float = 120.0) -> int:
    """Fetch a presigned URL with plain HTTP into `path`, streaming; return the byte count."""
    written = 0
    with httpx.stream("GET", url, timeout=timeout_s) as response:
        response.raise_for_status()
        with path.open("wb") as f:
            for chunk in response.iter_bytes():
                f.write(chunk)
                written += len(chunk)
    return written
