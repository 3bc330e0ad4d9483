"""The typed application builder: `serve_config.yaml` points `import_path` here and passes `args`."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field
from ray.serve import Application

from deployments.ingress import Ingress
from deployments.music import MusicGenDeployment
from deployments.runner import JobRunner


class AppArgs(BaseModel):
    """`args:` of the soundstage application. Model URIs: see infra/model_store.py."""

    model_config = ConfigDict(extra="forbid")

    music_model_uri: str = Field(default="hf://facebook/musicgen-small", min_length=1)
    music_device: str = Field(default="auto", pattern=r"^(auto|cpu|cuda(:\d+)?)$")


def build_app(args: dict[str, object]) -> Application:
    """Ingress → JobRunner → model deployments; the ingress also holds the model handles (for /v1/models)."""
    config = AppArgs.model_validate(args)
    music = MusicGenDeployment.bind(config.music_model_uri, config.music_device)  # type: ignore[attr-defined]
    runner = JobRunner.bind(music=music)  # type: ignore[attr-defined]
    return Ingress.bind(runner=runner, music=music)  # type: ignore[attr-defined]
