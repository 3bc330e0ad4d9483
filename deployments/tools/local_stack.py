"""The local stack: a Ray cluster on this machine, the embedded S3 store (SeaweedFS, data in the data
dir; unless an endpoint is configured) and the soundstage app deployed from `serve_config.yaml`'s local
profile. Whichever store it is, it must pass the conditional-write probe before anything is served."""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deployments.tools.health_watch import HealthWatch
from deployments.tools.serve_config import deploy, load_config, local_profile
from infra.embedded_s3 import EmbeddedS3
from infra.model_store import hub_reachable, missing_model
from infra.settings import Settings, load_settings
from infra.storage import Storage
from infra.store_host import default_data_dir, free_port, store_dir
from infra.store_probe import probe_conditional_writes

logger = logging.getLogger(__name__)
RAY_START_TRIES = 3
RAY_EXIT_TIMEOUT_S = 15.0
DASHBOARD_PORT = 8265  # Ray's default, what `serve status` and `ray list` try first
METRICS_PORT = 8090  # Ray's Prometheus endpoint for `soundstage serve` (Ray's own default is random)


@dataclass(frozen=True)
class StartTimes:
    """How long `LocalStack.start` took: `total_s` in all, `store_s` (embedded store + probe), `ray_s`,
    and per deployment the seconds from the deploy request until Serve first reported it HEALTHY
    (sampled every `health_watch.HEALTH_POLL_S`), keyed `application/deployment`."""

    total_s: float
    store_s: float
    ray_s: float
    deployments: dict[str, float]


def start_report(times: StartTimes) -> list[str]:
    """The quickstart lines: the total and its parts, then every deployment with its time, slowest first."""
    deploy_s = max(times.deployments.values(), default=0.0)
    lines = [
        f"  started in:      {times.total_s:.1f} s (store {times.store_s:.1f} s, Ray {times.ray_s:.1f} s, "
        f"deployments {deploy_s:.1f} s, in parallel)"
    ]
    width = max((len(name) for name in times.deployments), default=0)
    for name, seconds in sorted(times.deployments.items(), key=lambda item: -item[1]):
        lines.append(f"    {name:<{width}}  healthy after {seconds:5.1f} s")
    return lines


@dataclass
class LocalStackOptions:
    port: int = 8000
    config_path: Path | None = None
    num_cpus: int | None = None
    logical_gpus: int | None = None  # GPUs for Ray; None: nvidia-smi's count for production models, else 0
    models: str = "offline"  # or "production": serve_config.yaml's URIs (serve_config.local_profile)
    local_cpus: float = 0.05
    max_replicas: int = 2
    min_replicas: int = 1
    model_uris: dict[str, str] = field(default_factory=dict)
    user_configs: dict[str, dict[str, Any]] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    log_to_driver: bool = True
    data_dir: Path | None = None  # default: infra.store_host.default_data_dir()
    dashboard_port: int | None = None  # on 127.0.0.1 (`soundstage serve`: 8265); None: no dashboard
    metrics_port: int | None = None  # Ray's Prometheus endpoint (`soundstage serve`: 8090); None: Ray's pick


def enable_ray_token_auth() -> None:
    """Ray 2.60 turns token auth on for new local clusters; we say so explicitly (ARCHITECTURE.md).

    Ray reads `RAY_AUTH_MODE` when it is first imported, so this must run before `import ray`.
    """
    import sys

    if "ray" in sys.modules and os.environ.get("RAY_AUTH_MODE") is None:
        raise RuntimeError("set RAY_AUTH_MODE before ray is imported (Ray reads it at import time)")
    os.environ.setdefault("RAY_AUTH_MODE", "token")


class ModelsMissingError(RuntimeError):
    """Models of the config cannot be loaded from here; the message has one line per model."""


def detect_gpus() -> int:
    """The GPUs `nvidia-smi -L` lists (0 without the tool); asked of nvidia-smi, not torch, so that the
    CLI process stays free of the model stack."""
    import shutil
    import subprocess

    if shutil.which("nvidia-smi") is None:
        return 0
    try:
        listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20, check=True)
    except (OSError, subprocess.SubprocessError):
        return 0
    return sum(line.startswith("GPU ") for line in listing.stdout.splitlines())


class LocalStack:
    """`start()` brings everything up; `stop()` shuts Serve down, and Ray and the embedded S3 server
    if `start()` started them."""

    def __init__(self, options: LocalStackOptions | None = None) -> None:
        self.options = options or LocalStackOptions()
        self.s3: EmbeddedS3 | None = None
        self.configured: Settings = load_settings()
        self.settings: Settings = self.configured  # pointed at the embedded store once it runs
        self._started_ray = False
        self.gpus = 0
        self.dashboard_url: str | None = None  # http://127.0.0.1:PORT once Ray runs with a dashboard
        self.config: dict[str, Any] | None = None  # the Serve config deployed by `start()`
        self.metrics_url: str | None = None  # http://127.0.0.1:PORT/metrics once Ray runs
        self.start_times: StartTimes | None = None  # once `start()` has returned

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.options.port}"

    @property
    def data_dir(self) -> Path:
        """Where the embedded store keeps its data (in `seaweedfs/` under it)."""
        return self.options.data_dir or default_data_dir()

    def start(self) -> LocalStack:
        began = time.monotonic()
        env = self._settings_env()
        self.settings = self.configured
        try:
            if self.settings.s3_endpoint_url is None:
                self.s3 = EmbeddedS3(self.settings, data_dir=store_dir(self.data_dir)).start()
                self.settings = self.s3.settings
                env.update(self.s3.env)
            probe_conditional_writes(Storage(self.settings))
        except BaseException:
            self._stop_store()
            raise
        store_s = time.monotonic() - began
        gpus = self.options.logical_gpus
        if gpus is None:  # offline models run on the CPU: no GPU shares to reserve for them
            gpus = detect_gpus() if self.options.models == "production" else 0
        self.gpus = gpus
        config = local_profile(
            load_config(self.options.config_path),
            port=self.options.port,
            env={**env, **self.options.env},
            local_cpus=self.options.local_cpus,
            gpus=self.gpus,
            max_replicas=self.options.max_replicas,
            min_replicas=self.options.min_replicas,
            models=self.options.models,
            model_uris=self.options.model_uris,
            user_configs=self.options.user_configs,
        )
        try:
            self._check_models(config)
        except BaseException:
            self._stop_store()
            raise
        ray_began = time.monotonic()
        self._start_ray()
        ray_s = time.monotonic() - ray_began
        with HealthWatch() as watch:
            deploy(config)
        self.config = config
        self.start_times = StartTimes(time.monotonic() - began, store_s, ray_s, watch.healthy)
        return self

    def _check_models(self, config: dict[str, Any]) -> None:
        """Fail before Ray starts when a model of the config cannot be loaded from this machine."""
        uris = {
            name: uri
            for app in config["applications"]
            for name, uri in app.get("args", {}).items()
            if name.endswith("_model_uri")
        }
        missing = {name: missing_model(uri, self.settings, hub_reachable=False) for name, uri in uris.items()}
        from_hub = [name for name, fix in missing.items() if fix and fix.startswith("huggingface-cli")]
        reachable = bool(from_hub) and hub_reachable()  # asked only when a hub model is not cached
        if reachable:
            missing.update(dict.fromkeys(from_hub))
        lines = [
            f"  {name.removesuffix('_model_uri')} ({uris[name]}): {fix}"
            for name, fix in missing.items()
            if fix
        ]
        if lines:
            hub = "" if reachable or not from_hub else " (the Hugging Face hub is not reachable from here)"
            raise ModelsMissingError(
                f"{len(lines)} model(s) cannot be loaded{hub}; to fix:\n" + "\n".join(lines)
            )

    def check(self) -> None:
        """Raise `EmbeddedS3Error` if the embedded store has stopped without being asked to."""
        if self.s3 is not None:
            self.s3.check()

    def _settings_env(self) -> dict[str, str]:
        return {k: v for k, v in os.environ.items() if k.startswith("SOUNDSTAGE_")}

    def _start_ray(self) -> None:
        enable_ray_token_auth()
        import ray

        if ray.is_initialized():
            return
        dashboard = self.options.dashboard_port is not None
        dashboard_port = self.options.dashboard_port or DASHBOARD_PORT
        for attempt in range(1, RAY_START_TRIES + 1):
            before = process_tree(os.getpid())
            try:
                with _keeping_sigterm_handler():
                    context = ray.init(
                        num_cpus=self.options.num_cpus,
                        num_gpus=self.gpus,
                        include_dashboard=dashboard,
                        dashboard_host="127.0.0.1",
                        dashboard_port=dashboard_port,
                        log_to_driver=self.options.log_to_driver,
                        logging_level=logging.WARNING,
                        _metrics_export_port=self.options.metrics_port,
                    )
                self.metrics_url = f"http://127.0.0.1:{_metrics_port(context)}/metrics"
                url = getattr(context, "dashboard_url", None) if dashboard else None
                if url:
                    self.dashboard_url = url if "://" in url else f"http://{url}"
                break
            except Exception as e:
                # On an overloaded machine the raylet can miss a fixed startup deadline (e.g. waiting for
                # its agents' ports) and Ray gives up with this message; a fresh start usually succeeds.
                if "timed out during startup" not in str(e) or attempt == RAY_START_TRIES:
                    raise
                logger.warning(
                    "Ray node start timed out (try %d of %d); starting again", attempt, RAY_START_TRIES
                )
                ray.shutdown()
                _end_partial_start(before)
                if dashboard and not _bindable(dashboard_port):
                    dashboard_port = free_port()
                    logger.warning("the dashboard's port is still taken; trying port %d", dashboard_port)
        self._started_ray = True

    def stop(self) -> None:
        import ray
        from ray import serve

        if ray.is_initialized():
            serve.shutdown()
        if self._started_ray:
            ray_processes = _ray_process_tree()
            ray.shutdown(wait_for_processes=True)
            # `wait_for_processes` waits for the GCS, raylet and dashboard only; their own children
            # (DashboardAgent, RuntimeEnvAgent, workers) exit after them, or are ended here.
            reap(ray_processes, timeout_s=RAY_EXIT_TIMEOUT_S)
            self._started_ray = False
            self.dashboard_url = self.metrics_url = None
        self._stop_store()

    def _stop_store(self) -> None:
        if self.s3 is not None:
            self.s3.stop()
            self.s3 = None


def _metrics_port(context: Any) -> int:
    """The port Ray's metrics agent exports on (the one asked for, or the one Ray chose)."""
    return int(context.address_info["metrics_export_port"])


@contextmanager
def _keeping_sigterm_handler() -> Iterator[None]:
    """Put the caller's SIGTERM handler back after `ray.init`.

    `ray.init` installs its own: `sys.exit(15)` first, then the node's, which drains the node for up to
    30 s and exits from inside the handler (seen: exit 134 about 3 s in, Ray's agents left running).
    The process that owns the stack decides what SIGTERM means; `soundstage serve` stops the stack.
    """
    main = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGTERM) if main else None
    try:
        yield
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _ray_process_tree() -> set[int]:
    """The processes `ray.init` started (GCS, raylet, dashboard, ...) and all of theirs."""
    from ray._private import worker

    node = getattr(worker, "_global_node", None)
    started = getattr(node, "all_processes", {}) or {}
    roots = {info.process.pid for infos in started.values() for info in infos if info.process is not None}
    return roots.union(*(process_tree(pid) for pid in roots))


def _end_partial_start(before: set[int]) -> None:
    """End what a `ray.init` that gave up left running: the processes it started (this process's
    descendants that were not there before it; the failed node is not Ray's global node, so
    `ray.shutdown` does not know them), so the next try finds their ports free."""
    left = process_tree(os.getpid()) - before
    for pid in left:
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    reap(left, timeout_s=RAY_EXIT_TIMEOUT_S)


def _bindable(port: int) -> bool:
    """Whether `port` on 127.0.0.1 can be bound as Ray checks it (no SO_REUSEADDR)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def process_tree(root: int) -> set[int]:
    """The ids of `root`'s descendants (Linux `/proc`; empty elsewhere)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # exited meanwhile
        parents[int(stat.parent.name)] = int(fields[1])
    tree: set[int] = set()
    frontier = {root}
    while frontier:
        frontier = {pid for pid, parent in parents.items() if parent in frontier} - tree
        tree |= frontier
    return tree


def reap(pids: set[int], *, timeout_s: float) -> None:
    """Wait up to `timeout_s` for `pids` to exit, then SIGKILL what is left, with a warning naming it."""
    deadline = time.monotonic() + timeout_s
    alive = {pid: name for pid in pids if (name := _name(pid)) is not None}
    while alive and time.monotonic() < deadline:
        time.sleep(0.2)
        alive = {pid: name for pid, name in alive.items() if _name(pid) == name}
    for pid, name in alive.items():
        logger.warning("Ray process %d (%s) still up %.0f s after shutdown; killing it", pid, name, timeout_s)
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _name(pid: int) -> str | None:
    """The process's command line, or None once it has exited (a zombie counts as exited)."""
    try:
        if " Z " in Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1][:4]:
            return None
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")[:80]
    except OSError:
        return None
