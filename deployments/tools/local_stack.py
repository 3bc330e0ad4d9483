"""The local stack: a Ray cluster on this machine, the embedded S3 store (SeaweedFS, data in the data
dir; unless an endpoint is configured) and the soundstage app deployed from `serve_config.yaml`'s local
profile. Whichever store it is, it must pass the conditional-write probe before anything is served."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deployments.tools.serve_config import deploy, load_config, local_profile
from infra.embedded_s3 import EmbeddedS3, default_data_dir
from infra.settings import Settings, load_settings
from infra.storage import Storage
from infra.store_probe import probe_conditional_writes

logger = logging.getLogger(__name__)
RAY_START_TRIES = 3


@dataclass
class LocalStackOptions:
    port: int = 8000
    config_path: Path | None = None
    num_cpus: int | None = None
    logical_gpus: int = 0
    local_cpus: float = 0.05
    max_replicas: int = 2
    min_replicas: int = 1
    model_uris: dict[str, str] = field(default_factory=dict)
    user_configs: dict[str, dict[str, Any]] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    log_to_driver: bool = True
    data_dir: Path | None = None  # default: infra.embedded_s3.default_data_dir()


def enable_ray_token_auth() -> None:
    """Ray 2.60 turns token auth on for new local clusters; we say so explicitly (ARCHITECTURE.md).

    Ray reads `RAY_AUTH_MODE` when it is first imported, so this must run before `import ray`.
    """
    import sys

    if "ray" in sys.modules and os.environ.get("RAY_AUTH_MODE") is None:
        raise RuntimeError("set RAY_AUTH_MODE before ray is imported (Ray reads it at import time)")
    os.environ.setdefault("RAY_AUTH_MODE", "token")


class LocalStack:
    """`start()` brings everything up; `stop()` shuts Serve down, and Ray and the embedded S3 server
    if `start()` started them."""

    def __init__(self, options: LocalStackOptions | None = None) -> None:
        self.options = options or LocalStackOptions()
        self.s3: EmbeddedS3 | None = None
        self.configured: Settings = load_settings()
        self.settings: Settings = self.configured  # pointed at the embedded store once it runs
        self._started_ray = False

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.options.port}"

    @property
    def data_dir(self) -> Path:
        """Where the embedded store keeps its data (in `seaweedfs/` under it)."""
        return self.options.data_dir or default_data_dir()

    def start(self) -> LocalStack:
        env = self._settings_env()
        self.settings = self.configured
        try:
            if self.settings.s3_endpoint_url is None:
                self.s3 = EmbeddedS3(self.settings, data_dir=self.data_dir / "seaweedfs").start()
                self.settings = self.s3.settings
                env.update(self.s3.env)
            probe_conditional_writes(Storage(self.settings))
        except BaseException:
            self._stop_store()
            raise
        self._start_ray()
        config = local_profile(
            load_config(self.options.config_path),
            port=self.options.port,
            env={**env, **self.options.env},
            local_cpus=self.options.local_cpus,
            keep_gpu_shares=self.options.logical_gpus > 0,
            max_replicas=self.options.max_replicas,
            min_replicas=self.options.min_replicas,
            model_uris=self.options.model_uris,
            user_configs=self.options.user_configs,
        )
        deploy(config)
        return self

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
        for attempt in range(1, RAY_START_TRIES + 1):
            try:
                ray.init(
                    num_cpus=self.options.num_cpus,
                    num_gpus=self.options.logical_gpus,
                    include_dashboard=False,
                    log_to_driver=self.options.log_to_driver,
                    logging_level=logging.WARNING,
                )
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
        self._started_ray = True

    def stop(self) -> None:
        import ray
        from ray import serve

        if ray.is_initialized():
            serve.shutdown()
        if self._started_ray:
            ray.shutdown()
            self._started_ray = False
        self._stop_store()

    def _stop_store(self) -> None:
        if self.s3 is not None:
            self.s3.stop()
            self.s3 = None
