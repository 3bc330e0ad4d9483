"""What the job engine and the HTTP edge may ask of the model deployments: one typed client per family.

These are protocols: `deployments/families/*.py` implements each one over a Serve `DeploymentHandle`
(keyword-only methods, typed records in and out), and `build_app` wires one of each into `Models`.
Pipelines and routers see only these types, never a handle, a deployment name looked up by string, or a
positional `.remote(...)` argument. Tests pass in-process doubles that satisfy the same protocols.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from infra.audio import Audio
from infra.dsp.regions import SpeechRegion, Turn
from models.types import (
    ConvertedVoice,
    GeneratedAudio,
    ModelInfo,
    PitchContour,
    Sampling,
    Transcript,
    VoiceReference,
)


@dataclass(frozen=True)
class ModelCard:
    """What a model replica reports about itself: the weights (`model`), its sample rate and device, and
    family-specific limits in `extra` (e.g. Stable Audio's `max_duration_s`)."""

    deployment: str
    model: ModelInfo
    sample_rate: int
    device: str = "cpu"
    gpu_share: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_info(cls, deployment: str, info: dict[str, Any]) -> ModelCard:
        """From a deployment's `info()` dict (model_id, revision, weights, sample_rate, device, …)."""
        known = {"model_id", "revision", "weights", "sample_rate", "device", "gpu_share"}
        return cls(
            deployment=deployment,
            model=ModelInfo(
                model_id=info["model_id"], revision=info.get("revision"), weights=info["weights"]
            ),
            sample_rate=int(info.get("sample_rate") or 0),
            device=str(info.get("device", "cpu")),
            gpu_share=float(info.get("gpu_share") or 0.0),
            extra={k: v for k, v in info.items() if k not in known},
        )

    def as_dict(self) -> dict[str, Any]:
        """The deployment's `info()` dict again (the status route shows it)."""
        place = {"sample_rate": self.sample_rate, "device": self.device, "gpu_share": self.gpu_share}
        return {**self.identity, **place, **self.extra}

    @property
    def identity(self) -> dict[str, Any]:
        """Model id, revision and weights kind: what joins a stage fingerprint and a result's metadata."""
        return self.model.as_dict()


class ModelClient(Protocol):
    """Every client: the deployment it talks to, and that deployment's card."""

    @property
    def deployment(self) -> str: ...

    async def info(self) -> ModelCard: ...


class TextToAudioClient(ModelClient, Protocol):
    """MusicGen, AudioGen and Stable Audio: one clip of `duration_s` seconds from a text prompt."""

    async def generate(
        self, *, prompt: str, duration_s: float, seed: int, sampling: Sampling
    ) -> GeneratedAudio: ...


class MusicClient(TextToAudioClient, Protocol):
    async def continue_audio(
        self, *, clip: Audio, prompt: str, duration_s: float, seed: int, sampling: Sampling
    ) -> GeneratedAudio: ...


class MelodyClient(ModelClient, Protocol):
    async def generate(
        self, *, prompt: str, duration_s: float, seed: int, sampling: Sampling, melody: Audio
    ) -> GeneratedAudio: ...


class SeparationClient(ModelClient, Protocol):
    async def separate(self, *, audio: Audio) -> dict[str, Audio]: ...


class DiarizerClient(ModelClient, Protocol):
    async def diarize(self, *, audio: Audio, num_speakers: int | None = None) -> list[Turn]: ...


class ASRClient(ModelClient, Protocol):
    async def transcribe(
        self,
        *,
        audio: Audio,
        language: str | None = None,
        word_timestamps: bool = False,
        temperature: float = 0.0,
        prompt: str | None = None,
        task: Literal["transcribe", "translate"] = "transcribe",
    ) -> Transcript:
        """`temperature`: 0 decodes with fallback to higher temperatures, above 0 samples at it; `prompt`
        conditions the decoder (Whisper's initial prompt); `translate`: English text from any language."""
        ...

    def transcribe_stream(
        self,
        *,
        audio: Audio,
        language: str | None = None,
        word_timestamps: bool = False,
        temperature: float = 0.0,
        prompt: str | None = None,
        task: Literal["transcribe", "translate"] = "transcribe",
    ) -> AsyncGenerator[Transcript, None]:
        """`transcribe` as it decodes: first a transcript with no segments (language, duration), then one
        transcript per segment, each holding that segment alone, as soon as its window is decoded."""
        ...


class TTSClient(ModelClient, Protocol):
    async def synthesize(self, *, text: str, voice: str, speed: float = 1.0) -> Audio: ...

    async def voices(self) -> list[str]: ...


class VoiceCloneClient(ModelClient, Protocol):
    async def synthesize(self, *, text: str, reference: VoiceReference) -> Audio: ...


class PitchClient(ModelClient, Protocol):
    async def detect(
        self, *, audio: Audio, fmin_hz: float, fmax_hz: float, confidence_threshold: float
    ) -> PitchContour: ...

    async def shift(self, *, audio: Audio, semitones: float, preserve_formants: bool) -> Audio: ...


class SVCClient(ModelClient, Protocol):
    async def convert(
        self, *, audio: Audio, pitch: PitchContour, voice_uri: str, speaker: int, seed: int
    ) -> ConvertedVoice:
        """`audio` sung by the voice model at `voice_uri` along `pitch` (Hz, transposed by the caller)."""
        ...


class VADClient(ModelClient, Protocol):
    async def detect(
        self, *, audio: Audio, threshold: float, min_speech_s: float, min_silence_s: float, pad_s: float
    ) -> list[SpeechRegion]: ...


@dataclass(frozen=True)
class Models:
    """One client per model family, by name: what `build_app` gives the runner and the ingress."""

    music: MusicClient
    melody: MelodyClient
    sfx: TextToAudioClient
    stable_audio: TextToAudioClient
    separation: SeparationClient
    diarizer: DiarizerClient
    asr: ASRClient
    tts: TTSClient
    voice_clone: VoiceCloneClient
    pitch: PitchClient
    vad: VADClient
    svc: SVCClient

    def all(self) -> list[ModelClient]:
        """Every client, in field order (the status view lists them)."""
        return [getattr(self, name) for name in self.__dataclass_fields__]
