"""The embedded S3 server for local runs and tests: moto's S3 server in a child process on 127.0.0.1.

Data lives in that process's memory, so it is gone when the server stops; point
`SOUNDSTAGE_S3_ENDPOINT_URL` at a real S3-compatible server (MinIO, Ceph, AWS) to keep it.
"""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
import time
from types import TracebackType

import httpx
from pydantic import SecretStr

from infra.settings import Settings
from infra.storage import Storage

logger = logging.getLogger(__name__)

LOCAL_ACCESS_KEY = "soundstage-local"
LOCAL_SECRET_KEY = "soundstage-local-secret"


class EmbeddedS3Error(RuntimeError):
    """The embedded S3 server did not start."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on `host` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:
    """In the child, before exec: ask Linux to SIGTERM it when its parent dies (no orphaned servers)."""
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        pr_set_pdeathsig = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


class EmbeddedS3:
    """Start with `start()` (or as a context manager); `settings` then points at it, bucket created."""

    def __init__(self, settings: Settings, host: str = "127.0.0.1", port: int | None = None) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.endpoint_url = f"http://{host}:{self.port}"
        self.settings = settings.model_copy(
            update={
                "s3_endpoint_url": self.endpoint_url,
                "s3_access_key_id": LOCAL_ACCESS_KEY,
                "s3_secret_access_key": SecretStr(LOCAL_SECRET_KEY),
                "s3_addressing_style": "path",
            }
        )
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def env(self) -> dict[str, str]:
        """The `SOUNDSTAGE_*` variables that point another process at this server."""
        return {
            "SOUNDSTAGE_S3_ENDPOINT_URL": self.endpoint_url,
            "SOUNDSTAGE_S3_ACCESS_KEY_ID": LOCAL_ACCESS_KEY,
            "SOUNDSTAGE_S3_SECRET_ACCESS_KEY": LOCAL_SECRET_KEY,
            "SOUNDSTAGE_S3_ADDRESSING_STYLE": "path",
            "SOUNDSTAGE_S3_BUCKET": self.settings.s3_bucket,
            "SOUNDSTAGE_S3_REGION": self.settings.s3_region,
        }

    def start(self, timeout_s: float = 30.0) -> EmbeddedS3:
        command = [sys.executable, "-m", "moto.server", "-H", self.host, "-p", str(self.port)]
        self._process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=_die_with_parent
        )
        try:
            self._wait_ready(timeout_s)
            Storage(self.settings).ensure_bucket()
        except BaseException:
            self.stop()
            raise
        logger.info("embedded S3 server on %s, bucket %s", self.endpoint_url, self.settings.s3_bucket)
        return self

    def _wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process is not None and self._process.poll() is not None:
                raise EmbeddedS3Error(f"moto server exited with code {self._process.returncode}")
            try:
                httpx.get(f"{self.endpoint_url}/moto-api/", timeout=1.0)
                return
            except httpx.HTTPError:
                time.sleep(0.1)
        raise EmbeddedS3Error(f"moto server did not answer on {self.endpoint_url} within {timeout_s} s")

    def stop(self) -> None:
        if self._process is None:
            return
        self._process.terminate()
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._process = None

    def __enter__(self) -> EmbeddedS3:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
