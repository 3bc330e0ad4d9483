"""infra/k8s/rayservice.yaml: a valid RayService whose Serve application is serve_config.yaml's."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import ray
import yaml
from ray.serve.schema import ServeDeploySchema

from deployments.tools.serve_config import load_config

ROOT = Path(__file__).resolve().parents[2]
MANIFEST = ROOT / "infra" / "k8s" / "rayservice.yaml"
SERVE_CONFIG = ROOT / "serve_config.yaml"
IMAGE = "ghcr.io/your-org/soundstage:0.1.0"


@pytest.fixture(scope="module")
def documents() -> list[dict[str, Any]]:
    with MANIFEST.open() as f:
        return [doc for doc in yaml.safe_load_all(f) if doc]


@pytest.fixture(scope="module")
def rayservice(documents: list[dict[str, Any]]) -> dict[str, Any]:
    (service,) = [doc for doc in documents if doc.get("kind") == "RayService"]
    return service


@pytest.fixture(scope="module")
def cluster(rayservice: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = rayservice["spec"]["rayClusterConfig"]
    return spec


@pytest.fixture(scope="module")
def serve_config_v2(rayservice: dict[str, Any]) -> dict[str, Any]:
    text = rayservice["spec"]["serveConfigV2"]
    assert isinstance(text, str), "serveConfigV2 must be a YAML string block, as KubeRay expects"
    config: dict[str, Any] = yaml.safe_load(text)
    return config


def _worker_group(cluster: dict[str, Any], name: str) -> dict[str, Any]:
    (group,) = [g for g in cluster["workerGroupSpecs"] if g["groupName"] == name]
    return group


def _containers(group: dict[str, Any]) -> list[dict[str, Any]]:
    containers: list[dict[str, Any]] = group["template"]["spec"]["containers"]
    return containers


def _deployment(config: dict[str, Any], name: str) -> dict[str, Any]:
    (app,) = config["applications"]
    (deployment,) = [d for d in app["deployments"] if d["name"] == name]
    return deployment


def test_kind_and_api_version(rayservice: dict[str, Any]) -> None:
    assert rayservice["apiVersion"] == "ray.io/v1"
    assert rayservice["kind"] == "RayService"
    assert rayservice["metadata"]["name"] == "soundstage"


def test_applications_equal_serve_config(serve_config_v2: dict[str, Any]) -> None:
    assert serve_config_v2["applications"] == load_config(SERVE_CONFIG)["applications"]


def test_both_configs_validate(serve_config_v2: dict[str, Any]) -> None:
    ServeDeploySchema.model_validate(serve_config_v2)
    ServeDeploySchema.model_validate(load_config(SERVE_CONFIG))


def test_http_reachable_from_every_pod(serve_config_v2: dict[str, Any]) -> None:
    assert serve_config_v2["proxy_location"] == "EveryNode"
    assert serve_config_v2["http_options"]["host"] == "0.0.0.0"
    assert serve_config_v2["http_options"]["port"] == 8000


def test_head_runs_no_replicas(cluster: dict[str, Any]) -> None:
    head = cluster["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0"
    assert head["rayStartParams"]["dashboard-host"] == "0.0.0.0"
    for container in _containers(head):
        assert "nvidia.com/gpu" not in container["resources"].get("limits", {})


def test_gpu_group_requests_a_gpu_and_musicgen_shares_it(
    cluster: dict[str, Any], serve_config_v2: dict[str, Any]
) -> None:
    (container,) = _containers(_worker_group(cluster, "gpu"))
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    num_gpus = _deployment(serve_config_v2, "MusicGen")["ray_actor_options"]["num_gpus"]
    assert 0 < num_gpus < 1


def test_cpu_group_has_no_gpu(cluster: dict[str, Any]) -> None:
    (container,) = _containers(_worker_group(cluster, "cpu"))
    assert "nvidia.com/gpu" not in container["resources"]["limits"]


def test_autoscaling_enabled(cluster: dict[str, Any]) -> None:
    assert cluster["enableInTreeAutoscaling"] is True
    assert cluster["autoscalerOptions"]["idleTimeoutSeconds"] > 0
    for group in cluster["workerGroupSpecs"]:
        assert 1 <= group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
        assert group["maxReplicas"] > group["minReplicas"], group["groupName"]


def test_gpu_group_fits_every_gpu_deployment_at_max_replicas(
    cluster: dict[str, Any], serve_config_v2: dict[str, Any]
) -> None:
    (app,) = serve_config_v2["applications"]
    gpus_needed = sum(
        d["autoscaling_config"]["max_replicas"] * d["ray_actor_options"].get("num_gpus", 0)
        for d in app["deployments"]
    )
    assert gpus_needed > 0
    assert _worker_group(cluster, "gpu")["maxReplicas"] >= gpus_needed


def test_every_ray_container_gets_settings_and_credentials(cluster: dict[str, Any]) -> None:
    groups = [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
    for container in [c for g in groups for c in _containers(g)]:
        assert container["image"] == IMAGE
        assert {"configMapRef": {"name": "soundstage-config"}} in container["envFrom"]
        secrets = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"] if "valueFrom" in e}
        assert secrets["SOUNDSTAGE_S3_ACCESS_KEY_ID"]["name"] == "soundstage-s3"
        assert secrets["SOUNDSTAGE_S3_SECRET_ACCESS_KEY"]["name"] == "soundstage-s3"


def test_config_map_holds_only_soundstage_settings(documents: list[dict[str, Any]]) -> None:
    (config_map,) = [doc for doc in documents if doc.get("kind") == "ConfigMap"]
    data = config_map["data"]
    assert {"SOUNDSTAGE_S3_ENDPOINT_URL", "SOUNDSTAGE_S3_BUCKET"} <= set(data)
    assert not [key for key in data if "SECRET" in key or "ACCESS_KEY" in key], "credentials go in a Secret"


def test_ray_token_auth_is_managed_by_kuberay(cluster: dict[str, Any]) -> None:
    assert cluster["authOptions"]["mode"] == "token"
    assert cluster["rayVersion"] == ray.__version__


def test_every_ray_pod_exports_metrics_where_prometheus_scrapes(cluster: dict[str, Any]) -> None:
    """Ray's metrics port (Ray's, Serve's and soundstage's series) is fixed, exposed as `metrics` and
    named by the scrape annotations; the PodMonitor selects the same pods and port."""
    for group in [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]:
        port = group["rayStartParams"]["metrics-export-port"]
        (container,) = _containers(group)
        assert {"containerPort": int(port), "name": "metrics"} in container["ports"]
        annotations = group["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true" and annotations["prometheus.io/port"] == port
    with (MANIFEST.parent / "podmonitor.yaml").open() as f:
        monitor = yaml.safe_load(f)
    labels = cluster["headGroupSpec"]["template"]["metadata"]["labels"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert [e["port"] for e in monitor["spec"]["podMetricsEndpoints"]] == ["metrics"]


def test_the_grafana_dashboard_charts_every_metric() -> None:
    """infra/grafana/soundstage.json: valid JSON, one or more panels querying each catalogue metric."""
    import json

    from infra.metrics import CATALOGUE

    dashboard = json.loads((ROOT / "infra" / "grafana" / "soundstage.json").read_text())
    queries = " ".join(t["expr"] for p in dashboard["panels"] for t in p.get("targets", []))
    for metric in CATALOGUE:
        assert f"ray_{metric.name}" in queries, metric.name
