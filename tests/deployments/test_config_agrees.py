"""serve_config.yaml and the `@serve.deployment(...)` decorators agree (ARCHITECTURE.md, "Deployments").

Resources and autoscaling come from serve_config.yaml. Where the config overrides an option that a
decorator also states, the decorator must state the same value (or leave it out), so that reading the code
never tells a different number from the one that runs.

`ray_actor_options` are compared with the production config only: Serve replaces a decorator's
`ray_actor_options` wholesale with the config's, and the local profile (deployments/tools/serve_config.py)
derives its fractional `num_cpus` and zeroed GPU shares from the production config, never from the code.
`num_cpus` is always compared (Ray fills in 1 when a decorator leaves it out); `num_gpus` only where a
decorator states it (the config leaving it out means 0).
"""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path
from typing import Any, cast

from ray.serve import Deployment

import deployments.families
from deployments.tools.serve_config import load_config

SERVE_CONFIG = Path(__file__).resolve().parents[2] / "serve_config.yaml"

# The modules whose `@serve.deployment` objects `build_app` (deployments/app.py) binds.
DEPLOYMENT_MODULES = [
    "deployments.ingress",
    "deployments.runner",
    *(f"deployments.families.{m.name}" for m in pkgutil.iter_modules(deployments.families.__path__)),
]

# Deployment options compared when both the decorator and the config state them.
OPTIONS = (
    "max_ongoing_requests",
    "max_queued_requests",
    "health_check_period_s",
    "health_check_timeout_s",
    "graceful_shutdown_timeout_s",
)


def _code_deployments() -> tuple[dict[str, tuple[str, Deployment]], list[str]]:
    """Every Serve `Deployment` at module level in DEPLOYMENT_MODULES: name -> (module, deployment)."""
    found: dict[str, tuple[str, Deployment]] = {}
    errors: list[str] = []
    for name in DEPLOYMENT_MODULES:
        try:
            module = importlib.import_module(name)
        except Exception as e:  # reported with the rest, so that the other modules are still compared
            errors.append(f"{name}: cannot be imported ({type(e).__name__}: {e})")
            continue
        for value in vars(module).values():
            if not isinstance(value, Deployment):
                continue
            first = found.setdefault(value.name, (name, value))
            if first[1] is not value:
                errors.append(f"{value.name}: two deployments of that name ({first[0]}, {name})")
    return found, errors


def _stated(deployment: Deployment) -> set[str]:
    """The options the decorator (or `.options()`) set explicitly: Serve records their names."""
    return set(deployment._deployment_config.user_configured_option_names)


def _disagreements(deployment: Deployment, config: dict[str, Any]) -> list[str]:
    out = []
    stated = _stated(deployment)
    for option in OPTIONS:
        if option in stated and option in config:
            # Ray 2.60's `Deployment` exposes max_ongoing/queued_requests; the rest only on its config.
            code = getattr(deployment._deployment_config, option)
            if code != config[option]:
                out.append(f"{option}: code {code!r}, serve_config.yaml {config[option]!r}")
    if "ray_actor_options" in config:
        code_options = deployment.ray_actor_options or {}
        config_options = config["ray_actor_options"] or {}
        for key in ("num_cpus", "num_gpus"):
            if key not in code_options:
                continue
            code, wanted = code_options[key], config_options.get(key, 1 if key == "num_cpus" else 0)
            if code != wanted:
                out.append(f"ray_actor_options.{key}: code {code!r}, serve_config.yaml {wanted!r}")
    return out


def test_decorators_agree_with_serve_config() -> None:
    config = load_config(SERVE_CONFIG)
    code, import_errors = _code_deployments()
    problems = list(import_errors)
    for app in config["applications"]:
        for entry in app.get("deployments", []):
            name = entry["name"]
            if name not in code:
                unread = " (or in a module above that cannot be imported)" if import_errors else ""
                problems.append(
                    f"{name}: in serve_config.yaml, but no deployment of that name in the code{unread}"
                )
                continue
            module, deployment = code[name]
            problems.extend(f"{name} ({module}): {p}" for p in _disagreements(deployment, entry))
    assert not problems, "serve_config.yaml and the code disagree:\n" + "\n".join(problems)


def test_the_comparison_sees_the_decorators() -> None:
    """A guard for the test above: Serve records what a decorator states, and it is read back."""
    from ray import serve

    class Probe:
        pass

    probe = cast(
        Deployment,
        serve.deployment(name="Probe", max_ongoing_requests=3, ray_actor_options={"num_gpus": 0.5})(Probe),
    )
    assert {"max_ongoing_requests", "ray_actor_options"} <= _stated(probe)
    assert "max_queued_requests" not in _stated(probe)
    config = {"max_ongoing_requests": 4, "max_queued_requests": 9, "ray_actor_options": {"num_cpus": 1}}
    assert _disagreements(probe, config) == [
        "max_ongoing_requests: code 3, serve_config.yaml 4",
        "ray_actor_options.num_gpus: code 0.5, serve_config.yaml 0",
    ]
