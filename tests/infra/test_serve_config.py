"""deployments/tools/serve_config.py: the local profile derived from serve_config.yaml (no Ray cluster)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from ray.serve.schema import ServeDeploySchema

from deployments.tools.serve_config import LOCAL_MODEL_URIS, load_config, local_profile, model_families

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


def test_local_profile_keeps_gpu_shares_that_fit(production: dict[str, Any]) -> None:
    local = local_profile(production, port=8123, env=ENV, gpus=3)
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


def test_fewer_gpus_scale_every_share_down_alike(
    production: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    wanted = {d["name"]: d["ray_actor_options"].get("num_gpus", 0) for d in _deployments(production)}
    local = local_profile(production, port=8123, env=ENV, gpus=1, models="production")
    shares = {d["name"]: d["ray_actor_options"].get("num_gpus", 0) for d in _deployments(local)}
    assert sum(wanted.values()) > 1 >= sum(shares.values()) > 0.99
    assert shares["StableAudio"] / shares["MusicGen"] == pytest.approx(
        wanted["StableAudio"] / wanted["MusicGen"], 0.01
    )
    assert "scaled by" in caplog.text


def test_production_models_keep_the_configs_uris_and_devices(production: dict[str, Any]) -> None:
    (wanted,) = production["applications"]
    (app,) = local_profile(production, port=8123, env=ENV, models="production")["applications"]
    assert app["args"] == wanted["args"]
    assert app["args"]["music_device"] == "auto"


def test_one_family_can_be_overridden_in_either_model_set(production: dict[str, Any]) -> None:
    for models in ("offline", "production"):
        uris = {"separation_model_uri": "/models/htdemucs"}
        (app,) = local_profile(production, port=8123, env=ENV, models=models, model_uris=uris)["applications"]
        assert app["args"]["separation_model_uri"] == "/models/htdemucs"
        assert app["args"]["music_model_uri"] == (
            "debug" if models == "offline" else "hf://facebook/musicgen-small"
        )


def test_an_unknown_model_set_is_refused(production: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="offline"):
        local_profile(production, port=8123, env=ENV, models="prod")


def test_families_are_named_after_the_uri_arguments(production: dict[str, Any]) -> None:
    families = model_families(production)
    assert families["music"] == "music_model_uri" and families["separation"] == "separation_model_uri"
    assert len(families) == len(LOCAL_MODEL_URIS)
