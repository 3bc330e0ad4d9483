"""deployments/tools/serve_config.py: the local profile derived from serve_config.yaml (no Ray cluster)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from ray.serve.schema import ServeDeploySchema

from deployments.tools.serve_config import load_config, local_profile

SERVE_CONFIG = Path(__file__).resolve().parents[2] / "serve_config.yaml"
ENV = {"SOUNDSTAGE_S3_ENDPOINT_URL": "http://127.0.0.1:9999", "SOUNDSTAGE_S3_BUCKET": "bench-bucket"}


@pytest.fixture(scope="module")
def production() -> dict[str, Any]:
    return load_config(SERVE_CONFIG)


def _deployments(config: dict[str, Any]) -> list[dict[str, Any]]:
    return [d for app in config["applications"] for d in app["deployments"]]


def test_local_profile_validates_and_binds_loopback(production: dict[str, Any]) -> None:
    local = local_profile(production, port=8123, env=ENV)
    ServeDeploySchema.model_validate(local)
    assert local["http_options"]["host"] == "127.0.0.1"
    assert local["http_options"]["port"] == 8123
    assert local["proxy_location"] == "HeadOnly"


def test_local_profile_zeroes_gpu_shares(production: dict[str, Any]) -> None:
    assert any(d["ray_actor_options"].get("num_gpus", 0) > 0 for d in _deployments(production))
    local = local_profile(production, port=8123, env=ENV)
    assert all(d["ray_actor_options"]["num_gpus"] == 0 for d in _deployments(local))


def test_local_profile_can_keep_gpu_shares(production: dict[str, Any]) -> None:
    local = local_profile(production, port=8123, env=ENV, keep_gpu_shares=True)
    shares = {d["name"]: d["ray_actor_options"].get("num_gpus", 0) for d in _deployments(local)}
    expected = {d["name"]: d["ray_actor_options"].get("num_gpus", 0) for d in _deployments(production)}
    assert shares == expected
    assert 0 < shares["MusicGen"] < 1


def test_local_profile_gives_fractional_cpus(production: dict[str, Any]) -> None:
    local = local_profile(production, port=8123, env=ENV)
    cpus = [d["ray_actor_options"]["num_cpus"] for d in _deployments(local)]
    assert all(0 < c < 1 for c in cpus)
    # Every deployment at its local maximum of replicas still fits a 2-core machine.
    most = [d.get("autoscaling_config", {}).get("max_replicas", 1) for d in _deployments(local)]
    assert sum(c * n for c, n in zip(cpus, most, strict=True)) <= 2


def test_local_profile_uses_offline_weights_on_cpu(production: dict[str, Any]) -> None:
    (app,) = local_profile(production, port=8123, env=ENV)["applications"]
    assert app["args"]["music_model_uri"] == "debug"
    assert app["args"]["music_device"] == "cpu"


def test_local_profile_carries_env_in_runtime_env(production: dict[str, Any]) -> None:
    (app,) = local_profile(production, port=8123, env=ENV)["applications"]
    assert app["runtime_env"]["env_vars"] == ENV


def test_local_profile_caps_autoscaling(production: dict[str, Any]) -> None:
    local = local_profile(production, port=8123, env=ENV, max_replicas=2)
    for deployment in _deployments(local):
        autoscaling = deployment["autoscaling_config"]
        assert (autoscaling["min_replicas"], autoscaling["initial_replicas"]) == (1, 1)
        assert autoscaling["max_replicas"] == 2


def test_local_profile_can_pin_replica_counts(production: dict[str, Any]) -> None:
    local = local_profile(production, port=8123, env=ENV, min_replicas=2, max_replicas=2)
    for deployment in _deployments(local):
        autoscaling = deployment["autoscaling_config"]
        assert (
            autoscaling["min_replicas"] == autoscaling["initial_replicas"] == autoscaling["max_replicas"] == 2
        )


def test_local_profile_leaves_production_config_untouched(production: dict[str, Any]) -> None:
    before = load_config(SERVE_CONFIG)
    local_profile(production, port=8123, env=ENV, user_configs={"MusicGen": {"max_batch_size": 1}})
    assert production == before
