"""The typed application builder: `serve_config.yaml` points `import_path` here and passes `args`."""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field
from ray.serve import Application

from deployments.families.asr import ASRClient, ASRDeployment
from deployments.families.audiogen import AudioGenClient, AudioGenDeployment
from deployments.families.client import DeploymentClient
from deployments.families.diarization import DiarizerClient, DiarizerDeployment
from deployments.families.music import MusicGenClient, MusicGenDeployment
from deployments.families.musicgen_melody import MusicGenMelodyClient, MusicGenMelodyDeployment
from deployments.families.pitch import PitchClient, PitchDeployment
from deployments.families.separation import SeparationClient, SeparationDeployment
from deployments.families.stable_audio import StableAudioClient, StableAudioDeployment
from deployments.families.svc import SVCClient, SVCDeployment
from deployments.families.tts import TTSClient, TTSDeployment
from deployments.families.vad import VADClient, VADDeployment
from deployments.families.voice_clone import VoiceCloneClient, VoiceCloneDeployment
from deployments.ingress import Ingress
from deployments.runner import JobRunner
from pipelines.engine.clients import Models

Device = Field(default="auto", pattern=r"^(auto|cpu|cuda(:\d+)?)$")


class AppArgs(BaseModel):
    """`args:` of the soundstage application. Model URIs: see infra/model_store.py."""

    model_config = ConfigDict(extra="forbid")

    music_model_uri: str = Field(default="hf://facebook/musicgen-small", min_length=1)
    music_device: str = Device
    melody_model_uri: str = Field(default="hf://facebook/musicgen-melody", min_length=1)
    melody_device: str = Device
    sfx_model_uri: str = Field(default="s3://soundstage-models/audiogen-medium", min_length=1)
    sfx_device: str = Device
    stable_audio_model_uri: str = Field(default="hf://stabilityai/stable-audio-open-1.0", min_length=1)
    stable_audio_device: str = Device
    asr_model_uri: str = Field(default="hf://Systran/faster-whisper-small", min_length=1)
    asr_device: str = Device
    pitch_model_uri: str = Field(default="pkg://swift-f0", min_length=1)
    separation_model_uri: str = Field(default="s3://soundstage-models/htdemucs", min_length=1)
    separation_device: str = Device
    vad_model_uri: str = Field(default="pkg://silero-vad", min_length=1)
    speaker_model_uri: str = Field(default="pkg://resemblyzer", min_length=1)
    speaker_device: str = Device
    tts_model_uri: str = Field(default="pkg://hibari-tts", min_length=1)
    voice_clone_model_uri: str = Field(default="hf://sesame/csm-1b", min_length=1)
    voice_clone_device: str = Device
    svc_model_uri: str = Field(default="hf://lengyue233/content-vec-best", min_length=1)
    svc_device: str = Device


def build_app(args: dict[str, object]) -> Application:
    """Ingress → JobRunner → model deployments: one typed client per family, wired once into `Models`."""
    c = AppArgs.model_validate(args)
    vad = _client(VADClient, VADDeployment, c.vad_model_uri)
    models = Models(
        music=_client(MusicGenClient, MusicGenDeployment, c.music_model_uri, c.music_device),
        melody=_client(MusicGenMelodyClient, MusicGenMelodyDeployment, c.melody_model_uri, c.melody_device),
        sfx=_client(AudioGenClient, AudioGenDeployment, c.sfx_model_uri, c.sfx_device),
        stable_audio=_client(
            StableAudioClient, StableAudioDeployment, c.stable_audio_model_uri, c.stable_audio_device
        ),
        separation=_client(
            SeparationClient, SeparationDeployment, c.separation_model_uri, c.separation_device
        ),
        diarizer=_client(DiarizerClient, DiarizerDeployment, vad, c.speaker_model_uri, c.speaker_device),
        asr=_client(ASRClient, ASRDeployment, c.asr_model_uri, c.asr_device),
        tts=_client(TTSClient, TTSDeployment, c.tts_model_uri),
        voice_clone=_client(
            VoiceCloneClient, VoiceCloneDeployment, c.voice_clone_model_uri, c.voice_clone_device
        ),
        pitch=_client(PitchClient, PitchDeployment, c.pitch_model_uri),
        vad=vad,
        svc=_client(SVCClient, SVCDeployment, c.svc_model_uri, c.svc_device),
    )
    runner: Any = JobRunner.bind(models)  # type: ignore[attr-defined]
    ingress: Application = Ingress.bind(runner, models)  # type: ignore[attr-defined]
    return ingress


C = TypeVar("C", bound=DeploymentClient)


def _client(client: type[C], deployment: Any, *args: Any) -> C:
    """A typed client over `deployment` bound to `args` (Serve swaps in the handle inside each replica)."""
    return client(deployment.bind(*args), deployment.name)
