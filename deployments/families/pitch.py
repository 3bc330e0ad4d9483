"""The pitch deployment (CPU): SwiftF0 contours and formant-preserving pitch shifts."""

from __future__ import annotations

import asyncio

from ray import serve

from deployments.families.client import DeploymentClient
from deployments.families.faults import answers_faults
from deployments.families.model_host import ModelHost
from infra.audio import Audio
from infra.dsp.vocoder import shift_pitch
from models.types import PITCH_CONFIDENCE_THRESHOLD, PitchContour


@serve.deployment(
    name="Pitch",
    ray_actor_options={"num_cpus": 1},
    max_ongoing_requests=8,
    max_queued_requests=128,
    health_check_period_s=10,
)
@answers_faults
class PitchDeployment(ModelHost):
    def __init__(self, model_uri: str = "pkg://swift-f0") -> None:
        from models.pitch import PitchDetector

        self.model = self.load_model(PitchDetector.from_pretrained, model_uri, "cpu")

    async def detect(
        self,
        audio: Audio,
        fmin_hz: float = 46.875,
        fmax_hz: float = 2093.75,
        confidence_threshold: float = PITCH_CONFIDENCE_THRESHOLD,
    ) -> PitchContour:
        """F0 contour (Hz per 16 ms frame, 0 where unvoiced) with confidence and voicing."""
        return await asyncio.to_thread(
            self.model.detect,
            audio,
            fmin_hz=fmin_hz,
            fmax_hz=fmax_hz,
            confidence_threshold=confidence_threshold,
        )

    async def shift(self, audio: Audio, semitones: float, preserve_formants: bool = True) -> Audio:
        """The same audio `semitones` higher (or lower), same length; formants kept by default."""
        return await asyncio.to_thread(shift_pitch, audio, semitones, preserve_formants=preserve_formants)


class PitchClient(DeploymentClient):
    """Typed client of `PitchDeployment`."""

    async def detect(
        self, *, audio: Audio, fmin_hz: float, fmax_hz: float, confidence_threshold: float
    ) -> PitchContour:
        contour: PitchContour = await self._call(
            "detect", audio=audio, fmin_hz=fmin_hz, fmax_hz=fmax_hz, confidence_threshold=confidence_threshold
        )
        return contour

    async def shift(self, *, audio: Audio, semitones: float, preserve_formants: bool) -> Audio:
        shifted: Audio = await self._call(
            "shift", audio=audio, semitones=semitones, preserve_formants=preserve_formants
        )
        return shifted
