"""The AudioGen deployment (sound effects): AudioGen weights on MusicGen's architecture, batched alike."""

from __future__ import annotations

from ray import serve

from deployments.families.client import TextToAudioDeploymentClient
from deployments.families.faults import answers_faults
from deployments.families.music import DelayedCodebookGenerator


@serve.deployment(
    name="AudioGen",
    ray_actor_options={"num_cpus": 1},
    max_ongoing_requests=8,
    max_queued_requests=32,
    health_check_period_s=10,
)
@answers_faults
class AudioGenDeployment(DelayedCodebookGenerator):
    def __init__(self, model_uri: str, device: str = "auto") -> None:
        from models.audiogen import AudioGen

        super().__init__()
        self.model = self.load_model(AudioGen.from_pretrained, model_uri, device)


class AudioGenClient(TextToAudioDeploymentClient):
    """Typed client of `AudioGenDeployment` (a `TextToAudioClient`)."""
